"""Boxes: hand-computed values, and equality with torchvision.ops and its BoxCoder."""

import math

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from seglab.structures.boxes import (
    BoxCoder,
    box_area,
    box_iou,
    clip_boxes,
    remove_small_boxes,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def random_boxes(count: int, seed: int, max_size: float = 100.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    top_left = torch.rand(count, 2, generator=generator) * 200 - 50
    size = torch.rand(count, 2, generator=generator) * max_size + 0.5
    return torch.cat((top_left, top_left + size), dim=1)


def test_hand_computed_area_iou_and_formats():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0]])
    assert box_area(boxes).tolist() == [100.0, 200.0]
    # overlap [5,5,10,10] = 25; union = 100 + 200 - 25 = 275
    assert box_iou(boxes[:1], boxes[1:]).item() == pytest.approx(25 / 275)
    assert box_iou(boxes, boxes).diagonal().tolist() == [1.0, 1.0]
    assert xyxy_to_xywh(boxes).tolist() == [[0, 0, 10, 10], [5, 5, 10, 20]]
    assert torch.equal(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)


def test_box_area_and_iou_equal_torchvision():
    boxes1, boxes2 = random_boxes(40, seed=0), random_boxes(30, seed=1)
    assert torch.equal(box_area(boxes1), torchvision.ops.box_area(boxes1))
    assert torch.equal(box_iou(boxes1, boxes2), torchvision.ops.box_iou(boxes1, boxes2))
    assert box_iou(boxes1, boxes2[:0]).shape == (40, 0)


def test_clip_and_remove_small_equal_torchvision():
    boxes = random_boxes(50, seed=2)
    clipped = clip_boxes(boxes, (60, 80))
    assert torch.equal(clipped, torchvision.ops.clip_boxes_to_image(boxes, (60, 80)))
    assert clipped[:, 0::2].max() <= 80 and clipped[:, 1::2].max() <= 60
    assert clipped.min() >= 0
    assert torch.equal(
        remove_small_boxes(clipped, 5.0), torchvision.ops.remove_small_boxes(clipped, 5.0)
    )
    # hand case: width 4.9 is dropped, exactly 5 is kept
    small = torch.tensor([[0.0, 0.0, 4.9, 10.0], [0.0, 0.0, 5.0, 5.0]])
    assert remove_small_boxes(small, 5.0).tolist() == [1]


def test_box_coder_hand_values_and_round_trip():
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    proposal = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
    gt = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size 20 x 20
    deltas = coder.encode(gt, proposal)
    expected = [10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]
    assert deltas[0].tolist() == pytest.approx(expected)
    assert torch.allclose(coder.decode(deltas, proposal), gt, atol=1e-5)

    proposals, targets = random_boxes(64, seed=3), random_boxes(64, seed=4)
    round_trip = coder.decode(coder.encode(targets, proposals), proposals)
    assert torch.allclose(round_trip, targets, atol=1e-3)


def test_box_coder_clamps_log_scale():
    coder = BoxCoder()
    proposal = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    decoded = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), proposal)
    # exp(log(1000 / 16)) * 16 = 1000 pixels wide, centred at 8
    assert decoded[0].tolist() == pytest.approx([-492.0, -492.0, 508.0, 508.0], rel=1e-5)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_equals_torchvision(weights):
    ours, theirs = BoxCoder(weights), TorchvisionBoxCoder(weights)
    proposals, targets = random_boxes(50, seed=5), random_boxes(50, seed=6)
    assert torch.equal(ours.encode(targets, proposals), theirs.encode_single(targets, proposals))

    num_classes = 3
    deltas = torch.randn(50, 4 * num_classes, generator=torch.Generator().manual_seed(7)) * 3
    expected = theirs.decode(deltas, [proposals])  # (N, K, 4)
    assert torch.equal(ours.decode(deltas, proposals), expected.reshape(50, -1))
    assert torch.equal(ours.decode(deltas.reshape(50, num_classes, 4), proposals), expected)
    assert ours.decode(deltas[:0], proposals[:0]).shape == (0, 4 * num_classes)
