"""Faster R-CNN (Ren et al., 2015): one backbone shared by a Region Proposal Network and
the Fast R-CNN detector, trained jointly (§3.2, "approximate joint training").

The model only orchestrates: transform -> backbone -> RPN -> RoI heads -> back to the
original image frame. Each part is passed in by `builders.py`.
"""

from __future__ import annotations

from torch import Tensor, nn

from seglab.models.detection.roi_heads import RoIHeads
from seglab.models.detection.rpn import RegionProposalNetwork
from seglab.models.detection.transform import DetectionTransform


class FasterRCNN(nn.Module):
    """Two-stage detector: images in [0, 1] (any sizes) -> boxes, labels, scores per image.

    Args:
        transform: resize + normalise + batch, and the way back to the original frame.
        backbone: (B, 3, H, W) -> ordered dict of feature maps (e.g. FPN levels p2..p6).
        rpn: proposals per image from the features.
        roi_heads: per-RoI classification and box refinement (and masks for Mask R-CNN).
    """

    task = "detection"

    def __init__(
        self,
        *,
        transform: DetectionTransform,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
    ):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads

    def forward(self, images: list[Tensor], targets: list[dict] | None = None) -> list[dict]:
        """Eval mode: one dict per image with `boxes` (N, 4) xyxy in its pixels, `labels`
        (N,) int64 1..K, `scores` (N,). Train mode: empty dicts (use forward_with_losses)."""
        return self.forward_with_losses(images, targets)[0]

    def forward_with_losses(
        self, images: list[Tensor], targets: list[dict] | None = None
    ) -> tuple[list[dict], dict[str, Tensor]]:
        """Outputs as `forward`, and the four (five) losses whenever targets are given."""
        if self.training and targets is None:
            raise ValueError("training needs targets: call forward_with_losses(images, targets)")
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        proposals, rpn_losses = self.rpn(batch, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if not self.training:
            detections = self._postprocess(detections, batch.image_sizes, original_sizes)
        return detections, {**rpn_losses, **head_losses}

    def _postprocess(
        self,
        detections: list[dict],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> list[dict]:
        return self.transform.postprocess(detections, image_sizes, original_sizes)
