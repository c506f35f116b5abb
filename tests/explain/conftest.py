"""Small models and a generated scene for the explain figure tests (untrained: every figure's
data is checked against the library, whatever the weights)."""

from __future__ import annotations

import pytest
import torch

import seglab
from seglab.explain.context import Context, generated_image
from seglab.explain.detector_run import run_detector

SMALL_MASK_RCNN = dict(
    num_classes=4, backbone="resnet18", norm="bn", min_size=96, max_size=96, fpn_channels=16,
    anchor_sizes=(8, 16, 32, 64, 128), rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
    representation_size=32, mask_head_channels=16, mask_head_convs=1, box_score_thresh=0.0,
    detections_per_img=5,
)  # fmt: skip


SMALL_SELECTIVE_SEARCH = dict(
    num_classes=4, backbone="resnet18", norm="bn", fpn=False, proposal_mode="fast",
    max_proposals=60, representation_size=32, box_score_thresh=0.0, detections_per_img=10,
)  # fmt: skip
SMALL_RCNN = dict(SMALL_SELECTIVE_SEARCH, min_size=96, max_size=96, warp_size=32,
                  context_padding=2, box_roi_size=2, crops_per_batch=16)  # fmt: skip
SMALL_FAST_RCNN = dict(SMALL_SELECTIVE_SEARCH, min_size=384, max_size=384)


@pytest.fixture(scope="module")
def page_context() -> Context:
    return Context(generated_image(0))


@pytest.fixture(scope="module")
def mask_rcnn():
    torch.manual_seed(0)
    return seglab.build_model("mask_rcnn", **SMALL_MASK_RCNN).eval()


@pytest.fixture(scope="module")
def mask_rcnn_run(mask_rcnn, page_context):
    return run_detector(mask_rcnn, page_context.image)


@pytest.fixture(scope="module")
def rcnn():
    torch.manual_seed(0)
    return seglab.build_model("rcnn", **SMALL_RCNN).eval()


@pytest.fixture(scope="module")
def fast_rcnn():
    torch.manual_seed(0)
    return seglab.build_model("fast_rcnn", **SMALL_FAST_RCNN).eval()
