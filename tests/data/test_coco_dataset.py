import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from seglab.data import DataConfig, build_dataset, collate
from seglab.structures.masks import mask_to_rle, masks_to_boxes


def _eval_dataset(root, task="instance", split="train", image_size=256):
    cfg = DataConfig(root=str(root), image_size=image_size)
    return build_dataset(cfg, split, task=task, train=False)


def test_instance_items_follow_the_conventions(shapes_coco):
    dataset = _eval_dataset(shapes_coco)
    assert len(dataset) == 40 and dataset.task == "instance" and dataset.in_channels == 3
    assert dataset.class_names == ["circle", "square", "triangle"]
    assert dataset.category_ids == [1, 2, 3]
    assert len(dataset.coco_gt["images"]) == 40
    counts = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32
        assert image.shape == (3, 96, 96) and 0 <= image.min() and image.max() <= 1
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.dtype == torch.float32
        assert isinstance(masks, tv_tensors.Mask) and masks.dtype == torch.uint8
        assert labels.dtype == torch.int64 and ((labels >= 1) & (labels <= 3)).all()
        assert boxes.shape == (len(labels), 4) and masks.shape == (len(labels), 96, 96)
        # Boxes are tight around the masks (xyxy pixel edges).
        assert torch.equal(masks_to_boxes(masks), boxes.as_subclass(torch.Tensor))
        assert target["image_id"] == dataset.coco_gt["images"][index]["id"]
        counts.append(len(labels))
    assert 0 in counts  # empty images are kept, with (0, 4) boxes


def test_collate_returns_lists(shapes_coco):
    dataset = _eval_dataset(shapes_coco)
    images, targets = collate([dataset[0], dataset[1]])
    assert isinstance(images, list) and len(images) == 2 and targets[1]["image_id"] == 2


def test_semantic_from_coco_rasterises_instances(shapes_coco):
    dataset = build_dataset(
        DataConfig(root=str(shapes_coco), image_size=96), "val", task="semantic", train=False
    )
    image, target = dataset[0]
    class_map, instance_ids = target["semantic_mask"], target["instance_ids"]
    assert class_map.dtype == torch.int64 and instance_ids.dtype == torch.int32
    assert class_map.shape == image.shape[-2:] == (96, 96)
    assert torch.equal(class_map > 0, instance_ids > 0)
    instances = _eval_dataset(shapes_coco, split="val")[0][1]
    for k, (mask, label) in enumerate(zip(instances["masks"], instances["labels"], strict=True), 1):
        assert (class_map[mask.bool()] == label).all() and (instance_ids[mask.bool()] == k).all()


def _write_coco(root, annotations, categories, image_size=(20, 30)):
    height, width = image_size
    (root / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(root / "train" / "a.png")
    coco = {
        "images": [{"id": 5, "file_name": "a.png", "height": height, "width": width}],
        "annotations": annotations,
        "categories": categories,
    }
    (root / "train.json").write_text(json.dumps(coco))
    return root


def test_category_ids_remapped_by_sorted_id_polygons_and_crowd(tmp_path):
    crowd = np.zeros((20, 30), dtype=np.uint8)
    crowd[15:20, 0:10] = 1
    annotations = [
        {
            "id": 1,
            "image_id": 5,
            "category_id": 7,
            "bbox": [2, 2, 4, 4],
            "iscrowd": 0,
            "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]],
        },
        {"id": 2, "image_id": 5, "category_id": 3, "bbox": [10, 1, 5, 3], "iscrowd": 0},
        {
            "id": 3,
            "image_id": 5,
            "category_id": 3,
            "bbox": [0, 15, 10, 5],
            "iscrowd": 1,
            "segmentation": mask_to_rle(crowd),
        },
    ]
    categories = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]
    root = _write_coco(tmp_path, annotations, categories)
    dataset = _eval_dataset(root)
    assert dataset.class_names == ["three", "seven"] and dataset.category_ids == [3, 7]
    _, target = dataset[0]
    assert target["image_id"] == 5
    assert target["labels"].tolist() == [2, 1]  # crowd left out of the training target
    assert target["boxes"].tolist() == [[2, 2, 6, 6], [10, 1, 15, 4]]
    assert target["masks"][0].sum() == 16  # polygon
    assert target["masks"][1].sum() == 15 and target["masks"][1, 1:4, 10:15].all()  # box fill
    semantic = _eval_dataset(root, task="semantic", image_size=20)[0][1]["semantic_mask"]
    assert (semantic[15:20, 0:10] == 255).all()  # crowd -> ignore
    assert (semantic[2:6, 2:6] == 2).all() and (semantic[1:4, 10:15] == 1).all()
    assert set(semantic.unique().tolist()) == {0, 1, 2, 255}


def test_grayscale_coco_images_load_with_one_channel(tmp_path):
    root = _write_coco(tmp_path, [], [{"id": 1, "name": "a"}])
    Image.fromarray(np.full((20, 30), 200, dtype=np.uint8)).save(root / "train" / "a.png")
    dataset = _eval_dataset(root)
    image, target = dataset[0]
    assert dataset.in_channels == 1 and image.shape == (1, 20, 30)
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 20, 30)
    assert torch.allclose(image, torch.tensor(200 / 255))


@pytest.mark.parametrize("task", ["detection", "instance"])
def test_training_pipeline_keeps_targets_consistent(shapes_coco, task):
    cfg = DataConfig(
        root=str(shapes_coco),
        hflip=0.5,
        vflip=0.5,
        rot90=True,
        scale_jitter=(0.5, 1.5),
        photometric=True,
    )
    dataset = build_dataset(cfg, "train", task=task, train=True)
    torch.manual_seed(0)
    for index in range(8):
        image, target = dataset[index]
        n = len(target["labels"])
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        assert target["boxes"].shape == (n, 4) and target["masks"].shape == (n, 96, 96)
        widths = target["boxes"][:, 2:] - target["boxes"][:, :2]
        assert (widths >= 1).all()
        assert (target["boxes"][:, :2] >= 0).all() and (target["boxes"][:, 2:] <= 96).all()


@pytest.mark.parametrize("task", ["detection", "instance"])
def test_flips_and_rotations_move_masks_with_their_boxes(shapes_coco, task):
    """Quarter turns and flips are exact: each mask's tight box is its box after them.

    (Scale jitter resamples the masks, so there a box and its mask's box differ by up to a
    few pixels; without it they must agree to the pixel.)
    """
    cfg = DataConfig(root=str(shapes_coco), hflip=0.5, vflip=0.5, rot90=True, photometric=True)
    dataset = build_dataset(cfg, "train", task=task, train=True)
    torch.manual_seed(0)
    for index in range(8):
        _, target = dataset[index]
        boxes = target["boxes"].as_subclass(torch.Tensor)
        assert torch.equal(masks_to_boxes(target["masks"]), boxes), index
