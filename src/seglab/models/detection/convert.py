"""torchvision detection checkpoints -> seglab models.

A torchvision state dict is renamed key by key onto our modules (the table below is the
whole difference between the two namings) and loaded strictly: every tensor must find its
place and every place must get a tensor. torchvision's v1 detectors pool with RoIAlign's
`aligned=False`, so the converted model is built with `roi_align_half_pixel=False`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from seglab.errors import UserError, require_file
from seglab.models.backbones.torchvision_keys import rename_torchvision_backbone_key
from seglab.models.card import ModelCard
from seglab.models.detection.torchvision_archs import TORCHVISION_ARCHS
from seglab.models.zoo import build_from_card, model_task

# Heads: (torchvision key pattern, our key), first match wins; other keys keep their name.
# The backbone and FPN keys are renamed by `rename_torchvision_backbone_key`.
RENAMES: list[tuple[str, str | Callable[[re.Match], str]]] = [
    (r"^rpn\.head\.conv\.(\d)\.0\.", r"proposal_generator.head.convs.\1."),
    (r"^rpn\.head\.conv\.", "proposal_generator.head.convs.0."),  # torchvision < 0.13
    (r"^rpn\.head\.cls_logits\.", "proposal_generator.head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", "proposal_generator.head.box_deltas."),
    (r"^roi_heads\.box_head\.(\d)\.([01])\.", r"roi_heads.box_head.convs.\1.\2."),  # v2
    (r"^roi_heads\.box_head\.5\.", "roi_heads.box_head.fc."),  # v2 (4 is the flatten)
    (r"^roi_heads\.box_predictor\.cls_score\.", "roi_heads.box_predictor.class_logits."),
    (r"^roi_heads\.box_predictor\.bbox_pred\.", "roi_heads.box_predictor.box_deltas."),
    (r"^roi_heads\.mask_head\.(\d)\.([01])\.", r"roi_heads.mask_head.convs.\1.\2."),
    (
        r"^roi_heads\.mask_head\.mask_fcn(\d)\.",
        lambda m: f"roi_heads.mask_head.convs.{int(m[1]) - 1}.0.",
    ),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_heads.mask_predictor.upsample."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_heads.mask_predictor.mask_logits."),
]


def rename_torchvision_key(key: str) -> str:
    """Our name of one torchvision detection state-dict key."""
    backbone_key = rename_torchvision_backbone_key(
        key, backbone_prefix="backbone.body.", fpn_prefix="backbone.fpn."
    )
    if backbone_key is not None:
        return backbone_key
    for pattern, replacement in RENAMES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def read_torchvision_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load a `.pth` holding a state dict (or {"model": state dict}, as torchvision's
    training references save it), without unpickling arbitrary objects."""
    path = require_file(path, "torchvision checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a non-checkpoint
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"{path}: not a PyTorch checkpoint ({first_line}); pass a .pth state dict"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict of tensors; save model.state_dict()")
    return state


def convert_torchvision(state: dict[str, Tensor], arch: str, **builder_args) -> nn.Module:
    """Build our model for torchvision architecture `arch` and load `state` into it.

    `num_classes` is read from the box predictor; `builder_args` override the rest (e.g.
    `min_size`, `box_score_thresh`). The model comes back in eval mode, with class names
    "1".."K" (COCO names when num_classes is 91).
    """
    if arch not in TORCHVISION_ARCHS:
        known = ", ".join(TORCHVISION_ARCHS)
        raise UserError(f"unknown torchvision architecture {arch!r}; use one of {known}")
    name, implied = TORCHVISION_ARCHS[arch]
    logits = state.get("roi_heads.box_predictor.cls_score.weight")
    if logits is None:
        raise UserError(f"checkpoint is not a torchvision {arch}: no roi_heads.box_predictor")
    num_classes = int(logits.shape[0])
    arguments = {"num_classes": num_classes, **implied, **builder_args}
    card = ModelCard(arch=name, arch_args=arguments, task=model_task(name),
                     class_names=tuple(_class_names(num_classes)))  # fmt: skip
    model = build_from_card(card)
    renamed = {rename_torchvision_key(key): value for key, value in state.items()}
    missing, unexpected = _load(model, renamed)
    if missing or unexpected:
        raise UserError(
            f"checkpoint does not fit {arch}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; is --arch right?"
        )
    return model.eval()


def _load(model: nn.Module, state: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    ours = model.state_dict()
    # torchvision's FrozenBatchNorm2d has no num_batches_tracked counter; our BatchNorm2d has.
    missing = [k for k in ours if k not in state and not k.endswith("num_batches_tracked")]
    # A torchvision model built without pretrained weights has BatchNorm2d (with counters).
    unexpected = [k for k in state if k not in ours and not k.endswith("num_batches_tracked")]
    state = {k: v for k, v in state.items() if k in ours}
    wrong_shape = [k for k in state if k in ours and ours[k].shape != state[k].shape]
    if not (missing or unexpected or wrong_shape):
        model.load_state_dict(state, strict=False)
    return missing + wrong_shape, unexpected


def _class_names(num_classes: int) -> list[str]:
    if num_classes == 91:
        from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

        return list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"][1:])
    return [str(label) for label in range(1, num_classes)]
