"""train.patience / train.min_delta: a run stops at the evaluation that finds it converged
(Keras' EarlyStopping rule, engine/convergence.py), says so in its last line, and stops at
the same step with the same weights after a kill and a resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from tests.engine.test_trainer import interrupt_training_at
from tests.engine.test_trainer import make_config as trainer_config

from seglab import evaluation
from seglab.cli.main import main
from seglab.data.shapes import generate_shapes
from seglab.engine import convergence
from seglab.engine.budget import end_reason
from seglab.engine.checkpoint import RunState, checkpoint_step, read_checkpoint
from seglab.engine.config import TrainConfig, config_warnings
from seglab.engine.trainer import train
from seglab.errors import SeglabWarning


def stop_index(values, *, patience, min_delta):
    """The index of the evaluation at which the rule is met, None if never."""
    cfg, state = TrainConfig(patience=patience, min_delta=min_delta), RunState()
    for index, value in enumerate(values):
        state.step = index
        convergence.observe(state, cfg, value)
        if convergence.converged(cfg, state):
            return index
    return None


# min_delta and the values are multiples of 1/8: exact in binary, so each gain compared with
# min_delta is the one written here
@pytest.mark.parametrize("values, patience, min_delta, expected", [
    ([0.5, 0.5, 0.5], 2, 0.0, 2),  # the first evaluation sets the best, two more do not beat it
    ([0.5, 0.75, 0.75], 2, 0.25, 2),  # a gain equal to min_delta is no gain (Keras: >)
    ([0.5, 0.875, 0.875, 0.875], 2, 0.25, 3),  # a gain above min_delta is the new best
    ([0.5, 0.5, 0.625, 0.5, 0.5, 0.5], 3, 0.0, 5),  # a gain restarts the count
    ([0.5, 0.25, 0.375, 0.5], 3, 0.0, 3),  # a fall, and a rise back to the best: no gain
    ([0.25, 0.5, 0.625, 0.75], 1, 0.0, None),  # rising every time: never
    ([0.5, 0.5, 0.5, 0.5], None, 0.0, None),  # train.patience null: off
])  # fmt: skip
def test_the_rule_counts_evaluations_without_a_gain_above_min_delta(
    values, patience, min_delta, expected
):
    assert stop_index(values, patience=patience, min_delta=min_delta) == expected


def test_the_converged_line_gives_the_figures_of_the_rule():
    plateau = convergence.Plateau(metric="mIoU", best=0.83125, best_step=1500, evaluations=3)
    budget = TrainConfig(schedule="cosine_budget", max_steps=20000, max_minutes=5, patience=3,
                         min_delta=0.001)  # fmt: skip
    assert end_reason(budget, step=3000, elapsed_s=174.0, planned=4400, plateau=plateau) == (
        "ended: converged (val mIoU 0.8313 at step 1500, not bettered by more than 0.001 in "
        "the 3 evaluations since (train.patience=3); stopped at step 3000 of the 4400 planned "
        "for 5 min, after 2.9)"
    )
    steps = TrainConfig(schedule="cosine", max_steps=5000, patience=3)
    assert end_reason(steps, step=3000, elapsed_s=174.0, planned=None, plateau=plateau) == (
        "ended: converged (val mIoU 0.8313 at step 1500, not bettered by more than 0 in the 3 "
        "evaluations since (train.patience=3); stopped at step 3000 of train.max_steps=5000)"
    )
    one = convergence.Plateau(metric="segm.AP", best=0.5, best_step=500, evaluations=1)
    assert convergence.describe(TrainConfig(patience=1), one) == (
        "val segm.AP 0.5000 at step 500, not bettered by more than 0 in the evaluation since "
        "(train.patience=1)"
    )
    # a run converged at the evaluation where its budget ends anyway: the budget ended it
    assert end_reason(budget, step=4400, elapsed_s=290.0, planned=4400, plateau=plateau) == (
        "ended: budget used (the 4400 steps planned for 5 min, done in 4.8)"
    )


def make_config(root, **train):
    """The trainer tests' tiny CNN run, for 40 steps with an evaluation every 2."""
    return trainer_config(root, **{"max_steps": 40, "eval_every": 2, "checkpoint_every": 5,
                                   **train})  # fmt: skip


# accuracy at the evaluations of steps 2, 4, 6, ...: best 0.8 at step 8; 0.805 is a gain of
# 0.005, under min_delta 0.01; the third evaluation without a gain is step 14's
SCRIPTED = [0.5, 0.75, 0.75, 0.8, 0.8, 0.805, 0.8, 0.9, 0.9, 0.9]


def test_the_run_stops_at_the_evaluation_that_meets_the_rule(shapes_root, tmp_path, monkeypatch):
    accuracies = iter(SCRIPTED)
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: {"accuracy": next(accuracies)})
    run = tmp_path / "run"
    result = train(make_config(shapes_root, patience=3, min_delta=0.01, checkpoint_every=100),
                   run, progress=False)  # fmt: skip
    assert result["step"] == 14 and checkpoint_step(run) == 14  # saved where it stopped
    assert result["ended"] == (
        "ended: converged (val accuracy 0.8000 at step 8, not bettered by more than 0.01 in the "
        "3 evaluations since (train.patience=3); stopped at step 14 of train.max_steps=40)"
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "val"] == list(range(2, 15, 2))
    assert max(r["step"] for r in records if r["split"] == "train") == 14
    state = read_checkpoint(run / "checkpoint.pt")["run_state"]
    assert (state["plateau_best"], state["plateau_step"], state["plateau_evals"]) == (0.8, 8, 3)


def test_a_run_stopped_between_its_evaluations_logs_and_saves_its_last_step(
    shapes_root, tmp_path, monkeypatch
):
    """eval_every 3, log_every 2, checkpoint_every 100: the converged step 9 is neither a
    logging nor a checkpoint step, and is both once it is the last."""
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: {"accuracy": 0.5})
    run = tmp_path / "run"
    config = make_config(shapes_root, patience=2, eval_every=3, checkpoint_every=100)
    assert train(config, run, progress=False)["step"] == 9
    assert checkpoint_step(run) == 9
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records if r["split"] == "train") == 9


class Crash(Exception):
    """A process dying mid-step: no handler saves anything (as SIGKILL)."""


def test_a_killed_run_resumes_and_stops_at_the_same_step_with_the_same_weights(
    shapes_root, tmp_path, monkeypatch
):
    """Real evaluations; no gain of accuracy can exceed min_delta 1, so the rule is met at
    the third evaluation (step 6) whatever the accuracies. The crash comes after the
    checkpoint of step 5, which holds one evaluation without a gain (step 4's): a resume
    that restarted the count, or lost the best, would stop at step 8."""
    config = make_config(shapes_root, patience=2, min_delta=1.0)
    straight = train(config, tmp_path / "straight", progress=False)
    assert straight["step"] == 6 and straight["ended"].startswith("ended: converged (")

    with monkeypatch.context() as patch:
        interrupt_training_at(patch, 6, Crash)
        with pytest.raises(Crash):
            train(config, tmp_path / "resumed", progress=False)
    assert checkpoint_step(tmp_path / "resumed") == 5
    assert read_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["run_state"][
        "plateau_evals"] == 1  # fmt: skip
    resumed = train(config, tmp_path / "resumed", progress=False)
    assert resumed == straight  # the step, every metric and the last line

    for name in ("model.safetensors", "best.safetensors"):
        first, second = (load_file(str(tmp_path / run / name)) for run in ("straight", "resumed"))
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), (name, key)


def test_a_converged_run_is_finished_and_says_why_again(shapes_root, tmp_path, capsys):
    config = make_config(shapes_root, patience=1, min_delta=1.0)
    first = train(config, tmp_path / "run", progress=False)
    assert first["step"] == 4
    assert train(config, tmp_path / "run", progress=False) == first  # not trained again
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == first["ended"]
    assert f"{tmp_path / 'run'}: already finished (converged; --set train.patience=null, or a " \
           "larger one, trains it on within its budget)" in printed  # fmt: skip


def test_a_converged_run_resumed_without_patience_ends_as_a_run_without_it(shapes_root, tmp_path):
    """The rule decides only where a run stops, not what its steps do: taken off on resume,
    the run trains on to max_steps and ends with the weights of a run that never had it."""
    steps = {"max_steps": 10, "checkpoint_every": 100}
    converged = train(make_config(shapes_root, patience=1, min_delta=1.0, **steps),
                      tmp_path / "run", progress=False)  # fmt: skip
    assert converged["step"] == 4
    resumed = train(make_config(shapes_root, **steps), tmp_path / "run", progress=False)
    plain = train(make_config(shapes_root, **steps), tmp_path / "plain", progress=False)
    assert resumed["step"] == plain["step"] == 10
    assert resumed["ended"] == plain["ended"] == "ended: train.max_steps=10 reached"
    first, second = (
        load_file(str(tmp_path / run / "model.safetensors")) for run in ("run", "plain")
    )
    for key in first:
        assert torch.equal(first[key], second[key]), key


SMALL = {"model.widths": "[4]", "model.hidden": "4", "data.image_size": "32",
         "train.batch_size": "4", "train.max_steps": "2", "train.device": "cpu"}  # fmt: skip


@pytest.mark.parametrize("override, problem", [
    ("train.patience=0", "train.patience must be positive (the evaluations without a gain "
                         "before the run stops) or null, got 0"),
    ("train.patience=-3", "train.patience must be positive"),
    ("train.patience=2.5", "train.patience must be int | None, got 2.5"),
    ("train.patience=true", "train.patience must be int | None, got True"),
    ("train.patience=soon", "train.patience must be int | None, got 'soon'"),
    ("train.min_delta=-0.01", "train.min_delta must be a finite number >= 0 (the least gain of "
                              "the metric that counts), got -0.01"),
    ("train.min_delta=.nan", "train.min_delta must be a finite number >= 0"),
    ("train.min_delta=.inf", "train.min_delta must be a finite number >= 0"),
    ("train.min_delta=small", "train.min_delta must be float, got 'small'"),
])  # fmt: skip
def test_bad_values_are_one_line_and_exit_2(shapes_root, tmp_path, capsys, override, problem):
    overrides = [f"data.root={shapes_root}", *(f"{k}={v}" for k, v in SMALL.items()), override]
    argv = ["train", "cnn_shapes", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*argv, *(arg for o in overrides for arg in ("--set", o))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"seglab train: error: --set {override}: ")
    assert problem in lines[0]
    assert not (tmp_path / "run").exists()


def test_patience_without_a_val_split_is_said_and_the_run_uses_its_budget(tmp_path):
    root = generate_shapes(tmp_path / "data", task="classify", train=8, val=2, size=32, seed=0)
    shutil.rmtree(root / "val")
    with pytest.warns(SeglabWarning, match="no val split.*; train.patience is unused: the run "
                      "uses its budget"):  # fmt: skip
        result = train(make_config(root, patience=1, max_steps=6), tmp_path / "run",
                       progress=False)  # fmt: skip
    assert result["ended"] == "ended: train.max_steps=6 reached"


def test_patience_that_can_never_stop_the_run_is_said():
    config = make_config("unused", patience=3, eval_every=100, max_steps=100)
    assert any("no evaluation before the end, so the run never stops as converged" in message
               for message in config_warnings(config))  # fmt: skip
    assert not config_warnings(make_config("unused", patience=3))
