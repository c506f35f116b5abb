"""train.schedule=cosine_budget: the cosine follows whichever budget ends the run (steps or
the wall clock), is refused without max_minutes, and resumes from the run's elapsed time."""

from __future__ import annotations

import json
import math
import types

import pytest
from torch.optim.optimizer import register_optimizer_step_pre_hook

from seglab.data.shapes import generate_shapes
from seglab.engine import trainer
from seglab.engine.config import TrainConfig, config_from_dict
from seglab.engine.optim import lr_factor
from seglab.errors import UserError

SECONDS_PER_STEP = 5.0  # the fake clock's advance per optimizer step


def test_progress_is_the_larger_of_steps_and_minutes():
    cfg = TrainConfig(schedule="cosine_budget", max_steps=100, max_minutes=1)
    elapsed = {"s": 0.0}
    factor = lr_factor(cfg, lambda: elapsed["s"])
    assert factor(0) == pytest.approx(1.0)
    elapsed["s"] = 30.0  # half the minute, 10 of 100 steps: time leads
    assert factor(10) == pytest.approx(0.5)
    elapsed["s"] = 60.0  # the budget is spent long before max_steps
    assert factor(12) == pytest.approx(0.0, abs=1e-12)
    elapsed["s"] = 6.0  # a fast machine: 75 of 100 steps in a tenth of the minute
    assert factor(75) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes(root / "classify", task="classify", train=8, val=4, size=32, seed=0)


def make_config(root, **train):
    train_section = {
        "batch_size": 4, "lr": 0.01, "optimizer": "sgd", "max_steps": 1000, "max_minutes": 1,
        "schedule": "cosine_budget", "eval_every": 1000, "checkpoint_every": 4, "log_every": 1,
        "workers": 0, "device": "cpu",
    }  # fmt: skip
    train_section.update(train)
    raw = {
        "seed": 3,
        "model": {"name": "cnn", "widths": [4], "hidden": 4},
        "data": {"root": str(root), "layout": "folders", "image_size": 32},
        "train": train_section,
    }
    return config_from_dict(raw)


@pytest.fixture
def lrs_used(monkeypatch):
    """The lr of each optimizer step; the trainer's clock reads SECONDS_PER_STEP per step
    taken (however often it is read)."""
    used: list[float] = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: used.append(optimizer.param_groups[0]["lr"])
    )
    steps = {"taken": 0}
    hook_count = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: steps.update(taken=steps["taken"] + 1)
    )
    clock = types.SimpleNamespace(monotonic=lambda: SECONDS_PER_STEP * steps["taken"])
    monkeypatch.setattr(trainer, "time", clock)
    yield used
    hook.remove()
    hook_count.remove()


def test_lr_reaches_zero_when_the_minutes_are_spent(shapes_root, tmp_path, lrs_used):
    run_dir = tmp_path / "run"
    metrics = trainer.train(make_config(shapes_root), run_dir, progress=False)
    # 60 s at 5 s per step: the budget ends the run at step 12, far from max_steps=1000
    assert metrics["step"] == 12
    # step k + 1 uses the factor at 5k of 60 s (the step fraction is at most 1.1%)
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * 5 * k / 60)) for k in range(12)]
    assert lrs_used == pytest.approx(expected, rel=1e-6, abs=1e-12)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["split"] == "train"][-1]
    assert last["lr"] == pytest.approx(0.0, abs=1e-12) and last["elapsed_s"] == 60


def test_resume_keeps_the_elapsed_time(shapes_root, tmp_path, lrs_used):
    run_dir = tmp_path / "run"
    trainer.train(make_config(shapes_root, max_steps=4), run_dir, progress=False)  # 20 s
    lrs_used.clear()
    metrics = trainer.train(make_config(shapes_root), run_dir, progress=False)
    assert metrics["step"] == 12  # 8 more steps: 40 s left of the minute
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * 5 * k / 60)) for k in range(4, 12)]
    assert lrs_used == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_refused_without_max_minutes(shapes_root):
    with pytest.raises(UserError, match="train.schedule=cosine_budget needs train.max_minutes"):
        make_config(shapes_root, max_minutes=None)


def test_without_minutes_in_code_it_is_the_step_cosine():
    # the lineage benchmark's --steps runs replace max_minutes by None in a budgeted recipe
    budget = lr_factor(TrainConfig(schedule="cosine_budget", max_steps=100), lambda: 1e9)
    steps = lr_factor(TrainConfig(schedule="cosine", max_steps=100))
    assert [budget(s) for s in (0, 30, 100)] == pytest.approx([steps(s) for s in (0, 30, 100)])
