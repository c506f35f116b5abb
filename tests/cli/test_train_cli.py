"""`seglab train`: runs, resumes, and refuses bad input with one line and exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from seglab.cli.main import main
from seglab.data.shapes import generate_shapes
from seglab.engine.checkpoint import checkpoint_step
from seglab.models.classification.cnn import CNNClassifier

SETTINGS = {
    "model.widths": "[4, 8]",
    "model.hidden": "8",
    "data.image_size": "32",
    "train.batch_size": "4",
    "train.max_steps": "2",
    "train.warmup_steps": "0",
    "train.eval_every": "2",
    "train.checkpoint_every": "1",
    "train.workers": "0",
    "train.device": "cpu",
}
TINY = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
TINY.append("--no-progress")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "classify"
    return generate_shapes(root, task="classify", train=8, val=4, size=32, seed=0)


def test_train_a_shipped_recipe_then_resume(shapes_root, tmp_path, capsys):
    args = ["train", "cnn_shapes", "--out", str(tmp_path / "run"), "--set",
            f"data.root={shapes_root}", *TINY]  # fmt: skip
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "step 2; loss=" in first and "accuracy=" in first
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert main([*args, "--set", "train.max_steps=3"]) == 0
    second = capsys.readouterr().out
    assert "resuming" in second and "(step 2)" in second
    assert "step 3;" in second
    assert main([*args, "--set", "train.max_steps=3"]) == 0
    assert "already finished" in capsys.readouterr().out


def error_of(capsys, args):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "resuming" not in captured.out  # said only once the resume is accepted
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seglab train: error: ")
    return lines[0]


def write_config(tmp_path, shapes_root, **changes):
    raw = yaml.safe_load(open("configs/cnn_shapes.yaml"))  # noqa: SIM115
    raw["data"]["root"] = str(shapes_root)
    for section, values in changes.items():
        raw[section].update(values) if isinstance(values, dict) else raw.update({section: values})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_missing_config_file(tmp_path, capsys):
    line = error_of(capsys, ["train", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "r")])
    assert "none.yaml: config file not found" in line


def test_unknown_recipe(tmp_path, capsys):
    line = error_of(capsys, ["train", "cnn_shapez", "--out", str(tmp_path / "r")])
    assert "cnn_shapez: no such config file or shipped recipe" in line and "cnn_shapes" in line


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"optimiser": "sgd"}, "unknown key 'optimiser'"),
        ({"train": {"learning_rate": 0.1}}, "unknown key 'train.learning_rate'"),
        ({"model": {"layers": 3}}, "unknown key 'model.layers'"),
        ({"train": {"batch_size": "big"}}, "train.batch_size must be int, got 'big'"),
        ({"model": {"name": "vgg"}}, "unknown model name 'vgg'"),
    ],
)
def test_bad_config(shapes_root, tmp_path, capsys, changes, expected):
    path = write_config(tmp_path, shapes_root, **changes)
    line = error_of(capsys, ["train", path, "--out", str(tmp_path / "r")])
    assert expected in line and "c.yaml" in line


def test_bad_override(shapes_root, tmp_path, capsys):
    path = write_config(tmp_path, shapes_root)
    line = error_of(capsys, ["train", path, "--out", str(tmp_path / "r"), "--set", "train.lr"])
    assert "expected key=value" in line


def test_out_is_a_file(shapes_root, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    path = write_config(tmp_path, shapes_root)
    line = error_of(capsys, ["train", path, "--out", str(tmp_path / "file"), *TINY])
    assert "--out is a file" in line


def test_missing_data_root(tmp_path, capsys):
    path = write_config(tmp_path, tmp_path / "no-data")
    line = error_of(capsys, ["train", path, "--out", str(tmp_path / "r" / "run"), *TINY])
    assert "no-data" in line
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.layout=cocoo", "data.layout must be one of coco, masks, folders"),
        ("data.vflip=2", "data.vflip is a probability in [0, 1], not 2"),
        ("data.elastic=true", "data.elastic: only for semantic segmentation"),
    ],
)
def test_data_values_are_checked_when_the_config_is_read(
    shapes_root, tmp_path, capsys, monkeypatch, override, expected
):
    monkeypatch.setattr("seglab.data.datasets.build_dataset", None)  # no data may be read first
    path = write_config(tmp_path, shapes_root)
    line = error_of(capsys, ["train", path, "--out", str(tmp_path / "r"), "--set", override])
    assert f"c.yaml: {expected}" in line
    assert not (tmp_path / "r").exists()


def test_out_alone_resumes_from_the_runs_config(shapes_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "cnn_shapes", "--out", str(run), "--set", f"data.root={shapes_root}",
                 *TINY]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--set", "train.max_steps=3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "(step 2)" in out and "step 3;" in out
    # what `seglab train --out RUN` alone refuses: a key that changes the recipe
    line = error_of(capsys, ["train", "--out", str(run), "--set", "model.dropout=0.5"])
    assert "started with model.dropout=0.1, now 0.5" in line
    assert f"resume with `seglab train --out {run}` alone" in line


def test_out_alone_without_a_run(tmp_path, capsys):
    line = error_of(capsys, ["train", "--out", str(tmp_path / "new")])
    assert f"{tmp_path / 'new'}: no config.yaml to resume from; give CONFIG" in line
    assert not (tmp_path / "new").exists()


def test_resume_accepts_what_changes_nothing(shapes_root, tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path, shapes_root)
    run = tmp_path / "run"
    assert main(["train", path, "--out", str(run), *TINY]) == 0
    lr = yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"]
    capsys.readouterr()
    monkeypatch.chdir(shapes_root.parent)
    same = [f"data.root={shapes_root}/", f"train.lr={lr}", "train.max_steps=3"]
    relative = [f"data.root=./{shapes_root.name}", "train.max_steps=4"]
    for overrides in (same, relative):
        argv = ["train", path, "--out", f"{run}/", *TINY]
        assert main([*argv, *[arg for item in overrides for arg in ("--set", item)]]) == 0
        assert "resuming" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 4


def test_settings_that_cannot_do_what_was_meant_warn_in_one_line(shapes_root, tmp_path, capsys):
    path = write_config(tmp_path, shapes_root)
    argv = ["train", path, "--out", str(tmp_path / "r"), *TINY]
    assert main([*argv, "--set", "train.warmup_steps=10"]) == 0
    lr = yaml.safe_load(open(path))["train"]["lr"]  # noqa: SIM115
    assert capsys.readouterr().err.splitlines() == [
        "seglab train: warning: train.warmup_steps=10 >= train.max_steps=2: the learning rate "
        f"never reaches train.lr={lr}"
    ]


def test_a_batch_larger_than_the_data_is_the_data_and_recorded(shapes_root, tmp_path, capsys):
    path = write_config(tmp_path, shapes_root)
    run = tmp_path / "r"
    argv = ["train", path, "--out", str(run), *TINY, "--set", "train.batch_size=64"]
    assert main(argv) == 0
    warning = "seglab train: warning: train.batch_size=64 is larger than the 8 training images; "
    assert capsys.readouterr().err.splitlines() == [
        warning + "batches of 8 are used (config.yaml records it)"
    ]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"] == 8
    assert main([*argv, "--set", "train.max_steps=3"]) == 0  # the same command resumes
    assert "resuming" in capsys.readouterr().out


def test_resume_with_a_different_config_is_refused(shapes_root, tmp_path, capsys):
    path = write_config(tmp_path, shapes_root)
    out = ["--out", str(tmp_path / "r")]
    assert main(["train", path, *out, *TINY]) == 0
    capsys.readouterr()
    line = error_of(capsys, ["train", path, *out, *TINY, "--set", "model.dropout=0.5"])
    assert "started with model.dropout=0.1, now 0.5" in line and "new --out folder" in line


def test_interrupted_run_says_how_to_resume(shapes_root, tmp_path, capsys, monkeypatch):
    original = CNNClassifier.forward_with_losses
    calls = []

    def interrupted_at_step_two(self, images, targets):
        calls.append(self.training)
        if calls.count(True) == 2:
            raise KeyboardInterrupt
        return original(self, images, targets)

    monkeypatch.setattr(CNNClassifier, "forward_with_losses", interrupted_at_step_two)
    args = ["train", "cnn_shapes", "--out", str(tmp_path / "run"), "--set",
            f"data.root={shapes_root}", *TINY]  # fmt: skip
    assert main(args) == 130
    err = capsys.readouterr().err
    assert f"stopped; `seglab train --out {tmp_path / 'run'}` resumes it from step 1" in err


def test_unknown_detector_key_is_refused_before_anything_is_built(tmp_path, capsys):
    out = tmp_path / "run"
    line = error_of(capsys, ["train", "mask_rcnn_r18_fpn_shapes", "--out", str(out), "--set",
                             "model.bogus=1", "--set", f"data.root={tmp_path}"])  # fmt: skip
    assert "unknown key 'model.bogus'; valid keys: " in line
    assert "backbone" in line and "mask_head_channels" in line
    assert not out.exists()  # refused while reading the config: no run folder, no data read


def test_resume_from_a_checkpoint_that_does_not_fit_the_model(shapes_root, tmp_path, capsys):
    path = write_config(tmp_path, shapes_root)
    out = tmp_path / "r"
    assert main(["train", path, "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    # what a checkpoint written by older architecture code looks like: a renamed layer
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    first = next(iter(checkpoint["model"]))
    checkpoint["model"]["old." + first] = checkpoint["model"].pop(first)
    torch.save(checkpoint, out / "checkpoint.pt")
    line = error_of(capsys, ["train", path, "--out", str(out), *TINY,
                             "--set", "train.max_steps=3"])  # fmt: skip
    assert f"{out / 'checkpoint.pt'}: does not match the model" in line
    assert f"missing keys: {first}" in line and f"unexpected keys: old.{first}" in line
    assert "delete the checkpoint" in line


def test_ctrl_c_in_a_terminal_saves_a_checkpoint_and_out_alone_resumes(
    shapes_root, tmp_path, capsys
):
    """`seglab train` as a user runs it: Ctrl-C sends SIGINT to the whole process group,
    data-loading worker included; nothing was checkpointed before (checkpoint_every is far)."""
    run = tmp_path / "run"
    far = "100000"
    settings = {**SETTINGS, "train.max_steps": far, "train.checkpoint_every": far,
                "train.eval_every": far, "train.log_every": "1", "train.workers": "1"}  # fmt: skip
    overrides = [arg for item in settings.items() for arg in ("--set", "=".join(item))]
    command = [sys.executable, "-m", "seglab", "train", "cnn_shapes", "--out", str(run),
               "--set", f"data.root={shapes_root}", *overrides, "--quiet"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    try:
        log = run / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (log.is_file() and log.read_text().count('"train"') >= 2):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    step = checkpoint_step(run)
    assert process.returncode == 128 + signal.SIGINT
    assert step is not None and step >= 2
    assert err.splitlines() == [
        f"{run}: stopped; `seglab train --out {run}` resumes it from step {step}",
        "seglab train: stopped by SIGINT",
    ]
    assert main(["train", "--out", str(run), "--set", f"train.max_steps={step + 1}", "-q"]) == 0
    out = capsys.readouterr().out
    assert f"resuming {run} from {run / 'checkpoint.pt'} (step {step})" in out
    assert f"step {step + 1};" in out


def test_a_run_folder_is_locked_while_a_process_trains_into_it(shapes_root, tmp_path, capsys):
    """Two `seglab train --out RUN` on one RUN: the second is refused in one line naming
    the first's pid (exit 2) before it reads or writes the run; once the first is killed
    (SIGKILL: no clean-up ran), its lock file names a dead process and does not block."""
    run = tmp_path / "run"
    far = "100000"
    # far budgets: the recipe's 2 minutes could end the first run before the kill under load
    settings = {**SETTINGS, "train.max_steps": far, "train.max_minutes": far,
                "train.checkpoint_every": far, "train.eval_every": far,
                "train.log_every": "1"}  # fmt: skip
    overrides = [arg for item in settings.items() for arg in ("--set", "=".join(item))]
    command = [sys.executable, "-m", "seglab", "train", "cnn_shapes", "--out", str(run),
               "--set", f"data.root={shapes_root}", *overrides, "--quiet"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)  # fmt: skip
    lock = run / ".lock"
    try:
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert first.poll() is None  # still training: the second did not stop it
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first_stderr = first.communicate(timeout=60)[1]
    assert first.returncode == -signal.SIGKILL, first_stderr  # killed, not ended by itself
    assert second.returncode == 2
    assert second.stderr.splitlines() == [
        f"seglab train: error: {run}: another process (pid {first.pid}) is training into this "
        f"run folder; wait for it to end, or use another --out"
    ]
    assert lock.read_text().strip() == str(first.pid)  # left behind by the killed process
    assert main(["train", "--out", str(run), "--set", "train.max_steps=1", "-q"]) == 0
    assert lock.read_text() == ""  # released at the end of the run
    assert "step 1;" in capsys.readouterr().out
