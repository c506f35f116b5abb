"""RoI max pooling (Fast R-CNN §2.1): the RoI pooling layer.

A region of interest of h x w feature cells is divided into an H x W grid of sub-windows of
about h/H x w/W cells; each output cell is the maximum of its sub-window, channel by
channel. Any region thus becomes a fixed H x W map (e.g. 7 x 7) for the fully connected head.

`roi_pool` is torchvision's compiled kernel (the fast path); `roi_pool_reference` spells
out the same computation in plain PyTorch, with the kernel's exact quantisation: region
corners are rounded to the nearest cell (halves away from zero), the region spans
`round(x1) - round(x0) + 1` cells (at least 1), sub-window i covers cells
`[floor(i * h / H), ceil((i + 1) * h / H))`, clipped to the map; an empty sub-window gives 0.

`MultiScaleRoIPool` is the layer of Fast R-CNN's network (§2.2: "the last max pooling layer
is replaced by a RoI pooling layer ... H = W = 7 for VGG16"), taking the proposals of a
batch of images; on an FPN it picks each region's level as `MultiScaleRoIAlign` does.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor
from torch.nn.modules.utils import _pair

from seglab.ops.precision import full_precision
from seglab.ops.roi_levels import MultiLevelRoIPooler, as_rois


def roi_pool(
    features: Tensor,
    rois: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoI max pooling with torchvision's kernel.

    Args:
        features: (N, C, H, W) feature maps of a batch.
        rois: (K, 5) `[batch_index, x0, y0, x1, y1]` in input-image pixels, or, as
            torchvision takes them, a list of N (K_i, 4) xyxy boxes, one per image.
        output_size: `out` or `(out_h, out_w)`: the H x W grid of the paper.
        spatial_scale: feature cells per image pixel (1/16 for VGG16 conv5 in Fast R-CNN).

    Returns:
        (K, C, out_h, out_w) pooled features.
    """
    rois = as_rois(rois, features)
    # bfloat16 features are pooled as float32 (the maxima are the same values): the kernel
    # takes one dtype, and bfloat16 regions would be quantised to 2-pixel steps past 256 px
    features = full_precision(features)
    return torchvision.ops.roi_pool(features, rois, _pair(output_size), spatial_scale)


def roi_pool_reference(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Plain-PyTorch RoI max pooling; same arguments and result as `roi_pool`.

    The gradient of each output cell goes to the first (row-major) maximum of its
    sub-window, as in the kernel.
    """
    out_h, out_w = _pair(output_size)
    pooled = [
        _pool_one_roi(features[int(roi[0])], roi[1:], out_h, out_w, spatial_scale)
        for roi in rois.detach()
    ]
    if not pooled:
        return features.new_zeros((0, features.shape[1], out_h, out_w))
    return torch.stack(pooled)


def _pool_one_roi(
    feature: Tensor, box: Tensor, out_h: int, out_w: int, spatial_scale: float
) -> Tensor:
    """(C, H, W) feature map, (4,) box in pixels -> (C, out_h, out_w)."""
    x0, y0, x1, y1 = (_round_half_away(value) for value in box.to(feature.dtype) * spatial_scale)
    row_windows = _sub_windows(y0, y1, out_h, feature.shape[1], feature.dtype)
    column_windows = _sub_windows(x0, x1, out_w, feature.shape[2], feature.dtype)
    cells = [
        _max_of_window(feature, rows, columns) for rows in row_windows for columns in column_windows
    ]
    # (C, out_h * out_w) row-major cells -> (C, out_h, out_w)
    return torch.stack(cells, dim=1).reshape(feature.shape[0], out_h, out_w)


def _sub_windows(
    start: int, end: int, bins: int, size: int, dtype: torch.dtype
) -> list[tuple[int, int]]:
    """[first, last) cell range of each of `bins` sub-windows of the span start..end."""
    span = max(end - start + 1, 1)  # malformed regions become one cell
    bin_size = torch.tensor(float(span), dtype=dtype) / bins  # in the features' precision
    windows = []
    for index in range(bins):
        first = int(torch.floor(index * bin_size)) + start
        last = int(torch.ceil((index + 1) * bin_size)) + start
        windows.append((min(max(first, 0), size), min(max(last, 0), size)))
    return windows


def _max_of_window(feature: Tensor, rows: tuple[int, int], columns: tuple[int, int]) -> Tensor:
    """(C,) maximum of `feature` (C, H, W) over a window; zeros for an empty window."""
    window = feature[:, rows[0] : rows[1], columns[0] : columns[1]]  # (C, h, w)
    if window.numel() == 0:
        return feature.new_zeros(feature.shape[0])
    flat = window.reshape(feature.shape[0], -1)  # (C, h, w) -> (C, h*w), row-major as the kernel
    first_max = flat.argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    return flat.gather(1, first_max).squeeze(1)


def _round_half_away(value: Tensor) -> int:
    """C's `round`: halves go away from zero (torch.round would round them to even)."""
    return int(math.copysign(math.floor(abs(float(value)) + 0.5), float(value)))


class MultiScaleRoIPool(MultiLevelRoIPooler):
    """RoI max pooling (Fast R-CNN §2.1) of per-image proposals from one map or an FPN.

    Args:
        featmap_names: the feature maps to pool from, finest first (one name: Fast R-CNN).
        output_size: the H x W grid (7 x 7 in Fast R-CNN with VGG16).
    """

    def _pool_level(self, level: Tensor, rois: Tensor, scale: float) -> Tensor:
        return roi_pool(level, rois, self.output_size, scale)

    def extra_repr(self) -> str:
        return f"featmap_names={self.featmap_names}, output_size={self.output_size}"
