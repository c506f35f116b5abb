"""The mask branch of Mask R-CNN (§3, Figure 4 right): a small FCN on M x M RoIAlign
features (`mask_roi_size`, the paper's 14), four 3x3 convs then a 2x2 transposed conv,
giving a 2M x 2M (28 x 28) mask per class. The
loss is a per-pixel sigmoid cross-entropy on the mask of the ground-truth class only
(§3: "L_mask is only defined on the k-th mask"), which decouples masks from classification.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.models.detection.box_head import conv_norm_block
from seglab.models.layers import channels_last, conv_norm_act
from seglab.ops.roi_align import roi_align


class MaskHead(nn.Module):
    """Four 3x3 conv + ReLU layers: (K, C, M, M) -> (K, channels, M, M).

    `norm="bn"` puts BatchNorm after each conv (torchvision's v2 Mask R-CNN).
    """

    def __init__(
        self, in_channels: int, channels: int = 256, num_convs: int = 4, norm: str | None = None
    ):
        super().__init__()
        self.convs = nn.ModuleList(
            conv_norm_block(in_channels if index == 0 else channels, channels, norm)
            for index in range(num_convs)
        )

    @property
    def out_channels(self) -> int:
        return self.convs[-1][0].out_channels

    def forward(self, pooled: Tensor) -> Tensor:
        pooled = channels_last(pooled)
        for conv, norm in self.convs:
            pooled = conv_norm_act(conv, norm, pooled, relu=True)
        return pooled


class MaskPredictor(nn.Module):
    """2x2 stride-2 transposed conv + ReLU, then a 1x1 conv to one mask logit map per class.

    (K, C, M, M) -> (K, num_classes, 2M, 2M).
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, channels, kernel_size=2, stride=2)
        self.mask_logits = nn.Conv2d(channels, num_classes, kernel_size=1)
        for layer in (self.upsample, self.mask_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.mask_logits(F.relu(self.upsample(features)))


def mask_targets(
    gt_masks: Tensor, proposals: Tensor, matched_gt_index: Tensor, size: int, *, aligned: bool
) -> Tensor:
    """Crop each proposal's matched gt mask and resample it to (size, size) with RoIAlign.

    Args:
        gt_masks: (G, H, W) uint8 masks of one image (the resized frame).
        proposals: (P, 4) positive proposals; matched_gt_index: (P,) index into gt_masks.
    Returns:
        (P, size, size) float targets in [0, 1].
    """
    rois = torch.cat([matched_gt_index[:, None].to(proposals), proposals], dim=1)  # (P, 5)
    # (G, H, W) -> (G, 1, H, W): each gt mask is a one-channel "image" of the batch
    crops = roi_align(gt_masks[:, None].to(rois), rois, (size, size), 1.0, -1, aligned)
    return crops[:, 0]


def mask_loss(mask_logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy on the logits of each RoI's gt class only.

    Args:
        mask_logits: (P, num_classes, M, M); labels: (P,) gt class; targets: (P, M, M).
    """
    if targets.numel() == 0:
        return mask_logits.sum() * 0  # no positive RoI: zero loss that keeps the graph
    chosen = mask_logits[torch.arange(labels.shape[0], device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(chosen, targets)


def mask_probabilities(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """Sigmoid of each detection's predicted-class mask: (N, C, M, M) -> (N, 1, M, M)."""
    index = torch.arange(labels.shape[0], device=labels.device)
    return mask_logits[index, labels].sigmoid()[:, None]
