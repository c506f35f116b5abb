"""`seglab train cnn_shapes` with the shipped recipe's schedule (cosine_budget, 50 warmup steps,
a 2-minute budget): two runs with one seed end with equal weights, and a run killed with
SIGKILL after a checkpoint, then resumed, ends with the uninterrupted run's weights.

Only the data and the number of steps are reduced: max_steps binds long before the minutes,
so the plan made at the end of the warmup is max_steps on any machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from seglab.cli.main import main
from seglab.data.shapes import generate_shapes
from seglab.engine.checkpoint import checkpoint_step

STEPS, CHECKPOINT = 64, 55  # the checkpoint after the plan (step 50), killed before the end


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "classify"
    return generate_shapes(root, task="classify", train=48, val=8, size=48, seed=0)


def command(shapes_root, run_dir) -> list[str]:
    settings = {"data.root": shapes_root, "train.max_steps": STEPS, "train.batch_size": 8,
                "train.checkpoint_every": CHECKPOINT, "train.device": "cpu"}  # fmt: skip
    overrides = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return ["train", "cnn_shapes", "--out", str(run_dir), *overrides, "--quiet"]


def assert_same_weights(first, second):
    first, second = (load_file(str(run / "model.safetensors")) for run in (first, second))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_two_runs_with_one_seed_end_with_equal_weights(shapes_root, tmp_path):
    for run in ("first", "second"):
        assert main(command(shapes_root, tmp_path / run)) == 0
    assert_same_weights(tmp_path / "first", tmp_path / "second")
    saved = yaml.safe_load((tmp_path / "first" / "config.yaml").read_text())
    assert saved["train"]["schedule"] == "cosine_budget"
    assert saved["train"]["planned_steps"] == STEPS


def test_sigkill_after_a_checkpoint_then_resume_ends_as_the_uninterrupted_run(
    shapes_root, tmp_path
):
    assert main(command(shapes_root, tmp_path / "straight")) == 0
    run = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "seglab", *command(shapes_root, run)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoint.pt").is_file():  # written atomically: whole once there
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)  # no handler runs: the power cut of a run
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert checkpoint_step(run) == CHECKPOINT  # killed between its checkpoint and the end
    assert main(["train", "--out", str(run), "--quiet"]) == 0  # the run's own config.yaml
    assert checkpoint_step(run) == STEPS
    assert_same_weights(tmp_path / "straight", run)
