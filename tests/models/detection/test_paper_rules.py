"""The papers' training rules that are options (issue 21): Faster R-CNN's cross-boundary
anchors (§3.3) and loss normalisation (eq. 1); Fast R-CNN's fixed target stds and its
N(0, 0.01) / N(0, 0.001) initialisation of the class and box layers (§2.3)."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

import seglab
from seglab.errors import UserError
from seglab.models.detection.rpn import RegionProposalNetwork, RPNHead
from seglab.models.detection.transform import ImageBatch
from seglab.ops.anchors import AnchorGenerator
from seglab.ops.matcher import Matcher
from seglab.structures.boxes import BoxCoder, box_iou


def single_map_rpn(**options) -> RegionProposalNetwork:
    """The paper's RPN: one stride-16 map, 3 scales x 3 ratios."""
    torch.manual_seed(0)
    anchors = AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),))
    settings = {"pre_nms_top_n": {"training": 300, "testing": 300},
                "post_nms_top_n": {"training": 100, "testing": 100}}  # fmt: skip
    return RegionProposalNetwork(anchor_generator=anchors, head=RPNHead(8, 9), **settings,
                                 **options)  # fmt: skip


def rpn_inputs(image_sizes=((96, 128), (80, 112))):
    """Two images padded to 96 x 128 (a stride-16 map of 6 x 8), a box near a corner in each."""
    torch.manual_seed(1)
    features = OrderedDict(c4=torch.randn(2, 8, 6, 8))
    batch = ImageBatch(torch.zeros(2, 3, 96, 128), list(image_sizes), [torch.zeros(3, 1, 1)] * 2)
    targets = [{"boxes": torch.tensor([[2.0, 3.0, 40.0, 30.0], [60.0, 40.0, 120.0, 90.0]])},
               {"boxes": torch.tensor([[70.0, 50.0, 110.0, 78.0]])}]  # fmt: skip
    return batch, features, targets


def sampled_labels(rpn: RegionProposalNetwork, batch, features, targets) -> list[torch.Tensor]:
    """The anchor labels the RPN's sampler received in a forward with targets."""
    seen = []
    sampler = rpn.sampler

    def recording(labels):
        seen.extend(label.clone() for label in labels)
        return sampler(labels)

    rpn.sampler = recording
    torch.manual_seed(2)
    rpn(batch, features, targets)
    rpn.sampler = sampler
    return seen


def test_cross_boundary_anchors_are_ignored_in_training():
    """§3.3: with rpn_allowed_border 0 every anchor that crosses its image's boundary (the
    image's own size, not the padded batch's) is neither positive nor negative, and the
    others are labelled by the matcher among themselves; unset, some crossing anchors are
    labelled (torchvision's rule)."""
    batch, features, targets = rpn_inputs()
    anchors = single_map_rpn().anchor_generator(batch.image_sizes, (96, 128), [features["c4"]])
    every = sampled_labels(single_map_rpn(), batch, features, targets)
    ignoring = sampled_labels(single_map_rpn(allowed_border=0), batch, features, targets)
    matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    for labels_all, labels, image_anchors, (height, width), target in zip(
        every, ignoring, anchors, batch.image_sizes, targets, strict=True
    ):
        inside = ((image_anchors[:, :2] >= 0).all(dim=1) & (image_anchors[:, 2] <= width)
                  & (image_anchors[:, 3] <= height))  # fmt: skip
        assert 0 < int(inside.sum()) < len(inside)
        assert torch.all(labels[~inside] == -1)
        assert torch.any(labels_all[~inside] != -1)  # without the rule they take part
        matched = matcher(box_iou(target["boxes"], image_anchors[inside]))
        expected = (matched >= 0).float()
        expected[matched == Matcher.IGNORED] = -1
        assert torch.equal(labels[inside], expected)
        assert torch.any(labels[inside] == 1)  # every gt box keeps its best inside anchor


def test_allowed_border_lets_anchors_stick_out_by_that_many_pixels():
    batch, features, targets = rpn_inputs()
    anchors = single_map_rpn().anchor_generator(batch.image_sizes, (96, 128), [features["c4"]])
    labels = sampled_labels(single_map_rpn(allowed_border=16), batch, features, targets)[0]
    height, width = batch.image_sizes[0]
    outside_by = torch.stack([-anchors[0][:, 0], -anchors[0][:, 1], anchors[0][:, 2] - width,
                              anchors[0][:, 3] - height], dim=1).amax(dim=1)  # fmt: skip
    assert torch.all(labels[outside_by > 16] == -1)
    assert torch.any((outside_by > 0) & (outside_by <= 16) & (labels != -1))


def test_the_builder_passes_the_border_and_refuses_a_negative_one():
    model = seglab.build_model("faster_rcnn", num_classes=3, backbone="resnet18",
                               representation_size=8, rpn_allowed_border=0)  # fmt: skip
    assert model.proposal_generator.allowed_border == 0
    default = seglab.build_model("faster_rcnn", num_classes=3, backbone="resnet18",
                                 representation_size=8)  # fmt: skip
    assert default.proposal_generator.allowed_border is None  # torchvision: every anchor
    with pytest.raises(UserError, match="rpn_allowed_border"):
        seglab.build_model("faster_rcnn", num_classes=3, rpn_allowed_border=-1)


def test_rpn_box_loss_divided_by_the_anchor_locations_times_lambda():
    """Eq. (1): lambda/N_reg with N_reg the anchor locations (here 6 x 8 per image) against
    torchvision's 1/N_cls (the sampled anchors), on the same sample."""
    batch, features, targets = rpn_inputs()
    torch.manual_seed(3)
    _, sampled = single_map_rpn(box_loss_beta=1.0)(batch, features, targets)
    torch.manual_seed(3)
    _, located = single_map_rpn(
        box_loss_beta=1.0, box_loss_normalization="locations", box_loss_weight=10.0
    )(batch, features, targets)
    labels = sampled_labels(single_map_rpn(), batch, features, targets)
    torch.manual_seed(3)  # the sampler's draw as in the two forwards above
    positive, negative = single_map_rpn().sampler(labels)
    n_cls = int(sum(p.sum() + n.sum() for p, n in zip(positive, negative, strict=True)))
    n_reg = 2 * 6 * 8
    torch.testing.assert_close(
        located["loss_rpn_box_reg"], sampled["loss_rpn_box_reg"] * n_cls * 10.0 / n_reg
    )
    torch.testing.assert_close(located["loss_objectness"], sampled["loss_objectness"])


def test_paper_normalisation_equals_torchvisions_at_the_papers_scale():
    """The documented equivalence (§3.3, "the results are insensitive to lambda"): at 600 x
    1000 px a stride-16 map has ~2400 locations, so lambda/N_reg = 10/2400 is within 10% of
    1/N_cls = 1/256, the weight torchvision's normalisation gives."""
    model = seglab.build_model("faster_rcnn", num_classes=3, backbone="resnet18", fpn=False,
                               representation_size=8, min_size=600, max_size=1000)  # fmt: skip
    batch, _ = model.eval().transform([torch.zeros(3, 600, 1000)])
    height, width = batch.tensors.shape[-2:]
    locations = (height // 16) * (width // 16)  # C4's stride, as the anchor generator's
    assert 2300 < locations < 2500
    assert abs((10 / locations) / (1 / 256) - 1) < 0.1


def test_fast_rcnn_targets_are_divided_by_the_fixed_stds():
    """§2.3 normalises the regression targets; the authors' code divides the raw deltas by
    the stds (0.1, 0.1, 0.2, 0.2) (means 0): box coder weights (10, 10, 5, 5)."""
    torch.manual_seed(0)
    proposals = torch.rand(50, 2) * 50
    proposals = torch.cat([proposals, proposals + 5 + torch.rand(50, 2) * 40], dim=1)
    gt_boxes = proposals + torch.randn(50, 4) * 3
    raw = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(gt_boxes, proposals)
    stds = torch.tensor([0.1, 0.1, 0.2, 0.2])
    model = seglab.build_model("fast_rcnn", num_classes=3, backbone="resnet18",
                               representation_size=8)  # fmt: skip
    torch.testing.assert_close(model.roi_heads.box_coder.encode(gt_boxes, proposals), raw / stds)
    plain = seglab.build_model("fast_rcnn", num_classes=3, backbone="resnet18",
                               representation_size=8, box_coder_weights=(1, 1, 1, 1))  # fmt: skip
    assert plain.roi_heads.box_coder.weights == (1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize("name", ["fast_rcnn", "faster_rcnn"])
def test_class_and_box_layers_start_from_the_papers_gaussians(name):
    """§2.3: zero-mean Gaussians of std 0.01 (classifier) and 0.001 (box regressor), biases
    0; unset, PyTorch's default (uniform, std 1/sqrt(3 fan_in)) as torchvision."""
    torch.manual_seed(0)
    model = seglab.build_model(
        name, num_classes=4, backbone="resnet18", representation_size=256,
        box_predictor_init_std=(0.01, 0.001),
    )  # fmt: skip
    predictor = model.roi_heads.box_predictor
    for layer, std in ((predictor.class_logits, 0.01), (predictor.box_deltas, 0.001)):
        weight = layer.weight.detach().flatten()
        standard_error = 1 / math.sqrt(2 * weight.numel())  # of a sample std, relative
        assert abs(float(weight.std()) / std - 1) < 5 * standard_error
        assert abs(float(weight.mean())) < 5 * std / math.sqrt(weight.numel())
        assert torch.all(layer.bias == 0)
    default = seglab.build_model(name, num_classes=4, backbone="resnet18", representation_size=256)
    default_std = float(default.roi_heads.box_predictor.box_deltas.weight.detach().std())
    assert abs(default_std / (1 / math.sqrt(3 * 256)) - 1) < 0.1
