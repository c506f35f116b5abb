"""Where RoI max pooling and RoIAlign read a feature map, asked of the kernels themselves.

Pooling one region from a map whose channel c is one-hot at cell c gives, in output bin
(i, j) of channel c, what cell c contributes to that bin: for RoI max pooling 1 when the
cell lies in the bin's sub-window (0 otherwise), for RoIAlign the cell's bilinear weight
averaged over the bin's samples. So the figures' sub-windows and weights are those of
`seglab.ops.roi_pool` and `seglab.ops.roi_align` (torchvision's kernels), not a re-derivation.
Sample positions come from RoIAlign on a map holding each cell's own coordinate, which
bilinear interpolation reproduces exactly.

Frames: boxes are xyxy in image pixels; positions on the map are in cells, cell (i, j)
covering [j, j + 1] x [i, i + 1] (a kernel coordinate x, where cell j sits at x = j, is
drawn at x + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seglab.ops.roi_align import roi_align
from seglab.ops.roi_pool import roi_pool


@dataclass(frozen=True)
class SubWindow:
    """Cells [y0, y1) x [x0, x1) of the map that one output bin of RoI max pooling reads
    (y0 == y1 or x0 == x1: an empty sub-window, whose output is 0)."""

    y0: int
    y1: int
    x0: int
    x1: int


def _one_hot_map(feature_hw: tuple[int, int]) -> Tensor:
    """(1, H*W, H, W): channel c is 1 at cell c (row-major), 0 elsewhere."""
    height, width = feature_hw
    return torch.eye(height * width).reshape(1, height * width, height, width)


def _roi(box: Tensor) -> Tensor:
    return torch.cat([box.new_zeros(1), box.float()])[None]  # (4,) -> (1, 5) batch index 0


def roi_pool_windows(
    feature_hw: tuple[int, int], box: Tensor, output_size: int, spatial_scale: float
) -> list[list[SubWindow]]:
    """The sub-window of every output bin (rows of bins) that `roi_pool` maxes over."""
    height, width = feature_hw
    pooled = roi_pool(_one_hot_map(feature_hw), _roi(box), output_size, spatial_scale)
    member = pooled[0].reshape(height, width, output_size, output_size) > 0  # cell x bin
    windows = []
    for row in range(output_size):
        windows.append([])
        for column in range(output_size):
            rows = torch.where(member[:, :, row, column].any(dim=1))[0]
            columns = torch.where(member[:, :, row, column].any(dim=0))[0]
            if len(rows) == 0:
                windows[-1].append(SubWindow(0, 0, 0, 0))
                continue
            windows[-1].append(SubWindow(int(rows[0]), int(rows[-1]) + 1, int(columns[0]),
                                         int(columns[-1]) + 1))  # fmt: skip
    return windows


def roi_align_weights(
    feature_hw: tuple[int, int],
    box: Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """(out, out, H, W): the weight of each map cell in each output bin of `roi_align`
    (a bin's output is the sum over cells of weight x value)."""
    height, width = feature_hw
    pooled = roi_align(
        _one_hot_map(feature_hw), _roi(box), output_size, spatial_scale, sampling_ratio, aligned
    )  # (1, H*W, out, out)
    return pooled[0].reshape(height, width, output_size, output_size).permute(2, 3, 0, 1)


def roi_align_samples(
    feature_hw: tuple[int, int],
    box: Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """(out * g_h, out * g_w, 2): the (x, y) map position, in drawn cells, of every sample
    point of `roi_align` (g per bin side: `sampling_ratio`, or the kernel's adaptive count).

    A bin of g_h x g_w samples sits where as many bins of one centre sample each would, so
    the positions are `roi_align` with `output_size * g` bins and `sampling_ratio` 1 on a
    map holding each cell's own column and row.
    """
    height, width = feature_hw
    grid_h, grid_w = _samples_per_bin(box, output_size, spatial_scale, sampling_ratio, aligned)
    columns = torch.arange(width, dtype=torch.float32).expand(height, width)
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    coordinates = torch.stack([columns, rows])[None]  # (1, 2, H, W): x and y of each cell
    size = (output_size * grid_h, output_size * grid_w)
    samples = roi_align(coordinates, _roi(box), size, spatial_scale, 1, aligned)
    return samples[0].permute(1, 2, 0) + 0.5  # (2, S_h, S_w) -> (S_h, S_w, 2), centres at +0.5


def _samples_per_bin(
    box: Tensor, output_size: int, spatial_scale: float, sampling_ratio: int, aligned: bool
) -> tuple[int, int]:
    """Samples per bin along y and x: `sampling_ratio`, or when it is <= 0 the kernel's
    ceil(roi side / output_size), the side in cells (at least 1 without `aligned`)."""
    if sampling_ratio > 0:
        return sampling_ratio, sampling_ratio
    sides = (box[2:] - box[:2]).flip(0).float() * spatial_scale  # (height, width) in cells
    if not aligned:
        sides = sides.clamp(min=1.0)
    grid_h, grid_w = torch.ceil(sides / output_size).int().tolist()
    return max(grid_h, 1), max(grid_w, 1)
