"""A model exported by `seglab export`, run by onnxruntime behind a seglab model's face.

`OnnxModel` has what inference needs of a seglab model (its card, `task`, `eval()`,
`to()`, and `model(images)` -> one dict per image, in eval mode), so `seglab predict
model.onnx` runs the same code as for `model.safetensors` and writes the same files. The
graphs it runs are described in `seglab.inference.export`; the model card travels in the
ONNX file's `metadata_props`. R-CNN's and Fast R-CNN's graphs take the proposals as a
second input: `OnnxModel` computes them with selective search as the PyTorch model does,
with the settings of the card's arguments (`proposal_mode`, `proposal_scale`, ...).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seglab.errors import UserError, require_file
from seglab.models.card import ModelCard
from seglab.models.detection.selective_search import SelectiveSearchProposals
from seglab.models.inputs import stack_images
from seglab.models.zoo import data_proposals, load_model, model_task

# The output names of each task's graph, in order (`seglab.inference.export`).
OUTPUT_NAMES = {
    "classification": ("logits",),
    "semantic": ("logits",),
    "detection": ("boxes", "labels", "scores"),
    "instance": ("boxes", "labels", "scores", "masks"),
}


class OnnxModel:
    """An exported seglab model run by onnxruntime on the CPU.

    Args:
        path: a .onnx file written by `seglab export`.
    """

    training = False

    def __init__(self, path: str | Path):
        import onnxruntime

        self.path = require_file(path, "ONNX model")
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own types for a bad file
            raise UserError(
                f"{self.path}: not an ONNX model onnxruntime can run ({error})"
            ) from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "seglab_arch" not in metadata:
            raise UserError(f"{self.path}: no seglab metadata; export the model with "
                            "seglab export")  # fmt: skip
        self.card = ModelCard.from_metadata(metadata, task=model_task(metadata["seglab_arch"]))
        self.task = self.card.task
        for name, value in json.loads(metadata.get("seglab_attributes", "{}")).items():
            setattr(self, name, value)  # U-Net: padding, depth (tiling reads them)
        # R-CNN, Fast R-CNN: selective search with the settings the PyTorch model has
        settings = data_proposals(self.card.arch, self.card.arch_args)
        self.proposal_generator = None if settings is None else SelectiveSearchProposals(settings)

    def __call__(self, images: list[Tensor] | Tensor) -> list[dict[str, Tensor]]:
        """What the PyTorch model returns in eval mode, as CPU tensors."""
        if self.task in ("classification", "semantic"):
            batch = stack_images(images, self.card.arch).float().cpu().numpy()
            (logits,) = self.session.run(None, {"images": batch})
            return [{"logits": torch.from_numpy(per_image)} for per_image in logits]
        return [self._detect(image) for image in images]

    def detect_with_proposals(self, images: list[Tensor], proposals: list[Tensor]) -> list[dict]:
        """R-CNN, Fast R-CNN: detections with these proposals, per image (P_i, 4) xyxy in its
        pixels, instead of selective search's (as the PyTorch model's method of this name)."""
        if self.proposal_generator is None:
            raise ValueError(f"{self.card.arch} makes its own proposals")
        pairs = zip(images, proposals, strict=True)
        return [self._detect(image, boxes) for image, boxes in pairs]

    def _detect(self, image: Tensor, proposals: Tensor | None = None) -> dict[str, Tensor]:
        batch = image[None].float().cpu().numpy()  # (C, H, W) -> (1, C, H, W)
        inputs = {"images": batch}
        if self.proposal_generator is not None:
            if proposals is None:
                proposals = self.proposal_generator.search(image)
            inputs["proposals"] = proposals.float().cpu().reshape(-1, 4).numpy()
        outputs = self.session.run(None, inputs)
        pairs = zip(OUTPUT_NAMES[self.task], outputs, strict=True)
        return {name: torch.from_numpy(np.asarray(value)) for name, value in pairs}

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise ValueError("an ONNX model runs inference only")
        return self

    def to(self, device) -> OnnxModel:
        """onnxruntime runs on the CPU here; inputs on another device are copied."""
        return self

    def parameters(self):
        return iter(())


def load_model_or_onnx(path: str | Path):
    """`OnnxModel` for a .onnx file, else the seglab model of a .safetensors file."""
    if Path(path).suffix.lower() == ".onnx":
        return OnnxModel(path)
    return load_model(path)
