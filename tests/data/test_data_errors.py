"""Each user mistake in the data gives a UserError naming the file (exit code 2 in the CLI)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from seglab.data import DataConfig, build_dataset
from seglab.errors import SeglabWarning, UserError


def _build(root, layout="coco", task="instance", split="train"):
    cfg = DataConfig(root=str(root), layout=layout, image_size=32)
    return build_dataset(cfg, split, task=task, train=False)


@pytest.fixture
def coco_copy(shapes_coco, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(shapes_coco, root)
    return root


def _edit_json(root, edit):
    path = root / "train.json"
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))
    return path


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'nowhere'}: data root not found"):
        _build(tmp_path / "nowhere")


def test_missing_split(coco_copy):
    with pytest.raises(UserError, match="test.json: COCO annotation file not found"):
        _build(coco_copy, split="test")


def test_missing_split_folders(shapes_semantic, shapes_classify):
    with pytest.raises(UserError, match="test/images: folder not found"):
        _build(shapes_semantic, layout="masks", task="semantic", split="test")
    with pytest.raises(UserError, match="test: folder not found"):
        _build(shapes_classify, layout="folders", task="classification", split="test")


def test_unknown_layout_and_layout_task_mismatch(shapes_coco):
    with pytest.raises(UserError, match="unknown data.layout 'voc'"):
        _build(shapes_coco, layout="voc")
    with pytest.raises(UserError, match="layout 'coco' has no data for a classification"):
        _build(shapes_coco, task="classification")


def test_malformed_json(coco_copy):
    (coco_copy / "train.json").write_text('{"images": [')
    with pytest.raises(UserError, match="train.json: malformed JSON"):
        _build(coco_copy)


def test_json_without_images_list(coco_copy):
    (coco_copy / "train.json").write_text('{"annotations": []}')
    with pytest.raises(UserError, match="train.json: not a COCO file"):
        _build(coco_copy)


def test_json_references_a_missing_image(coco_copy):
    (coco_copy / "train" / "000003.png").unlink()
    with pytest.raises(UserError, match="refers to missing file .*000003.png"):
        _build(coco_copy)


@pytest.mark.parametrize("bbox", [[10, 10, -4, 5], [10, 10, 5, 0]], ids=["x1<x0", "zero-height"])
def test_degenerate_box_is_dropped_with_a_note(coco_copy, bbox):
    _edit_json(coco_copy, lambda coco: coco["annotations"][2].update(bbox=bbox))
    with pytest.warns(SeglabWarning) as caught:
        dataset = _build(coco_copy)
    assert all(a["id"] != 3 for kept in dataset._annotations.values() for a in kept)
    assert sum(dataset.class_counts) == len(dataset.coco_gt["annotations"]) - 1
    assert "train.json: zero-area box: 1 dropped" in str(caught[0].message)


def test_annotation_with_unknown_category_or_image(coco_copy):
    _edit_json(coco_copy, lambda coco: coco["annotations"][0].update(category_id=99))
    with pytest.raises(UserError, match="unknown category_id 99"):
        _build(coco_copy)
    _edit_json(coco_copy, lambda coco: coco["annotations"][0].update(category_id=1, image_id=999))
    with pytest.raises(UserError, match="unknown image 999"):
        _build(coco_copy)


def test_file_that_is_not_an_image_found_by_the_scan(coco_copy):
    (coco_copy / "train" / "000002.png").write_text("not a png")
    with pytest.raises(UserError, match="000002.png: not a readable image"):
        _build(coco_copy)


def test_file_that_is_not_an_image_found_on_load(coco_copy):
    dataset = _build(coco_copy)
    path = coco_copy / "train" / "000001.png"
    path.write_bytes(path.read_bytes()[:100])  # truncated after the header scan
    with pytest.raises(UserError, match="000001.png: not a readable image"):
        dataset[1]


def test_empty_datasets(coco_copy, tmp_path):
    _edit_json(coco_copy, lambda coco: coco.update(images=[], annotations=[]))
    with pytest.raises(UserError, match="train.json: the dataset has no images"):
        _build(coco_copy)
    (tmp_path / "m" / "train" / "images").mkdir(parents=True)
    (tmp_path / "m" / "train" / "masks").mkdir(parents=True)
    with pytest.raises(UserError, match="images: no images found"):
        _build(tmp_path / "m", layout="masks", task="semantic")
    (tmp_path / "f" / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="train: no images found"):
        _build(tmp_path / "f", layout="folders", task="classification")


def _mask_pair(root, image_size, mask_size, mask_mode="L"):
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    Image.new("RGB", image_size).save(root / "train" / "images" / "a.jpg")
    Image.new(mask_mode, mask_size).save(root / "train" / "masks" / "a.png")
    return root


def test_mask_size_differs_from_its_image(tmp_path):
    root = _mask_pair(tmp_path, (20, 10), (20, 12))
    with pytest.raises(UserError, match="masks/a.png: mask is 20x12 but its image a.jpg is 20x10"):
        _build(root, layout="masks", task="semantic")


def test_missing_mask_and_rgb_mask(tmp_path):
    root = _mask_pair(tmp_path / "rgb", (8, 8), (8, 8), mask_mode="RGB")
    (root / "classes.txt").write_text("a\n")
    colours = np.zeros((8, 8, 3), dtype=np.uint8)
    colours[:4] = (255, 0, 0)
    Image.fromarray(colours).save(root / "train" / "masks" / "a.png")
    with pytest.raises(UserError, match="a.png: mask has mode RGB with distinct colour"):
        _build(root, layout="masks", task="semantic")
    (root / "train" / "masks" / "a.png").unlink()
    with pytest.raises(UserError, match="masks/a.png: mask not found"):
        _build(root, layout="masks", task="semantic")


def test_mask_index_beyond_the_named_classes(tmp_path):
    root = _mask_pair(tmp_path, (8, 8), (8, 8))
    Image.fromarray(np.full((8, 8), 3, dtype=np.uint8)).save(root / "train" / "masks" / "a.png")
    (root / "classes.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match="a.png: mask values 3 are not classes: .*names 2"):
        _build(root, layout="masks", task="semantic")


def test_image_folder_with_a_broken_image(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "x.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match="x.png: not a readable image"):
        _build(tmp_path, layout="folders", task="classification")


def test_image_entry_without_file_name(coco_copy):
    _edit_json(coco_copy, lambda coco: coco["images"][0].pop("file_name"))
    with pytest.raises(UserError, match="train.json: an entry of 'images' lacks id or file_name"):
        _build(coco_copy)


def test_malformed_segmentation_reported_on_load(coco_copy):
    _edit_json(coco_copy, lambda coco: coco["annotations"][0].update(segmentation={"size": [96]}))
    with pytest.raises(UserError, match="train.json annotation 1 has an RLE without 'size'"):
        _build(coco_copy)
    counts = "not RLE counts"
    _edit_json(coco_copy, lambda coco: coco["annotations"][0].update(
        segmentation={"size": [96, 96], "counts": counts}))  # fmt: skip
    dataset = _build(coco_copy)  # well-formed on its face: decoded on load
    image_index = next(
        i
        for i, info in enumerate(dataset.images)
        if info["id"] == dataset.coco_gt["annotations"][0]["image_id"]
    )
    with pytest.raises(UserError, match="train.json annotation 1 has a malformed segmentation"):
        dataset[image_index]


def test_image_size_differs_from_the_json(coco_copy):
    _edit_json(coco_copy, lambda coco: coco["images"][4].update(width=100))
    with pytest.raises(UserError, match="000004.png: image is 96x96 .* but the JSON says 100x96"):
        _build(coco_copy)
