"""The two-stage detector that R-CNN, Fast R-CNN, Faster R-CNN and Mask R-CNN share.

Every one of them is: resize and normalise the images, compute features, propose regions,
then classify each region and refine its box (and, for Mask R-CNN, segment it). What
changes along the lineage is which part does what, and `builders.py` wires the parts:

| | backbone | proposal generator | RoI features (`roi_heads.box_roi_pool`) |
|---|---|---|---|
| R-CNN | the pixels themselves | selective search | warp each region, CNN per region |
| Fast R-CNN | CNN, once per image | selective search | RoI max pooling from the shared map |
| Faster R-CNN | CNN (+FPN) | RPN on the shared features | RoIAlign (or RoI pooling) |
| Mask R-CNN | CNN + FPN | RPN | RoIAlign, plus a mask branch |

The model only orchestrates: transform -> backbone -> proposal generator -> RoI heads ->
back to the original image frame (the parts' names follow detectron2's GeneralizedRCNN).
"""

from __future__ import annotations

from torch import Tensor, nn

from seglab.models.detection.roi_heads import RoIHeads
from seglab.models.detection.transform import DetectionTransform


class TwoStageDetector(nn.Module):
    """Two-stage detector: images in [0, 1] (any sizes) -> boxes, labels, scores per image.

    Args:
        transform: resize + normalise + batch, and the way back to the original frame.
        backbone: (B, C, H, W), C the model's `in_channels` (3, or 1 for grey images) ->
            ordered dict of feature maps (FPN levels p2..p5 and `pool`, or one map).
        proposal_generator: (batch, features, targets) -> (proposals per image (P_i, 4)
            in the resized frame, losses): the RPN, or selective search.
        roi_heads: per-RoI classification and box refinement (and masks for Mask R-CNN).
    """

    task = "detection"

    def __init__(
        self,
        *,
        transform: DetectionTransform,
        backbone: nn.Module,
        proposal_generator: nn.Module,
        roi_heads: RoIHeads,
    ):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads

    def forward(self, images: list[Tensor], targets: list[dict] | None = None) -> list[dict]:
        """Eval mode: one dict per image with `boxes` (N, 4) xyxy in its pixels, `labels`
        (N,) int64 1..K, `scores` (N,). Train mode: empty dicts (use forward_with_losses)."""
        return self.forward_with_losses(images, targets)[0]

    def forward_with_losses(
        self, images: list[Tensor], targets: list[dict] | None = None
    ) -> tuple[list[dict], dict[str, Tensor]]:
        """Outputs as `forward`, and the losses whenever targets are given."""
        if self.training and targets is None:
            raise ValueError("training needs targets: call forward_with_losses(images, targets)")
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        proposals, proposal_losses = self.proposal_generator(batch, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if not self.training:
            detections = self._postprocess(detections, batch.image_sizes, batch.original_sizes)
        return detections, {**proposal_losses, **head_losses}

    def _postprocess(
        self,
        detections: list[dict],
        image_sizes: list[tuple[int, int]],
        original_sizes: list[tuple[int, int]],
    ) -> list[dict]:
        return self.transform.postprocess(detections, image_sizes, original_sizes)
