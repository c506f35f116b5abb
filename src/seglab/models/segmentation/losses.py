"""Segmentation losses: the paper's weighted pixel-wise cross-entropy, soft Dice, CE + Dice.

U-Net paper eq. (1): E = sum_x w(x) log p_l(x)(x), a cross-entropy whose pixels are weighted
by a precomputed weight map w (eq. 2, `seglab.data.weight_map`) that balances
class frequencies and makes the thin background borders between touching objects count.
Pixels labelled `IGNORE_INDEX` (255) take no part in any loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from seglab.structures.masks import IGNORE_INDEX


def weighted_cross_entropy(
    logits: Tensor, masks: Tensor, weight_maps: Tensor | None = None
) -> Tensor:
    """Mean over labelled pixels of w(x) * -log softmax(logits)[label(x)] (paper eq. 1).

    Args:
        logits: (N, C, H, W) float.
        masks: (N, H, W) int64 class indices, `IGNORE_INDEX` for unlabelled pixels.
        weight_maps: (N, H, W) float per-pixel weights, or None for plain cross-entropy.
    """
    per_pixel = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="none")
    labelled = masks != IGNORE_INDEX
    if weight_maps is not None:
        per_pixel = per_pixel * weight_maps
    return per_pixel.sum() / labelled.sum().clamp(min=1)


def dice_loss(logits: Tensor, masks: Tensor, *, smooth: float = 1.0) -> Tensor:
    """1 - mean over classes of the soft Dice 2|P∩G| / (|P| + |G|), over the whole batch.

    Softmax probabilities P against one-hot targets G on labelled pixels; `smooth` keeps a
    class absent from both prediction and target at Dice 1 (no loss) instead of 0/0.
    """
    num_classes = logits.shape[1]
    labelled = (masks != IGNORE_INDEX).unsqueeze(1)  # (N, 1, H, W)
    probabilities = logits.softmax(dim=1) * labelled
    one_hot = F.one_hot(masks.where(masks != IGNORE_INDEX, 0), num_classes)  # (N, H, W, C)
    one_hot = one_hot.permute(0, 3, 1, 2).to(probabilities.dtype) * labelled  # -> (N, C, H, W)
    intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))  # (C,)
    total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    dice = (2 * intersection + smooth) / (total + smooth)
    return 1 - dice.mean()


def segmentation_losses(
    logits: Tensor, masks: Tensor, weight_maps: Tensor | None = None, *, kind: str = "ce"
) -> dict[str, Tensor]:
    """The losses of `kind` ("ce", "dice" or "ce+dice") as a dict whose sum is the loss."""
    losses: dict[str, Tensor] = {}
    if kind in ("ce", "ce+dice"):
        losses["loss_ce"] = weighted_cross_entropy(logits, masks, weight_maps)
    if kind in ("dice", "ce+dice"):
        losses["loss_dice"] = dice_loss(logits, masks)
    if not losses:
        raise ValueError(f"unknown segmentation loss {kind!r}")
    return losses
