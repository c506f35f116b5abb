"""Figures 7-12: anchors, matcher labels, pyramid, RoI level, mask and pipeline shapes are
what the detector computes."""

from __future__ import annotations

import math

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors
from torchvision.models.detection.image_list import ImageList

from seglab.explain.mask_rcnn import mask_of_one_roi, pipeline_stages, pyramid_levels
from seglab.explain.roi_align import pooling_level, roi_comparison
from seglab.explain.rpn import all_anchors, anchor_labels, anchors_at, reference_box
from seglab.structures.masks import paste_masks_in_image


def test_run_detector_returns_the_models_own_output(mask_rcnn, mask_rcnn_run, page_context):
    with torch.no_grad():
        direct = mask_rcnn([page_context.image])[0]
    assert torch.equal(direct["boxes"], mask_rcnn_run.output["boxes"])
    assert torch.equal(direct["masks"], mask_rcnn_run.output["masks"])


def test_anchors_are_torchvisions_for_the_same_maps(mask_rcnn, mask_rcnn_run):
    generator = mask_rcnn.proposal_generator.anchor_generator
    reference = TorchvisionAnchors(generator.sizes, generator.aspect_ratios)
    images = ImageList(mask_rcnn_run.batch.tensors, mask_rcnn_run.image_sizes)
    expected = reference(images, list(mask_rcnn_run.features.values()))[0]
    assert torch.equal(all_anchors(mask_rcnn, mask_rcnn_run), expected)


def test_anchors_at_one_position_are_centred_there_with_each_size_and_ratio(
    mask_rcnn, mask_rcnn_run
):
    levels = anchors_at(mask_rcnn, mask_rcnn_run, (50.0, 30.0))
    generator = mask_rcnn.proposal_generator.anchor_generator
    assert [level.level for level in levels] == ["p2", "p3", "p4", "p5", "pool"]
    for level, sizes, ratios in zip(levels, generator.sizes, generator.aspect_ratios, strict=True):
        row, column = level.position
        centres = (level.boxes[:, :2] + level.boxes[:, 2:]) / 2
        assert torch.equal(
            centres,
            torch.tensor(
                [[column * level.stride[1], row * level.stride[0]]] * len(centres)
            ).float(),
        )
        widths = level.boxes[:, 2] - level.boxes[:, 0]
        expected = [round(s / math.sqrt(r) / 2) * 2 for r in ratios for s in sizes]
        assert widths.tolist() == expected
        assert abs(column * level.stride[1] - 50.0) <= level.stride[1] / 2
    # 96 px batch: P5 has 3 cells, the pool level 2, so the generator's (integer) stride
    # there is 96 // 2 = 48, not 64; the figure shows what the generator uses
    assert [level.stride[0] for level in levels] == [4, 8, 16, 32, 48]


def test_anchor_labels_are_the_rpns_training_labels(mask_rcnn, mask_rcnn_run, page_context):
    gt_box, _ = reference_box(page_context, mask_rcnn_run)
    labels = anchor_labels(mask_rcnn, mask_rcnn_run, gt_box)
    rpn_labels, _ = mask_rcnn.proposal_generator._label_anchors(labels.anchors, gt_box[None])
    assert torch.equal((labels.matched >= 0).float(), (rpn_labels == 1).float())
    assert torch.equal(labels.matched == -2, rpn_labels == -1)
    assert (labels.matched >= 0).sum() >= 1  # every box gets at least its best anchor
    assert labels.level.bincount().tolist() == [
        f.shape[-1] * f.shape[-2] * 3 for f in mask_rcnn_run.features.values()
    ]


def test_pyramid_strides_and_shapes(mask_rcnn_run):
    levels = pyramid_levels(mask_rcnn_run)
    padded = mask_rcnn_run.batch.padded_size
    assert [level.stride for level in levels] == [4, 8, 16, 32, 48]  # 96 px: see above
    for level in levels[:4]:
        assert level.shape[-2:] == (padded[0] // level.stride, padded[1] // level.stride)
    for level in levels:
        assert level.energy.shape == level.shape[-2:]


def test_pipeline_shapes_chain(mask_rcnn, mask_rcnn_run, page_context):
    stages = {(s.part, s.what): s.shape for s in pipeline_stages(mask_rcnn, page_context.image,
                                                                  mask_rcnn_run)}  # fmt: skip
    proposals = mask_rcnn_run.proposals.shape[0]
    detections = mask_rcnn_run.output["boxes"].shape[0]
    assert stages[("roi_heads.box_roi_pool", "RoIAlign of each proposal")] == (proposals, 16, 7, 7)
    assert stages[("roi_heads.box_predictor", "class scores")] == (proposals, 4)
    assert stages[("roi_heads.box_predictor", "box deltas per class")] == (proposals, 16)
    assert stages[("roi_heads.mask_roi_pool", "RoIAlign of each detection")] == (
        detections, 16, 14, 14)  # fmt: skip
    assert stages[("output", "masks pasted into the image")] == (
        detections, 1, *page_context.image.shape[-2:])  # fmt: skip


def test_mask_of_one_roi_is_pasted_as_the_model_pastes_it(mask_rcnn_run, page_context):
    roi = mask_of_one_roi(mask_rcnn_run, 0)
    assert roi.mask.shape == (28, 28)
    pasted = paste_masks_in_image(roi.mask[None], roi.box[None], page_context.image.shape[-2:])
    assert torch.equal(pasted[0], roi.pasted)


def test_roi_comparison_uses_the_poolers_level(mask_rcnn, mask_rcnn_run):
    box = torch.tensor([10.0, 12.0, 50.0, 44.0])
    pooler = mask_rcnn.roi_heads.box_roi_pool
    level = pooling_level(pooler, mask_rcnn_run, box)
    assert level == "p2"  # FPN eq. 1: a ~38 px box goes to the finest level
    data = roi_comparison(mask_rcnn, mask_rcnn_run, box)
    assert data.spatial_scale == 0.25 and len(data.windows) == 7
    pooled = pooler(mask_rcnn_run.features, [box[None]], mask_rcnn_run.image_sizes)[0]
    torch.testing.assert_close(pooled, torch.einsum("ijhw,chw->cij", data.weights, data.feature),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
