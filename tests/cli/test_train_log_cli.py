"""RUN/train.log: what `seglab train` printed (warnings, progress, summary), kept with the
run and appended to by a resume."""

from __future__ import annotations

import subprocess
import sys

import pytest

from seglab.data.shapes import generate_shapes


@pytest.fixture(scope="module")
def classify_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes(root / "classify", task="classify", train=8, val=4, size=32, seed=0)


def seglab_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seglab", "train", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_train_log_holds_what_was_printed_and_a_resume_appends(classify_root, tmp_path):
    run = tmp_path / "run"
    options = ["--set", f"data.root={classify_root}", "--set", "train.workers=0",
               "--set", "train.eval_every=2", "--set", "train.log_every=2"]  # fmt: skip
    first = seglab_train("cnn_shapes", "--out", str(run), "--set", "train.max_steps=2", *options)
    assert first.returncode == 0, first.stderr
    printed = first.stdout.splitlines() + first.stderr.splitlines()
    logged = (run / "train.log").read_text().splitlines()
    assert sorted(logged) == sorted(printed)
    assert any(line.startswith("seglab train: warning: train.warmup_steps=") for line in logged)
    assert logged[-2] == f"weights: {run / 'model.safetensors'} (best: {run / 'best.safetensors'})"
    assert logged[-1].startswith("ended: train.max_steps=2 reached")  # what ended the run

    resumed = seglab_train("--out", str(run), "--set", "train.max_steps=4")
    assert resumed.returncode == 0, resumed.stderr
    logged_again = (run / "train.log").read_text().splitlines()
    assert logged_again[: len(logged)] == logged
    assert f"resuming {run} from {run / 'checkpoint.pt'} (step 2)" in logged_again[len(logged) :]
    assert any(f"{run}: step 4; " in line for line in logged_again)
