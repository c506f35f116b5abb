"""Assign each anchor or proposal to a ground-truth box by its best IoU.

A prediction whose best IoU with a ground-truth box is >= `high_threshold` is matched to
that box; below `low_threshold` it is background; in between it is ignored (neither
positive nor negative in training). The values of the papers:

| user | match | background | ignored |
|---|---|---|---|
| RPN (Faster R-CNN §3.1.2) | >= 0.7 | < 0.3 | [0.3, 0.7) |
| Faster / Mask R-CNN box head (torchvision) | >= 0.5 | < 0.5 | - |
| Fast R-CNN box head (§2.3) | >= 0.5 | [0.1, 0.5) | < 0.1 |

Fast R-CNN's lower bound of the background range (`background_floor`, §2.3: "the lower
threshold of 0.1 appears to act as a heuristic for hard example mining") ignores the
easiest negatives. The RPN also makes positive, for each ground-truth box, the anchors of
highest IoU with it, even below the threshold ("the anchor/anchors with the highest IoU
overlap with a ground-truth box"), so that no object is left without an anchor. Same
results as torchvision's `Matcher`, ties included, when `background_floor` is 0.
"""

from __future__ import annotations

from torch import Tensor


class Matcher:
    """IoU-threshold matcher.

    Args:
        high_threshold: best IoU >= this is a match.
        low_threshold: best IoU < this (and >= `background_floor`) is background
            (`BACKGROUND`); in [low_threshold, high_threshold) it is `IGNORED`.
        allow_low_quality_matches: also match, for every ground-truth box, the predictions
            of highest IoU with it (all of them when several tie).
        background_floor: best IoU < this is `IGNORED` rather than background (0 keeps
            every low-IoU prediction as background).
    """

    BACKGROUND = -1
    IGNORED = -2

    def __init__(
        self,
        high_threshold: float,
        low_threshold: float,
        allow_low_quality_matches: bool = False,
        *,
        background_floor: float = 0.0,
    ) -> None:
        if not background_floor <= low_threshold <= high_threshold:
            raise ValueError(
                f"thresholds must satisfy background_floor {background_floor} <= "
                f"low_threshold {low_threshold} <= high_threshold {high_threshold}"
            )
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches
        self.background_floor = background_floor

    def __call__(self, iou: Tensor) -> Tensor:
        """Match predictions to ground truth.

        Args:
            iou: (M ground-truth, N predictions) IoU matrix; M >= 1 and N >= 1 (an image
                without objects has no matches to make: label all its predictions background).

        Returns:
            (N,) int64: the matched ground-truth index in 0..M-1, or -1 (`BACKGROUND`) or -2
            (`IGNORED`).
        """
        if iou.numel() == 0:
            raise ValueError(
                "Matcher needs at least one ground-truth box and one prediction, "
                f"got an IoU matrix of shape {tuple(iou.shape)}"
            )
        best_iou, matched_gt_index = iou.max(dim=0)  # (N,), (N,)
        best_gt_before_thresholds = matched_gt_index.clone()
        matched_gt_index[best_iou < self.low_threshold] = self.BACKGROUND
        between = (best_iou >= self.low_threshold) & (best_iou < self.high_threshold)
        matched_gt_index[between | (best_iou < self.background_floor)] = self.IGNORED
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
