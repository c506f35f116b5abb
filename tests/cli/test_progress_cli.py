"""What each command shows of its progress in a log (stderr not a terminal), and --quiet.

Under pytest stderr is captured, so it is not a terminal: commands print plain progress
lines (one at the end of each loop here, the loops being shorter than the interval), never
a bar's redraws; `--quiet` leaves only what the command reports.
"""

from __future__ import annotations

import pytest
from PIL import Image

import seglab
from seglab.cli.main import main
from seglab.data.shapes import generate_shapes


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    data = generate_shapes(root / "data", task="classify", train=4, val=3, size=32, seed=0)
    model = seglab.build_model("cnn", num_classes=3, widths=[4], hidden=0)
    config = {"data": {"root": str(data), "layout": "folders", "image_size": 32}}
    names = ["circle", "square", "triangle"]
    seglab.save_model(model.eval(), root / "model.safetensors", class_names=names, config=config)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "image.png")
    return root, data


def commands(root, data) -> dict[str, list[str]]:
    train_settings = {"model.widths": "[4]", "model.hidden": "0", "data.image_size": "32",
                      "train.batch_size": "2", "train.max_steps": "2", "train.warmup_steps": "0",
                      "train.workers": "0", "train.device": "cpu",
                      "data.root": str(data)}  # fmt: skip
    overrides = [arg for item in train_settings.items() for arg in ("--set", "=".join(item))]
    model = str(root / "model.safetensors")
    return {
        "train": ["train", "cnn_shapes", "--out", str(root / "run"), *overrides],
        "eval": ["eval", model, "--data", str(data), "--out", str(root / "m.json")],
        "predict": ["predict", model, str(root / "image.png"), "--out", str(root / "p")],
    }


@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_progress_lines_in_a_log_and_none_with_quiet(files, capsys, command, tmp_path):
    root, data = files
    argv = commands(root, data)[command]
    argv[argv.index("--out") + 1] = str(tmp_path / "out")  # a fresh output for each run
    assert main(argv) == 0
    shown = capsys.readouterr()
    lines = shown.err.splitlines()
    assert any(line.startswith(f"{command}: ") and "(100%)" in line for line in lines), lines
    if command == "train":  # cnn_shapes has a 2-minute budget: the time used of it is shown
        assert any(line.startswith("train: ") and "budget=0.0/2 min" in line for line in lines)
    assert "\r" not in shown.err  # no bar redraws in a log
    argv[argv.index("--out") + 1] = str(tmp_path / "quiet")
    assert main([*argv, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""
    assert len(quiet.out.splitlines()) == len(shown.out.splitlines())  # the report is unchanged


def test_data_commands_show_progress_in_a_log_and_none_with_quiet(files, tmp_path, capsys):
    assert main(["data", "shapes", str(tmp_path / "s"), "--train", "1", "--val", "1", "-q"]) == 0
    assert capsys.readouterr().err == ""
    _, data = files
    assert main(["data", "check", str(data)]) == 0
    shown = capsys.readouterr()
    assert any(line.startswith("check: ") and "(100%)" in line for line in shown.err.splitlines())
    assert main(["data", "check", str(data), "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert "check: " not in quiet.err and quiet.out == shown.out
