"""Stage timing from outside the model: each stage gets the time of its parts, a part
inside another is moved to its own stage, and the stages add up to the whole forward."""

import time

import pytest
import torch
from torch import nn

from seglab.bench.stages import (
    PER_REGION_FEATURES,
    SHARED_FEATURES,
    STAGES,
    ForwardTimer,
    time_stages,
)

# seconds each part sleeps per forward
PROPOSALS, BACKBONE, ROI_POOL, HEADS_REST, OUTSIDE = 0.020, 0.030, 0.015, 0.010, 0.025
SLACK = 0.030  # what a loaded machine may add to a sleep (never less than asked)


class Sleeps(nn.Module):
    def __init__(self, seconds, inner=None):
        super().__init__()
        self.seconds, self.inner = seconds, inner

    def forward(self, *args):
        time.sleep(self.seconds)
        return self.inner() if self.inner is not None else None


class RoIHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.box_roi_pool = Sleeps(ROI_POOL)

    def forward(self):
        self.box_roi_pool()
        time.sleep(HEADS_REST)


class Detector(nn.Module):
    """The parts of `TwoStageDetector`, each sleeping a known time; resizing and
    post-processing sleep outside them."""

    def __init__(self):
        super().__init__()
        self.backbone = Sleeps(BACKBONE)
        self.proposal_generator = Sleeps(PROPOSALS)
        self.roi_heads = RoIHeads()
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        time.sleep(OUTSIDE)
        self.backbone()
        self.proposal_generator()
        self.roi_heads()
        return [{}]


def assert_about(measured, expected):
    assert expected <= measured < expected + SLACK, (measured, expected)


def test_shared_features_stages():
    model = Detector()
    stages = time_stages(model, [torch.zeros(3, 8, 8)] * 2, SHARED_FEATURES)
    assert model.calls == 3  # one warm-up forward, then one per image
    assert_about(stages["proposal_s"], PROPOSALS)
    assert_about(stages["features_s"], BACKBONE)
    assert_about(stages["heads_s"], ROI_POOL + HEADS_REST)
    assert_about(stages["post_s"], OUTSIDE)
    assert sum(stages[s] for s in STAGES) == pytest.approx(stages["total_s"])


def test_per_region_features_move_the_roi_pool_to_features():
    stages = time_stages(Detector(), [torch.zeros(3, 8, 8)], PER_REGION_FEATURES)
    assert_about(stages["features_s"], BACKBONE + ROI_POOL)
    assert_about(stages["heads_s"], HEADS_REST)
    assert_about(stages["post_s"], OUTSIDE)


def test_timer_names_missing_parts_and_removes_its_hooks():
    model = Detector()
    with pytest.raises(ValueError, match="no submodules \\['rpn'\\]"):
        ForwardTimer(model, ["rpn"])
    timer = ForwardTimer(model, ["backbone"])
    model([None])
    assert_about(timer.seconds["backbone"], BACKBONE)
    timer.remove()
    timer.reset()
    model([None])
    assert timer.seconds["backbone"] == 0.0
