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


def test_mask_loss_sees_the_positive_rois_only(monkeypatch):
    from seglab.models.detection import roi_heads

    model = tiny_detector("mask_rcnn").train()
    pooled_boxes = []  # the mask pooler's boxes: the second of those pooled in one node
    joint = roi_heads.pool_jointly

    def spy(poolers, features, proposals, *args, **kwargs):
        pooled_boxes.append(proposals[1])
        return joint(poolers, features, proposals, *args, **kwargs)

    monkeypatch.setattr(roi_heads, "pool_jointly", spy)
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


def test_training_pools_box_and_mask_rois_in_one_node_as_the_separate_modules(monkeypatch):
    """A training step pools the box and mask RoIs and applies fc6 in one autograd node
    (`ops.roi_align.pool_jointly`, the step's peak memory): the losses and the heads'
    gradients are the separate modules' bit for bit; the gradients below the pooling (FPN,
    backbone) differ only by the pyramid gradient's order of summation (box and mask
    terms added in one buffer, box terms in blocks of regions), carried through the
    backward: compared to 1e-4 of each tensor's largest gradient."""
    from seglab.models.detection import roi_heads

    image, target = square_image()
    taken = []
    joint = roi_heads.pool_jointly

    def spy(*args, **kwargs):
        taken.append(joint(*args, **kwargs))
        return taken[-1]

    results = []
    for pool in (spy, lambda *args, **kwargs: None):
        monkeypatch.setattr(roi_heads, "pool_jointly", pool)
        model = tiny_detector("mask_rcnn").train()
        torch.manual_seed(1)
        _, losses = model.forward_with_losses([image, image], [target, target])
        sum(losses.values()).backward()
        gradients = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        results.append((losses, gradients))
    assert len(taken) == 1 and taken[0] is not None and len(taken[0]) == 2
    (losses, gradients), (expected_losses, expected_gradients) = results
    assert all(torch.equal(losses[name], expected_losses[name]) for name in expected_losses)
    assert gradients.keys() == expected_gradients.keys()
    for name, gradient in gradients.items():
        expected = expected_gradients[name]
        if name.startswith("roi_heads."):
            assert torch.equal(gradient, expected), name
        else:
            scale = float(expected.abs().max())
            torch.testing.assert_close(gradient, expected, rtol=0, atol=1e-4 * scale + 1e-30)
    assert losses["loss_mask"] > 0
