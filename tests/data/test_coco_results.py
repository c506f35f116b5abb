"""Model outputs -> COCO results: boxes to xywh, labels to category ids, masks to RLE."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from seglab.data.coco_results import to_coco_results


def test_to_coco_results_converts_boxes_labels_and_masks():
    masks = torch.zeros(2, 1, 6, 8)
    masks[0, 0, 1:3, 2:5] = 0.9
    masks[1, 0, 4:, :] = 0.7
    masks[1, 0, 5, 0] = 0.5  # exactly at the threshold: outside (probability > 0.5)
    output = {
        "boxes": torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.0, 4.0, 8.0, 6.0]]),
        "labels": torch.tensor([2, 1]),
        "scores": torch.tensor([0.75, 0.25]),
        "masks": masks,
    }
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    empty["scores"] = torch.zeros(0)
    results = to_coco_results([output, empty], [17, 18], category_ids=[3, 7])
    assert len(results) == 2
    assert results[0]["bbox"] == [2.0, 1.0, 3.0, 2.0]
    assert [r["category_id"] for r in results] == [7, 3]
    assert [r["image_id"] for r in results] == [17, 17]
    assert results[1]["score"] == pytest.approx(0.25)
    for result, mask in zip(results, masks[:, 0] > 0.5, strict=True):
        assert isinstance(result["segmentation"]["counts"], str)
        assert result["segmentation"]["size"] == [6, 8]
        decoded = mask_utils.decode({**result["segmentation"]})
        np.testing.assert_array_equal(decoded, mask.numpy().astype(np.uint8))
    assert mask_utils.decode(results[1]["segmentation"])[5, 0] == 0
    json.dumps(results)  # JSON-ready as is


def test_to_coco_results_rejects_labels_outside_1_to_k():
    output = {"boxes": torch.zeros(1, 4), "labels": torch.tensor([0]), "scores": torch.ones(1)}
    with pytest.raises(ValueError, match="labels must be in 1..2"):
        to_coco_results([output], [1], category_ids=[1, 2])


def test_no_detections_with_masks_give_no_results():
    output = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    output.update(scores=torch.zeros(0), masks=torch.zeros(0, 1, 5, 5))
    assert to_coco_results([output], [1], category_ids=[1]) == []


def test_outputs_and_image_ids_must_pair_up():
    with pytest.raises(ValueError, match="2 outputs but 1 image ids"):
        to_coco_results([{}, {}], [1], category_ids=[1])
