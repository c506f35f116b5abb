"""Which `model.backbone_weights` values are torchvision weight names, not files (no torch:
the config is read before PyTorch loads; `backbones/pretrained.py` resolves the names)."""

from __future__ import annotations

import re

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")
_WEIGHT_NAME = re.compile(r"\w+_Weights\.\w+")  # torchvision's enum and member


def is_weight_name(spec: str) -> bool:
    """A torchvision weight name (`ResNet50_Weights.IMAGENET1K_V2`, `imagenet`), not a file."""
    if "/" in spec or spec.lower().endswith(WEIGHT_FILE_SUFFIXES):
        return False
    return spec == "imagenet" or _WEIGHT_NAME.fullmatch(spec) is not None
