"""Figure 6: the Fast R-CNN's feature map, its RoI pooling module's 7 x 7 output for one RoI,
the sub-windows its kernel maxes over, and its scores, all from one detection."""

from __future__ import annotations

import torch

from seglab.explain.fast_rcnn import roi_pooling
from seglab.ops.roi_pool import roi_pool
from seglab.structures.boxes import box_iou


def test_pooled_is_the_models_roi_pooling_of_the_roi(fast_rcnn, page_context):
    data = roi_pooling(fast_rcnn, page_context.image, page_context.page_image.target)
    assert data.level == "c4" and data.spatial_scale == 1 / 16
    assert data.feature.shape == (256, 24, 24)  # 384 px at stride 16
    pooler = fast_rcnn.roi_heads.box_roi_pool
    with torch.no_grad():
        again = pooler(data.run.features, [data.box[None]], data.run.image_sizes)[0]
    assert torch.equal(data.pooled, again)
    roi = torch.tensor([[0.0, *data.box.tolist()]])
    assert torch.equal(data.pooled, roi_pool(data.feature[None], roi, 7, 1 / 16)[0])


def test_sub_windows_are_those_roi_pool_maxes_over(fast_rcnn, page_context):
    data = roi_pooling(fast_rcnn, page_context.image, page_context.page_image.target)
    assert len(data.windows) == 7 and all(len(row) == 7 for row in data.windows)
    for i, row in enumerate(data.windows):
        for j, w in enumerate(row):
            window = data.feature[:, w.y0 : w.y1, w.x0 : w.x1]
            assert torch.equal(data.pooled[:, i, j], window.amax(dim=(1, 2)))
    # the RoI spans more than 7 cells a side here: windows are h/7 x w/7 cells, rounded out
    top, bottom = data.windows[0][0], data.windows[-1][-1]
    height, width = bottom.y1 - top.y0, bottom.x1 - top.x0
    assert height > 7 and width > 7
    for w in (window for row in data.windows for window in row):
        assert height // 7 <= w.y1 - w.y0 <= -(-height // 7) + 1
        assert width // 7 <= w.x1 - w.x0 <= -(-width // 7) + 1


def test_roi_is_the_largest_objects_best_proposal_and_scores_are_the_models(
    fast_rcnn, page_context
):
    target = page_context.page_image.target
    data = roi_pooling(fast_rcnn, page_context.image, target)
    boxes = target["boxes"].float()
    largest = int((boxes[:, 2:] - boxes[:, :2]).prod(dim=1).argmax())
    proposals = data.run.to_original(data.run.proposals)
    assert data.index == int(box_iou(boxes[largest][None], proposals)[0].argmax())
    assert torch.equal(data.box, data.run.proposals[data.index])
    with torch.no_grad():
        output = fast_rcnn([page_context.image])[0]
    logits = data.run.heads["box_predictor"][0]
    assert torch.equal(data.probabilities, logits[data.index].softmax(dim=0))
    probabilities = logits.softmax(dim=1)
    for score, label in zip(output["scores"], output["labels"], strict=True):
        assert (probabilities[:, label] == score).any()


def test_without_ground_truth_the_roi_is_the_most_confident(fast_rcnn, page_context):
    data = roi_pooling(fast_rcnn, page_context.image, None)
    probabilities = data.run.heads["box_predictor"][0].softmax(dim=1)
    assert data.index == int(probabilities[:, 1:].max(dim=1).values.argmax())
