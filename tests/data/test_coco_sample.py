"""COCO data opens from its JSON and the headers of a seeded sample of its images (issue 23
part 4): what opening reads, and that an image outside the sample with a problem is one
error line when a step meets it, while `seglab data check` still reads every header."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from seglab.data import DataConfig, Findings, build_dataset, coco
from seglab.data import images as images_module
from seglab.data.listing import sample_indices
from seglab.errors import UserError

SAMPLE = 4  # image headers read when opening, in these tests (the library's: 64)
COUNT = 12


@pytest.fixture(autouse=True)
def small_sample(monkeypatch):
    monkeypatch.setattr(coco, "SAMPLE", SAMPLE)


def _coco_data(root: Path) -> Path:
    """COUNT 20x16 train images, one 8x8 box each, and the same JSON entries."""
    (root / "train").mkdir(parents=True)
    images, annotations = [], []
    for index in range(COUNT):
        Image.new("RGB", (20, 16), (index, 0, 0)).save(root / "train" / f"{index:03d}.png")
        images.append({"id": index, "file_name": f"{index:03d}.png", "height": 16, "width": 20})
        annotations.append({"id": index, "image_id": index, "category_id": 1,
                            "bbox": [2, 2, 8, 8], "area": 64, "iscrowd": 0})  # fmt: skip
    gt = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}
    (root / "train.json").write_text(json.dumps(gt))
    return root


def _build(root: Path, **kwargs):
    cfg = DataConfig(root=str(root), layout="coco")
    return build_dataset(cfg, "train", task="detection", train=True, **kwargs)


@pytest.fixture
def headers(monkeypatch) -> list[str]:
    """The names of the files whose header is read."""
    calls, real = [], images_module.read_header

    def recorded(path, *args):
        calls.append(Path(path).name)
        return real(path, *args)

    monkeypatch.setattr(images_module, "read_header", recorded)
    return calls


def _outside_sample() -> int:
    return sorted(set(range(COUNT)) - set(sample_indices(COUNT, SAMPLE).tolist()))[0]


def test_opening_reads_the_headers_of_the_sample_and_data_check_reads_all(tmp_path, headers):
    root = _coco_data(tmp_path)
    dataset = _build(root)
    sampled = [f"{index:03d}.png" for index in sample_indices(COUNT, SAMPLE)]
    assert sorted(headers) == sampled and len(dataset) == COUNT and dataset.in_channels == 3
    headers.clear()
    _build(root, findings=Findings())  # seglab data check's way
    assert len(headers) == COUNT


def test_an_entry_without_its_size_is_read_when_opened(tmp_path, headers):
    root = _coco_data(tmp_path)
    gt = json.loads((root / "train.json").read_text())
    outside = _outside_sample()
    del gt["images"][outside]["height"]  # the boxes are clipped to the size: read it
    (root / "train.json").write_text(json.dumps(gt))
    _build(root)
    assert f"{outside:03d}.png" in headers and len(headers) == SAMPLE + 1


@pytest.mark.parametrize(
    "fault, kind, message",
    [
        ("missing", "missing image file", "cannot read image|not found|No such file"),
        ("size", "image size differs from the JSON", "image is 12x16 .* but the JSON says 20x16"),
    ],
)
def test_a_bad_image_outside_the_sample_fails_on_load_and_data_check_finds_it(
    tmp_path, fault, kind, message
):
    root = _coco_data(tmp_path)
    outside = _outside_sample()
    path = root / "train" / f"{outside:03d}.png"
    if fault == "missing":
        path.unlink()
    else:
        Image.new("RGB", (12, 16)).save(path)
    dataset = _build(root)  # opening does not meet it
    with pytest.raises(UserError, match=message) as error:
        dataset[outside]
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    findings = Findings()
    _build(root, findings=findings)
    assert findings.by_kind[kind].places == [str(path)]
