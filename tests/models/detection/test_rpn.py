"""Region Proposal Network: initialisation (Faster R-CNN §3.1.3), anchor labels and the
balanced sample of §3.1.2 with the builders' defaults, and proposals and losses equal to
torchvision's RPN given the same weights and seed."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from tests.memory import backward_peak_bytes
from torchvision.models.detection import rpn as tv_rpn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors
from torchvision.models.detection.image_list import ImageList

import seglab
from seglab.models.detection.rpn import RegionProposalNetwork, RPNHead
from seglab.models.detection.transform import ImageBatch
from seglab.ops.anchors import AnchorGenerator
from seglab.structures.boxes import box_iou

SIZES, RATIOS = ((16,), (32,)), ((0.5, 1.0, 2.0),) * 2


def test_head_starts_from_a_gaussian_of_std_0_01():
    """§3.1.3: new layers drawn from a zero-mean Gaussian with standard deviation 0.01."""
    torch.manual_seed(0)
    head = RPNHead(64, num_anchors=9, num_convs=2)
    for layer in (*head.convs, head.objectness, head.box_deltas):
        weight = layer.weight.detach().flatten()
        standard_error = 1 / math.sqrt(2 * weight.numel())  # of a sample std, relative
        assert abs(float(weight.std()) / 0.01 - 1) < 5 * standard_error
        assert abs(float(weight.mean())) < 5 * 0.01 / math.sqrt(weight.numel())
        assert torch.all(layer.bias == 0)


def default_rpn() -> RegionProposalNetwork:
    """The RPN of the Faster R-CNN builder with its training defaults."""
    model = seglab.build_model("faster_rcnn", num_classes=3, backbone="resnet18",
                               representation_size=8)  # fmt: skip
    return model.proposal_generator


def test_anchor_labels_and_sample_with_the_builders_defaults():
    """Positive: IoU >= 0.7, or the best anchor of a ground-truth box; negative: IoU < 0.3;
    256 anchors sampled per image, at most half positive (§3.1.2)."""
    rpn = default_rpn()
    anchors = AnchorGenerator(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2)(
        [(256, 256)], (256, 256), [torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 32, 32)]
    )[0]
    gt_boxes = torch.tensor([[20.0, 30.0, 60.0, 62.0], [100.0, 80.0, 230.0, 200.0]])
    labels, matched_boxes = rpn._label_anchors(anchors, gt_boxes)
    iou = box_iou(gt_boxes, anchors)  # (2, A)
    best = iou.max(dim=0).values
    best_of_a_gt = (iou == iou.max(dim=1, keepdim=True).values).any(dim=0)
    assert torch.equal(labels == 1, (best >= 0.7) | best_of_a_gt)
    assert torch.equal(labels == 0, (best < 0.3) & ~best_of_a_gt)
    assert torch.equal(labels == -1, (best >= 0.3) & (best < 0.7) & ~best_of_a_gt)
    assert int((labels == 1).sum()) < 128 < int((labels == 0).sum())  # positives are scarce
    torch.manual_seed(0)
    (positive,), (negative,) = rpn.sampler([labels])
    assert int(positive.sum()) == int((labels == 1).sum())  # every positive, then
    assert int(positive.sum() + negative.sum()) == 256  # negatives fill the 256
    assert torch.all(labels[positive] == 1) and torch.all(labels[negative] == 0)
    assert torch.equal(matched_boxes[labels == 1], gt_boxes[iou.argmax(dim=0)][labels == 1])


def rpn_pair(training: bool) -> tuple[RegionProposalNetwork, tv_rpn.RegionProposalNetwork]:
    """Ours and torchvision's RPN with the same weights on two levels of 8 channels."""
    torch.manual_seed(0)
    settings = {"pre_nms_top_n": {"training": 300, "testing": 200},
                "post_nms_top_n": {"training": 100, "testing": 50}}  # fmt: skip
    ours = RegionProposalNetwork(
        anchor_generator=AnchorGenerator(SIZES, RATIOS), head=RPNHead(8, 3), **settings
    )
    theirs = tv_rpn.RegionProposalNetwork(
        TorchvisionAnchors(SIZES, RATIOS), tv_rpn.RPNHead(8, 3), 0.7, 0.3, 256, 0.5,
        settings["pre_nms_top_n"], settings["post_nms_top_n"], 0.7,
    )  # fmt: skip
    their_head = theirs.head.state_dict()
    ours.head.load_state_dict({
        "convs.0.weight": their_head["conv.0.0.weight"],
        "convs.0.bias": their_head["conv.0.0.bias"],
        "objectness.weight": their_head["cls_logits.weight"],
        "objectness.bias": their_head["cls_logits.bias"],
        "box_deltas.weight": their_head["bbox_pred.weight"],
        "box_deltas.bias": their_head["bbox_pred.bias"],
    })  # fmt: skip
    return ours.train(training), theirs.train(training)


def rpn_inputs():
    torch.manual_seed(1)
    image_sizes = [(64, 64), (60, 48)]
    features = OrderedDict(p2=torch.randn(2, 8, 16, 16), p3=torch.randn(2, 8, 8, 8))
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 62.0, 60.0]])},
        {"boxes": torch.zeros((0, 4))},  # an image without objects: all negatives
    ]
    batch = ImageBatch(torch.zeros(2, 3, 64, 64), image_sizes, [torch.zeros(3, 1, 1)] * 2)
    return batch, features, targets


def test_losses_and_proposals_equal_torchvisions():
    for training in (True, False):
        ours, theirs = rpn_pair(training)
        batch, features, targets = rpn_inputs()
        torch.manual_seed(5)
        proposals, losses = ours(batch, features, targets)
        torch.manual_seed(5)
        their_proposals, their_losses = theirs(
            ImageList(batch.tensors, batch.image_sizes), features,
            targets if training else None,
        )  # fmt: skip
        for mine, reference in zip(proposals, their_proposals, strict=True):
            torch.testing.assert_close(mine, reference)
        if training:
            assert losses["loss_objectness"] > 0 and losses["loss_rpn_box_reg"] > 0
            torch.testing.assert_close(losses["loss_objectness"], their_losses["loss_objectness"])
            torch.testing.assert_close(losses["loss_rpn_box_reg"], their_losses["loss_rpn_box_reg"])
        else:  # eval mode with targets: the same losses as training would sample
            assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
            assert len(proposals[0]) <= 50


EPS = 2.0**-24  # float32's unit roundoff


def rpn_level_gradients(head: RPNHead, feature, upstream, *, lean: bool):
    """The head's outputs on one level and the gradients of (outputs * upstream).sum() for
    the level and the head's parameters, by `_RPNLevel` (lean) or the modules."""
    head._lean_backward = lambda level: lean
    objectness, deltas = head([feature])
    outputs = (objectness[0], deltas[0])
    loss = sum((output * up).sum() for output, up in zip(outputs, upstream, strict=True))
    return outputs, torch.autograd.grad(loss, [feature, *head.parameters()])


def absolute_terms(head: RPNHead, feature, upstream) -> list[torch.Tensor]:
    """For the level, the 3x3 weight and bias: the sums of their gradients' terms' absolute
    values (float64), through the ReLU's mask of the forward."""
    conv = head.convs[0]
    hidden = F.relu(conv(feature)).detach().double()
    sibling_terms = sum(
        torch.nn.grad.conv2d_input(hidden.shape, layer.weight.detach().double().abs(),
                                   up.double().abs())
        for layer, up in zip((head.objectness, head.box_deltas), upstream, strict=True)
    ) * (hidden > 0)  # fmt: skip
    weight = conv.weight.detach().double()
    return [
        torch.nn.grad.conv2d_input(feature.shape, weight.abs(), sibling_terms, padding=1),
        torch.nn.grad.conv2d_weight(
            feature.detach().double().abs(), weight.shape, sibling_terms, padding=1
        ),
        sibling_terms.sum((0, 2, 3)),
    ]


def test_rpn_level_backward_is_the_modules_to_summation_order():
    """`_RPNLevel` (one level of the RPN head as one node, for the training step's memory):
    outputs and the 1x1 convs' gradients bit-equal to the modules'; the shared conv's and
    the level's gradients differ only by adding the two 1x1 convs' terms in one sum (15
    instead of 3 + 12), carried through the 3x3 conv's backward: within (15 + 2 n) EPS of
    the terms' absolute sum, n the terms of the 3x3 conv's own sums."""
    torch.manual_seed(0)
    head = RPNHead(16, 3)
    feature = torch.randn(2, 16, 20, 24).contiguous(memory_format=torch.channels_last)
    feature.requires_grad_(True)
    upstream = [torch.randn(2, 3, 20, 24), torch.randn(2, 12, 20, 24)]
    outputs, gradients = rpn_level_gradients(head, feature, upstream, lean=True)
    expected, expected_gradients = rpn_level_gradients(head, feature, upstream, lean=False)
    assert all(torch.equal(a, b) for a, b in zip(outputs, expected, strict=True))
    assert all(
        torch.equal(a, b) for a, b in zip(gradients[3:], expected_gradients[3:], strict=True)
    )  # fmt: skip
    bounds = absolute_terms(head, feature, upstream)
    terms = (16 * 9, 2 * 20 * 24, 2 * 20 * 24)  # level, 3x3 weight, 3x3 bias
    for ours, theirs, bound, n in zip(gradients, expected_gradients, bounds, terms, strict=False):
        assert torch.all((ours - theirs).abs() <= (15 + 2 * n) * EPS * bound + 1e-30)
        assert theirs.abs().sum() > 0


def test_rpn_level_backward_holds_one_gradient_of_the_hidden_features():
    """The modules' backward holds the 3x3 conv's output h, h's gradient from each 1x1 conv
    and the ReLU's (four tensors of h's size at once); `_RPNLevel` holds h and one gradient,
    then releases h before the 3x3 conv's backward makes the level's gradient."""
    torch.manual_seed(0)
    head = RPNHead(64, 3)
    feature = torch.randn(2, 64, 64, 64).contiguous(memory_format=torch.channels_last)
    feature.requires_grad_(True)
    hidden = feature.numel() * 4

    def forward():
        objectness, deltas = head([feature])
        return objectness[0].sum() + deltas[0].sum()

    lean = backward_peak_bytes(forward)
    head._lean_backward = lambda level: False
    modules = backward_peak_bytes(forward)
    assert lean < 1.5 * hidden <= modules


def test_rpn_level_node_only_where_a_gradient_is_recorded():
    """Without a gradient to record the head runs its modules (oneDNN fuses conv and ReLU
    there); with one, one level is one `_RPNLevel` node."""
    head = RPNHead(8, 3)
    feature = torch.randn(1, 8, 6, 6)
    assert head._lean_backward(feature)  # the head's parameters are trained
    head.requires_grad_(False)
    assert not head._lean_backward(feature)
    assert head._lean_backward(feature.requires_grad_(True))
    with torch.no_grad():
        assert not head._lean_backward(feature)
