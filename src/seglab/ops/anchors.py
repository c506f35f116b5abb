"""Anchors (Faster R-CNN §3.1.1): the reference boxes the RPN scores and regresses.

At every position of a feature map the RPN scores k reference boxes, one per
(size, aspect ratio) pair, centred on the position. With an FPN each level gets its own
sizes (one size per level, 32 on P2 up to 512 on P6, FPN paper §4.1) and the same aspect
ratios. Anchors and their order are exactly torchvision's `AnchorGenerator`'s, so a
converted RPN predicts the same boxes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seglab.ops.precision import full_precision_dtype


class AnchorGenerator(nn.Module):
    """Anchors for a list of feature maps.

    Args:
        sizes: per level, the anchor sizes in pixels (sqrt of the anchor area); flat
            `(32, 64)` means one size per level, as torchvision reads it.
        aspect_ratios: per level, the ratios height / width; flat `(0.5, 1.0, 2.0)` means
            these ratios on every level, as torchvision reads it.
    """

    def __init__(
        self,
        sizes: tuple[tuple[int, ...], ...] | tuple[int, ...],
        aspect_ratios: tuple[tuple[float, ...], ...] | tuple[float, ...],
    ) -> None:
        super().__init__()
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((size,) for size in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"got {len(sizes)} levels of sizes but {len(aspect_ratios)} of aspect ratios"
            )
        self.sizes = tuple(tuple(level) for level in sizes)
        self.aspect_ratios = tuple(tuple(level) for level in aspect_ratios)
        self.cell_anchors = [
            _cell_anchors(level_sizes, level_ratios)
            for level_sizes, level_ratios in zip(self.sizes, self.aspect_ratios, strict=True)
        ]

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per feature-map position, per level (the k of the paper)."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios, strict=True)]

    def forward(
        self,
        image_sizes: list[tuple[int, int]],
        padded_size_hw: tuple[int, int],
        feature_maps: list[Tensor],
    ) -> list[Tensor]:
        """Anchors of every image of the batch.

        Args:
            image_sizes: per image (height, width) before padding (only their count is used:
                every image of a padded batch shares the same anchors).
            padded_size_hw: (height, width) of the padded batch tensor.
            feature_maps: per level (N, C, H_l, W_l).

        Returns:
            per image (sum_l H_l * W_l * A_l, 4) xyxy anchors; level by level, then row-major
            positions, then the A_l anchors of a position (ratio-major, then size).
        """
        if len(feature_maps) != len(self.cell_anchors):
            raise ValueError(
                f"got {len(feature_maps)} feature maps for {len(self.cell_anchors)} anchor levels"
            )
        # float32 from bfloat16 features: a bfloat16 coordinate past 256 px is a multiple of 2
        dtype, device = full_precision_dtype(feature_maps[0].dtype), feature_maps[0].device
        anchors_per_level = [
            _grid_anchors(
                cell_anchors.to(dtype=dtype, device=device),
                feature_map.shape[-2:],
                padded_size_hw,
            )
            for cell_anchors, feature_map in zip(self.cell_anchors, feature_maps, strict=True)
        ]
        anchors = torch.cat(anchors_per_level)
        return [anchors for _ in image_sizes]


def _cell_anchors(sizes: tuple[int, ...], aspect_ratios: tuple[float, ...]) -> Tensor:
    """(A, 4) zero-centred anchors, A = len(ratios) * len(sizes), rounded to whole pixels.

    An anchor of size s and ratio r = h / w has w = s / sqrt(r), h = s * sqrt(r), so its area
    stays s^2.
    """
    sizes_t = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    height_factors = torch.sqrt(ratios)
    width_factors = 1 / height_factors
    widths = (width_factors[:, None] * sizes_t[None, :]).reshape(-1)  # (R * S,), ratio-major
    heights = (height_factors[:, None] * sizes_t[None, :]).reshape(-1)
    return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()


def _grid_anchors(
    cell_anchors: Tensor, grid_size: tuple[int, int], padded_size_hw: tuple[int, int]
) -> Tensor:
    """Shift the (A, 4) cell anchors to every position of an H x W grid -> (H * W * A, 4).

    The stride is the padded image size divided by the grid size (integer division), and
    position (i, j) is centred at (j * stride_w, i * stride_h) (no half-stride offset, as
    torchvision).
    """
    grid_h, grid_w = grid_size  # torch's ints, symbolic under ONNX export (no int())
    stride_h = padded_size_hw[0] // grid_h
    stride_w = padded_size_hw[1] // grid_w
    device = cell_anchors.device
    shifts_x = torch.arange(grid_w, dtype=torch.int64, device=device) * stride_w
    shifts_y = torch.arange(grid_h, dtype=torch.int64, device=device) * stride_h
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # (H, W) each
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)  # (H * W,)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (H * W, 4)
    # (H * W, 1, 4) + (1, A, 4) -> (H * W, A, 4) -> (H * W * A, 4)
    return (shifts[:, None, :] + cell_anchors[None, :, :]).reshape(-1, 4)
