"""Mask and image folders open from their listings and a seeded sample of their files
(issue 23 part 4): what opening reads, that the sample is the same every time, that a bad
file outside the sample is one error line when a step meets it, and that `seglab data
check` still reads every file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.integration.test_data_mistakes import TINY_CNN, TINY_UNET, one_error_line, short_run

from seglab.data import (
    DataConfig,
    Findings,
    build_dataset,
    image_folders,
    mask_folders,
    plan_image_size,
)
from seglab.data import images as images_module
from seglab.data.check import check_data
from seglab.data.listing import FolderFiles, file_names, sample_indices
from seglab.errors import SeglabWarning, UserError

SAMPLE = 4  # pairs / images read when opening, in these tests (the library's: 64)


@pytest.fixture(autouse=True)
def small_sample(monkeypatch):
    monkeypatch.setattr(mask_folders, "SAMPLE", SAMPLE)
    monkeypatch.setattr(image_folders, "SAMPLE", SAMPLE)


def _mask(index: int) -> np.ndarray:
    """A 16x16 mask holding classes 1, 2 and 3 (any sample finds K = 3)."""
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[index % 4 : 8, 2:6], mask[9:14, 2:6], mask[9:14, 9:14] = 1, 2, 3
    return mask


def _masks_data(root: Path, train: int = 12, val: int = 3) -> Path:
    for split, count in (("train", train), ("val", val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for index in range(count):
            Image.new("L", (16, 16), 90).save(root / split / "images" / f"{index:03d}.png")
            Image.fromarray(_mask(index)).save(root / split / "masks" / f"{index:03d}.png")
    return root


def _folders_data(root: Path, per_class: int = 5) -> Path:
    for split in ("train", "val"):
        for name in ("ant", "bee"):
            (root / split / name).mkdir(parents=True)
            for index in range(per_class):
                Image.new("RGB", (16, 16), (index, 0, 0)).save(root / split / name / f"{index}.png")
    return root


def _masks_cfg(root: Path, **kwargs) -> DataConfig:
    return DataConfig(root=str(root), layout="masks", **{"image_size": 16, **kwargs})


def _build(cfg: DataConfig, task: str, **kwargs):
    return build_dataset(cfg, "train", task=task, train=False, **kwargs)


class _Reads:
    """Records the files the datasets open: mask values, headers, decoded images."""

    def __init__(self, monkeypatch):
        self.values, self.headers, self.decoded = [], [], []
        real_values, real_header = mask_folders.stored_values, images_module.read_header
        real_decode = images_module._decode
        monkeypatch.setattr(mask_folders, "stored_values", self._record(self.values, real_values))
        monkeypatch.setattr(mask_folders, "read_header", self._record(self.headers, real_header))
        monkeypatch.setattr(images_module, "read_header", self._record(self.headers, real_header))
        monkeypatch.setattr(images_module, "_decode", self._record(self.decoded, real_decode))

    @staticmethod
    def _record(calls: list, function):
        def recorded(path, *args):
            calls.append("/".join(Path(path).parts[-3::2]))  # split/name
            return function(path, *args)

        return recorded


def test_sample_indices_are_seeded_spread_and_all_for_small_counts():
    assert sample_indices(3, 4).tolist() == [0, 1, 2]
    first, again = sample_indices(1000, 64), sample_indices(1000, 64)
    assert np.array_equal(first, again) and len(set(first.tolist())) == 64
    assert np.all(np.diff(first) > 0) and first[-1] > 500  # spread, not the first 64
    assert not np.array_equal(first, sample_indices(1000, 64, seed=1))


def test_opening_mask_folders_reads_the_sample_only(tmp_path, monkeypatch):
    """12 train pairs, 3 val: opening reads 4 train masks and the 3 val ones (for the
    classes), the headers of the 4 train pairs, and decodes no image."""
    root = _masks_data(tmp_path)
    reads = _Reads(monkeypatch)
    dataset = _build(_masks_cfg(root), "semantic")
    assert len(dataset) == 12 and dataset.class_names == ["1", "2", "3"]
    sampled = [f"train/{index:03d}.png" for index in sample_indices(12, SAMPLE)]
    assert sorted(set(reads.values)) == sampled + ["val/000.png", "val/001.png", "val/002.png"]
    assert sorted(set(reads.headers)) == sampled and reads.decoded == []
    assert dataset.class_counts == [SAMPLE] * 3 and dataset.in_channels == 1
    reads.values.clear()
    _build(_masks_cfg(root), "semantic", findings=Findings())  # data check's way
    assert len(set(reads.values)) == 12 + 3  # every mask


def test_the_sample_is_the_same_in_every_build(tmp_path, monkeypatch):
    root = _masks_data(tmp_path, train=30, val=0)
    reads = _Reads(monkeypatch)
    first = _build(_masks_cfg(root), "semantic")
    read_first = list(reads.values)
    reads.values.clear()
    second = _build(_masks_cfg(root), "semantic")
    assert reads.values == read_first and first.class_counts == second.class_counts
    assert read_first != [f"train/{index:03d}.png" for index in range(SAMPLE)]


def test_opening_image_folders_reads_the_sample_of_headers_only(tmp_path, monkeypatch):
    root = _folders_data(tmp_path)
    reads = _Reads(monkeypatch)
    cfg = DataConfig(root=str(root), layout="folders", image_size=16)
    dataset = _build(cfg, "classification")
    assert len(dataset) == 10 and dataset.class_counts == [5, 5]  # every image counted
    assert len(reads.headers) == SAMPLE and reads.decoded == [] and dataset.in_channels == 3
    assert [path.parent.name for path, _ in dataset.samples] == ["ant"] * 5 + ["bee"] * 5
    reads.headers.clear()
    _build(cfg, "classification", findings=Findings())
    assert len(reads.headers) == 10


def test_plan_of_image_size_auto_decodes_masks_only(tmp_path, monkeypatch):
    root = _masks_data(tmp_path)
    reads = _Reads(monkeypatch)
    plan = plan_image_size(_masks_cfg(root, image_size="auto"))
    assert plan.image_size >= 16 and reads.decoded == []


def _outside_sample(count: int) -> str:
    """The stem of a train item that the sample of `count` items leaves out."""
    return f"{sorted(set(range(count)) - set(sample_indices(count, SAMPLE).tolist()))[0]:03d}"


@pytest.mark.parametrize(
    "fault, kind, message",
    [
        ("size", "mask size differs from its image", "mask is 12x16 but its image"),
        ("value", "mask value that is no class", "mask values 7 are not classes"),
        ("truncated", "unreadable mask", "not a readable mask image"),
    ],
)
def test_a_bad_mask_outside_the_sample_fails_on_load_and_data_check_finds_it(
    tmp_path, fault, kind, message
):
    root = _masks_data(tmp_path)
    (root / "classes.txt").write_text("a\nb\nc\n")
    stem = _outside_sample(12)
    bad = root / "train" / "masks" / f"{stem}.png"
    if fault == "size":
        Image.fromarray(np.zeros((16, 12), dtype=np.uint8)).save(bad)
    elif fault == "value":
        Image.fromarray(np.full((16, 16), 7, dtype=np.uint8)).save(bad)
    else:
        bad.write_bytes(bad.read_bytes()[:60])
    dataset = _build(_masks_cfg(root), "semantic")  # opening does not meet it
    with pytest.raises(UserError, match=message) as error:
        dataset[int(stem)]
    assert str(error.value).startswith(str(bad)) and "\n" not in str(error.value)
    report = check_data(root)
    assert report.stops
    found = report.splits[0].findings.by_kind
    assert found[kind].places == [str(bad)] or found["unreadable mask"].places == [str(bad)]


def test_a_class_outside_the_sample_is_one_line_naming_the_sample(tmp_path):
    """Without a classes file the classes come from the sample: a value that only a mask
    outside it holds stops when loaded, saying so; `seglab data check` finds it."""
    root = _masks_data(tmp_path)
    stem = _outside_sample(12)
    rare = _mask(0)
    rare[0, 0] = 4  # class 4 occurs in this mask only
    Image.fromarray(rare).save(root / "train" / "masks" / f"{stem}.png")
    dataset = _build(_masks_cfg(root), "semantic")
    assert dataset.class_names == ["1", "2", "3"]
    with pytest.raises(UserError) as error:
        dataset[int(stem)]
    line = str(error.value)
    assert line.startswith(f"{root / 'train' / 'masks' / stem}.png: mask values 4 are not classes")
    assert f"read from {SAMPLE + 3} masks sampled of 15 (a seeded sample)" in line
    assert "data check` reads every mask" in line and "\n" not in line
    kinds = check_data(root).splits[0].findings.by_kind
    assert kinds["mask value that is no class"].places == [
        str(root / "train/masks" / stem) + ".png"
    ]


def test_masks_mostly_empty_are_read_on_until_a_class_is_found(tmp_path, monkeypatch):
    """Binary 0/255 masks where one train mask, outside the sample, holds the class (rare
    defects): the sample alone would find no class (nothing to learn) and miss that 255
    is class 1; every mask is read instead, and the class counted."""
    root = _masks_data(tmp_path)
    for path in root.glob("*/masks/*.png"):
        Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(path)
    defect = np.zeros((16, 16), dtype=np.uint8)
    defect[3:6, 3:6] = 255
    Image.fromarray(defect).save(root / "train" / "masks" / f"{_outside_sample(12)}.png")
    reads = _Reads(monkeypatch)
    with pytest.warns(SeglabWarning, match="binary masks"):
        dataset = build_dataset(_masks_cfg(root), "train", task="semantic", train=True)
    assert dataset.class_names == ["1"] and dataset.mask_classes.rule == "binary"
    assert dataset.class_counts == [1] and len(set(reads.values)) == 12 + 3


def test_image_outside_the_sample_that_does_not_decode_stops_training_in_one_line(tmp_path, capsys):
    root = _folders_data(tmp_path)
    cfg = DataConfig(root=str(root), layout="folders", image_size=16)
    dataset = _build(cfg, "classification")
    left_out = sorted(set(range(10)) - set(sample_indices(10, SAMPLE).tolist()))
    broken = dataset.image_path(left_out[0])
    broken.write_bytes(b"\x89PNG garbage")
    args = ["train", "cnn_shapes", "--out", str(tmp_path / "run"), "--set", f"data.root={root}",
            *TINY_CNN, *short_run(steps=3), "--set", "train.batch_size=10"]  # fmt: skip
    line = one_error_line(capsys, args)
    assert (
        line
        == f"seglab train: error: {broken}: not a readable image "
        + line.split("not a readable image ", 1)[1]
    )
    assert line.endswith("remove or replace it")
    assert check_data(root).splits[0].findings.by_kind["unreadable image"].places == [str(broken)]


def test_a_mask_of_another_size_met_in_training_is_one_line_exit_2(tmp_path, capsys):
    root = _masks_data(tmp_path)
    (root / "classes.txt").write_text("a\nb\nc\n")
    bad = root / "train" / "masks" / f"{_outside_sample(12)}.png"
    Image.fromarray(np.zeros((16, 12), dtype=np.uint8)).save(bad)
    args = ["train", "unet_shapes", "--out", str(tmp_path / "run"), "--set", f"data.root={root}",
            *TINY_UNET, *short_run(steps=2), "--set", "train.batch_size=12",
            "--set", "data.image_size=16", "--set", "model.in_channels=1"]  # fmt: skip
    line = one_error_line(capsys, args)
    assert line.startswith(f"seglab train: error: {bad}: mask is 12x16 but its image")


def test_file_names_are_the_images_of_a_folder_sorted(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.txt", "é.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.png").mkdir()  # a folder, not an image
    names = file_names(tmp_path)
    assert [n.decode() for n in names] == sorted(["b.PNG", "a.jpg", "é.png"])
    files = FolderFiles(tmp_path, names)
    assert files[2] == tmp_path / "é.png" and files[:1] == [tmp_path / "a.jpg"]
    assert list(files) == [tmp_path / n for n in ("a.jpg", "b.PNG", "é.png")]
