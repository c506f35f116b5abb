"""COCO AP: seglab's numbers are pycocotools' own, on random prediction sets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from synthetic_coco import make_gt, make_predictions, pycocotools_stats, write_json

from seglab.data.coco_results import to_coco_results
from seglab.evaluation.coco import AP_NAMES, evaluate_coco


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("with_masks", [False, True])
def test_evaluate_coco_equals_pycocotools(tmp_path, seed, with_masks):
    gt = make_gt(seed)
    predictions = make_predictions(gt, seed, masks=with_masks)
    for iou_type in ["bbox", "segm"] if with_masks else ["bbox"]:
        reference = pycocotools_stats(*write_json(tmp_path, gt, predictions), iou_type)
        assert 0.05 < reference[0] < 0.95  # a set where AP says something
        ours = evaluate_coco(gt, predictions, iou_type)
        assert list(ours) == list(AP_NAMES)
        assert [ours[name] for name in AP_NAMES] == pytest.approx(reference, abs=1e-3)


def test_evaluate_coco_leaves_its_inputs_unchanged():
    gt = make_gt(0)
    predictions = make_predictions(gt, 0, masks=True)
    gt_before, predictions_before = copy.deepcopy(gt), copy.deepcopy(predictions)
    evaluate_coco(gt, predictions, "segm")
    evaluate_coco(gt, predictions, "bbox")
    assert gt == gt_before and predictions == predictions_before


def test_empty_predictions_give_zero_ap_and_minus_one_where_no_ground_truth():
    gt = make_gt(0, image_size=(60, 60))  # objects of at most 60x60 px: no large ones
    assert not any(a["area"] > 96**2 for a in gt["annotations"])
    metrics = evaluate_coco(gt, [], "bbox")
    assert {name: metrics[name] for name in ("AP", "AP50", "AP75", "APs", "APm")} == dict.fromkeys(
        ("AP", "AP50", "AP75", "APs", "APm"), 0.0
    )
    assert metrics["APl"] == -1.0


def test_ground_truth_without_objects_gives_minus_one():
    gt = make_gt(0)
    gt["annotations"] = []
    predictions = make_predictions(make_gt(0), 0, masks=False)
    assert evaluate_coco(gt, predictions, "bbox") == dict.fromkeys(AP_NAMES, -1.0)


def test_ground_truth_as_predictions_scores_one():
    gt = make_gt(1)
    predictions = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
            "segmentation": a["segmentation"],
        }
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    for iou_type in ("bbox", "segm"):
        assert evaluate_coco(gt, predictions, iou_type)["AP"] == pytest.approx(1.0)


def test_model_outputs_matching_the_ground_truth_score_one():
    gt = make_gt(2)
    outputs, image_ids = [], []
    label_of = {1: 1, 3: 2, 7: 3}  # COCO category id -> label 1..K
    for image in gt["images"]:
        annotations = [
            a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]
        ]
        masks = [annotation_mask(a, image) for a in annotations]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)]
        outputs.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([label_of[a["category_id"]] for a in annotations]),
                "scores": torch.ones(len(annotations)),
                "masks": torch.from_numpy(np.stack(masks)).float()[:, None]
                if masks
                else torch.zeros(0, 1, image["height"], image["width"]),
            }
        )
        image_ids.append(image["id"])
    results = to_coco_results(outputs, image_ids, category_ids=[1, 3, 7])
    assert evaluate_coco(gt, results, "segm")["AP"] == pytest.approx(1.0)
    assert evaluate_coco(gt, results, "bbox")["AP"] == pytest.approx(1.0)


def annotation_mask(annotation: dict, image: dict) -> np.ndarray:
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        segmentation = mask_utils.merge(
            mask_utils.frPyObjects(segmentation, image["height"], image["width"])
        )
    return mask_utils.decode(segmentation)
