"""Assign each anchor or proposal to a ground-truth box by IoU (Faster R-CNN §3.1.2).

An anchor is positive when its best IoU with a ground-truth box is >= `high_threshold`
(0.7 in the RPN, 0.5 in the box head), negative below `low_threshold` (0.3 in the RPN,
0.5 in the box head) and ignored in between. The RPN also makes positive, for each
ground-truth box, the anchors of highest IoU with it, even below the threshold ("the
anchor/anchors with the highest IoU overlap with a ground-truth box"), so that no object is
left without an anchor. Same results as torchvision's `Matcher`, ties included.
"""

from __future__ import annotations

from torch import Tensor


class Matcher:
    """IoU-threshold matcher.

    Args:
        high_threshold: best IoU >= this is a match.
        low_threshold: best IoU < this is background (`BELOW_LOW_THRESHOLD`); in between
            is ignored (`BETWEEN_THRESHOLDS`).
        allow_low_quality_matches: also match, for every ground-truth box, the predictions
            of highest IoU with it (all of them when several tie).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(
        self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False
    ) -> None:
        if low_threshold > high_threshold:
            raise ValueError(
                f"low_threshold {low_threshold} must be <= high_threshold {high_threshold}"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: Tensor) -> Tensor:
        """Match predictions to ground truth.

        Args:
            iou: (M ground-truth, N predictions) IoU matrix; M >= 1 and N >= 1 (an image
                without objects has no matches to make: label all its predictions background).

        Returns:
            (N,) int64: the matched ground-truth index in 0..M-1, or -1 (background) or -2
            (ignored).
        """
        if iou.numel() == 0:
            raise ValueError(
                "Matcher needs at least one ground-truth box and one prediction, "
                f"got an IoU matrix of shape {tuple(iou.shape)}"
            )
        best_iou, matched_gt_index = iou.max(dim=0)  # (N,), (N,)
        best_gt_before_thresholds = matched_gt_index.clone()
        matched_gt_index[best_iou < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (best_iou >= self.low_threshold) & (best_iou < self.high_threshold)
        matched_gt_index[between] = self.BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            self._restore_best_predictions(matched_gt_index, best_gt_before_thresholds, iou)
        return matched_gt_index

    @staticmethod
    def _restore_best_predictions(
        matched_gt_index: Tensor, best_gt_before_thresholds: Tensor, iou: Tensor
    ) -> None:
        """For each ground-truth box, re-match its highest-IoU predictions (ties included)
        to their own best ground truth, whatever the thresholds said."""
        best_iou_per_gt = iou.max(dim=1).values  # (M,)
        _, best_predictions = (iou == best_iou_per_gt[:, None]).nonzero(as_tuple=True)
        matched_gt_index[best_predictions] = best_gt_before_thresholds[best_predictions]
