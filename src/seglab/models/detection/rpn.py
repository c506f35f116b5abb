"""Region Proposal Network (Faster R-CNN §3.1).

A small network slides over every feature level: a shared 3x3 conv, then per anchor an
objectness logit and four box deltas (1x1 convs). Proposals are the anchors moved by their
deltas, kept per level by top-k objectness, clipped, and thinned by NMS (§3.3: "we adopt
non-maximum suppression on the proposal regions based on their cls scores"). Training
(§3.1.2) labels anchors by IoU with the ground truth and samples a balanced mini-batch.

Two training rules of the paper are options, off by default as in torchvision:
- §3.3: "we ignore all cross-boundary anchors so they do not contribute to the loss"
  (`allowed_border`: pixels an anchor may stick out of the image and still be labelled;
  0 in the paper, py-faster-rcnn's `allowed_border`; None labels every anchor). At test
  every anchor proposes, the proposals clipped to the image.
- §3.1.2, eq. (1): L = 1/N_cls sum L_cls + lambda/N_reg sum p* L_reg, N_cls the 256 sampled
  anchors, N_reg the anchor locations (~2400), lambda 10 (`box_loss_normalization:
  "locations"`, `box_loss_weight` lambda). torchvision divides both terms by the sampled
  anchors (lambda 1): the same weight at the paper's scale, 10/2400 ~ 1/256, which §3.3
  found results insensitive to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.models.detection.transform import ImageBatch
from seglab.models.layers import conv_norm_act
from seglab.ops.anchors import AnchorGenerator
from seglab.ops.matcher import Matcher
from seglab.ops.nms import batched_nms
from seglab.ops.precision import autocast_dtype, full_precision
from seglab.ops.sampler import BalancedPositiveNegativeSampler
from seglab.ops.tracing import tracing
from seglab.structures.boxes import BoxCoder, box_iou, clip_boxes, remove_small_boxes


class RPNHead(nn.Module):
    """Shared 3x3 conv(s) + ReLU, then objectness (A per location) and deltas (4A per location).

    Faster R-CNN has one shared conv (`num_convs=1`); torchvision's v2 detectors use two.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_convs: int = 1):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1) for _ in range(num_convs)
        )
        self.objectness = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.box_deltas = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for layer in (*self.convs, self.objectness, self.box_deltas):
            nn.init.normal_(layer.weight, std=0.01)  # §3.1.3: zero-mean Gaussian, std 0.01
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: objectness (B, A, H, W) and deltas (B, 4A, H, W)."""
        objectness, deltas = [], []
        for feature in features:
            if self._lean_backward(feature):
                level_objectness, level_deltas = _RPNLevel.apply(
                    feature, self.convs[0].weight, self.convs[0].bias, self.objectness.weight,
                    self.objectness.bias, self.box_deltas.weight, self.box_deltas.bias,
                )  # fmt: skip
                objectness.append(level_objectness)
                deltas.append(level_deltas)
                continue
            for conv in self.convs:
                feature = conv_norm_act(conv, None, feature, relu=True)
            objectness.append(self.objectness(feature))
            deltas.append(self.box_deltas(feature))
        return objectness, deltas

    def _lean_backward(self, feature: Tensor) -> bool:
        """Whether `_RPNLevel` runs this level: one shared conv, a graph to record, float32
        on a CPU (no autocast), eager mode."""
        return (
            len(self.convs) == 1
            and torch.is_grad_enabled()
            and any(tensor.requires_grad for tensor in (feature, *self.parameters()))
            and feature.device.type == "cpu"
            and feature.dtype == torch.float32
            and autocast_dtype("cpu") is None
            and not tracing()
        )


class _RPNLevel(torch.autograd.Function):
    """One level of the RPN head, `objectness(h), box_deltas(h)` with `h = relu(conv(x))`,
    whose backward holds one gradient of h instead of three.

    Autograd's backward makes h's gradient from each 1x1 conv (two tensors the size of h,
    then their sum) and the ReLU's as a third, while h itself is kept: at a Mask R-CNN
    step's finest level (2 x 256 x 128 x 128, 32 MiB each) four such tensors at once, where
    the training step's memory peaks. Here both 1x1 convs give h's gradient in one
    product (their weights stacked), the ReLU is applied to it in place, and h is released
    before the 3x3 conv's backward. The forward is the modules' bit for bit; the weight and
    bias gradients are autograd's (the same `convolution_backward` calls); x's gradient
    differs only by adding the two 1x1 convs' terms in one sum.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, objectness_weight, objectness_bias, deltas_weight,
                deltas_bias):  # fmt: skip
        hidden = F.conv2d(x, weight, bias, padding=1).relu_()  # as conv_norm_act's conv, ReLU
        objectness = F.conv2d(hidden, objectness_weight, objectness_bias)
        deltas = F.conv2d(hidden, deltas_weight, deltas_bias)
        ctx.save_for_backward(x, weight, objectness_weight, deltas_weight)
        ctx.hidden = hidden  # an attribute: released in the backward once it is used
        return objectness, deltas

    @staticmethod
    def backward(ctx, grad_objectness, grad_deltas):
        x, weight, objectness_weight, deltas_weight = ctx.saved_tensors
        hidden, ctx.hidden = ctx.hidden, None
        needs = ctx.needs_input_grad
        sibling_grads = [
            _conv_backward(grad, hidden, sibling_weight, (0, 0), (False, needs[3 + 2 * k],
                                                                 needs[4 + 2 * k]))[1:]
            for k, (grad, sibling_weight) in enumerate(
                ((grad_objectness, objectness_weight), (grad_deltas, deltas_weight))
            )
        ]  # fmt: skip
        # (B, A, H, W) + (B, 4A, H, W) -> (B, 5A, H, W): h's gradient from both in one sum
        stacked_grad = torch.cat((grad_objectness, grad_deltas), dim=1)
        stacked_weight = torch.cat((objectness_weight, deltas_weight))
        (hidden_grad, _, _) = _conv_backward(
            stacked_grad, hidden, stacked_weight, (0, 0), (True, False, False)
        )
        # the ReLU's backward, written into h's gradient (no (B, C, H, W) mask of its own)
        torch.ops.aten.threshold_backward.grad_input(hidden_grad, hidden, 0, grad_input=hidden_grad)
        del hidden, stacked_grad
        grad_x, grad_weight, grad_bias = _conv_backward(
            hidden_grad, x, weight, (1, 1), (needs[0], needs[1], needs[2])
        )
        (grad_objectness_weight, grad_objectness_bias), (grad_deltas_weight, grad_deltas_bias) = (
            sibling_grads
        )
        return (grad_x, grad_weight, grad_bias, grad_objectness_weight, grad_objectness_bias,
                grad_deltas_weight, grad_deltas_bias)  # fmt: skip


def _conv_backward(grad: Tensor, x: Tensor, weight: Tensor, padding, mask):
    """(grad of x, of the weight, of the bias) of `F.conv2d(x, weight, bias, padding=padding)`
    as autograd computes them, each only where `mask` asks for it."""
    return torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]], [1, 1], list(padding), [1, 1], False, [0, 0], 1,
        list(mask),
    )  # fmt: skip


def flatten_per_anchor(per_level: list[Tensor], values_per_anchor: int) -> Tensor:
    """Concatenate head outputs of all levels in the anchors' order (level, y, x, anchor).

    (B, A*C, H, W) per level -> (B, sum_l H_l*W_l*A, C).
    """
    flat = []
    for level in per_level:
        batch, _, height, width = level.shape
        level = level.view(batch, -1, values_per_anchor, height, width)  # (B, A, C, H, W)
        level = level.permute(0, 3, 4, 1, 2)  # (B, H, W, A, C)
        flat.append(level.reshape(batch, -1, values_per_anchor))  # (B, H*W*A, C)
    return torch.cat(flat, dim=1)


class RegionProposalNetwork(nn.Module):
    """Proposals from anchors, and the RPN losses when targets are given (any mode).

    The proposal generator of Faster and Mask R-CNN (`TwoStageDetector`).

    Args:
        anchor_generator: anchors per level (sizes x aspect ratios).
        head: the `RPNHead`.
        fg_iou_thresh, bg_iou_thresh: anchors with IoU >= 0.7 are positive, < 0.3 negative.
        batch_size_per_image, positive_fraction: the sampled mini-batch (256 anchors, 1:1).
        pre_nms_top_n, post_nms_top_n: {"training": n, "testing": n}; pre is per level.
        nms_thresh: IoU threshold of the proposal NMS.
        score_thresh: drop proposals with objectness probability below this.
        allowed_border: None labels every anchor; a number ignores in training the anchors
            that cross the image's boundary by more pixels (§3.3: 0).
        box_loss_normalization: "sampled" (torchvision: the box loss divided by the sampled
            anchors) | "locations" (eq. 1: by the anchor locations, N_reg).
        box_loss_weight: lambda of eq. (1) (torchvision 1, the paper 10 with "locations").
        box_loss_beta: smooth L1 beta (py-faster-rcnn's RPN and torchvision: 1/9; the paper
            cites Fast R-CNN's smooth L1, beta 1).
    """

    min_box_size = 1e-3

    def __init__(
        self,
        *,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: dict[str, int],
        post_nms_top_n: dict[str, int],
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
        allowed_border: float | None = None,
        box_loss_normalization: str = "sampled",
        box_loss_weight: float = 1.0,
        box_loss_beta: float = 1 / 9,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        # §3.1.2: an anchor with the highest IoU for a ground-truth box is positive too.
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_top_n = dict(pre_nms_top_n)
        self.post_nms_top_n = dict(post_nms_top_n)
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        if box_loss_normalization not in ("sampled", "locations"):
            raise ValueError(f"box_loss_normalization {box_loss_normalization!r}: "
                             "use sampled or locations")  # fmt: skip
        self.allowed_border = allowed_border
        self.box_loss_normalization = box_loss_normalization
        self.box_loss_weight = box_loss_weight
        self.box_loss_beta = box_loss_beta

    def forward(
        self, batch: ImageBatch, features: dict[str, Tensor], targets: list[dict] | None = None
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Return proposals per image (P_i, 4) in the resized frame, and the RPN losses."""
        feature_list = list(features.values())
        # float32 from here on (the layers may run in bfloat16): decoding, NMS, the losses
        objectness_per_level, deltas_per_level = (
            [full_precision(level) for level in outputs] for outputs in self.head(feature_list)
        )
        anchors = self.anchor_generator(batch.image_sizes, batch.padded_size, feature_list)
        anchors_per_level = [level[0].numel() for level in objectness_per_level]  # A*H*W each
        objectness = flatten_per_anchor(objectness_per_level, 1)[..., 0]  # (B, sum A*H*W)
        deltas = flatten_per_anchor(deltas_per_level, 4)  # (B, sum A*H*W, 4)
        all_anchors = torch.stack(anchors)  # (B, sum A*H*W, 4)
        # (B, sum A*H*W, 4) -> (B * sum A*H*W, 4) -> decode -> back to (B, sum A*H*W, 4)
        proposals = self.box_coder.decode(
            deltas.detach().reshape(-1, 4), all_anchors.reshape(-1, 4)
        ).view_as(all_anchors)
        boxes = self._select_proposals(
            proposals, objectness.detach(), batch.image_sizes, anchors_per_level
        )
        losses = {}
        if targets is not None:
            locations = sum(level.shape[-2] * level.shape[-1] for level in feature_list)
            losses = self._losses(
                objectness, deltas, anchors, targets, batch.image_sizes, locations
            )
        return boxes, losses

    def _mode(self) -> str:
        return "training" if self.training else "testing"

    def _select_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_sizes: list[tuple[int, int]],
        anchors_per_level: list[int],
    ) -> list[Tensor]:
        """Top-k per level, sigmoid, clip, drop tiny boxes and low scores, NMS per level."""
        top_index, levels = self._top_k_per_level(objectness, anchors_per_level)
        image_index = torch.arange(proposals.shape[0], device=proposals.device)[:, None]
        proposals = proposals[image_index, top_index]  # (B, k, 4)
        scores = torch.sigmoid(objectness[image_index, top_index])  # (B, k)
        kept = []
        for boxes, image_scores, image_size in zip(proposals, scores, image_sizes, strict=True):
            boxes = clip_boxes(boxes, image_size)
            keep = remove_small_boxes(boxes, self.min_box_size)
            keep = keep[image_scores[keep] >= self.score_thresh]
            boxes, image_scores, box_levels = boxes[keep], image_scores[keep], levels[keep]
            keep = batched_nms(boxes, image_scores, box_levels, self.nms_thresh)
            kept.append(boxes[keep[: self.post_nms_top_n[self._mode()]]])
        return kept

    def _top_k_per_level(
        self, objectness: Tensor, anchors_per_level: list[int]
    ) -> tuple[Tensor, Tensor]:
        """Indices (B, k) of the best `pre_nms_top_n` anchors of each level, and their level."""
        indices, levels, offset = [], [], 0
        for level, scores in enumerate(objectness.split(anchors_per_level, dim=1)):
            k = torch.sym_min(self.pre_nms_top_n[self._mode()], scores.shape[1])  # export: any size
            top = scores.topk(k, dim=1).indices
            indices.append(top + offset)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=scores.device))
            offset += scores.shape[1]
        return torch.cat(indices, dim=1), torch.cat(levels)

    def _losses(
        self,
        objectness: Tensor,
        deltas: Tensor,
        anchors: list[Tensor],
        targets: list[dict],
        image_sizes: list[tuple[int, int]],
        locations: int,
    ) -> dict[str, Tensor]:
        """Binary cross-entropy on sampled anchors, smooth L1 on the positive ones.

        `locations`: feature-map positions per image summed over levels (N_reg of eq. 1).
        """
        labels, regression_targets = [], []
        for anchors_per_image, target, size in zip(anchors, targets, image_sizes, strict=True):
            label, matched_boxes = self._label_anchors(anchors_per_image, target["boxes"], size)
            labels.append(label)
            regression_targets.append(self.box_coder.encode(matched_boxes, anchors_per_image))
        positive, negative = self.sampler(labels)
        positive = torch.where(torch.cat(positive))[0]
        sampled = torch.cat([positive, torch.where(torch.cat(negative))[0]])
        labels = torch.cat(labels)  # (B * sum A*H*W,), images one after the other
        regression_targets = torch.cat(regression_targets)
        # beta 1/9 by default: the official py-faster-rcnn RPN loss (sigma 3, beta = 1 / sigma^2),
        # as in torchvision's rpn.py (Fast R-CNN's head uses beta 1, its eq. 3)
        box_loss = F.smooth_l1_loss(
            deltas.reshape(-1, 4)[positive],  # (B, sum A*H*W, 4) -> (B * sum A*H*W, 4)
            regression_targets[positive], beta=self.box_loss_beta, reduction="sum",
        )  # fmt: skip
        if self.box_loss_normalization == "locations":  # eq. (1): N_reg per image, all images
            normalizer = locations * len(anchors)
        else:
            normalizer = max(sampled.numel(), 1)
        box_loss = self.box_loss_weight * box_loss / normalizer
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.reshape(-1)[sampled],  # (B, sum A*H*W) -> (B * sum A*H*W,)
            labels[sampled].to(objectness.dtype),
        )
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}

    def _label_anchors(
        self, anchors: Tensor, gt_boxes: Tensor, image_size: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per anchor: 1 positive, 0 negative, -1 ignored; and the matched gt box (A, 4).

        With `allowed_border` set, the anchors crossing the boundary of the image of
        `image_size` (height, width) are ignored and matched among the others only (as
        py-faster-rcnn: a ground-truth box's best anchor is its best inside anchor).
        """
        inside = self._inside(anchors, image_size)  # (A,) bool
        labels = torch.full_like(anchors[:, 0], -1.0)
        matched_boxes = torch.zeros_like(anchors)
        if gt_boxes.numel() == 0:
            labels[inside] = 0.0
            return labels, matched_boxes
        if not inside.any():
            return labels, matched_boxes
        matched = self.matcher(box_iou(gt_boxes, anchors[inside]))  # (A_inside,)
        inside_labels = (matched >= 0).to(anchors.dtype)
        inside_labels[matched == Matcher.IGNORED] = -1.0
        labels[inside] = inside_labels
        matched_boxes[inside] = gt_boxes[matched.clamp(min=0)]
        return labels, matched_boxes

    def _inside(self, anchors: Tensor, image_size: tuple[int, int] | None) -> Tensor:
        """(A,) bool: the anchors within `allowed_border` pixels of the image (all if None)."""
        if self.allowed_border is None or image_size is None:
            return torch.ones_like(anchors[:, 0], dtype=torch.bool)
        height, width = image_size
        border = self.allowed_border
        return (
            (anchors[:, 0] >= -border) & (anchors[:, 1] >= -border)
            & (anchors[:, 2] <= width + border) & (anchors[:, 3] <= height + border)
        )  # fmt: skip
