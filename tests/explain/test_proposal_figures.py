"""Figures 4 and 5: R-CNN's crops and scores are the R-CNN's own, the grouping steps are
selective search's own."""

from __future__ import annotations

import numpy as np
import torch

from seglab.explain.figure import to_uint8_image
from seglab.explain.grouping import hierarchical_grouping
from seglab.explain.proposals import BACKGROUND_IOU, rcnn_regions
from seglab.ops.selective_search import selective_search
from seglab.structures.boxes import box_iou


def _forward_keeping_crops(model, image) -> tuple[dict, torch.Tensor]:
    """model([image]) and every crop its CNN read, in the proposals' order."""
    crops = []
    cnn = model.roi_heads.box_roi_pool.cnn
    handle = cnn.register_forward_hook(lambda _m, inputs, _o: crops.append(inputs[0]))
    try:
        with torch.no_grad():
            output = model([image])[0]
    finally:
        handle.remove()
    return output, torch.cat(crops)


def test_rcnn_crops_are_what_its_cnn_reads_in_a_detection(rcnn, page_context):
    image, target = page_context.image, page_context.page_image.target
    data = rcnn_regions(rcnn, image, target)
    _, crops = _forward_keeping_crops(rcnn, image)
    assert len(crops) == len(data.proposals) and len(data.chosen) == 4
    assert torch.equal(data.crops, crops[data.chosen])
    assert data.crops.shape[-2:] == (32, 32)  # the model's warp_size
    mean = rcnn.transform.image_mean.reshape(-1, 1, 1)
    std = rcnn.transform.image_std.reshape(-1, 1, 1)
    torch.testing.assert_close(data.pixels, (crops[data.chosen] * std + mean).clamp(0, 1))


def test_rcnn_proposals_are_its_selective_search(rcnn, page_context):
    data = rcnn_regions(rcnn, page_context.image, page_context.page_image.target)
    searched = rcnn.proposal_generator.search(page_context.image)
    assert len(data.proposals) == len(searched) <= 60  # the model's max_proposals
    # resized to 96 px by the model and back: equal up to float rounding of the scales
    torch.testing.assert_close(data.proposals, searched, rtol=0, atol=1e-4)


def test_rcnn_scores_are_the_softmax_its_detections_come_from(rcnn, page_context):
    data = rcnn_regions(rcnn, page_context.image, page_context.page_image.target)
    output, _ = _forward_keeping_crops(rcnn, page_context.image)
    assert len(output["scores"]) > 0  # box_score_thresh 0: there are detections
    for score, label in zip(output["scores"], output["labels"], strict=True):
        assert (data.probabilities[:, label] == score).any()
    torch.testing.assert_close(data.probabilities.sum(dim=1), torch.ones(len(data.proposals)))
    assert data.class_names == ["background", "1", "2", "3"]  # built without class names


def test_rcnn_shows_each_objects_best_region_and_one_on_no_object(rcnn, page_context):
    target = page_context.page_image.target
    data = rcnn_regions(rcnn, page_context.image, target)
    iou = box_iou(target["boxes"], data.proposals)  # (G, P)
    assert data.chosen[:3] == iou.argmax(dim=1)[:3].tolist()
    assert data.ious[:3] == iou.max(dim=1).values[:3].tolist()
    assert data.matched_labels[:3] == target["labels"][:3].tolist()
    assert data.ious[3] < BACKGROUND_IOU


def test_rcnn_without_ground_truth_shows_its_most_confident_regions(rcnn, page_context):
    data = rcnn_regions(rcnn, page_context.image, None)
    foreground = data.probabilities[:, 1:].max(dim=1).values
    assert data.chosen[0] == int(foreground.argmax())
    assert data.ious == [-1.0] * 4 and data.matched_labels == [-1] * 4


def test_grouping_forms_exactly_the_boxes_of_selective_search_single(page_context):
    rgb = to_uint8_image(page_context.image)
    grouping = hierarchical_grouping(rgb)
    expected = selective_search(rgb, mode="single", max_proposals=None)
    assert {tuple(box) for box in grouping.boxes.tolist()} == {
        tuple(box) for box in expected.tolist()
    }
    initial = int(grouping.labels.max()) + 1
    assert len(grouping.merges) == initial - 1  # merged down to one region
    assert len(np.unique(grouping.regions_after(0))) == initial
    assert len(np.unique(grouping.regions_after(len(grouping.merges)))) == 1


def test_regions_after_a_merge_join_the_two_merged_regions(page_context):
    grouping = hierarchical_grouping(to_uint8_image(page_context.image))
    first, second = grouping.merges[0]
    before, after = grouping.regions_after(0), grouping.regions_after(1)
    joined = (before == first) | (before == second)
    assert len(np.unique(after[joined])) == 1
    ys, xs = np.nonzero(joined)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert grouping.boxes[int(after[joined][0])].tolist() == box
