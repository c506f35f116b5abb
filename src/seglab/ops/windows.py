"""Windows of image tensors: centre crops and mirror padding (U-Net paper §2, Fig. 1-2).

A `valid`-padding U-Net's output is the centre of its input: its skip features, its
targets and the masks it is scored on are centre-cropped to the output (`center_crop`).
Its input is the image extended by mirroring where the window leaves the image, in
prediction (overlap-tile) and in training alike (`mirror_pad`, `mirror_indices`).
These sit below data/ and models/ because both use them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def center_crop(tensor: Tensor, size_hw: tuple[int, int] | torch.Size) -> Tensor:
    """The central `size_hw` window of the last two dimensions (floor of odd margins).

    Raises:
        ValueError: when `size_hw` is larger than the tensor (outside an export trace).
    """
    height, width = tensor.shape[-2:]
    if not torch.compiler.is_exporting() and (size_hw[0] > height or size_hw[1] > width):
        raise ValueError(f"cannot crop {(height, width)} to the larger {tuple(size_hw)}")
    top, left = (height - size_hw[0]) // 2, (width - size_hw[1]) // 2
    return tensor[..., top : top + size_hw[0], left : left + size_hw[1]]


def mirror_indices(length: int, before: int, after: int) -> Tensor:
    """Indices into [0, length) of a mirror (reflect, edge not repeated) padding, any width.

    Returns:
        int64 (before + length + after,): position p (from -before) reads index
        `reflect(p)`; a negative `before` or `after` starts or ends inside [0, length).
    """
    positions = torch.arange(-before, length + after)
    if length == 1:
        return torch.zeros_like(positions)
    period = 2 * (length - 1)
    folded = positions.remainder(period)
    return torch.where(folded < length, folded, period - folded)


def mirror_pad(image: Tensor, *, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Mirror-pad the last two dimensions by any amount (repeated reflections if needed)."""
    rows = mirror_indices(image.shape[-2], top, bottom)
    columns = mirror_indices(image.shape[-1], left, right)
    return image[..., rows[:, None], columns[None, :]]
