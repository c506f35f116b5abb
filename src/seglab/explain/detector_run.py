"""One eval-mode forward of a two-stage detector, with what each part returned.

Forward hooks on the detector's parts (`TwoStageDetector`: transform, backbone, proposal
generator, RoI heads and their pooling, head and predictor modules) keep their outputs
while the model runs as it always does, so the figures show exactly the intermediate
tensors of a real detection, nothing recomputed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seglab.models.detection.transform import ImageBatch, resize_boxes

_HEAD_PARTS = ("box_roi_pool", "box_head", "box_predictor", "mask_roi_pool", "mask_head",
               "mask_predictor")  # fmt: skip


@dataclass(frozen=True)
class DetectorRun:
    """The parts' outputs for one image.

    Attributes:
        batch: the transform's padded batch (resized frame).
        resized_image: (C, h, w) in [0, 1], the image as the model resized it (the batch
            un-normalised, without its padding).
        body: the backbone body's maps (C2..C5, or the one map) when it has a body, else {}.
        features: the backbone's output maps (FPN levels P2..P6, or the one map).
        proposals: (P, 4) xyxy proposals in the resized frame, best first.
        heads: part name -> the tensor (or tuple of tensors) it returned.
        detections: the RoI heads' detections before post-processing (resized frame;
            Mask R-CNN's `masks` (N, 1, 28, 28) per box).
        output: the model's output (original frame).
    """

    batch: ImageBatch
    resized_image: Tensor
    body: dict[str, Tensor]
    features: dict[str, Tensor]
    proposals: Tensor
    heads: dict[str, object]
    detections: dict[str, Tensor]
    output: dict[str, Tensor]

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        return self.batch.image_sizes

    def to_original(self, boxes: Tensor) -> Tensor:
        """(N, 4) boxes in the resized frame -> the original image's pixels."""
        return resize_boxes(boxes, self.batch.image_sizes[0], self.batch.original_sizes[0])


def run_detector(model: nn.Module, image: Tensor) -> DetectorRun:
    """Run `model([image])` in eval mode and keep each part's output."""
    parts = {
        "transform": model.transform,
        "backbone": model.backbone,
        "proposal_generator": model.proposal_generator,
        "roi_heads": model.roi_heads,
    }
    body = getattr(model.backbone, "body", None)
    if body is not None:
        parts["body"] = body
    parts.update({name: getattr(model.roi_heads, name) for name in _HEAD_PARTS
                  if getattr(model.roi_heads, name, None) is not None})  # fmt: skip
    seen: dict[str, object] = {}

    def keep(name: str):
        def hook(_module, _inputs, output) -> None:  # None: the output is unchanged
            if name not in seen:  # the first call (eval: each part runs once per image)
                seen[name] = _shallow_copy(output)

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in parts.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model([image])[0]
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    batch = seen["transform"][0]
    return DetectorRun(
        batch=batch,
        resized_image=_unnormalised(model.transform, batch),
        body=dict(seen.get("body", {})),
        features=dict(seen["backbone"]),
        proposals=seen["proposal_generator"][0][0],
        heads={name: seen[name] for name in _HEAD_PARTS if name in seen},
        detections=seen["roi_heads"][0][0],
        output=output,
    )


def _unnormalised(transform: nn.Module, batch: ImageBatch) -> Tensor:
    height, width = batch.image_sizes[0]
    std, mean = transform.image_std.to(batch.tensors), transform.image_mean.to(batch.tensors)
    return (batch.tensors[0, :, :height, :width] * std + mean).clamp(0, 1)


def _shallow_copy(output):
    """Copy dicts inside the output (post-processing replaces their entries later)."""
    if isinstance(output, dict):
        return dict(output)
    if isinstance(output, tuple | list):
        return type(output)(_shallow_copy(item) for item in output)
    return output
