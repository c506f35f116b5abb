"""Matcher: hand cases and equality with torchvision's Matcher, ties included."""

import pytest
import torch
from torchvision.models.detection._utils import Matcher as TorchvisionMatcher

from seglab.ops.matcher import Matcher


def test_hand_thresholds_and_low_quality_matches():
    iou = torch.tensor(
        [
            [0.9, 0.5, 0.1, 0.0, 0.25],  # gt 0
            [0.2, 0.65, 0.2, 0.0, 0.25],  # gt 1: best 0.65 is below 0.7
        ]
    )
    strict = Matcher(0.7, 0.3, allow_low_quality_matches=False)
    assert strict(iou).tolist() == [0, Matcher.IGNORED, Matcher.BACKGROUND, -1, -1]
    lenient = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    assert lenient(iou).tolist() == [0, 1, -1, -1, -1]


def test_low_quality_ties_are_all_matched():
    iou = torch.tensor([[0.2, 0.2, 0.1], [0.0, 0.05, 0.1]])
    # gt 0's best (0.2) is shared by predictions 0 and 1; gt 1's best (0.1) by prediction 2,
    # which goes to its own best gt: 0 (tie 0.1 vs 0.1 -> the first)
    assert Matcher(0.7, 0.3, True)(iou).tolist() == [0, 0, 0]


@pytest.mark.parametrize("allow_low", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_equal_to_torchvision_on_random_matrices_with_ties(allow_low, seed):
    generator = torch.Generator().manual_seed(seed)
    # quantised IoUs make ties frequent
    iou = (torch.rand(5, 60, generator=generator) ** 3 * 10).floor() / 10
    ours = Matcher(0.7, 0.3, allow_low)(iou)
    theirs = TorchvisionMatcher(0.7, 0.3, allow_low)(iou)
    assert torch.equal(ours, theirs)
    assert {-1, -2} <= set(ours.tolist())


def test_fast_rcnn_background_range_ignores_the_easiest_negatives():
    """Fast R-CNN §2.3: foreground IoU >= 0.5, background IoU in [0.1, 0.5), below 0.1
    neither (ignored); the range is closed at 0.1 and open at 0.5."""
    iou = torch.tensor([[0.0, 0.05, 0.0999, 0.1, 0.3, 0.4999, 0.5, 0.9]])
    matched = Matcher(0.5, 0.5, background_floor=0.1)(iou)
    ignored, background = Matcher.IGNORED, Matcher.BACKGROUND
    assert matched.tolist() == [ignored] * 3 + [background] * 3 + [0, 0]
    assert Matcher(0.5, 0.5)(iou).tolist() == [background] * 6 + [0, 0]  # no floor


def test_empty_and_bad_thresholds():
    with pytest.raises(ValueError):
        Matcher(0.7, 0.3)(torch.zeros(0, 5))
    with pytest.raises(ValueError):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError):
        Matcher(0.5, 0.5, background_floor=0.6)
