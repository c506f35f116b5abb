"""RPN, box and mask heads: output layout and losses equal torchvision's functions."""

from __future__ import annotations

import torch
from tests.models.detection.conftest import tiny_detector
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection.rpn import concat_box_prediction_layers

from seglab.models.detection.box_head import BoxPredictor, TwoMLPHead, fast_rcnn_loss
from seglab.models.detection.mask_head import (
    MaskHead,
    MaskPredictor,
    mask_loss,
    mask_probabilities,
    mask_targets,
)
from seglab.models.detection.rpn import RPNHead, flatten_per_anchor


def test_rpn_outputs_flatten_in_torchvision_anchor_order():
    torch.manual_seed(0)
    head = RPNHead(8, num_anchors=3)
    features = [torch.rand(2, 8, 6, 5), torch.rand(2, 8, 3, 3)]
    objectness, deltas = head(features)
    assert objectness[0].shape == (2, 3, 6, 5) and deltas[0].shape == (2, 12, 6, 5)
    expected_objectness, expected_deltas = concat_box_prediction_layers(objectness, deltas)
    torch.testing.assert_close(
        flatten_per_anchor(objectness, 1).reshape(-1, 1), expected_objectness
    )
    torch.testing.assert_close(flatten_per_anchor(deltas, 4).reshape(-1, 4), expected_deltas)


def test_box_head_shapes_and_loss_equal_torchvision():
    torch.manual_seed(0)
    pooled = torch.rand(6, 4, 7, 7)
    logits, deltas = BoxPredictor(32, num_classes=3)(TwoMLPHead(4 * 49, 32)(pooled))
    assert logits.shape == (6, 3) and deltas.shape == (6, 12)
    labels = torch.tensor([0, 1, 2, 0, 2, 1])
    targets = torch.randn(6, 4)
    ours = fast_rcnn_loss(logits, deltas, labels, targets)
    classifier, box = tv_roi_heads.fastrcnn_loss(logits, deltas, [labels[:4], labels[4:]],
                                                 [targets[:4], targets[4:]])  # fmt: skip
    torch.testing.assert_close(ours["loss_classifier"], classifier)
    torch.testing.assert_close(ours["loss_box_reg"], box)
    assert box > 0


def test_mask_head_shapes_and_loss_equal_torchvision():
    torch.manual_seed(0)
    head, predictor = MaskHead(8, channels=16, num_convs=4), MaskPredictor(16, 16, num_classes=3)
    logits = predictor(head(torch.rand(5, 8, 14, 14)))
    assert logits.shape == (5, 3, 28, 28)
    gt_masks = torch.zeros((2, 40, 50), dtype=torch.uint8)
    gt_masks[0, 5:30, 10:40] = 1
    gt_masks[1, 20:, :25] = 1
    proposals = torch.tensor(
        [[8.0, 4, 42, 31], [0, 18, 26, 40], [12, 6, 30, 20], [1, 1, 49, 39], [0, 20, 20, 40]]
    )
    matched = torch.tensor([0, 1, 0, 0, 1])
    gt_labels = torch.tensor([2, 1])
    targets = mask_targets(gt_masks, proposals, matched, 28, aligned=False)
    assert targets.shape == (5, 28, 28) and 0 < targets.mean() < 1
    ours = mask_loss(logits, gt_labels[matched], targets)
    expected = tv_roi_heads.maskrcnn_loss(logits, [proposals], [gt_masks], [gt_labels], [matched])
    torch.testing.assert_close(ours, expected)
    (expected_probabilities,) = tv_roi_heads.maskrcnn_inference(logits, [gt_labels[matched]])
    torch.testing.assert_close(
        mask_probabilities(logits, gt_labels[matched]), expected_probabilities
    )


def test_mask_loss_without_positive_rois_is_zero_with_a_graph():
    logits = torch.zeros((0, 3, 28, 28), requires_grad=True)
    loss = mask_loss(logits, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 28, 28))
    assert loss == 0 and loss.requires_grad


def test_no_detections_gives_empty_outputs_of_the_right_shape():
    model = tiny_detector("mask_rcnn", box_score_thresh=1.0).eval()  # no score exceeds 1
    with torch.no_grad():
        (output,) = model([torch.rand(3, 70, 90)])
    assert output["boxes"].shape == (0, 4) and output["scores"].shape == (0,)
    assert output["labels"].dtype == torch.int64 and output["masks"].shape == (0, 1, 70, 90)
