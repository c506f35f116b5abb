"""Balanced sampling of positive and negative examples per image.

Faster R-CNN §3.1.3 trains the RPN on 256 anchors per image with up to half positives.
Fast R-CNN §2.3 trains its head on mini-batches of R = 128 RoIs from N = 2 images, 64 RoIs
per image, 25% of them foreground ("hierarchical sampling"); torchvision's Faster and Mask
R-CNN take 512 per image. When there are too few positives, negatives fill the batch. Same
draws as torchvision's `BalancedPositiveNegativeSampler` under the same torch seed.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BalancedPositiveNegativeSampler:
    """Pick `batch_size_per_image` examples, at most `positive_fraction` of them positive.

    Args:
        batch_size_per_image: examples per image (fewer when the image has fewer).
        positive_fraction: the largest share of positives.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, matched_labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Sample each image independently.

        Args:
            matched_labels: per image (N_i,) int labels: >= 1 positive, 0 negative,
                -1 ignored.

        Returns:
            (positive_masks, negative_masks): per image (N_i,) bool masks of the chosen
            positives and negatives.
        """
        positive_masks, negative_masks = [], []
        for labels in matched_labels:
            positives = torch.where(labels >= 1)[0]
            negatives = torch.where(labels == 0)[0]
            num_positive = min(
                positives.numel(), int(self.batch_size_per_image * self.positive_fraction)
            )
            num_negative = min(negatives.numel(), self.batch_size_per_image - num_positive)
            # The two randperm calls, in this order, are torchvision's: same seed, same picks.
            chosen_positives = positives[
                torch.randperm(positives.numel(), device=labels.device)[:num_positive]
            ]
            chosen_negatives = negatives[
                torch.randperm(negatives.numel(), device=labels.device)[:num_negative]
            ]
            positive_masks.append(_mask(labels, chosen_positives))
            negative_masks.append(_mask(labels, chosen_negatives))
        return positive_masks, negative_masks


def _mask(labels: Tensor, chosen: Tensor) -> Tensor:
    """(N,) bool mask with True at the `chosen` indices."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[chosen] = True
    return mask
