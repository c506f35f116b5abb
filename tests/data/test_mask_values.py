"""How stored mask values become classes (seglab.data.mask_values), through the dataset."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data import DataConfig, build_dataset
from seglab.data.mask_values import resolve_mask_classes
from seglab.errors import SeglabWarning, UserError


def _masks(root: Path, masks: dict[str, np.ndarray], split="train", names=None) -> Path:
    """A masks-layout split with one 8x8 gray image per mask."""
    (root / split / "images").mkdir(parents=True)
    (root / split / "masks").mkdir(parents=True)
    for stem, mask in masks.items():
        Image.new("L", (8, 8), 90).save(root / split / "images" / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / split / "masks" / f"{stem}.png")
    if names is not None:
        (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def _mask(*values) -> np.ndarray:
    mask = np.zeros((8, 8), dtype=np.uint8)
    for index, value in enumerate(values):
        mask[index, :] = value
    return mask


def _build(root, split="train", **cfg):
    return build_dataset(
        DataConfig(root=str(root), layout="masks", image_size=8, **cfg),
        split, task="semantic", train=False,
    )  # fmt: skip


def test_binary_0_255_masks_are_class_1_with_a_note(tmp_path):
    root = _masks(tmp_path, {"a": _mask(0, 255), "b": _mask(0)})
    with pytest.warns(SeglabWarning, match=r"binary masks \(only 0 and 255\): 2 read with 255"):
        dataset = _build(root)
    assert dataset.class_names == ["1"] and dataset.class_counts == [1]
    target = dataset[0][1]["semantic_mask"]
    assert target[1].unique().tolist() == [1] and target[0].unique().tolist() == [0]


def test_binary_rule_with_a_one_name_classes_file(tmp_path):
    root = _masks(tmp_path, {"a": _mask(0, 255)}, names=["cell"])
    with pytest.warns(SeglabWarning):
        dataset = _build(root)
    assert dataset.class_names == ["cell"] and dataset[0][1]["semantic_mask"].max() == 1


def test_255_stays_ignored_next_to_class_indices(tmp_path):
    root = _masks(tmp_path, {"a": _mask(0, 1, 255)})
    dataset = _build(root)
    assert dataset.class_names == ["1"]
    assert dataset[0][1]["semantic_mask"][2].unique().tolist() == [255]


def test_mask_values_map_stored_values_and_refuse_others(tmp_path):
    root = _masks(tmp_path, {"a": _mask(0, 128, 255), "b": _mask(0, 60)})
    with pytest.raises(UserError, match=r"b.png: mask values 60 are not classes: data.mask_values"):
        _build(root, mask_values=(0, 128, 255))
    (root / "train" / "masks" / "b.png").unlink()
    (root / "train" / "images" / "b.png").unlink()
    dataset = _build(root, mask_values=(0, 128, 255))
    assert dataset.class_names == ["1", "2"]
    assert [dataset[0][1]["semantic_mask"][row, 0].item() for row in range(3)] == [0, 1, 2]


def test_stray_value_without_classes_file_names_the_masks(tmp_path):
    masks = {"a": _mask(0, 1, 2), "b": _mask(0, 2), "c": _mask(0, 7), "d": _mask(7)}
    root = _masks(tmp_path, masks)
    with pytest.raises(UserError) as error:
        _build(root)
    message = str(error.value)
    assert "c.png: mask values 7 are not classes" in message
    assert "3 occurs in no mask, so K = 2" in message and "(1 more like it: " in message
    assert message.endswith("d.png)") and "\n" not in message
    (root / "classes.txt").write_text("\n".join("abcdefg") + "\n")  # 7 named classes: fine
    assert len(_build(root).class_names) == 7


def test_values_above_the_named_classes_stop_before_any_item_is_read(tmp_path):
    masks = {f"{i:03d}": _mask(0, 1) for i in range(20)}
    masks["019"] = _mask(0, 3)  # the last image's mask
    root = _masks(tmp_path, masks, names=["a", "b"])
    with pytest.raises(UserError, match="019.png: mask values 3 are not classes: .*names 2"):
        _build(root)


def test_classes_come_from_every_split(tmp_path):
    """val holds class 2 only: train must still have K = 2, the same classes as val."""
    _masks(tmp_path, {"a": _mask(0, 1)})
    _masks(tmp_path, {"b": _mask(0, 2)}, split="val")
    assert _build(tmp_path).class_names == _build(tmp_path, "val").class_names == ["1", "2"]


def test_mask_values_that_cannot_work(tmp_path):
    values = {0, 255}
    with pytest.raises(UserError, match="data.mask_values \\[0\\]: give the stored value"):
        resolve_mask_classes(tmp_path, values, None, None, (0,))
    with pytest.raises(UserError, match="names 2 classes but data.mask_values \\[0, 255\\] has 1"):
        resolve_mask_classes(tmp_path, values, ["a", "b"], tmp_path / "classes.txt", (0, 255))
    with pytest.raises(UserError, match="data.mask_values: only for the masks layout"):
        build_dataset(DataConfig(root=str(tmp_path), layout="coco", mask_values=(0, 255)),
                      "train", task="instance", train=False)  # fmt: skip
