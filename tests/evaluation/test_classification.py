"""Classification metrics against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from seglab.evaluation.classification import (
    ConfusionMatrix,
    classification_metrics,
    topk_correct,
)


def test_accuracy_recall_and_confusion_matrix():
    confusion = ConfusionMatrix(3, ignore_index=None)
    confusion.update(torch.tensor([0, 0, 1, 1, 1, 0]), torch.tensor([0, 1, 1, 1, 0, 0]))
    metrics = classification_metrics(confusion.matrix, ["cat", "dog", "eel"])
    assert metrics["confusion_matrix"] == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # eel has no image: its recall is undefined (None), not 0.
    assert metrics["per_class_recall"] == {
        "cat": pytest.approx(2 / 3),
        "dog": pytest.approx(2 / 3),
        "eel": None,
    }


def test_confusion_matrix_counts_class_255_when_nothing_is_ignored():
    confusion = ConfusionMatrix(256, ignore_index=None)
    confusion.update(torch.tensor([255]), torch.tensor([255]))
    assert int(confusion.matrix[255, 255]) == 1


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 0, 0])
    assert topk_correct(logits, labels, 1) == 1
    assert topk_correct(logits, labels, 2) == 2
    assert topk_correct(logits, labels, 5) == 3  # k clipped to K
