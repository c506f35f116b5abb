"""A confusion matrix accumulated exactly (integer counts) over a whole dataset.

Used for semantic segmentation (one count per pixel) and classification (one per image).
Metrics computed from the summed counts are exact dataset-level figures, unlike averages of
per-batch or per-image figures.
"""

from __future__ import annotations

import torch

from seglab.errors import UserError
from seglab.structures.masks import IGNORE_INDEX


class ConfusionMatrix:
    """Counts of (true class, predicted class) pairs: rows are ground truth, columns prediction.

    Args:
        num_classes: C; classes are 0..C-1.
        ignore_index: target value that is not counted (255: "void" pixels).
    """

    def __init__(self, num_classes: int, *, ignore_index: int | None = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """Add the pairs of `predicted` and `target` (same shape, int class indices)."""
        if predicted.shape != target.shape:
            raise ValueError(f"prediction {tuple(predicted.shape)} vs target {tuple(target.shape)}")
        predicted = predicted.reshape(-1).to("cpu", torch.int64)
        target = target.reshape(-1).to("cpu", torch.int64)
        if self.ignore_index is not None:
            kept = target != self.ignore_index
            predicted, target = predicted[kept], target[kept]
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            raise UserError(
                f"ground truth has class index {int(target.max())} but the model predicts "
                f"{self.num_classes} classes (0..{self.num_classes - 1}, {self.ignore_index} "
                "ignored); check the data against the model"
            )
        if predicted.numel() and (predicted.min() < 0 or predicted.max() >= self.num_classes):
            raise ValueError(f"predicted class indices must be in 0..{self.num_classes - 1}")
        # One bin per (true, predicted) pair: index = true * C + predicted.
        counts = torch.bincount(
            target * self.num_classes + predicted, minlength=self.num_classes**2
        )
        self.matrix += counts.reshape(self.num_classes, self.num_classes)
