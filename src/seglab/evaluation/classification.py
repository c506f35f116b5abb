"""Classification metrics: top-1 accuracy, per-class recall, confusion matrix, top-k."""

from __future__ import annotations

import torch

from seglab.evaluation.confusion import ConfusionMatrix
from seglab.evaluation.semantic import class_labels

__all__ = ["ConfusionMatrix", "classification_metrics", "topk_correct"]


def classification_metrics(matrix: torch.Tensor, class_names: list[str]) -> dict:
    """Accuracy, per-class recall and the confusion matrix from (K, K) image counts.

    Args:
        matrix: (K, K) int64 counts, rows true class, columns predicted class.
        class_names: names of classes 0..K-1.

    Returns:
        {"accuracy", "per_class_recall": {name: recall or None when the class has no
        image}, "confusion_matrix": K lists of K ints}.
    """
    correct = matrix.diagonal().sum()
    total = matrix.sum()
    per_class_total = matrix.sum(dim=1)
    recall = {
        name: float(matrix[k, k] / per_class_total[k]) if per_class_total[k] > 0 else None
        for k, name in enumerate(class_labels(class_names, len(matrix)))
    }
    return {
        "accuracy": float(correct / total) if total > 0 else 0.0,
        "per_class_recall": recall,
        "confusion_matrix": matrix.tolist(),
    }


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    """How many of the N images have their label among the k highest logits.

    Args:
        logits: (N, K) scores.
        labels: (N,) int64 true classes.
        k: clipped to K.
    """
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices  # (N, k)
    return int((top == labels[:, None]).any(dim=1).sum())
