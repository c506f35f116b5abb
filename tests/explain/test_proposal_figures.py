"""Figures 4-6: the grouping steps are selective search's own, R-CNN's context is the
paper's, the Fast R-CNN map and pooling are the CNN's and roi_pool's."""

from __future__ import annotations

import numpy as np
import torch

import seglab
from seglab.explain.figure import to_uint8_image
from seglab.explain.grouping import hierarchical_grouping
from seglab.explain.proposals import roi_pooling, with_context
from seglab.ops.roi_pool import roi_pool
from seglab.ops.selective_search import selective_search


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


def test_context_is_16_pixels_at_a_224_pixel_warp():
    box = torch.tensor([[10.0, 20.0, 202.0, 116.0]])  # 192 x 96
    assert with_context(box).tolist() == [[-6.0, 12.0, 218.0, 124.0]]


def test_fast_rcnn_pooling_is_roi_pool_on_the_cnns_map(page_context):
    torch.manual_seed(0)
    model = seglab.build_model("cnn", num_classes=3, widths=(8, 16, 16, 16)).eval()
    box = torch.tensor([40.0, 50.0, 120.0, 118.0])
    data = roi_pooling(model, page_context.image, box)
    assert data.stride == 8 and data.feature.shape == (16, 24, 24)
    expected = roi_pool(data.feature[None], torch.tensor([[0.0, *box.tolist()]]), 7, 1 / 8)[0]
    assert torch.equal(data.pooled, expected)
    for i, row in enumerate(data.windows):
        for j, w in enumerate(row):
            assert torch.equal(
                expected[:, i, j], data.feature[:, w.y0 : w.y1, w.x0 : w.x1].amax(dim=(1, 2))
            )
