"""The box branch of Fast R-CNN (§2): pooled RoI features -> two FC layers -> class scores
and class-specific box deltas; its loss (§2.3, eq. 1), its post-processing (§3, "Fast
R-CNN detection": per-class NMS of the refined boxes with R-CNN's settings), and truncated
SVD of the two FC layers at test time (§3.1).

The same branch serves R-CNN, whose class-specific box regression (appendix C) uses the
same parameterisation (`structures/boxes.BoxCoder`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.models.layers import conv_norm
from seglab.ops.nms import batched_nms
from seglab.structures.boxes import BoxCoder, clip_boxes, remove_small_boxes


class TwoMLPHead(nn.Module):
    """fc6 and fc7 (Fast R-CNN's two fully connected layers after RoI pooling).

    (K, C, S, S) pooled features -> (K, representation_size).

    Args:
        in_channels: C * S * S.
        representation_size: width of fc6 and fc7.
        svd_ranks: (t6, t7): in eval mode, replace fc6 and fc7 by their rank-t truncated
            SVD (Fast R-CNN §3.1, which keeps 1024 of fc6's and 256 of fc7's singular
            values with VGG16); None uses the dense layers. Training always uses them.
    """

    def __init__(
        self,
        in_channels: int,
        representation_size: int,
        *,
        svd_ranks: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        if svd_ranks is not None and min(svd_ranks) < 1:
            raise ValueError(f"svd_ranks {svd_ranks}: ranks must be >= 1")
        self.svd_ranks = tuple(svd_ranks) if svd_ranks is not None else None
        self._truncated: tuple[tuple, list[tuple[Tensor, Tensor, Tensor]]] | None = None

    def forward(self, pooled: Tensor) -> Tensor:
        hidden = pooled.flatten(start_dim=1)  # (K, C, S, S) -> (K, C*S*S)
        if self.dense_fc6 is not None:
            return self.after_fc6(self.fc6(hidden))  # (K, R)
        for first, second, bias in self._truncated_layers():
            # x W^T ~ (x (Sigma_t V_t^T)^T) U_t^T: two thin layers, no non-linearity between
            hidden = F.relu(F.linear(F.linear(hidden, first), second, bias))
        return hidden

    @property
    def dense_fc6(self) -> nn.Linear | None:
        """fc6 where the forward applies it as it is (training, or no truncated SVD): a pooler
        may then apply it itself (`ops.roi_align.pool_jointly`) and hand `after_fc6` its
        output."""
        return self.fc6 if self.training or self.svd_ranks is None else None

    def after_fc6(self, fc6_output: Tensor) -> Tensor:
        """(K, R) fc6's output, before its ReLU -> (K, R) fc7's, after its ReLU."""
        return F.relu(self.fc7(F.relu(fc6_output)))

    def _truncated_layers(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(Sigma_t V_t^T, U_t, bias) of fc6 and fc7, recomputed when their weights change."""
        layers = (self.fc6, self.fc7)
        key = tuple((p.data_ptr(), p._version) for layer in layers for p in layer.parameters())
        if self._truncated is None or self._truncated[0] != key:
            factors = [
                (*truncated_svd(layer.weight.detach(), rank), layer.bias.detach())
                for layer, rank in zip(layers, self.svd_ranks, strict=True)
            ]
            self._truncated = (key, factors)
        return self._truncated[1]


def truncated_svd(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Fast R-CNN §3.1: W (u, v) ~ U_t Sigma_t V_t^T, as two thinner weight matrices.

    Returns:
        (Sigma_t V_t^T (t, v), U_t (u, t)), t = min(rank, u, v): the first layer (no bias)
        and the second (which takes W's bias). u*v parameters become t*(u+v).
    """
    left, singular_values, right_t = torch.linalg.svd(weight, full_matrices=False)
    rank = min(rank, singular_values.numel())
    return singular_values[:rank, None] * right_t[:rank], left[:, :rank]


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
        return F.relu(self.fc(pooled.flatten(start_dim=1)))  # (K, C, S, S) -> (K, C*S*S)


def conv_norm_block(in_channels: int, out_channels: int, norm: str | None) -> nn.Sequential:
    """3x3 conv and its norm (`seglab.models.layers`), He-initialised (fan-out, as
    torchvision's conv heads)."""
    conv, norm_module = conv_norm(in_channels, out_channels, 3, norm=norm, padding=1)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, norm_module)


class BoxPredictor(nn.Module):
    """Sibling outputs of Fast R-CNN §2: softmax logits over K+1 classes, 4 deltas per class.

    (K, R) -> class_logits (K, num_classes), box_deltas (K, num_classes*4).

    Args:
        init_std: None keeps PyTorch's default initialisation (torchvision's); (s_cls,
            s_box) draws the weights from zero-mean Gaussians of these stds and zeroes the
            biases (Fast R-CNN §2.3: 0.01 and 0.001).
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, init_std: tuple[float, float] | None = None
    ):
        super().__init__()
        self.class_logits = nn.Linear(in_channels, num_classes)
        self.box_deltas = nn.Linear(in_channels, num_classes * 4)
        if init_std is not None:
            for layer, std in zip((self.class_logits, self.box_deltas), init_std, strict=True):
                nn.init.normal_(layer.weight, std=std)
                nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        features = features.flatten(start_dim=1)  # (K, R, ...) -> (K, R * ...), as torchvision
        return self.class_logits(features), self.box_deltas(features)


def fast_rcnn_loss(
    class_logits: Tensor,
    box_deltas: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    *,
    beta: float = 1 / 9,
) -> dict[str, Tensor]:
    """Fast R-CNN eq. (1): cross-entropy + smooth L1 on the deltas of the true class, the
    box term summed over foreground RoIs and divided by all RoIs (lambda = 1, [u >= 1]).

    Args:
        class_logits: (K, num_classes); box_deltas: (K, num_classes*4).
        labels: (K,) int64, 0 background; regression_targets: (K, 4) encoded gt boxes.
        beta: where smooth L1 turns from quadratic to linear. Fast R-CNN eq. (3) has 1;
            the default 1/9 is torchvision's (`roi_heads.fastrcnn_loss`), kept for its
            Faster and Mask R-CNN.
    """
    classification_loss = F.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0)[0]
    deltas = box_deltas.reshape(box_deltas.shape[0], -1, 4)  # (K, C*4) -> (K, num_classes, 4)
    box_loss = F.smooth_l1_loss(
        deltas[positive, labels[positive]], regression_targets[positive],
        beta=beta, reduction="sum",
    ) / max(labels.numel(), 1)  # fmt: skip
    return {"loss_classifier": classification_loss, "loss_box_reg": box_loss}


def decode_per_class(box_coder: BoxCoder, box_deltas: Tensor, proposals: Tensor) -> Tensor:
    """Class-specific deltas (K, C*4) applied to proposals (K, 4) -> boxes (K, C, 4)."""
    # (K, C*4) decoded -> (K, C, 4); C named, as -1 is ambiguous when K is 0
    return box_coder.decode(box_deltas, proposals).reshape(-1, box_deltas.shape[1] // 4, 4)


def postprocess_boxes(
    class_scores: Tensor,
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

    Args:
        class_scores: (K, num_classes) in [0, 1]: Fast R-CNN's softmax probabilities (or
            R-CNN's SVM scores through a sigmoid); column 0, background, is dropped.
        box_deltas: (K, num_classes*4); proposals: (K, 4) in the frame of `image_size`.

    Returns boxes (N, 4) clipped to `image_size`, scores (N,), labels (N,) int64 1..K,
    sorted by score, after score threshold, tiny-box removal and per-class NMS.
    """
    num_classes = class_scores.shape[-1]
    boxes = decode_per_class(box_coder, box_deltas, proposals)  # (K, num_classes, 4)
    scores = class_scores
    labels = torch.arange(num_classes, device=scores.device).expand_as(scores)
    # drop the background column, then one candidate per (proposal, class):
    # (K, num_classes - 1, 4) -> (K * (num_classes - 1), 4); scores, labels likewise
    boxes = clip_boxes(boxes[:, 1:].reshape(-1, 4), image_size)
    scores = scores[:, 1:].reshape(-1)
    labels = labels[:, 1:].reshape(-1)
    keep = torch.where(scores > score_thresh)[0]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = remove_small_boxes(boxes, 1e-2)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return boxes[keep], scores[keep], labels[keep]
