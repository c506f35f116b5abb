"""Key renaming of torchvision checkpoints (old and new namings), class names, and builder
options beyond the default wiring (single-level backbone without FPN, GroupNorm)."""

from __future__ import annotations

import torch
from tests.models.detection.conftest import square_image, tiny_detector

from seglab.models.detection.convert import _class_names, rename_torchvision_key


def test_renames_every_kind_of_torchvision_key():
    expected = {
        "backbone.body.layer1.0.conv1.weight": "backbone.body.layer1.0.conv1.weight",
        "backbone.fpn.inner_blocks.2.0.bias": "backbone.fpn.lateral_convs.2.0.bias",
        "backbone.fpn.layer_blocks.0.1.running_var": "backbone.fpn.output_convs.0.1.running_var",
        "rpn.head.conv.0.0.weight": "proposal_generator.head.convs.0.weight",
        "rpn.head.conv.1.0.bias": "proposal_generator.head.convs.1.bias",
        "rpn.head.conv.weight": "proposal_generator.head.convs.0.weight",  # torchvision < 0.13
        "rpn.head.cls_logits.weight": "proposal_generator.head.objectness.weight",
        "rpn.head.bbox_pred.bias": "proposal_generator.head.box_deltas.bias",
        "roi_heads.box_head.fc6.weight": "roi_heads.box_head.fc6.weight",
        "roi_heads.box_head.3.1.running_mean": "roi_heads.box_head.convs.3.1.running_mean",
        "roi_heads.box_head.5.weight": "roi_heads.box_head.fc.weight",
        "roi_heads.box_predictor.cls_score.weight": "roi_heads.box_predictor.class_logits.weight",
        "roi_heads.box_predictor.bbox_pred.bias": "roi_heads.box_predictor.box_deltas.bias",
        "roi_heads.mask_head.2.0.weight": "roi_heads.mask_head.convs.2.0.weight",
        "roi_heads.mask_head.mask_fcn4.bias": "roi_heads.mask_head.convs.3.0.bias",  # < 0.13
        "roi_heads.mask_predictor.conv5_mask.weight": "roi_heads.mask_predictor.upsample.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias": (
            "roi_heads.mask_predictor.mask_logits.bias"
        ),
    }
    assert {key: rename_torchvision_key(key) for key in expected} == expected


def test_class_names_of_converted_models():
    assert _class_names(4) == ["1", "2", "3"]
    coco = _class_names(91)
    assert len(coco) == 90 and coco[0] == "person" and coco[-1] == "toothbrush"


def test_single_level_backbone_without_fpn():
    model = tiny_detector("faster_rcnn", fpn=False, anchor_sizes=[16, 32, 64])
    # 3 sizes x 3 ratios on one level
    assert model.proposal_generator.head.objectness.out_channels == 9
    image, target = square_image()
    _, losses = model.train().forward_with_losses([image], [target])
    assert all(torch.isfinite(loss) for loss in losses.values())
    with torch.no_grad():
        (output,) = model.eval()([image])
    assert output["boxes"].shape[1] == 4 and len(output["boxes"]) > 0


def test_group_norm_backbone_and_batchnorm_heads():
    model = tiny_detector("mask_rcnn", norm="gn", fpn_norm="gn", head_norm="bn",
                          box_head="conv", rpn_head_convs=2)  # fmt: skip
    assert isinstance(model.backbone.body.bn1, torch.nn.GroupNorm)
    assert isinstance(model.roi_heads.mask_head.convs[0][1], torch.nn.BatchNorm2d)
    image, target = square_image()
    _, losses = model.train().forward_with_losses([image, image], [target, target])
    sum(losses.values()).backward()
    assert model.roi_heads.box_head.fc.weight.grad.abs().sum() > 0


def test_grey_images_with_one_input_channel():
    model = tiny_detector("mask_rcnn", in_channels=1).eval()
    with torch.no_grad():
        (output,) = model([torch.rand(1, 64, 80)])
    assert output["masks"].shape[1:] == (1, 64, 80)
