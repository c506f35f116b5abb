"""Semantic segmentation metrics from a dataset-level confusion matrix.

Per class c, from the pixel counts summed over the whole dataset (rows ground truth,
columns prediction): TP = M[c, c], FP = column sum - TP, FN = row sum - TP, and

    IoU_c  = TP / (TP + FP + FN)          Dice_c = 2 TP / (2 TP + FP + FN)

mIoU and mean Dice average over every class, background included, that occurs in the ground
truth or the prediction (torchvision's reference scripts, segmentation_models_pytorch's
"macro" reduction); a class absent from both has no IoU (null) and is left out of the mean.
Pixels labelled 255 are ignored.
"""

from __future__ import annotations

import torch

from seglab.evaluation.confusion import ConfusionMatrix

__all__ = ["ConfusionMatrix", "class_labels", "semantic_metrics"]


def semantic_metrics(matrix: torch.Tensor, class_names: list[str]) -> dict:
    """mIoU, mean Dice, pixel accuracy and per-class IoU/Dice from a (C, C) confusion matrix.

    Args:
        matrix: (C, C) int64 pixel counts, rows ground truth, columns prediction.
        class_names: names of classes 0..C-1 (background first); missing names are
            replaced by the class index as a string.

    Returns:
        {"mIoU", "dice", "pixel_accuracy", "per_class": {name: {"iou", "dice"}}}; a class
        absent from ground truth and prediction has iou and dice None.
    """
    matrix = matrix.to(torch.float64)
    true_positives = matrix.diagonal()
    false_positives = matrix.sum(dim=0) - true_positives
    false_negatives = matrix.sum(dim=1) - true_positives
    union = true_positives + false_positives + false_negatives
    present = union > 0
    iou = true_positives / union.clamp(min=1)
    dice = 2 * true_positives / (union + true_positives).clamp(min=1)
    total = matrix.sum()
    per_class = {
        name: {
            "iou": float(iou[c]) if present[c] else None,
            "dice": float(dice[c]) if present[c] else None,
        }
        for c, name in enumerate(class_labels(class_names, len(matrix)))
    }
    return {
        "mIoU": float(iou[present].mean()) if present.any() else 0.0,
        "dice": float(dice[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": float(true_positives.sum() / total) if total > 0 else 0.0,
        "per_class": per_class,
    }


def class_labels(class_names: list[str], num_classes: int) -> list[str]:
    """`num_classes` labels: the given names, then class indices as strings."""
    return [
        class_names[index] if index < len(class_names) else str(index)
        for index in range(num_classes)
    ]
