"""Where the splits are: ROOT's layout by default, COCO files anywhere, val optional."""

import shutil

import pytest
import torch

from seglab.data import DataConfig, build_dataset, build_training_datasets
from seglab.data.splits import check_locations, coco_split, split_exists
from seglab.errors import UserError


@pytest.fixture(scope="module")
def scattered(shapes_coco, tmp_path_factory):
    """The shapes COCO data with its files moved apart, named as COCO's own are."""
    out = tmp_path_factory.mktemp("scattered")
    (out / "annotations").mkdir()
    for split in ("train", "val"):
        shutil.copy(shapes_coco / f"{split}.json", out / "annotations" / f"instances_{split}.json")
        shutil.copytree(shapes_coco / split, out / "images" / f"{split}2017")
    return out


def _files(out, *splits):
    keys = {}
    for split in splits:
        keys[f"{split}_json"] = str(out / "annotations" / f"instances_{split}.json")
        keys[f"{split}_images"] = str(out / "images" / f"{split}2017")
    return keys


def test_coco_files_anywhere_read_as_the_root_layout(shapes_coco, scattered):
    at_root = build_dataset(DataConfig(root=str(shapes_coco)), "val", task="instance", train=False)
    anywhere = build_dataset(DataConfig(**_files(scattered, "train", "val")), "val",
                             task="instance", train=False)  # fmt: skip
    assert anywhere.json_path == scattered / "annotations" / "instances_val.json"
    assert len(anywhere) == len(at_root) and anywhere.class_names == at_root.class_names
    for index in range(len(at_root)):
        (image, target), (expected_image, expected) = anywhere[index], at_root[index]
        assert torch.equal(image, expected_image)
        assert torch.equal(target["boxes"], expected["boxes"])
        assert torch.equal(target["masks"], expected["masks"])


def test_a_split_given_by_files_replaces_roots(shapes_coco, scattered):
    cfg = DataConfig(root=str(shapes_coco), **_files(scattered, "val"))
    assert coco_split(cfg, "val").image_dir == scattered / "images" / "val2017"
    assert coco_split(cfg, "train").json_path == shapes_coco / "train.json"
    assert coco_split(cfg, "test").json_path == shapes_coco / "test.json"


def test_without_a_val_split_training_data_has_none(shapes_coco, scattered, tmp_path):
    train_only = DataConfig(**_files(scattered, "train"))
    assert not split_exists(train_only, "val")
    train_set, val_set = build_training_datasets(train_only, task="instance", in_channels=3)
    assert len(train_set) > 0 and val_set is None

    root = tmp_path / "root"  # the root layout without val.json
    root.mkdir()
    shutil.copy(shapes_coco / "train.json", root / "train.json")
    shutil.copytree(shapes_coco / "train", root / "train")
    _, val_set = build_training_datasets(DataConfig(root=str(root)), task="instance",
                                         in_channels=3)  # fmt: skip
    assert val_set is None


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"train_json": "a.json"}, "data.train_json without data.train_images: give both"),
        ({"root": "r", "val_images": "v"}, "data.val_images without data.val_json"),
        ({}, "data.root is required (or data.train_json with data.train_images)"),
        ({"root": "r", "layout": "masks", "val_json": "v.json", "val_images": "v"},
         "data.val_json: COCO files are for the coco layout, not 'masks'"),
    ],
)  # fmt: skip
def test_location_mistakes_are_one_line(keys, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_locations(DataConfig(**keys))


def test_missing_files_name_themselves(scattered, tmp_path):
    keys = _files(scattered, "train")
    missing_json = DataConfig(**{**keys, "train_json": str(tmp_path / "nope.json")})
    with pytest.raises(UserError, match="nope.json: COCO annotation file not found"):
        build_dataset(missing_json, "train", task="instance", train=True)
    missing_images = DataConfig(**{**keys, "train_images": str(tmp_path / "pics")})
    with pytest.raises(UserError, match=r"pics: image folder of .*instances_train.json not found"):
        build_dataset(missing_images, "train", task="instance", train=True)
