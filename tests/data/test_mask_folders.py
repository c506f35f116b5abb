import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data import DataConfig, build_dataset
from seglab.errors import UserError


def _masks_cfg(root, **kwargs):
    return DataConfig(root=str(root), layout="masks", **{"image_size": 64, **kwargs})


def test_semantic_items_and_class_names_from_classes_txt(shapes_semantic):
    dataset = build_dataset(_masks_cfg(shapes_semantic), "val", task="semantic", train=False)
    assert len(dataset) == 3 and dataset.task == "semantic"
    assert dataset.class_names == ["circle", "square", "triangle"]
    image, target = dataset[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    class_map = target["semantic_mask"]
    assert class_map.shape == (64, 64) and class_map.dtype == torch.int64
    stored = np.asarray(Image.open(shapes_semantic / "val" / "masks" / "000000.png"))
    assert np.array_equal(class_map.numpy(), stored)


def test_training_crop_is_square_and_labels_stay_valid(shapes_semantic):
    cfg = _masks_cfg(shapes_semantic, scale_jitter=(0.5, 2.0), rot90=True, vflip=0.5)
    dataset = build_dataset(cfg, "train", task="semantic", train=True)
    torch.manual_seed(1)
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.shape == (3, 64, 64) and target["semantic_mask"].shape == (64, 64)
        assert set(target["semantic_mask"].unique().tolist()) <= {0, 1, 2, 3}


def _write_masks_dataset(root, class_map, mode="L", names_file=None):
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    image = np.full(class_map.shape, 90, dtype=np.uint8)
    Image.fromarray(image, mode=mode).save(root / "train" / "images" / "x.png")
    Image.fromarray(class_map.astype(np.uint8)).save(root / "train" / "masks" / "x.png")
    if names_file:
        (root / names_file[0]).write_text(names_file[1])
    return root


def test_names_default_to_indices_and_grayscale_stays_one_channel(tmp_path):
    class_map = np.zeros((10, 12), dtype=np.uint8)
    class_map[2:4, 2:4], class_map[5:7, 5:9], class_map[0, 0] = 1, 4, 255
    class_map[8, 0], class_map[8, 1] = 2, 3  # 1..4 all occur: K = 4 without a classes file
    root = _write_masks_dataset(tmp_path, class_map)
    dataset = build_dataset(_masks_cfg(root, image_size=10), "train", task="semantic", train=False)
    assert dataset.class_names == ["1", "2", "3", "4"] and dataset.in_channels == 1
    image, target = dataset[0]
    assert image.shape == (1, 10, 12)
    assert target["semantic_mask"][0, 0] == 255 and target["semantic_mask"][5, 5] == 4


def test_class_names_from_classes_json(tmp_path):
    root = _write_masks_dataset(tmp_path, np.ones((8, 8)), names_file=("classes.json", '["cell"]'))
    dataset = build_dataset(_masks_cfg(root, image_size=8), "train", task="semantic", train=False)
    assert dataset.class_names == ["cell"]


def _stored(*rows) -> np.ndarray:
    mask = np.zeros((8, 8), dtype=np.uint8)
    for index, value in enumerate(rows):
        mask[index] = value
    return mask


@pytest.mark.parametrize("names", [["a", "b", "c"], None], ids=["classes.txt", "no file"])
def test_loaded_class_maps_are_the_rules_look_up_and_stray_values_stop(tmp_path, names):
    """Masks of class indices are loaded without the rule's look-up (a gather over every
    pixel): the class maps must be the look-up's, and every value the rule refuses (above
    K, between K and 255, or above 255) must still stop with its line."""
    masks = {"a": _stored(0, 1, 2, 3), "b": _stored(0, 1, 255), "c": _stored(3, 255, 2)}
    root = tmp_path
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    for stem, mask in masks.items():
        Image.new("L", (8, 8), 90).save(root / "train" / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "train" / "masks" / f"{stem}.png")
    if names:
        (root / "classes.txt").write_text("\n".join(names) + "\n")
    dataset = build_dataset(_masks_cfg(root, image_size=8), "train", task="semantic", train=False)
    assert dataset.class_names == (names or ["1", "2", "3"])
    for index in range(len(dataset)):
        path = dataset.mask_paths[index]
        expected = dataset.mask_classes.to_classes(path, np.asarray(Image.open(path)).astype(int))
        loaded = dataset.load(index)[1]["semantic_mask"]
        assert loaded.dtype == torch.int64 and np.array_equal(loaded.numpy(), expected)
    for stray in (_stored(0, 4), _stored(200, 255, 1), np.full((8, 8), 300, dtype=np.uint16)):
        Image.fromarray(stray).save(dataset.mask_paths[1])
        with pytest.raises(UserError, match=r"b.png: mask values (4|200|300) are not classes"):
            dataset.load(1)
