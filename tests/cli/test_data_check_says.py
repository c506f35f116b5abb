"""`seglab data check` says what it knows (issue 22): counts that add up, one name per
fault in every layout, how mixed images are read, why a split cannot be read."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from seglab.cli.main import main
from seglab.data.shapes import generate_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return {
        task: generate_shapes(root / task, task=task, train=6, val=2, size=32, seed=3)
        for task in ("instance", "semantic", "classify")
    }


def rows_of(out: str) -> dict[str, list[str]]:
    """First cell -> the other cells of every table line (cells: 2 or more spaces apart)."""
    cells = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if line.strip()]
    return {row[0]: row[1:] for row in cells}


def check(capsys, root) -> tuple[int, str, str]:
    code = main(["data", "check", str(root), "-q"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def truncate(path) -> None:
    path.write_bytes(path.read_bytes()[:120])  # the header reads, the pixels do not


@pytest.mark.parametrize(
    "task, image",
    [("classify", "train/circle"), ("semantic", "train/images"), ("instance", "train")],
)
def test_an_unreadable_image_has_one_name_and_the_counts_add_up(shapes, task, image, tmp_path,
                                                               capsys):  # fmt: skip
    root = shutil.copytree(shapes[task], tmp_path / task)
    files = sorted((root / image).glob("*.png"))
    truncate(files[0])  # fails when its pixels are read
    files[1].write_bytes(b"not a png")  # fails when its header is read
    code, out, err = check(capsys, root)
    assert code == 2
    rows = rows_of(out)
    modes = [name for name in rows if name in ("RGB 8-bit", "unreadable")]
    train = [int(rows[name][0]) for name in modes]
    assert rows["unreadable"][0] == "1" and int(rows["images"][0]) == sum(train)
    assert rows["left out (problems)"][0] == "1"
    listed = 6 if task != "classify" else len(list((root / "train").rglob("*.png")))
    assert int(rows["images"][0]) + 1 == listed  # every file is read or left out
    if task == "classify":  # an image per class: the classes add up to the images
        classes = sum(int(rows[name][0]) for name in ("circle", "square", "triangle"))
        assert int(rows["images per class"][0]) == classes == int(rows["images"][0])
    assert rows["unreadable image"][:3] == ["stops training", "2", "0"]
    assert "file that fails to decode" not in out
    assert err.strip().endswith("(unreadable image); fix the files listed above")


def test_mixed_bit_depths_and_grey_say_how_they_are_read(shapes, tmp_path, capsys):
    root = shutil.copytree(shapes["instance"], tmp_path / "mixed")
    files = sorted((root / "train").glob("*.png"))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 4000, (32, 32), dtype=np.uint16)).save(files[0])
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(files[1])
    code, out, _ = check(capsys, root)
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("mixed images")]
    assert line == (
        "mixed images (RGB 8-bit, gray 16-bit, gray 8-bit): read with 3 channels, grey ones "
        "copied into 3 equal channels (data.channels: 1 reads the colour ones as their luma "
        "instead); each scaled to 0..1 by its own type (8-bit / 255, 16-bit / 65535), so a "
        "16-bit image of small values reads dark beside 8-bit ones; data.intensity_range "
        "maps one range for all"
    )
    code, out, _ = check(capsys, shapes["instance"])  # one kind of image: no such line
    assert code == 0 and "mixed images" not in out


def test_a_split_that_cannot_be_read_says_why(shapes, tmp_path, capsys):
    root = shutil.copytree(shapes["instance"], tmp_path / "bad_val")
    (root / "val.json").write_text("{not json")
    code, out, err = check(capsys, root)
    assert code == 2
    assert f"val split cannot be read: {root / 'val.json'}: malformed JSON (" in out
    rows = rows_of(out)
    assert rows["split that cannot be read"][:3] == ["stops training", "0", "1"]
    assert "left out (problems)" not in rows  # a split is no file left out
    assert json.loads((root / "train.json").read_text())  # the train split is still read
    assert rows["images"][0] == "6"
