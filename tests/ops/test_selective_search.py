"""Selective search: finds the objects of a simple image, deterministic, xyxy float32,
distinct boxes, searched at a set scale and mapped back to the image's pixels."""

import ctypes

import cv2
import numpy as np
import pytest
import torch

from seglab.errors import UserError
from seglab.ops.selective_search import ProposalSettings, selective_search
from seglab.structures.boxes import box_iou

OBJECTS = torch.tensor([[8.0, 10.0, 30.0, 40.0], [40.0, 36.0, 60.0, 56.0]])


def two_object_image() -> torch.Tensor:
    """64 x 64 grey-ish noise background with a red and a blue rectangle."""
    generator = torch.Generator().manual_seed(0)
    image = 0.5 + 0.03 * torch.randn(3, 64, 64, generator=generator)
    image[:, 10:40, 8:30] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    image[:, 36:56, 40:60] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    return image.clamp(0, 1)


def test_proposals_cover_the_objects():
    boxes = selective_search(two_object_image(), mode="fast")
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4 and len(boxes) > 2
    assert torch.all(boxes[:, 2:] > boxes[:, :2])
    assert boxes.min() >= 0 and boxes.max() <= 64
    best_iou = box_iou(OBJECTS, boxes).max(dim=1).values
    assert torch.all(best_iou > 0.9), best_iou


def test_deterministic_whatever_the_c_random_state():
    image = two_object_image()
    first = selective_search(image, mode="fast")
    ctypes.CDLL(None).rand()  # disturb the global C random state
    assert torch.equal(selective_search(image, mode="fast"), first)
    other_seed = selective_search(image, mode="fast", seed=1)
    assert sorted(map(tuple, other_seed.tolist())) == sorted(map(tuple, first.tolist()))


def test_modes_limits_and_inputs():
    image = two_object_image()
    fast = selective_search(image, mode="fast", max_proposals=None)
    quality = selective_search(image, mode="quality", max_proposals=None)
    single = selective_search(image, mode="single", max_proposals=None)
    assert len(quality) > len(fast) > len(single) > 0
    assert torch.equal(selective_search(image, max_proposals=5), fast[:5])
    large = selective_search(image, max_proposals=None, min_size=16)
    assert len(large) < len(fast)
    assert torch.all(large[:, 2:] - large[:, :2] >= 16)
    rgb_uint8 = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert torch.equal(selective_search(rgb_uint8), selective_search(image))
    grey = selective_search(image[:1])
    assert len(grey) > 0 and torch.equal(
        grey, selective_search(np.ascontiguousarray(rgb_uint8[..., 0]))
    )


def test_boxes_are_distinct():
    boxes = selective_search(two_object_image(), mode="quality", max_proposals=None)
    assert len(torch.unique(boxes, dim=0)) == len(boxes)


def test_scale_searches_a_resized_image_and_maps_boxes_back():
    image = two_object_image()
    rgb_uint8 = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    enlarged = cv2.resize(rgb_uint8, (128, 128), interpolation=cv2.INTER_LINEAR)
    at_128 = selective_search(image, scale=128, max_proposals=None)
    # The same search as on the enlarged image, with boxes in the 64-px frame (exact: / 2).
    assert torch.equal(at_128, selective_search(enlarged, max_proposals=None) / 2)
    assert torch.equal(selective_search(image, scale=64), selective_search(image))
    assert torch.all(box_iou(OBJECTS, at_128).max(dim=1).values > 0.9)


def test_scale_keeps_the_aspect_and_each_axis_frame():
    # 64 high, 50 wide -> searched at 31 x 24 (31 = round(30.72)): one factor per axis.
    image = two_object_image()[:, :, :50]
    boxes = selective_search(image, scale=24, max_proposals=None, min_size=6)
    assert boxes[:, 0::2].max() == 50 and boxes[:, 1::2].max() == 64  # the whole image
    assert torch.all(boxes[:, 2:] - boxes[:, :2] >= 6)  # min_size in the original frame
    red = torch.tensor([[8.0, 10.0, 30.0, 40.0]])
    assert box_iou(red, boxes).max() > 0.8  # coarse at half resolution, still found


def test_bad_mode_is_a_user_error():
    with pytest.raises(UserError, match="mode"):
        selective_search(two_object_image(), mode="slow")


def test_settings_key_is_stable_and_settings_are_checked():
    assert ProposalSettings().key == "fast-fullres-min0-max2000"
    assert ProposalSettings("quality", 500, 16, None).key == "quality-500px-min16-maxall"
    assert ProposalSettings(min_size=2.5).key != ProposalSettings(min_size=2).key
    for bad in ({"mode": "slow"}, {"scale": 0}, {"min_size": -1}, {"max_proposals": 0}):
        with pytest.raises(UserError):
            ProposalSettings(**bad)
