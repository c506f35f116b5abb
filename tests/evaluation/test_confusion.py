"""The confusion matrix: exact integer counts, rows truth, columns prediction, 255 ignored."""

from __future__ import annotations

import pytest
import torch

from seglab.errors import UserError
from seglab.evaluation.confusion import ConfusionMatrix


def test_confusion_matrix_counts_pairs_and_ignores_255():
    target = torch.tensor([[0, 0, 1], [2, 255, 1]])
    predicted = torch.tensor([[0, 1, 1], [1, 2, 1]])
    confusion = ConfusionMatrix(3)
    confusion.update(predicted, target)
    # rows: true class, columns: predicted class; the 255 pixel is not counted.
    assert confusion.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert confusion.matrix.dtype == torch.int64


def test_updates_add_up_and_without_an_ignore_index_every_value_counts():
    confusion = ConfusionMatrix(3, ignore_index=None)  # classification: one count per image
    confusion.update(torch.tensor([0, 2]), torch.tensor([0, 1]))
    confusion.update(torch.tensor([2, 2]), torch.tensor([1, 2]))
    assert confusion.matrix.tolist() == [[1, 0, 0], [0, 0, 2], [0, 0, 1]]
    with pytest.raises(UserError, match="class index 255"):
        confusion.update(torch.tensor([0]), torch.tensor([255]))


def test_prediction_and_target_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match=r"prediction \(2,\) vs target \(3,\)"):
        ConfusionMatrix(2).update(torch.tensor([0, 1]), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="predicted class indices must be in 0..1"):
        ConfusionMatrix(2).update(torch.tensor([0, 2]), torch.tensor([0, 1]))


def test_ground_truth_class_beyond_the_model_is_a_user_error():
    with pytest.raises(UserError, match="class index 5 but the model predicts 3 classes"):
        ConfusionMatrix(3).update(torch.tensor([0, 1]), torch.tensor([0, 5]))
