"""Weighted cross-entropy (paper eq. 1), soft Dice and their combination."""

from __future__ import annotations

import math

import pytest
import torch

from seglab.models.segmentation.losses import (
    IGNORE_INDEX,
    dice_loss,
    segmentation_losses,
    weighted_cross_entropy,
)


def test_weighted_cross_entropy_by_hand():
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0, 0] = math.log(3.0)  # pixel 0: p(class 1) = 3/4
    masks = torch.tensor([[[1, 0, IGNORE_INDEX]]])
    weights = torch.tensor([[[2.0, 5.0, 100.0]]])
    # pixel 0: -2 log(3/4); pixel 1: -5 log(1/2); pixel 2 ignored; mean over 2 labelled pixels
    expected = (-2 * math.log(0.75) - 5 * math.log(0.5)) / 2
    assert weighted_cross_entropy(logits, masks, weights).item() == pytest.approx(expected)
    plain = (-math.log(0.75) - math.log(0.5)) / 2
    assert weighted_cross_entropy(logits, masks).item() == pytest.approx(plain)


def test_dice_loss_is_zero_for_a_perfect_prediction_and_high_for_a_wrong_one():
    masks = torch.zeros(1, 8, 8, dtype=torch.int64)
    masks[0, 2:6, 2:6] = 1
    perfect = torch.nn.functional.one_hot(masks, 2).permute(0, 3, 1, 2).float() * 50
    assert dice_loss(perfect, masks).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-perfect, masks).item() > 0.9


def test_dice_loss_ignores_unlabelled_pixels():
    masks = torch.zeros(1, 4, 4, dtype=torch.int64)
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 0] = 50.0  # predicts background everywhere
    masks_with_ignored = masks.clone()
    masks_with_ignored[0, 0, :] = IGNORE_INDEX
    logits_flipped = logits.clone()
    logits_flipped[0, :, 0, :] = logits[0, :, 0, :].flip(0)  # wrong only where ignored
    torch.testing.assert_close(
        dice_loss(logits_flipped, masks_with_ignored), dice_loss(logits, masks)
    )


def test_segmentation_losses_kinds():
    logits, masks = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    assert set(segmentation_losses(logits, masks, kind="ce+dice")) == {"loss_ce", "loss_dice"}
    with pytest.raises(ValueError, match="focal"):
        segmentation_losses(logits, masks, kind="focal")
