import json

import numpy as np
import pytest
from PIL import Image

from seglab.cli.main import main
from seglab.data import DataConfig, build_dataset
from seglab.data.cells import CLASS_NAMES, generate_cells, render_cells
from seglab.data.synthetic import scene_rng
from seglab.structures.masks import segmentation_to_mask


@pytest.fixture(scope="module")
def cells_coco(tmp_path_factory):
    return generate_cells(
        tmp_path_factory.mktemp("cells"), task="instance", train=12, val=3, size=128, seed=2
    )


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _instance_map(masks, shape):
    instances = np.zeros(shape, dtype=np.int32)
    for index, mask in enumerate(masks, 1):
        assert not instances[mask].any()  # instances never overlap
        instances[mask] = index
    return instances


def _touching_pairs(instances):
    """Pairs of instance ids with 4-adjacent pixels: a shared border, no background between."""
    pairs = set()
    for a, b in ((instances[:, 1:], instances[:, :-1]), (instances[1:], instances[:-1])):
        shared = (a != b) & (a > 0) & (b > 0)
        pairs |= {tuple(sorted(pair)) for pair in zip(a[shared], b[shared], strict=True)}
    return pairs


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_same_seed_gives_byte_identical_files(tmp_path, task):
    first = generate_cells(tmp_path / "a", task=task, train=3, val=2, size=64, seed=7)
    second = generate_cells(tmp_path / "b", task=task, train=3, val=2, size=64, seed=7)
    other = generate_cells(tmp_path / "c", task=task, train=3, val=2, size=64, seed=8)
    assert _files(first) == _files(second)
    assert len(_files(first)) >= 6
    assert _files(first) != _files(other)


def test_coco_annotations_are_the_drawn_masks(cells_coco):
    coco = json.loads((cells_coco / "train.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "nucleus", "supercategory": "cell"}]
    by_image = {info["id"]: [] for info in coco["images"]}
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    for info in coco["images"]:
        image = Image.open(cells_coco / "train" / info["file_name"])
        assert image.mode == "L" and image.size == (128, 128)
        _, nuclei = render_cells(128, scene_rng(2, "train", info["id"] - 1))
        annotations = by_image[info["id"]]
        assert len(annotations) == len(nuclei) >= 3
        for annotation, nucleus in zip(annotations, nuclei, strict=True):
            mask = segmentation_to_mask(annotation["segmentation"], 128, 128)
            np.testing.assert_array_equal(mask, nucleus.visible_mask)
            ys, xs = np.nonzero(mask)
            x0, y0 = xs.min(), ys.min()
            assert annotation["bbox"] == [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0]
            assert annotation["area"] == mask.sum() and annotation["category_id"] == 1


def test_coco_files_load_with_pycocotools_and_one_channel(cells_coco):
    from pycocotools.coco import COCO

    gt = COCO(str(cells_coco / "val.json"))
    assert len(gt.getImgIds()) == 3 and gt.getCatIds() == [1]
    dataset = build_dataset(
        DataConfig(root=str(cells_coco), layout="coco"), "train", task="instance", train=False
    )
    image, target = dataset[0]
    assert dataset.in_channels == 1 and image.shape == (1, 128, 128)
    assert list(dataset.class_names) == list(CLASS_NAMES)
    assert target["masks"].shape[0] == target["boxes"].shape[0] >= 3


def test_many_nuclei_touch_their_neighbours():
    touching, total = 0, 0
    for index in range(10):
        _, nuclei = render_cells(256, np.random.default_rng(index))
        instances = _instance_map([n.visible_mask for n in nuclei], (256, 256))
        touching += len({i for pair in _touching_pairs(instances) for i in pair})
        total += len(nuclei)
    assert touching / total > 0.5


def test_each_nucleus_is_one_piece_and_sizes_vary_between_images():
    import cv2

    median_areas = []
    for index in range(12):
        _, nuclei = render_cells(256, np.random.default_rng([5, index]))
        for nucleus in nuclei:
            pieces, _ = cv2.connectedComponents(nucleus.visible_mask.astype(np.uint8), 8)
            assert pieces == 2  # background + one piece
        median_areas.append(np.median([n.visible_mask.sum() for n in nuclei]))
    # Mean diameters of size/24 .. size/7.5 per image: areas differ up to ~10x.
    assert max(median_areas) / min(median_areas) > 4


def test_semantic_masks_are_the_union_of_the_nuclei(tmp_path):
    root = generate_cells(tmp_path, task="semantic", train=2, val=1, size=64, seed=4)
    assert (root / "classes.txt").read_text().split() == list(CLASS_NAMES)
    for index in range(2):
        class_map = np.asarray(Image.open(root / "train" / "masks" / f"{index:06d}.png"))
        _, nuclei = render_cells(64, scene_rng(4, "train", index))
        union = np.any([n.visible_mask for n in nuclei], axis=0)
        np.testing.assert_array_equal(class_map, union.astype(np.uint8))


def test_cli_writes_and_prints_a_summary(tmp_path, capsys):
    args = ["data", "cells", str(tmp_path / "c"), "--train", "2", "--val", "1", "--size", "64"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "3 images" in lines[0] and "1 class," in lines[0] and lines[0].endswith(" s")
    assert "--set model.in_channels=1" in lines[1]
    assert (tmp_path / "c" / "val.json").is_file()


def test_cli_bad_size_or_task_exits_2(tmp_path, capsys):
    assert main(["data", "cells", str(tmp_path / "c"), "--size", "32"]) == 2
    assert "--size >= 64" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "cells", str(tmp_path / "c"), "--task", "classify"])
    assert exit_info.value.code == 2
