"""train.schedule=cosine_budget: the minutes are planned into steps once, at the end of the
warmup, and from there the run follows steps: the cosine over the plan, recorded in the run,
continued by a resume and rerun bit for bit by `schedule: cosine` over as many steps."""

from __future__ import annotations

import json
import types

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from seglab import evaluation
from seglab.data.shapes import generate_shapes
from seglab.engine import trainer
from seglab.engine.budget import PLAN_MARGIN, StepClock, plan_steps
from seglab.engine.checkpoint import read_checkpoint
from seglab.engine.config import TrainConfig, config_from_dict
from seglab.engine.optim import lr_factor
from seglab.errors import UserError
from seglab.models.classification.cnn import CNNClassifier

SECONDS_PER_STEP = 5.0  # the fake clock's advance per optimizer step
EVAL_SECONDS = 10.0  # the fake estimate of one evaluation pass


def plan_seconds(cfg: TrainConfig, *, step, elapsed_s, step_s, eval_s, steps) -> float:
    """What a plan of `steps` costs, counted pass by pass: the evaluations at multiples of
    eval_every after `step`, and the final one when the last step is not such a multiple."""
    evaluations = steps // cfg.eval_every - step // cfg.eval_every + (steps % cfg.eval_every > 0)
    return elapsed_s + (steps - step) * step_s + evaluations * eval_s


@pytest.mark.parametrize("eval_every, eval_s", [(10, 2.0), (1000, 2.0), (7, 0.0), (3, 9.0)])
def test_the_plan_fits_the_minutes_with_its_evaluations(eval_every, eval_s):
    cfg = TrainConfig(schedule="cosine_budget", max_steps=10_000, max_minutes=1,
                      eval_every=eval_every)  # fmt: skip
    measured = {"step": 10, "elapsed_s": 5.0, "step_s": 0.5, "eval_s": eval_s}
    plan = plan_steps(cfg, **measured)
    budget = 60 * cfg.max_minutes
    cost = plan_seconds(cfg, **measured, steps=plan.steps)
    assert cost <= (1 - PLAN_MARGIN) * budget
    # and it uses the budget: what it leaves unused is less than a step and an evaluation
    assert (1 - PLAN_MARGIN) * budget - cost < measured["step_s"] + eval_s


def test_the_plan_is_bounded_by_max_steps_and_by_the_step_it_is_made_at():
    cfg = TrainConfig(schedule="cosine_budget", max_steps=100, max_minutes=10)
    fast = plan_steps(cfg, step=10, elapsed_s=1.0, step_s=0.01, eval_s=0.0)
    assert fast.steps == 100 and "train.max_steps=100 fits the budget" in fast.describe(cfg)
    spent = plan_steps(cfg, step=10, elapsed_s=700.0, step_s=0.5, eval_s=0.0)
    assert spent.steps == 10  # the budget is gone: the run ends where it is


def test_the_step_time_is_measured_over_the_second_half_of_the_warmup():
    clock = StepClock(TrainConfig(warmup_steps=20), start_step=0)
    times = {step: 100.0 + 2.0 * step for step in range(1, 21)}  # step 1 took 102 s
    assert [clock.observe(step, times[step]) for step in range(1, 20)] == [None] * 19
    assert clock.observe(20, times[20]) == pytest.approx(2.0)
    resumed = StepClock(TrainConfig(warmup_steps=20), start_step=14)  # its first step is 15
    assert resumed.observe(15, 0.0) is None and resumed.observe(20, 10.0) == pytest.approx(2.0)
    unwarmed = StepClock(TrainConfig(warmup_steps=0), start_step=0)
    assert unwarmed.observe(1, 3.0) == pytest.approx(3.0)  # the one step there is


def test_budget_lr_is_the_cosine_over_the_plan_and_stays_zero_past_it():
    plan, warmup = 70, 10
    budget = lr_factor(TrainConfig(schedule="cosine_budget", max_steps=1000, max_minutes=1,
                                   warmup_steps=warmup), lambda: plan)  # fmt: skip
    cosine = lr_factor(TrainConfig(schedule="cosine", max_steps=plan, warmup_steps=warmup))
    assert [budget(step) for step in range(plan + 1)] == [cosine(step) for step in range(plan + 1)]
    after_warmup = [budget(step) for step in range(warmup, 3 * plan)]
    assert all(b <= a for a, b in zip(after_warmup, after_warmup[1:], strict=False))
    assert after_warmup[plan - warmup :] == [0.0] * (2 * plan)  # never rises again
    given = lr_factor(TrainConfig(schedule="cosine_budget", max_steps=1000, max_minutes=1,
                                  warmup_steps=warmup, planned_steps=plan))  # fmt: skip
    assert [given(step) for step in range(plan + 1)] == [cosine(step) for step in range(plan + 1)]


def test_without_minutes_in_code_it_is_the_step_cosine():
    # the lineage benchmark's --steps runs replace max_minutes by None in a budgeted recipe
    budget = lr_factor(TrainConfig(schedule="cosine_budget", max_steps=100))
    steps = lr_factor(TrainConfig(schedule="cosine", max_steps=100))
    assert [budget(s) for s in (0, 30, 100)] == [steps(s) for s in (0, 30, 100)]


def test_refused_without_max_minutes(shapes_root):
    with pytest.raises(UserError, match="train.schedule=cosine_budget needs train.max_minutes"):
        make_config(shapes_root, max_minutes=None)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes(root / "classify", task="classify", train=8, val=4, size=32, seed=0)


def make_config(root, **train):
    train_section = {
        "batch_size": 4, "lr": 0.01, "optimizer": "sgd", "max_steps": 1000, "max_minutes": 2,
        "warmup_steps": 10, "schedule": "cosine_budget", "eval_every": 1000,
        "checkpoint_every": 12, "log_every": 1, "workers": 0, "device": "cpu",
    }  # fmt: skip
    train_section.update(train)
    raw = {
        "seed": 3,
        "model": {"name": "cnn", "widths": [4], "hidden": 4},
        "data": {"root": str(root), "layout": "folders", "image_size": 32, "hflip": 0.5},
        "train": train_section,
    }
    return config_from_dict(raw)


@pytest.fixture
def fake_clock(monkeypatch):
    """The trainer's clock reads SECONDS_PER_STEP per optimizer step taken (however often it
    is read), an evaluation pass is estimated at EVAL_SECONDS; yields the lr of each step."""
    used: list[float] = []
    steps = {"taken": 0}

    def before_step(optimizer, args, kwargs):
        used.append(optimizer.param_groups[0]["lr"])
        steps["taken"] += 1

    hook = register_optimizer_step_pre_hook(before_step)
    clock = types.SimpleNamespace(monotonic=lambda: SECONDS_PER_STEP * steps["taken"])
    monkeypatch.setattr(trainer, "time", clock)
    monkeypatch.setattr(evaluation, "seconds_per_pass", lambda *args, **kwargs: EVAL_SECONDS)
    yield used
    hook.remove()


# 2 minutes at 5 s per step: planned at step 10 (50 s spent), 114 s of the budget usable
# (5% margin), 10 s for the final evaluation: 54 s, 10 more steps.
PLANNED = 20


def test_the_run_plans_at_the_end_of_warmup_records_the_plan_and_follows_it(
    shapes_root, tmp_path, fake_clock
):
    run_dir, lines = tmp_path / "run", []
    metrics = trainer.train(make_config(shapes_root), run_dir, progress=False,
                            report=lines.append)  # fmt: skip
    assert metrics["step"] == PLANNED
    assert [line for line in lines if line.startswith("budget plan:")] == [
        f"budget plan: {PLANNED} steps (what fits the budget of 2 min; 5.000 s/step measured, "
        f"1 evaluation(s) of ~10.0 s); recorded as train.planned_steps, rerun it with "
        f"--set train.planned_steps={PLANNED}"
    ]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["planned_steps"] == PLANNED
    assert read_checkpoint(run_dir / "checkpoint.pt")["run_state"]["planned_steps"] == PLANNED
    cosine = lr_factor(TrainConfig(schedule="cosine", max_steps=PLANNED, warmup_steps=10))
    assert fake_clock == [0.01 * cosine(step) for step in range(PLANNED)]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["split"] == "train"][-1]["lr"] == 0.0


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def assert_same_weights(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_the_recorded_plan_reruns_bit_for_bit(shapes_root, tmp_path, fake_clock):
    trainer.train(make_config(shapes_root), tmp_path / "planned", progress=False)
    rerun = make_config(shapes_root, schedule="cosine", max_steps=PLANNED)
    trainer.train(rerun, tmp_path / "cosine", progress=False)
    given = make_config(shapes_root, planned_steps=PLANNED, max_minutes=1e-3)  # never measured
    trainer.train(given, tmp_path / "given", progress=False)  # but the minutes are a hard stop
    assert_same_weights(weights(tmp_path / "planned"), weights(tmp_path / "cosine"))
    assert read_checkpoint(tmp_path / "given" / "checkpoint.pt")["run_state"]["step"] == 1


class Interrupt(KeyboardInterrupt):
    pass


def test_a_resume_continues_the_recorded_plan(shapes_root, tmp_path, monkeypatch, fake_clock):
    config = make_config(shapes_root)
    trainer.train(config, tmp_path / "straight", progress=False)
    original, calls = CNNClassifier.forward_with_losses, {"train": 0}

    def dies_in_step_15(self, images, targets):  # checkpointed at 12, after the plan
        calls["train"] += self.training
        if calls["train"] == 15:
            raise Interrupt
        return original(self, images, targets)

    with monkeypatch.context() as patch:
        patch.setattr(CNNClassifier, "forward_with_losses", dies_in_step_15)
        with pytest.raises(Interrupt):
            trainer.train(config, tmp_path / "resumed", progress=False)
    # a slower machine now: a plan made again would be shorter; the recorded one is kept
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(monotonic=lambda: 0.0))
    metrics = trainer.train(config, tmp_path / "resumed", progress=False)
    assert metrics["step"] == PLANNED
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))


def test_a_resume_with_another_budget_plans_again(shapes_root, tmp_path, fake_clock):
    run_dir, lines = tmp_path / "run", []
    trainer.train(make_config(shapes_root), run_dir, progress=False)
    longer = make_config(shapes_root, max_minutes=3)
    metrics = trainer.train(longer, run_dir, progress=False, report=lines.append)
    # planned after step 21, 105 s in (5 s per step on average): 56 s left after the final
    # evaluation of 171 s usable
    assert metrics["step"] == 32
    assert any(line.startswith("budget plan: 32 steps") for line in lines)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["planned_steps"] == 32


def test_the_plan_leaves_time_for_the_evaluations(shapes_root, tmp_path, fake_clock):
    config = make_config(shapes_root, eval_every=5)  # 2 s per step for each of them
    metrics = trainer.train(config, tmp_path / "run", progress=False)
    # 54 s left after the final evaluation, 5 s per step and 10 s per 5 steps: 7 more steps
    assert metrics["step"] == 17
    measured = {"step": 10, "elapsed_s": 50.0, "step_s": SECONDS_PER_STEP, "eval_s": EVAL_SECONDS}
    assert plan_seconds(config.train, **measured, steps=17) <= 120  # evaluations at 15 and 17
