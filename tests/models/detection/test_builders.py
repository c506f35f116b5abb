"""The builders: Faster and Mask R-CNN's defaults are torchvision's (pinned against its
modules, and a converted model's training losses equal torchvision's under one seed); the
original Faster R-CNN without FPN; single-map backbones; renamed and refused options; the
proposals the selective-search detectors ask their data for."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import detection

import seglab
from seglab.data.proposals import ProposalSettings
from seglab.models.detection.convert import convert_torchvision
from seglab.models.detection.options import FasterRCNNOptions
from seglab.models.zoo import data_proposals
from seglab.ops.roi_align import MultiScaleRoIAlign
from seglab.ops.roi_pool import MultiScaleRoIPool
from seglab.structures.boxes import box_iou

SMALL = {"backbone": "resnet18", "representation_size": 16}


@pytest.fixture(scope="module")
def torchvision_mask_rcnn():
    torch.manual_seed(0)
    return detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5)


def test_faster_and_mask_rcnn_defaults_are_torchvisions(torchvision_mask_rcnn):
    theirs = torchvision_mask_rcnn
    ours = seglab.build_model("mask_rcnn", num_classes=5)
    rpn, their_rpn = ours.proposal_generator, theirs.rpn
    assert (
        (rpn.matcher.high_threshold, rpn.matcher.low_threshold)
        == (0.7, 0.3)
        == (their_rpn.proposal_matcher.high_threshold, their_rpn.proposal_matcher.low_threshold)
    )
    assert (
        rpn.matcher.allow_low_quality_matches
        is their_rpn.proposal_matcher.allow_low_quality_matches
        is True
    )  # noqa: E501
    assert (
        (rpn.sampler.batch_size_per_image, rpn.sampler.positive_fraction)
        == (256, 0.5)
        == (their_rpn.fg_bg_sampler.batch_size_per_image, their_rpn.fg_bg_sampler.positive_fraction)
    )
    assert rpn.pre_nms_top_n == their_rpn._pre_nms_top_n
    assert rpn.post_nms_top_n == their_rpn._post_nms_top_n
    assert (rpn.nms_thresh, rpn.score_thresh) == (their_rpn.nms_thresh, their_rpn.score_thresh)
    assert rpn.anchor_generator.sizes == theirs.rpn.anchor_generator.sizes
    assert rpn.anchor_generator.aspect_ratios == theirs.rpn.anchor_generator.aspect_ratios
    heads, their_heads = ours.roi_heads, theirs.roi_heads
    assert (
        (heads.matcher.high_threshold, heads.matcher.low_threshold)
        == (0.5, 0.5)
        == (their_heads.proposal_matcher.high_threshold, their_heads.proposal_matcher.low_threshold)
    )
    assert heads.matcher.background_floor == 0.0
    assert (heads.sampler.batch_size_per_image, heads.sampler.positive_fraction) == (512, 0.25)
    assert heads.sampler.batch_size_per_image == their_heads.fg_bg_sampler.batch_size_per_image
    assert heads.sampler.positive_fraction == their_heads.fg_bg_sampler.positive_fraction
    assert heads.box_coder.weights == their_heads.box_coder.weights
    assert heads.box_loss_beta == 1 / 9  # torchvision's roi_heads.fastrcnn_loss
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (
        their_heads.score_thresh,
        their_heads.nms_thresh,
        their_heads.detections_per_img,
    )
    assert ours.transform.min_size == theirs.transform.min_size
    assert ours.transform.max_size == theirs.transform.max_size
    assert heads.box_roi_pool.output_size == their_heads.box_roi_pool.output_size
    assert heads.mask_roi_pool.output_size == their_heads.mask_roi_pool.output_size
    assert heads.box_roi_pool.sampling_ratio == their_heads.box_roi_pool.sampling_ratio


def tiny_scene(size: int = 128):
    """Two images with large objects: many proposals overlap them, so the RoI sampler's
    positive fraction and the RPN's thresholds decide which examples are drawn."""
    torch.manual_seed(1)
    images = [torch.rand(3, size, size), torch.rand(3, size, size - 16)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 90.0, 100.0], [60.0, 40.0, 120.0, 120.0],
                                [0.0, 0.0, 128.0, 128.0]]),
         "labels": torch.tensor([1, 3, 2])},
        {"boxes": torch.tensor([[5.0, 5.0, 100.0, 70.0], [40.0, 50.0, 110.0, 126.0],
                                [0.0, 0.0, 112.0, 128.0]]),
         "labels": torch.tensor([2, 1, 3])},
    ]  # fmt: skip
    return images, targets


def test_converted_model_trains_with_torchvisions_losses(monkeypatch):
    """Same weights, same seed, train mode: the four losses of Faster R-CNN equal
    torchvision's. They depend on every sampling default (RPN 0.7 / 0.3, 256 anchors at
    1:1; RoIs at IoU 0.5, 512 per image with 25% foreground), which these images exercise:
    their objects are large and the RPN's NMS is off (in both), so that more than 128
    RoIs per image are positive and the 25% cap decides how many are drawn.

    In float64: the RPN's random scores lie within float32 rounding of each other, so the
    float32 rounding of our fused convolutions (another summation order) would reorder the
    proposals and change the drawn RoIs; float64 rounding (1e-16) reorders none."""
    torch.manual_seed(0)
    theirs = detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=4, min_size=128, max_size=128,
        rpn_nms_thresh=1.0,
    ).train()  # fmt: skip
    # torchvision draws a training size even when there is one; ours draws only for several
    monkeypatch.setattr(theirs.transform, "torch_choice", lambda sizes: sizes[0])
    ours = convert_torchvision(
        theirs.state_dict(), "faster_rcnn_resnet50_fpn", frozen_bn_eps=1e-5, norm="bn",
        trainable_stages=5, min_size=128, max_size=128, rpn_nms_thresh=1.0,
    ).train()  # fmt: skip
    theirs.double(), ours.double()
    for name in ("image_mean", "image_std"):  # from Python floats, as torchvision's
        setattr(ours.transform, name, torch.tensor(getattr(theirs.transform, name),
                                                   dtype=torch.float64)[:, None, None])  # fmt: skip
    images, targets = tiny_scene()
    images = [image.double() for image in images]
    targets = [{**target, "boxes": target["boxes"].double()} for target in targets]
    with torch.no_grad():
        torch.manual_seed(7)
        expected = theirs(images, targets)
        torch.manual_seed(7)
        _, losses = ours.forward_with_losses(images, targets)
    assert set(losses) == set(expected)
    for name, value in expected.items():
        # (torchvision's objectness loss comes out float32: its anchor labels are)
        torch.testing.assert_close(losses[name], value.double(), rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        batch, resized_targets = ours.transform(images, targets)
        proposals, _ = ours.proposal_generator(batch, ours.backbone(batch.tensors))
    for image_proposals, target in zip(proposals, resized_targets, strict=True):
        candidates = torch.cat([image_proposals, target["boxes"]])
        best_iou = box_iou(target["boxes"], candidates).max(dim=0).values
        assert int((best_iou >= 0.5).sum()) > 128  # the 25% cap binds: 0.5 would change it


def test_original_faster_rcnn_has_nine_anchors_on_c4():
    """Faster R-CNN §3.1.1 without FPN: 3 scales (128, 256, 512 px) x 3 aspect ratios =
    9 anchors per position of one map at stride 16 (C4 of a ResNet)."""
    model = seglab.build_model("faster_rcnn", num_classes=3, fpn=False, **SMALL)
    generator = model.proposal_generator.anchor_generator
    assert generator.sizes == ((128, 256, 512),) and generator.aspect_ratios == ((0.5, 1.0, 2.0),)
    assert generator.num_anchors_per_location() == [9]
    assert model.proposal_generator.head.objectness.out_channels == 9
    features = model.backbone(torch.rand(1, 3, 160, 96))
    assert list(features) == ["c4"] and features["c4"].shape[-2:] == (10, 6)  # stride 16
    assert model.backbone.body.layer4 is None  # C5 is not built
    assert FasterRCNNOptions(num_classes=2).anchor_sizes_per_level == (
        (32,), (64,), (128,), (256,), (512,))  # fmt: skip


def test_c5_single_map_and_vgg16_conv5():
    c5 = seglab.build_model("faster_rcnn", num_classes=3, fpn=False, feature_stage="c5", **SMALL)
    assert c5.backbone(torch.rand(1, 3, 64, 64))["c5"].shape[-2:] == (2, 2)  # stride 32
    vgg = seglab.build_model("faster_rcnn", num_classes=3, backbone="vgg16", fpn=False,
                             representation_size=8)  # fmt: skip
    conv5 = vgg.backbone(torch.rand(1, 3, 64, 96))["conv5"]
    assert conv5.shape == (1, 512, 4, 6)  # conv5_3: 512 channels at stride 16
    assert vgg.roi_heads.box_head.fc6.in_features == 512 * 7 * 7  # Fast R-CNN §2.2
    assert not vgg.backbone.body.features[0].weight.requires_grad  # conv1, conv2 frozen
    assert vgg.backbone.body.features[10].weight.requires_grad  # conv3_1 and up (§4.5)


def test_roi_pool_options_name_what_they_do():
    pool = seglab.build_model("faster_rcnn", num_classes=3, roi_pool="max", **SMALL)
    assert isinstance(pool.roi_heads.box_roi_pool, MultiScaleRoIPool)
    unaligned = seglab.build_model("faster_rcnn", num_classes=3, roi_align_half_pixel=False,
                                   **SMALL)  # fmt: skip
    assert isinstance(unaligned.roi_heads.box_roi_pool, MultiScaleRoIAlign)
    assert unaligned.roi_heads.box_roi_pool.aligned is False
    assert unaligned.roi_heads.mask_target_aligned is False
    with pytest.raises(seglab.UserError, match="'roi_aligned' is now called 'roi_align_half"):
        seglab.build_model("faster_rcnn", num_classes=3, roi_aligned=False, **SMALL)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("faster_rcnn", {"mask_head_channels": 8}, "mask_head_channels"),
        ("faster_rcnn", {"backbone": "vgg16", "fpn": True}, "fpn: needs a ResNet"),
        ("faster_rcnn", {"backbone": "vgg16", "fpn": False, "norm": "frozen_bn"}, "VGG"),
        ("faster_rcnn", {"roi_pool": "average"}, "roi_pool 'average': unknown"),
        ("faster_rcnn", {"feature_stage": "c3"}, "feature_stage 'c3': unknown"),
        ("mask_rcnn", {"fc_svd_ranks": [0, 4]}, "fc_svd_ranks"),
    ],
)
def test_options_a_detector_does_not_have_are_refused(name, options, message):
    with pytest.raises(seglab.UserError, match=message):
        seglab.build_model(name, num_classes=3, **{**SMALL, **options})


def test_data_proposals_are_the_models_selective_search_settings():
    """What the trainer and `seglab eval` ask the data for, before the model is built."""
    settings = data_proposals("fast_rcnn", {"proposal_mode": "single", "max_proposals": 50})
    assert settings == ProposalSettings(mode="single", scale=None, min_size=0.0, max_proposals=50)
    model = seglab.build_model("rcnn", num_classes=3, proposal_scale=128, **SMALL)
    assert data_proposals("rcnn", {"proposal_scale": 128}) == model.proposal_generator.settings
    assert data_proposals("faster_rcnn", {}) is None and data_proposals("unet", {}) is None
    with pytest.raises(seglab.UserError, match="proposal mode 'slow'"):
        data_proposals("fast_rcnn", {"proposal_mode": "slow"})
