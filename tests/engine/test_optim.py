"""Warmup then cosine or step schedule; weight decay only on weights."""

from __future__ import annotations

import math

import pytest
import torch

from seglab.engine.config import TrainConfig
from seglab.engine.optim import WARMUP_START, build_optimizer, build_scheduler, lr_factor


def test_linear_warmup_then_cosine_to_zero():
    factor = lr_factor(TrainConfig(max_steps=110, warmup_steps=10))
    assert factor(0) == pytest.approx(WARMUP_START)
    assert factor(5) == pytest.approx(WARMUP_START + (1 - WARMUP_START) * 0.5)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5)  # half-way through the cosine
    assert factor(110) == pytest.approx(0.0, abs=1e-12)
    assert factor(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 25 / 100)))


def test_step_schedule_multiplies_by_gamma_at_each_milestone():
    factor = lr_factor(TrainConfig(schedule="step", milestones=(5, 8), gamma=0.1))
    assert [factor(step) for step in (0, 4, 5, 7, 8, 100)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


def test_scheduler_state_round_trip_ignores_the_old_max_steps():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, TrainConfig(max_steps=10, lr=1.0))
    scheduler = build_scheduler(optimizer, TrainConfig(max_steps=10, lr=1.0))
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    longer = TrainConfig(max_steps=20, lr=1.0)
    resumed = build_scheduler(build_optimizer(model, longer), longer)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.last_epoch == 5
    resumed.step()  # the next step follows the new schedule, not the checkpointed lambda
    assert resumed.get_last_lr()[0] == pytest.approx(lr_factor(longer)(6))
    assert lr_factor(longer)(6) != pytest.approx(lr_factor(TrainConfig(max_steps=10))(6))


@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_optimizer_kinds_and_no_decay_on_biases(name, kind):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    optimizer = build_optimizer(model, TrainConfig(optimizer=name, weight_decay=0.5))
    assert isinstance(optimizer, kind)
    decays = {len(group["params"]): group["weight_decay"] for group in optimizer.param_groups}
    assert decays == {1: 0.5, 3: 0.0}  # conv weight | conv bias, BN weight, BN bias


@pytest.mark.parametrize(
    "name, reference", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)]
)
def test_fused_optimizers_update_like_the_per_parameter_loop(name, reference):
    """Same parameter groups, same hyper-parameters, same update as PyTorch's reference loop.

    Both optimizers are fed the same gradients (drawn, not back-propagated): gradients from a
    forward/backward pass hold elements of about 1e-7 that are rounding noise, and Adam turns
    those into steps of about +-lr whatever their sign, so a last-bit difference between CPUs
    would move weights by a good part of lr. Drawn gradients of unit scale carry signal, and
    the two updates then agree to a few float32 ulps of the parameters.
    """
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    twin.load_state_dict(model.state_dict())
    cfg = TrainConfig(optimizer=name, lr=0.01, weight_decay=0.1)
    fused = build_optimizer(model, cfg)
    groups = [
        {"params": [twin[0].weight], "weight_decay": 0.1},
        {"params": [twin[0].bias, *twin[1].parameters()], "weight_decay": 0.0},
    ]
    extra = {"betas": (0.9, 0.999)} if name == "adamw" else {"momentum": 0.9}
    loop = reference(groups, lr=0.01, foreach=False, **extra)
    draws = torch.Generator().manual_seed(1)
    for _ in range(3):  # a new gradient each step: Adam's moments then depend on the betas
        for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
            ours.grad = torch.randn(ours.shape, generator=draws)
            theirs.grad = ours.grad.clone()
        fused.step()
        loop.step()
    assert fused.defaults["fused"]
    for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        # one step moves a parameter by about lr = 1e-2; a wrong decay group (1e-3 * value
        # per step) or wrong betas move it by more than 1e-4, float32 rounding by about 1e-8
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
