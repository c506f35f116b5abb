"""Output paths that cannot be written: one line, exit code 2, before any work is done.

Two kinds of unwritable paths are tried, as a user meets them:
- a file where a folder should be (`--out FILE/m.json`): in process, through `main`;
- a folder without write permission. Root may write anywhere whatever the mode bits, and
  the suite may run as root (CI containers do), so those commands run in a subprocess as
  the unprivileged user `nobody` when the tests are root; as any other user the mode bits
  alone refuse. Either way the kernel refuses the process, as it would refuse a user.
  `nobody` imports a copy of the package in a folder every user can read, since the clone
  may sit in a folder only its owner can enter (a `mktemp -d` folder, mode 0700).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import seglab
from seglab.cli.main import main
from seglab.data.shapes import generate_shapes
from seglab.errors import UserError
from seglab.files import check_output_file, check_output_folder
from seglab.inference import predictor

NOBODY = 65534


@pytest.fixture(scope="module")
def world_readable_dir():
    """A folder every user can read (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="seglab-out-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def inputs(world_readable_dir):
    """Classify data, a classifier trained on it (weights at init) and one image."""
    root = world_readable_dir
    data = generate_shapes(root / "data", task="classify", train=2, val=3, size=32, seed=0)
    model = seglab.build_model("cnn", num_classes=3, widths=[4], hidden=0)
    config = {"data": {"root": str(data), "layout": "folders", "image_size": 32}}
    names = ["circle", "square", "triangle"]
    seglab.save_model(model.eval(), root / "model.safetensors", class_names=names, config=config)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "image.png")
    return {"data": data, "model": root / "model.safetensors", "image": root / "image.png"}


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"seglab {argv[0]}: error: ")
    return err


@pytest.fixture()
def no_work(monkeypatch):
    """Any evaluation, model loading or training fails the test: the check comes first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr("seglab.evaluation.evaluate_model", forbidden)  # cli/eval imports it
    monkeypatch.setattr("seglab.evaluation.evaluate_files", forbidden)  # when it runs
    monkeypatch.setattr(predictor, "collect_inputs", forbidden)
    monkeypatch.setattr("seglab.models.zoo.load_model", forbidden)
    monkeypatch.setattr("seglab.engine.trainer.train", forbidden)


def test_a_file_where_an_output_folder_should_be(inputs, tmp_path, capsys, no_work):
    file = tmp_path / "FILE"
    file.write_text("")
    model, data, image = str(inputs["model"]), str(inputs["data"]), str(inputs["image"])
    cases = {
        "eval": ["eval", model, "--data", data, "--out", f"{file}/m.json"],
        "eval --gt": ["eval", "--gt", "g.json", "--pred", "p.json", "--out", f"{file}/m.json"],
        "eval --plot": ["eval", model, "--data", data, "--plot", f"{file}/sub/c.png"],
        "predict": ["predict", model, image, "--out", f"{file}/sub"],
        "train": ["train", "cnn_shapes", "--out", f"{file}/run", "--set", f"data.root={data}"],
        "data": ["data", "shapes", f"{file}/sub", "--train", "1", "--val", "1"],
        "convert": [
            "convert",
            "torchvision",
            "in.pth",
            f"{file}/m.safetensors",
            "--arch",
            "faster_rcnn_resnet50_fpn",
        ],  # fmt: skip
    }
    for name, argv in cases.items():
        line = one_line_error(capsys, argv)
        assert f"{file} is a file, not a folder" in line, (name, line)
    assert file.read_text() == ""


def test_an_output_file_that_is_a_folder(inputs, tmp_path, capsys, no_work):
    line = one_line_error(capsys, ["eval", str(inputs["model"]), "--data", str(inputs["data"]),
                                   "--out", str(tmp_path)])  # fmt: skip
    assert f"{tmp_path}: --out is a folder; give a file name" in line
    (tmp_path / "file").write_text("")
    line = one_line_error(capsys, ["predict", str(inputs["model"]), str(inputs["image"]),
                                   "--out", str(tmp_path / "file")])  # fmt: skip
    assert "--out is a file; give a folder" in line


def test_check_output_paths_create_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_output_folder(target) == target
    assert check_output_file(target / "m.json") == target / "m.json"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="f is a file, not a folder; choose another OUT"):
        check_output_file(tmp_path / "f" / "x" / "m.json", "OUT")


SCRIPT = """
import contextlib, io, json, sys
import seglab.engine.trainer, seglab.evaluation, seglab.inference.predictor
from seglab.cli.main import main

def forbidden(*args, **kwargs):
    raise AssertionError("work started before the output path was checked")

seglab.evaluation.evaluate_model = seglab.inference.predictor.collect_inputs = forbidden
seglab.engine.trainer.train = forbidden
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def unprivileged_prefix() -> list[str]:
    """The command prefix that runs a program as `nobody` when we are root, else nothing.

    util-linux's `setpriv` drops root's privileges (user, groups, capabilities) at the
    program's start; unlike `subprocess.run(user=...)` it still reaches an interpreter
    installed under root's home (pyenv), whose folder `nobody` may not open.
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without util-linux's setpriv to become another user")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def readable_package(folder: Path) -> Path:
    """A copy of the seglab package under `folder`, readable by every user; returns the
    folder to put on PYTHONPATH. The installed package may be in a folder other users
    cannot enter (a clone in a 0700 folder), where `nobody` could not import it."""
    copy = folder / "site" / "seglab"
    if not copy.exists():
        shutil.copytree(Path(seglab.__file__).parent, copy,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for path in [copy.parent, *copy.rglob("*")]:  # copies keep the source's 0600 / 0700
        path.chmod(0o755 if path.is_dir() else 0o644)
    return copy.parent


def unprivileged_environment(home: Path) -> dict[str, str]:
    """The environment of the `nobody` process: its own home, the readable package first
    on the path; skips the test when `nobody` cannot import that copy (then the
    interpreter or the dependencies themselves are out of its reach)."""
    path = [str(readable_package(home.parent)), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home),
           "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    imports = "import seglab.cli.main, seglab.engine.trainer; print(seglab.__file__)"  # SCRIPT's
    probe = subprocess.run([*unprivileged_prefix(), sys.executable, "-c", imports],
                           capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.skip(f"the unprivileged user cannot import a readable copy of seglab: {why}")
    assert probe.stdout.strip().startswith(path[0]), probe.stdout  # the copy, not the clone
    return env


def run_unprivileged(commands: list[list[str]], home: Path) -> list[tuple[int, str]]:
    """Run each `seglab` argv in one Python process as `nobody` (when we are root)."""
    env = unprivileged_environment(home)
    script = [sys.executable, "-c", textwrap.dedent(SCRIPT), json.dumps(commands)]
    completed = subprocess.run(
        [*unprivileged_prefix(), *script], capture_output=True, text=True, env=env, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    return [tuple(result) for result in json.loads(completed.stdout)]


def test_an_output_folder_without_write_permission(inputs, world_readable_dir):
    home = world_readable_dir / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)  # the process's own files (matplotlib's cache) go here
    locked = world_readable_dir / "locked"
    locked.mkdir()
    locked.chmod(0o555)  # readable, not writable: an output folder someone else owns
    model, data, image = str(inputs["model"]), str(inputs["data"]), str(inputs["image"])
    commands = {
        "train": ["train", "cnn_shapes", "--out", f"{locked}/run", "--set", f"data.root={data}"],
        "eval": ["eval", model, "--data", data, "--out", f"{locked}/m.json"],
        "predict": ["predict", model, image, "--out", f"{locked}/predictions"],
        "data": ["data", "shapes", f"{locked}/shapes", "--train", "1", "--val", "1"],
    }
    results = run_unprivileged(list(commands.values()), home)
    for (name, argv), (code, err) in zip(commands.items(), results, strict=True):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (name, err)
        assert lines[0].startswith(f"seglab {argv[0]}: error: {locked}/"), (name, err)
        assert "ermission" in lines[0], (name, err)  # "no permission" / "Permission denied"
    assert list(locked.iterdir()) == []  # nothing written, not even an empty run folder
