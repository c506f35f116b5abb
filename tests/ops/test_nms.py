"""NMS: the greedy reference equals torchvision's kernel; batched NMS equals torchvision's."""

import pytest
import torch
import torchvision

from seglab.ops.nms import batched_nms, nms, nms_reference


def clustered_boxes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes jittered around a few centres so that many overlap."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, 2, generator=generator) * 100
    which = torch.randint(0, 6, (count,), generator=generator)
    centre = centres[which] + torch.randn(count, 2, generator=generator) * 4
    half = torch.rand(count, 2, generator=generator) * 15 + 3
    boxes = torch.cat((centre - half, centre + half), dim=1)
    scores = torch.rand(count, generator=generator)
    return boxes, scores


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_reference_equals_kernel(iou_threshold, seed):
    boxes, scores = clustered_boxes(200, seed)
    kept = nms(boxes, scores, iou_threshold)
    assert 6 <= len(kept) < 200  # suppression really happened
    assert torch.equal(nms_reference(boxes, scores, iou_threshold), kept)
    assert torch.equal(kept, torchvision.ops.nms(boxes, scores, iou_threshold))


def test_reference_ties_and_hand_case():
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0, 0, 10, 10]]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.9])  # boxes 0 and 3 tie: the first one wins
    # IoU(0, 1) = 90 / 110 = 0.818
    assert nms_reference(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms_reference(boxes, scores, 0.85).tolist() == [0, 1, 2]
    assert nms_reference(boxes[:0], scores[:0], 0.5).shape == (0,)


@pytest.mark.parametrize("count", [300, 1500])  # both sides of the per-category switch
def test_batched_nms_equals_torchvision(count):
    boxes, scores = clustered_boxes(count, seed=2)
    categories = torch.randint(0, 4, (count,), generator=torch.Generator().manual_seed(3))
    kept = batched_nms(boxes, scores, categories, 0.5)
    assert torch.equal(kept, torchvision.ops.batched_nms(boxes, scores, categories, 0.5))
    # per-category NMS by hand gives the same set
    by_hand = torch.cat(
        [
            torch.where(categories == c)[0][
                nms_reference(boxes[categories == c], scores[categories == c], 0.5)
            ]
            for c in range(4)
        ]
    )
    assert sorted(kept.tolist()) == sorted(by_hand.tolist())
    assert torch.all(scores[kept][:-1] >= scores[kept][1:])


def test_batched_nms_keeps_overlapping_boxes_of_other_categories():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8])
    assert batched_nms(boxes, scores, torch.tensor([1, 2]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([1, 1]), 0.5).tolist() == [0]
    empty = batched_nms(boxes[:0], scores[:0], torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
