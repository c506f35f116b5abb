"""U-Net output -> instances -> COCO results, scored like Mask R-CNN's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seglab.cli.main import main
from seglab.data.coco_results import to_coco_results
from seglab.errors import UserError
from seglab.evaluation.coco import evaluate_coco
from seglab.inference.instances import (
    coco_instance_results,
    instances_from_probabilities,
    predict_instances,
)
from seglab.models.segmentation.unet import UNet
from seglab.structures.masks import mask_to_rle


def probabilities_from(class_map: np.ndarray, num_classes: int, confidence: float = 0.9):
    """(C, H, W) probabilities putting `confidence` on each pixel's class."""
    one_hot = np.eye(num_classes)[class_map].transpose(2, 0, 1)
    spread = (1 - confidence) / (num_classes - 1)
    return torch.from_numpy(one_hot * (confidence - spread) + spread).float()


def disk(size_hw, centre, radius):
    rows, columns = np.ogrid[: size_hw[0], : size_hw[1]]
    return (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2


def test_components_give_one_instance_per_region_with_exact_boxes():
    class_map = np.zeros((40, 50), dtype=np.int64)
    class_map[5:15, 3:10] = 1
    class_map[20:30, 30:45] = 1
    class_map[32:38, 2:8] = 2
    output = instances_from_probabilities(probabilities_from(class_map, 3), min_area=4)
    assert sorted(output["labels"].tolist()) == [1, 1, 2]
    boxes = {tuple(box) for box in output["boxes"].tolist()}
    assert boxes == {(3.0, 5.0, 10.0, 15.0), (30.0, 20.0, 45.0, 30.0), (2.0, 32.0, 8.0, 38.0)}
    assert output["masks"].shape == (3, 1, 40, 50)
    assert output["masks"].sum().item() == (class_map > 0).sum()
    torch.testing.assert_close(output["scores"], torch.full((3,), 0.9))


def test_watershed_splits_touching_objects_that_components_merge():
    size_hw = (48, 64)
    touching = disk(size_hw, (24, 20), 12) | disk(size_hw, (24, 41), 12)
    probabilities = probabilities_from(touching.astype(np.int64), 2)
    merged = instances_from_probabilities(probabilities, method="components")
    split = instances_from_probabilities(probabilities, method="watershed", min_distance=5)
    assert len(merged["labels"]) == 1
    assert len(split["labels"]) == 2
    assert split["masks"].sum().item() == touching.sum()
    centres = sorted(box[0] + box[2] for box in split["boxes"].tolist())
    assert centres[0] < 2 * 30 < centres[1]  # one object on each side of the neck


def test_small_regions_and_low_confidence_are_dropped():
    class_map = np.zeros((20, 20), dtype=np.int64)
    class_map[2:4, 2:4] = 1  # 4 pixels
    class_map[8:16, 8:16] = 1
    output = instances_from_probabilities(probabilities_from(class_map, 2), min_area=16)
    assert len(output["labels"]) == 1
    unsure = probabilities_from(class_map, 2)
    unsure[1][class_map == 1], unsure[0][class_map == 1] = 0.4, 0.6
    assert len(instances_from_probabilities(unsure, min_area=1)["labels"]) == 0
    assert len(instances_from_probabilities(unsure, min_area=1, threshold=0.3)["labels"]) == 2


def test_background_only_gives_empty_outputs():
    output = instances_from_probabilities(probabilities_from(np.zeros((8, 9), np.int64), 2))
    assert output["boxes"].shape == (0, 4) and output["masks"].shape == (0, 1, 8, 9)
    assert output["labels"].dtype == torch.int64 and output["scores"].shape == (0,)
    assert to_coco_results([output], [1], [1]) == []


def test_unknown_method_is_a_user_error():
    with pytest.raises(UserError, match="watershed"):
        instances_from_probabilities(torch.rand(2, 4, 4), method="mean-shift")


def coco_ground_truth(instance_masks: list[np.ndarray], labels: list[int]) -> dict:
    height, width = instance_masks[0].shape
    annotations = []
    for index, (mask, label) in enumerate(zip(instance_masks, labels, strict=True), 1):
        rows, columns = np.nonzero(mask)
        box = [int(columns.min()), int(rows.min())]
        box += [int(columns.max()) + 1 - box[0], int(rows.max()) + 1 - box[1]]
        annotations.append(
            {
                "id": index,
                "image_id": 7,
                "category_id": 10 * label,
                "bbox": box,
                "iscrowd": 0,
                "area": int(mask.sum()),
                "segmentation": mask_to_rle(mask.astype(np.uint8)),
            }
        )
    return {
        "images": [{"id": 7, "file_name": "a.png", "height": height, "width": width}],
        "annotations": annotations,
        "categories": [{"id": 10, "name": "circle"}, {"id": 20, "name": "square"}],
    }


def test_perfect_probabilities_score_full_instance_ap_via_seglab_eval(tmp_path):
    size_hw = (64, 64)
    objects = [disk(size_hw, (20, 20), 9), disk(size_hw, (20, 41), 9), disk(size_hw, (50, 50), 8)]
    labels = [1, 1, 2]
    class_map = np.zeros(size_hw, dtype=np.int64)
    for mask, label in zip(objects, labels, strict=True):
        class_map[mask] = label
    gt = coco_ground_truth(objects, labels)
    output = instances_from_probabilities(probabilities_from(class_map, 3), method="watershed")
    results = to_coco_results([output], [7], [10, 20])
    assert evaluate_coco(gt, results, "segm")["AP"] == pytest.approx(1.0)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    code = main(
        [
            "eval",
            "--gt",
            str(tmp_path / "gt.json"),
            "--pred",
            str(tmp_path / "pred.json"),
            "--iou-type",
            "segm",
            "--out",
            str(tmp_path / "metrics.json"),
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["segm"]["AP"] == pytest.approx(1.0)


def test_predict_instances_resizes_to_the_requested_size_and_tiles_valid_models():
    torch.manual_seed(0)
    same = UNet(base_channels=4, depth=2).eval()
    outputs = predict_instances(same, [torch.rand(3, 32, 40)], output_sizes=[(64, 80)], min_area=1)
    assert outputs[0]["masks"].shape[-2:] == (64, 80)
    valid = UNet(base_channels=4, depth=2, padding="valid", norm="none").eval()
    outputs = predict_instances(valid, [torch.rand(3, 33, 35)], tile_size=64, min_area=1)
    assert outputs[0]["masks"].shape[-2:] == (33, 35)


def test_coco_instance_results_on_shapes_data(tmp_path):
    from seglab.data import DataConfig, build_dataset
    from seglab.data.shapes import generate_shapes

    root = generate_shapes(tmp_path / "shapes", task="instance", train=1, val=2, size=64)
    cfg = DataConfig(root=str(root), image_size=64)
    dataset = build_dataset(cfg, "val", task="semantic", train=False)
    model = UNet(num_classes=4, base_channels=4, depth=2).eval()
    results = coco_instance_results(model, dataset, min_area=1)
    image_ids = {info["id"] for info in dataset.coco_gt["images"]}
    assert all(result["image_id"] in image_ids for result in results)
    assert {result["category_id"] for result in results} <= set(dataset.category_ids)
    metrics = evaluate_coco(dataset.coco_gt, results, "segm")
    assert 0.0 <= metrics["AP"] <= 1.0 or metrics["AP"] == -1.0


def test_the_line_parting_touching_targets_is_given_back():
    """COCO semantic targets part touching objects of a class by 2 px (seglab.data.coco);
    predicted exactly so, the instances are the objects whole again, and their free borders
    do not grow (but for the few corner pixels where the line meets them)."""
    from seglab.data.coco import _part_touching

    squares = np.zeros((2, 48, 64), dtype=bool)
    squares[0, 8:40, 6:30] = True
    squares[1, 12:36, 30:58] = True  # touches the first along column 29 | 30
    class_map = squares.any(axis=0).astype(np.int64)
    instance_ids = (squares * np.arange(1, 3)[:, None, None]).sum(axis=0).astype(np.int32)
    _part_touching(class_map, instance_ids)
    assert (class_map[12:36, 29:31] == 0).all()
    output = instances_from_probabilities(probabilities_from(class_map, 2))
    found = sorted(output["masks"][:, 0].bool().numpy(), key=lambda mask: np.argwhere(mask)[0, 1])
    found = np.stack(found)
    assert (found >= squares).all()  # every pixel given back
    assert (found & ~squares).sum() <= 8  # 2 corner pixels at each end, for each square
