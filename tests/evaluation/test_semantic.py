"""Semantic metrics: hand-computed values, exact dataset-level accumulation."""

from __future__ import annotations

import pytest
import torch

from seglab.evaluation.confusion import ConfusionMatrix
from seglab.evaluation.semantic import semantic_metrics


def test_metrics_against_hand_computed_values():
    confusion = ConfusionMatrix(3)
    confusion.update(torch.tensor([[0, 1, 1], [1, 2, 1]]), torch.tensor([[0, 0, 1], [2, 255, 1]]))
    metrics = semantic_metrics(confusion.matrix, ["background", "circle", "square"])
    # class 0: TP 1, FP 0, FN 1 -> IoU 1/2, Dice 2/3
    # class 1: TP 2, FP 2, FN 0 -> IoU 2/4, Dice 4/6
    # class 2: TP 0, FP 0, FN 1 -> IoU 0,   Dice 0
    assert metrics["per_class"] == {
        "background": {"iou": pytest.approx(0.5), "dice": pytest.approx(2 / 3)},
        "circle": {"iou": pytest.approx(0.5), "dice": pytest.approx(2 / 3)},
        "square": {"iou": 0.0, "dice": 0.0},
    }
    assert metrics["mIoU"] == pytest.approx(1 / 3)
    assert metrics["dice"] == pytest.approx(4 / 9)
    assert metrics["pixel_accuracy"] == pytest.approx(3 / 5)


def test_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    confusion = ConfusionMatrix(4)
    confusion.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]))
    metrics = semantic_metrics(confusion.matrix, ["background", "a"])
    # IoU: background 2/3, a 1/2; classes 2 and 3 absent -> None, named by index.
    assert metrics["per_class"]["2"] == {"iou": None, "dice": None}
    assert metrics["per_class"]["3"] == {"iou": None, "dice": None}
    assert metrics["mIoU"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_accumulation_is_exact_not_an_average_over_images():
    # Image 1: 1 pixel of class 1, predicted right (IoU_1 = 1); image 2: 99 pixels of
    # class 1, 49 predicted right and 50 as background.
    images = [
        (torch.tensor([1, 0, 0, 0]), torch.tensor([1, 0, 0, 0])),
        (torch.tensor([1] * 49 + [0] * 50 + [0]), torch.tensor([1] * 99 + [0])),
    ]
    confusion = ConfusionMatrix(2)
    per_image_miou = []
    for predicted, target in images:
        confusion.update(predicted, target)
        single = ConfusionMatrix(2)
        single.update(predicted, target)
        per_image_miou.append(semantic_metrics(single.matrix, [])["mIoU"])
    exact = semantic_metrics(confusion.matrix, [])
    # Whole dataset: class 1 TP 50, FN 50 -> 1/2; background TP 4, FN 0, FP 50 -> 4/54.
    assert exact["mIoU"] == pytest.approx((50 / 100 + 4 / 54) / 2)
    averaged = sum(per_image_miou) / len(per_image_miou)  # (1 + (49/99 + 1/51)/2) / 2
    assert averaged == pytest.approx((1 + (49 / 99 + 1 / 51) / 2) / 2)
    assert abs(exact["mIoU"] - averaged) > 0.2


def test_nothing_counted_gives_zeros():
    confusion = ConfusionMatrix(2)
    confusion.update(torch.tensor([0, 1]), torch.tensor([255, 255]))
    metrics = semantic_metrics(confusion.matrix, ["background", "a"])
    assert (metrics["mIoU"], metrics["dice"], metrics["pixel_accuracy"]) == (0.0, 0.0, 0.0)
