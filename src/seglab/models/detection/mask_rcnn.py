"""Mask R-CNN (He et al., 2017): Faster R-CNN plus a mask branch in parallel with the box
branch (§3), on RoIAlign features (§3, "RoIAlign"). The branch itself lives in
`mask_head.py` and is wired into the RoI heads by `builders.build_mask_rcnn`; this class
adds the last step of inference (§3.1): each 28x28 mask is resized to its box and pasted
into the image.
"""

from __future__ import annotations

from torch import Tensor

from seglab.models.detection.faster_rcnn import FasterRCNN
from seglab.structures.masks import paste_masks_in_image


class MaskRCNN(FasterRCNN):
    """Faster R-CNN whose detections also carry `masks` (N, 1, H, W) float in [0, 1],
    probabilities in the original image's pixels (threshold at 0.5 for a binary mask)."""

    task = "instance"

    def _postprocess(
        self,
        detections: list[dict],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> list[dict]:
        detections = super()._postprocess(detections, image_sizes, original_sizes)
        for detection, size in zip(detections, original_sizes, strict=True):
            masks: Tensor = detection["masks"]
            detection["masks"] = paste_masks_in_image(masks, detection["boxes"], size)
        return detections
