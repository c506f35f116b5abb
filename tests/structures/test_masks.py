import json

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

from seglab.structures.masks import (
    mask_to_rle,
    masks_to_boxes,
    paste_masks_in_image,
    rle_area,
    segmentation_to_mask,
)


def test_polygon_rasterises_to_the_pixels_inside():
    # The square with corners (2, 2) and (6, 6) covers pixels 2..5 in x and y: 16 pixels.
    mask = segmentation_to_mask([[2, 2, 6, 2, 6, 6, 2, 6]], 10, 10)
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[2:6, 2:6] = 1
    np.testing.assert_array_equal(mask, expected)


def test_several_polygons_are_merged():
    mask = segmentation_to_mask([[0, 0, 2, 0, 2, 2, 0, 2], [5, 5, 7, 5, 7, 7, 5, 7]], 8, 8)
    assert mask.sum() == 8 and mask[0, 0] == 1 and mask[6, 6] == 1


def test_uncompressed_rle_is_column_major():
    # counts: 1 zero, 2 ones, 3 zeros, pixels in column-major order.
    mask = segmentation_to_mask({"size": [2, 3], "counts": [1, 2, 3]}, 2, 3)
    np.testing.assert_array_equal(mask, [[0, 1, 0], [1, 0, 0]])


def test_mask_rle_round_trip_is_exact_and_json_ready():
    rng = np.random.default_rng(0)
    mask = (rng.random((37, 53)) > 0.6).astype(np.uint8)
    rle = mask_to_rle(mask)
    rle = json.loads(json.dumps(rle))  # counts is a str, size a list of ints
    np.testing.assert_array_equal(segmentation_to_mask(rle, 37, 53), mask)
    assert rle_area(rle) == mask.sum()
    assert mask_to_rle(torch.from_numpy(mask)) == rle


def test_polygon_to_mask_to_rle_matches_pycocotools():
    polygon = [[10.5, 3.0, 30.2, 8.7, 22.0, 25.5, 5.0, 18.0]]
    mask = segmentation_to_mask(polygon, 32, 40)
    reference = coco_mask.merge(coco_mask.frPyObjects(polygon, 32, 40))
    assert mask_to_rle(mask)["counts"] == reference["counts"].decode("ascii")


def test_masks_to_boxes_uses_pixel_edges():
    masks = torch.zeros((2, 10, 12), dtype=torch.uint8)
    masks[0, 2:5, 3:9] = 1
    boxes = masks_to_boxes(masks)
    assert boxes.tolist() == [[3.0, 2.0, 9.0, 5.0], [0.0, 0.0, 0.0, 0.0]]


def _random_rois(count: int, mask_size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, 1, mask_size, mask_size, generator=generator)
    corners = torch.rand(count, 2, generator=generator) * torch.tensor([110.0, 90.0]) - 5
    sizes = torch.rand(count, 2, generator=generator) * 60 + 0.5
    return masks, torch.cat([corners, corners + sizes], dim=1)


@pytest.mark.parametrize("mask_size,seed", [(28, 0), (14, 1), (7, 2)])
def test_paste_equals_torchvision(mask_size, seed):
    masks, boxes = _random_rois(40, mask_size, seed)
    expected = tv_paste(masks, boxes, (100, 120))  # (N, 1, H, W)
    assert torch.equal(paste_masks_in_image(masks, boxes, (100, 120)), expected)
    assert torch.equal(paste_masks_in_image(masks[:, 0], boxes, (100, 120)), expected[:, 0])


def test_paste_threshold_gives_binary_uint8():
    masks, boxes = _random_rois(5, 28, 3)
    binary = paste_masks_in_image(masks[:, 0], boxes, (100, 120), threshold=0.5)
    assert binary.dtype == torch.uint8 and binary.shape == (5, 100, 120)
    expected = tv_paste(masks, boxes, (100, 120))[:, 0] > 0.5
    assert torch.equal(binary.bool(), expected)


def test_paste_hand_case_constant_mask():
    # A mask of ones in box [10, 10, 30, 30]: padding makes the edge fade, the centre is 1,
    # the expanded box (scale 30/28 about the centre) bounds what is written.
    masks = torch.ones(1, 28, 28)
    pasted = paste_masks_in_image(masks, torch.tensor([[10.0, 10.0, 30.0, 30.0]]), (40, 40))[0]
    assert pasted[20, 20] == 1.0
    assert pasted[:9].sum() == 0 and pasted[:, :9].sum() == 0  # expanded box starts at 9
    assert pasted[31:].sum() == 0 and pasted[:, 31:].sum() == 0  # inclusive end at 30
    assert 0 < pasted[9, 20] < 1  # faded edge from the zero padding


def test_paste_box_outside_the_image_and_empty_input():
    outside = paste_masks_in_image(
        torch.ones(1, 28, 28), torch.tensor([[-50.0, 5, -20, 20]]), (30, 30)
    )
    assert outside.shape == (1, 30, 30) and outside.sum() == 0
    empty = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (30, 40))
    assert empty.shape == (0, 30, 40)
    assert paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (30, 40)).shape == (
        0,
        1,
        30,
        40,
    )


def test_paste_for_export_equals_the_loop(monkeypatch):
    # ONNX export pastes all masks with two matrix products (no Python loop over boxes);
    # the result is the loop's to float32 rounding of the weights (measured 4e-6 here).
    masks, boxes = _random_rois(40, 28, 4)
    expected = paste_masks_in_image(masks, boxes, (100, 120))
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    separable = paste_masks_in_image(masks, boxes, (100, 120))
    torch.testing.assert_close(separable, expected, atol=2e-5, rtol=0)
    assert expected.amax() > 0.9  # boxes inside the image: real masks were compared
    empty = paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (30, 40))
    assert empty.shape == (0, 1, 30, 40)
