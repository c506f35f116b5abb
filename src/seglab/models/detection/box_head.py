"""The box branch of Fast R-CNN (§2): pooled RoI features -> two FC layers -> class scores
and class-specific box deltas; its loss (§2.3, eq. 1) and its post-processing (§2.4 and
Faster R-CNN §3: per-class NMS of the refined boxes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.ops.nms import batched_nms
from seglab.structures.boxes import BoxCoder, clip_boxes, remove_small_boxes


class TwoMLPHead(nn.Module):
    """fc6 and fc7 (Fast R-CNN's two fully connected layers after RoI pooling).

    (K, C, S, S) pooled features -> (K, representation_size).
    """

    def __init__(self, in_channels: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, pooled: Tensor) -> Tensor:
        hidden = F.relu(self.fc6(pooled.flatten(start_dim=1)))  # (K, C*S*S) -> (K, R)
        return F.relu(self.fc7(hidden))


class ConvFCHead(nn.Module):
    """Convs before one FC layer (torchvision's v2 box head, "4conv1fc" of the FPN paper's
    follow-ups): (K, C, S, S) -> convs (+BatchNorm) -> flatten -> fc -> (K, R)."""

    def __init__(
        self,
        in_channels: int,
        roi_size: int,
        representation_size: int,
        *,
        channels: int = 256,
        num_convs: int = 4,
        norm: str | None = "bn",
    ):
        super().__init__()
        self.convs = nn.ModuleList(
            conv_norm_block(in_channels if index == 0 else channels, channels, norm)
            for index in range(num_convs)
        )
        self.fc = nn.Linear(channels * roi_size**2, representation_size)

    def forward(self, pooled: Tensor) -> Tensor:
        for block in self.convs:
            pooled = F.relu(block(pooled))
        return F.relu(self.fc(pooled.flatten(start_dim=1)))  # (K, C*S*S) -> (K, R)


def conv_norm_block(in_channels: int, out_channels: int, norm: str | None) -> nn.Sequential:
    """3x3 conv (with a bias only without norm), then BatchNorm when `norm == "bn"`."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm is None)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    if norm is None:
        return nn.Sequential(conv)
    if norm != "bn":
        raise ValueError(f"head norm {norm!r}: use None or 'bn'")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


class BoxPredictor(nn.Module):
    """Sibling outputs of Fast R-CNN §2: softmax logits over K+1 classes, 4 deltas per class.

    (K, R) -> class_logits (K, num_classes), box_deltas (K, num_classes*4).
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.class_logits = nn.Linear(in_channels, num_classes)
        self.box_deltas = nn.Linear(in_channels, num_classes * 4)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        features = features.flatten(start_dim=1)
        return self.class_logits(features), self.box_deltas(features)


def fast_rcnn_loss(
    class_logits: Tensor, box_deltas: Tensor, labels: Tensor, regression_targets: Tensor
) -> dict[str, Tensor]:
    """Fast R-CNN eq. (1): cross-entropy + smooth L1 on the deltas of the true class.

    Args:
        class_logits: (K, num_classes); box_deltas: (K, num_classes*4).
        labels: (K,) int64, 0 background; regression_targets: (K, 4) encoded gt boxes.
    """
    classification_loss = F.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0)[0]
    deltas = box_deltas.reshape(box_deltas.shape[0], -1, 4)  # (K, num_classes, 4)
    box_loss = F.smooth_l1_loss(
        deltas[positive, labels[positive]], regression_targets[positive],
        beta=1 / 9, reduction="sum",
    ) / max(labels.numel(), 1)  # fmt: skip
    return {"loss_classifier": classification_loss, "loss_box_reg": box_loss}


def decode_per_class(box_coder: BoxCoder, box_deltas: Tensor, proposals: Tensor) -> Tensor:
    """Class-specific deltas (K, C*4) applied to proposals (K, 4) -> boxes (K, C, 4)."""
    return box_coder.decode(box_deltas, proposals).reshape(box_deltas.shape[0], -1, 4)


def postprocess_boxes(
    class_logits: Tensor,
    box_deltas: Tensor,
    proposals: Tensor,
    image_size: tuple[int, int],
    *,
    box_coder: BoxCoder,
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Detections of one image: every (proposal, object class) pair is a candidate.

    Returns boxes (N, 4) clipped to `image_size`, scores (N,), labels (N,) int64 1..K,
    sorted by score, after score threshold, tiny-box removal and per-class NMS.
    """
    num_classes = class_logits.shape[-1]
    boxes = decode_per_class(box_coder, box_deltas, proposals)  # (K, num_classes, 4)
    scores = F.softmax(class_logits, dim=-1)  # (K, num_classes)
    labels = torch.arange(num_classes, device=scores.device).expand_as(scores)
    # drop the background column, then one candidate per (proposal, class)
    boxes = clip_boxes(boxes[:, 1:].reshape(-1, 4), image_size)
    scores = scores[:, 1:].reshape(-1)
    labels = labels[:, 1:].reshape(-1)
    keep = torch.where(scores > score_thresh)[0]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = remove_small_boxes(boxes, 1e-2)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return boxes[keep], scores[keep], labels[keep]
