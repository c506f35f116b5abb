"""`seglab data check ROOT [--layout ...]`: every file read once, a summary table, the
problems by kind, exit 2 when training would fail or learn nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from seglab.cli.main import main
from seglab.data.check import check_data
from seglab.data.shapes import generate_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return {
        task: generate_shapes(root / task, task=task, train=8, val=3, size=48, seed=1)
        for task in ("instance", "semantic", "classify")
    }


def _rows(out: str) -> dict[str, list[str]]:
    """First cell -> the other cells of every table line (cells: 2 or more spaces apart)."""
    cells = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if line.strip()]
    return {row[0]: row[1:] for row in cells}


@pytest.mark.parametrize("task", ["instance", "semantic", "classify"])
def test_clean_shapes_data_passes_with_a_summary(shapes, task, capsys):
    root = shapes[task]
    assert main(["data", "check", str(root)]) == 0  # the layout is detected
    out = capsys.readouterr().out
    layout = {"instance": "coco", "semantic": "masks", "classify": "folders"}[task]
    assert out.startswith(f"{root}: {layout} layout, 3 classes (circle, square, triangle)")
    rows = _rows(out)
    assert rows["images"] == ["8", "3"] and rows["sizes (w x h)"] == ["48x48", "48x48"]
    assert "problems: none" in out and out.rstrip().endswith(f"{root}: training can start")
    report = check_data(root)
    assert [split.modes for split in report.splits] == [{"RGB 8-bit": 8}, {"RGB 8-bit": 3}]
    if task == "instance":
        objects = [len([a for a in json.loads((root / f"{s}.json").read_text())["annotations"]
                        if not a["iscrowd"]]) for s in ("train", "val")]  # fmt: skip
        assert rows["objects"] == [str(n) for n in objects]
        counts = [rows[name] for name in ("circle", "square", "triangle")]
        assert [sum(int(c[i]) for c in counts) for i in (0, 1)] == objects


def test_broken_coco_copy_lists_every_problem_and_exits_2(shapes, tmp_path, capsys):
    root = shutil.copytree(shapes["instance"], tmp_path / "broken")
    coco = json.loads((root / "train.json").read_text())
    coco["annotations"][0]["bbox"] = [5, 5, 0, 0]
    coco["annotations"][1]["segmentation"] = [[1, 1, 2, 2]]
    (root / "train.json").write_text(json.dumps(coco))
    (root / "val" / "000001.png").write_bytes(b"not a png")
    truncated = root / "train" / "000002.png"
    truncated.write_bytes(truncated.read_bytes()[:120])  # the header reads, the pixels do not
    assert main(["data", "check", str(root), "--layout", "coco"]) == 2
    captured = capsys.readouterr()
    rows = {line.split("  ")[0]: line for line in captured.out.splitlines()}
    assert "val/000001.png" in rows["unreadable image"]
    assert "stops training" in rows["unreadable image"]
    # the same fault, the same name, whether the header or the pixels fail to read
    assert "train/000002.png" in rows["unreadable image"] and " 1    1 " in rows["unreadable image"]
    assert "train.json annotation 1" in rows["zero-area box"] and "dropped" in rows["zero-area box"]
    assert "train.json annotation 2" in rows["polygon with fewer than 3 points"]
    # the stopping problems come first
    kinds = [line.split("  ")[0] for line in captured.out.splitlines()]
    assert kinds.index("unreadable image") < kinds.index("zero-area box")
    assert captured.err.strip().splitlines()[-1] == (
        f"seglab data: error: {root}: training would fail or learn nothing (unreadable "
        "image); fix the files listed above"
    )


def test_data_that_teaches_nothing_exits_2(shapes, tmp_path, capsys):
    root = shutil.copytree(shapes["semantic"], tmp_path / "empty")
    for path in (root / "train" / "masks").glob("*.png"):
        Image.fromarray(np.zeros((48, 48), dtype=np.uint8)).save(path)
    assert main(["data", "check", str(root)]) == 2
    out = capsys.readouterr().out
    assert "nothing to learn" in out and "stops training" in out
    one_class = tmp_path / "one_class"
    shutil.copytree(shapes["classify"] / "train" / "circle", one_class / "train" / "circle")
    shutil.copytree(shapes["classify"] / "val" / "circle", one_class / "val" / "circle")
    assert main(["data", "check", str(one_class)]) == 2
    assert "images of 1 class only" not in capsys.readouterr().out  # folded into the table
    report = check_data(one_class)
    assert report.stops and "nothing to learn" in report.general.by_kind


def test_mask_values_option_and_missing_split(shapes, tmp_path, capsys):
    root = shutil.copytree(shapes["semantic"], tmp_path / "levels")
    for path in root.glob("*/masks/*.png"):
        Image.fromarray((np.asarray(Image.open(path)) * 60).astype(np.uint8)).save(path)
    assert main(["data", "check", str(root)]) == 2  # 60, 120, 180 are no class indices
    assert "mask value that is no class" in capsys.readouterr().out
    assert main(["data", "check", str(root), "--mask-values", "0", "60", "120", "180"]) == 0
    capsys.readouterr()
    shutil.rmtree(root / "val")  # no val split: training runs without validation
    assert main(["data", "check", str(root), "--mask-values", "0", "60", "120", "180"]) == 0
    assert "no val split: training runs without validation" in capsys.readouterr().out
    shutil.rmtree(root / "train")
    (root / "val").mkdir()
    assert main(["data", "check", str(root), "--layout", "masks"]) == 2
    assert "missing split" in capsys.readouterr().out


def test_bad_root_and_undetectable_layout_are_one_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"seglab data: error: {tmp_path / 'nowhere'}: data root not found"
    )
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "give --layout coco, masks or folders" in capsys.readouterr().err


def test_as_a_user_runs_it(shapes, tmp_path):
    """The real process: table on stdout, one error line on stderr, exit status 2."""
    root = shutil.copytree(shapes["semantic"], tmp_path / "stray")
    mask = root / "val" / "masks" / "000000.png"
    Image.fromarray(np.full((48, 48), 7, dtype=np.uint8)).save(mask)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "seglab.cli.main", "data", "check", str(root)],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "mask value that is no class" in result.stdout
    assert "val/masks/000000.png" in result.stdout
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        f"seglab data: error: {root}: training would fail or learn nothing (mask value that is "
        "no class); fix the files listed above"
    ]
