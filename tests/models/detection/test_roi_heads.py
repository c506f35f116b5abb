"""RoI heads: training RoIs sampled with the builders' defaults (Faster / Mask R-CNN: IoU
0.5, 512 per image, 25% foreground), images without objects, and the mask loss on the
positive RoIs only (Mask R-CNN §3)."""

from __future__ import annotations

import torch
from tests.models.detection.conftest import square_image, tiny_detector

import seglab
from seglab.structures.boxes import box_iou

GT_BOXES = torch.tensor([[20.0, 20.0, 80.0, 90.0], [100.0, 40.0, 180.0, 120.0]])


def jittered_proposals(count: int, seed: int) -> torch.Tensor:
    """`count` boxes around the two ground-truth boxes and anywhere in a 200 px image:
    about half overlap an object at IoU >= 0.5."""
    generator = torch.Generator().manual_seed(seed)
    near = GT_BOXES.repeat(count // 4, 1) + torch.randn(count // 2, 4, generator=generator) * 8
    corner = torch.rand(count - len(near), 2, generator=generator) * 150
    size = torch.rand(count - len(near), 2, generator=generator) * 50 + 10
    anywhere = torch.cat([corner, corner + size], dim=1)
    return torch.cat([near, anywhere])


def test_sampling_with_the_builders_defaults():
    heads = seglab.build_model(
        "faster_rcnn", num_classes=3, backbone="resnet18", representation_size=8
    ).roi_heads
    target = {"boxes": GT_BOXES, "labels": torch.tensor([2, 1])}
    many = jittered_proposals(2000, seed=0)  # > 128 positives and > 384 negatives
    few = jittered_proposals(2000, seed=1)[1000:]  # mostly far from the objects
    torch.manual_seed(0)
    rois = heads.sample_rois([many, few], [target, target])
    for image_rois in rois:
        proposals, labels, gt_index = (
            image_rois.proposals,
            image_rois.labels,
            image_rois.matched_gt_index,
        )
        best_iou, best_gt = box_iou(GT_BOXES, proposals).max(dim=0)
        positive = labels > 0
        assert len(labels) == 512
        assert torch.equal(positive, best_iou >= 0.5)  # foreground: IoU >= 0.5
        assert torch.all(labels[~positive] == 0)  # the rest is background: IoU < 0.5
        assert torch.equal(labels[positive], target["labels"][best_gt[positive]])
        assert torch.equal(gt_index[positive], best_gt[positive])
    assert int((rois[0].labels > 0).sum()) == 128  # 25% of 512 when there are enough
    # too few positives: all of them are taken (the gt boxes at least), background fills up
    assert 2 <= int((rois[1].labels > 0).sum()) < 128


def test_image_without_objects_gives_background_rois_only():
    heads = tiny_detector("faster_rcnn").roi_heads  # 32 RoIs per image
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
    rois = heads.sample_rois([jittered_proposals(100, seed=2)], [empty])
    assert len(rois[0].labels) == 32 and torch.all(rois[0].labels == 0)


def test_mask_loss_sees_the_positive_rois_only():
    model = tiny_detector("mask_rcnn").train()
    pooled_boxes = []
    model.roi_heads.mask_roi_pool.register_forward_hook(
        lambda module, inputs, output: pooled_boxes.append(inputs[1])
    )
    sampled = []
    sample = model.roi_heads.sample_rois
    model.roi_heads.sample_rois = lambda *args: sampled.append(sample(*args)) or sampled[-1]
    image, target = square_image()
    _, losses = model.forward_with_losses([image, image], [target, target])
    assert losses["loss_mask"] > 0
    (boxes_per_image,) = pooled_boxes
    for boxes, image_rois in zip(boxes_per_image, sampled[0], strict=True):
        assert int((image_rois.labels == 0).sum()) > 0  # there were negatives to leave out
        assert torch.equal(boxes, image_rois.proposals[image_rois.labels > 0])
