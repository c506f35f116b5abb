"""RoIAlign on the CPU as sparse matrix products (`roi_align.roi_align_sparse`), and several
RoIAligns of one feature pyramid as one autograd node (`pool_pyramid`).

With a fixed number g of samples per bin, every output cell of RoIAlign is a fixed weighted
sum of at most 4 g^2 feature cells (g x g samples, four bilinear neighbours each), so
RoIAlign over K regions is one sparse (K out_h out_w) x (sum N H W) matrix M times the
levels stacked as (sum N H W, C) rows (channels-last levels are read without a copy), and
its backward is M^T times the output's gradient. Sparse BLAS (MKL) runs both on every
thread, where torchvision's CPU kernel runs its backward's scatter on one.

What a training step keeps and allocates (docs/benchmarks.md, "Training memory"):
- the indices are int32, what MKL takes (int64 ones are converted on every product);
- M^T is built in CSR form in the forward and is all the backward keeps: no conversion of
  M's transpose (CSC) to CSR at the step's peak. Its rows list their entries in M's order
  (a stable sort by feature cell), so the products add in the transpose conversion's order;
- `pool_pyramid` pools several sets of regions (a training step's box and mask RoIs) from
  one stacked pyramid, and their gradients go into one buffer per level (each released as
  soon as the level's other gradients are added to it, not with the last level's);
- with `linear`, the first pooling feeds a linear layer inside the node (the box head's
  fc6): the backward releases fc6's input once fc6's weight gradient is made, and goes from
  fc6's output gradient to the pyramid in blocks of regions, never holding the pooled
  features' (K, C out_h out_w) gradient whole.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from seglab.ops.precision import full_precision_dtype

# M^T's blocks for a pooling followed by a linear layer: blocks of regions whose pooled
# gradient has at most this many values (4 MiB in float32; held twice, as fc6's product and
# laid out as M's rows; the box head's 1024 RoIs of 256 x 7 x 7 make 13 blocks).
BLOCK_VALUES = 2**20


@dataclass
class SparsePooling:
    """One RoIAlign of `count` regions as a sparse matrix over the stacked levels.

    `matrix` is M, (count out_h out_w, cells) in CSR form, its rows region-major then bin
    row then bin column. `transposed` holds M^T in CSR blocks: `transposed[b][l]` is the
    (cells of level l, rows in block b) part (None without entries), block b covering M's
    rows `[b * block_rows, (b + 1) * block_rows)`; empty where no gradient is needed.
    """

    matrix: Tensor | None
    transposed: list[list[Tensor | None]]
    block_rows: int
    count: int
    out_h: int
    out_w: int

    @property
    def bins(self) -> int:
        return self.out_h * self.out_w


def sparse_pooling(
    level_shapes: list[tuple[int, int, int]],
    rois: Tensor,
    level_of_roi: Tensor,
    scales: list[float],
    output_size: int | tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    *,
    dtype: torch.dtype,
    backward: bool,
    block_regions: int | None = None,
) -> SparsePooling:
    """The matrix of a RoIAlign over stacked levels (and its transpose for the backward).

    Args:
        level_shapes: (N, H_l, W_l) of the L levels, stacked in this order.
        rois: (K, 5) `[batch_index, x0, y0, x1, y1]` in input-image pixels.
        level_of_roi: (K,) int64, the level each region is pooled from.
        scales: the L levels' `spatial_scale`.
        output_size, sampling_ratio (g > 0), aligned: as in `roi_align.roi_align`.
        dtype: of the sample positions and weights (float32 for half-precision levels).
        backward: build M^T too.
        block_regions: regions per block of M^T (None: one block).
    """
    out_h, out_w = _pair(output_size)
    count = rois.shape[0]
    cells, weight = _taps(level_shapes, rois, level_of_roi, scales, out_h, out_w,
                          sampling_ratio, aligned, dtype)  # fmt: skip
    taps = 4 * sampling_ratio**2
    rows = count * out_h * out_w
    columns = sum(n * h * w for n, h, w in level_shapes)
    index = torch.int32 if max(cells.numel(), columns) < 2**31 else torch.int64
    matrix = _csr(
        torch.arange(0, rows * taps + 1, taps, dtype=index),  # `taps` entries per row
        cells.to(index),  # repeats (taps reading one cell) add up in the product
        weight,
        (rows, columns),
    )
    regions = count if block_regions is None else max(1, block_regions)
    block_rows = max(1, regions * out_h * out_w)
    level_cells = [n * h * w for n, h, w in level_shapes]
    transposed = (
        _transposed_blocks(cells, weight, taps, block_rows, level_cells, index) if backward else []
    )
    return SparsePooling(matrix, transposed, block_rows, count, out_h, out_w)


def _taps(level_shapes, rois, level_of_roi, scales, out_h, out_w, grid, aligned, dtype):
    """(K out_h out_w 4 g^2,) the stacked cell each tap reads, and its weight; taps in the
    order (region, bin row, bin column, sample row, its two neighbours, sample column, its
    two neighbours), the sample positions computed in the kernel's order of operations."""
    count = rois.shape[0]
    shapes = torch.tensor(level_shapes)  # (L, 3)
    level_cells = shapes.prod(1)  # (L,) cells per level, all images
    first_cell = torch.cumsum(level_cells, 0) - level_cells  # (L,) where each level starts
    height, width = shapes[level_of_roi, 1:].unbind(1)  # (K,) each
    scale = torch.tensor(scales, dtype=dtype)[level_of_roi]  # (K,)
    rois = rois.detach().to(dtype)
    offset = 0.5 if aligned else 0.0
    x0, y0, x1, y1 = (rois[:, 1:] * scale[:, None] - offset).unbind(1)  # feature-map frame
    roi_w, roi_h = x1 - x0, y1 - y0
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    # (K, out * g) sample positions per axis -> their two neighbours and weights, (K, out * g)
    ys = sample_points(y0, roi_h / out_h, out_h, grid)
    xs = sample_points(x0, roi_w / out_w, out_w, grid)
    y_low, y_high, wy_low, wy_high = bilinear_taps(ys, height[:, None])
    x_low, x_high, wx_low, wx_high = bilinear_taps(xs, width[:, None])
    rows = torch.stack((y_low, y_high), -1).view(count, out_h, 1, grid, 2, 1, 1)
    columns = torch.stack((x_low, x_high), -1).view(count, 1, out_w, 1, 1, grid, 2)
    weight_y = torch.stack((wy_low, wy_high), -1).view(count, out_h, 1, grid, 2, 1, 1)
    weight_x = torch.stack((wx_low, wx_high), -1).view(count, 1, out_w, 1, 1, grid, 2)
    # (K, out_h, out_w, g, 2, g, 2): the cell each tap reads in the stacked levels, its weight
    start = first_cell[level_of_roi] + rois[:, 0].long() * height * width  # (K,) image start
    cell = start.view(-1, 1, 1, 1, 1, 1, 1) + rows * width.view(-1, 1, 1, 1, 1, 1, 1) + columns
    weight = weight_y * weight_x / (grid * grid)
    return cell.reshape(-1), weight.reshape(-1)


def _transposed_blocks(
    cells: Tensor,
    weight: Tensor,
    taps: int,
    block_rows: int,
    level_cells: list[int],
    index: torch.dtype,
) -> list[list[Tensor | None]]:
    """M^T in CSR form, per block of M's rows and per level: (cells of the level, rows of
    the block) matrices, so that each level gets a gradient of its own.

    A stable sort of M's entries by (block, cell) lists each row of a block's M^T in M's
    order (row, then tap), as converting M's transpose (CSC) to CSR does.
    """
    rows, columns = cells.numel() // taps, sum(level_cells)
    if rows == 0:
        return []
    row = torch.arange(cells.numel()) // taps  # (nnz,) M's row of each entry
    block = row // block_rows
    blocks = math.ceil(rows / block_rows)
    key = block * columns + cells  # (nnz,)
    order = torch.argsort(key, stable=True)
    per_cell = torch.bincount(key, minlength=blocks * columns).view(blocks, columns)
    crow = F.pad(per_cell.reshape(-1).cumsum(0), (1, 0))  # (blocks columns + 1,) all blocks
    local_row = (row[order] - block[order] * block_rows).to(index)
    values = weight[order]
    level_starts = [sum(level_cells[:level]) for level in range(len(level_cells) + 1)]
    return [
        [
            _csr_rows(crow, local_row, values, b * columns + start, b * columns + end,
                      min(block_rows, rows - b * block_rows), index)
            for start, end in zip(level_starts[:-1], level_starts[1:], strict=True)
        ]
        for b in range(blocks)
    ]  # fmt: skip


def _csr_rows(crow, columns, values, first, last, width, index) -> Tensor | None:
    """Rows `first:last` of a CSR matrix given by int64 `crow` (its entries' columns and
    values), as a (last - first, width) CSR matrix with `index` indices; None if they hold
    no entry (a level no region of the block reads gets no gradient from it)."""
    begin, end = int(crow[first]), int(crow[last])
    if begin == end:
        return None
    return _csr(
        (crow[first : last + 1] - begin).to(index), columns[begin:end], values[begin:end],
        (last - first, width),
    )  # fmt: skip


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # torch calls its CSR tensors beta
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def stack_levels(levels: list[Tensor], dtype: torch.dtype) -> Tensor:
    """L levels (N, C, H_l, W_l) -> (sum N H W, C) rows, the levels one after another (a view
    of a single channels-last level)."""
    channels = levels[0].shape[1]
    flat = [level.permute(0, 2, 3, 1).reshape(-1, channels).to(dtype) for level in levels]
    return flat[0] if len(flat) == 1 else torch.cat(flat)


def pool_pyramid(
    levels: list[Tensor], poolings: list[SparsePooling], linear: nn.Linear | None = None
) -> list[Tensor]:
    """Each pooling's RoIAlign of the levels, as one autograd node.

    Args:
        levels: L feature maps (N, C, H_l, W_l), any dtype (the products run in float32).
        poolings: from `sparse_pooling` over these levels.
        linear: applied to the first pooling's (K, C out_h out_w) features inside the node.

    Returns:
        Per pooling (K, C, out_h, out_w) laid out channels-last, the first one
        `linear(pooled.flatten(1))` (K, out_features) with `linear`.
    """
    weight, bias = (None, None) if linear is None else (linear.weight, linear.bias)
    with torch.autocast("cpu", enabled=False):  # autocast would make the products bf16
        outputs = _PooledPyramid.apply(weight, bias, poolings, *levels)
    channels = levels[0].shape[1]
    return [
        output if index == 0 and linear is not None
        else output.view(pooling.count, pooling.out_h, pooling.out_w, channels)
        .permute(0, 3, 1, 2)
        for index, (output, pooling) in enumerate(zip(outputs, poolings, strict=True))
    ]  # fmt: skip


class _PooledPyramid(torch.autograd.Function):
    """Forward: `M_i @ stacked` for each pooling (the first through `linear` if given), each
    product written straight into its result; backward: the sum of `M_i^T @ grad_i`, one
    buffer per level, from M^T's blocks.

    `torch.mm` of a CSR matrix is `addmm` onto a zero matrix the size of its result and
    converts M's transpose to CSR in its backward; two separate poolings of one pyramid
    each give the pyramid a gradient of its own, added afterwards; and the gradient of a
    concatenation of the levels holds all levels' gradients until the last is consumed.
    """

    @staticmethod
    def forward(ctx, weight, bias, poolings, *levels):
        ctx.set_materialize_grads(False)
        stacked = stack_levels(levels, full_precision_dtype(levels[0].dtype))
        outputs = [_product(pooling.matrix, stacked) for pooling in poolings]
        del stacked
        ctx.poolings = [replace(pooling, matrix=None) for pooling in poolings]  # M^T only
        ctx.levels = [(level.shape, level.dtype) for level in levels]
        ctx.fc_input = None
        if weight is not None:
            first = poolings[0]
            # (K out_h out_w, C) -> (K, C out_h out_w): the order a flattened NCHW region has
            fc_input = outputs[0].view(first.count, first.bins, -1).transpose(1, 2).flatten(1)
            outputs[0] = F.linear(fc_input, weight, bias)
            if ctx.needs_input_grad[0]:  # kept as an attribute: released early in backward
                ctx.fc_input = fc_input
            ctx.save_for_backward(weight)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        if ctx.poolings is None:
            raise RuntimeError("the sparse RoIAlign's backward ran twice: run its forward again")
        poolings, fc_input, ctx.poolings, ctx.fc_input = ctx.poolings, ctx.fc_input, None, None
        weight = ctx.saved_tensors[0] if ctx.saved_tensors else None
        grad_weight = grad_bias = None
        if weight is not None and grads[0] is not None:
            if fc_input is not None:
                grad_weight = grads[0].t().mm(fc_input)  # (out, K) @ (K, in), as F.linear's
            if ctx.needs_input_grad[1]:
                grad_bias = grads[0].sum(0)
        del fc_input  # fc6's input (K x 49 MiB in the box head) is gone before the pyramid's
        pyramid: list[Tensor | None] = [None] * len(ctx.levels)
        if any(ctx.needs_input_grad[3:]):
            for index, (pooling, grad) in enumerate(zip(poolings, grads, strict=True)):
                through = weight if index == 0 else None
                if grad is not None:
                    _add_transposed(pyramid, pooling, grad, through)
        level_grads = [
            None if grad is None else _as_level(grad, shape, dtype)
            for grad, (shape, dtype) in zip(pyramid, ctx.levels, strict=True)
        ]
        return grad_weight, grad_bias, None, *level_grads


def _as_level(grad: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """(N H W, C) -> (N, C, H, W), laid out channels-last, in the level's dtype."""
    batch, channels, height, width = shape
    return grad.view(batch, height, width, channels).permute(0, 3, 1, 2).to(dtype)


def _add_transposed(
    pyramid: list[Tensor | None], pooling: SparsePooling, grad: Tensor, weight: Tensor | None
) -> None:
    """`pyramid[l] += M^T_l @ grad` for each level l, block by block (each level's
    allocated by its first block).

    grad: (K out_h out_w, C), or with `weight` the linear layer's output gradient (K, out),
    turned into the pooled features' gradient one block of regions at a time.
    """
    for block, per_level in enumerate(pooling.transposed):
        rows = _block_rows(pooling, block, grad, weight)  # (rows of M's block, C)
        for level, matrix in enumerate(per_level):
            if matrix is None:
                continue
            if pyramid[level] is None:
                pyramid[level] = _product(matrix, rows)
            else:
                torch.addmm(pyramid[level], matrix, rows, out=pyramid[level])
        del rows  # before the next block's are made


def _block_rows(pooling: SparsePooling, block: int, grad: Tensor, weight: Tensor | None):
    """The gradient of M's rows in block `block`, (rows, C) contiguous."""
    if weight is None:
        start = block * pooling.block_rows
        return grad[start : start + pooling.block_rows].contiguous()
    regions = pooling.block_rows // pooling.bins
    pooled = grad[block * regions : (block + 1) * regions].mm(weight)  # (k, C bins)
    # (k, C bins) -> (k, bins, C) -> (k bins, C): the order of M's rows
    return (
        pooled.view(pooled.shape[0], -1, pooling.bins)
        .transpose(1, 2)
        .reshape(-1, pooled.shape[1] // pooling.bins)
    )


def _product(matrix: Tensor, dense: Tensor) -> Tensor:
    """(R, S) CSR @ (S, C) -> (R, C), the result the only dense allocation (beta=0: the
    uninitialised `out` is not read)."""
    out = dense.new_empty((matrix.shape[0], dense.shape[1]))
    if matrix.shape[0] == 0:
        return out
    return torch.addmm(out, matrix, dense, beta=0, out=out)


def sample_points(start: Tensor, bin_size: Tensor, bins: int, per_bin: int) -> Tensor:
    """Regularly spaced sample centres: `per_bin` of them inside each of `bins` bins, for each
    (...) start and bin size -> (..., bins * per_bin), bin-major; computed in the kernel's
    order of operations (the same rounding)."""
    bin_index = torch.arange(bins, device=start.device)[:, None]  # (bins, 1)
    sample_index = torch.arange(per_bin, device=start.device)[None, :] + 0.5  # (1, per_bin)
    start, bin_size = start[..., None, None], bin_size[..., None, None]  # (..., 1, 1)
    points = start + bin_index * bin_size + sample_index.to(start.dtype) * bin_size / per_bin
    return points.flatten(-2)


def bilinear_taps(coords: Tensor, size: int | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two cells each sample coordinate reads, and their weights (the kernel's rules: both
    weights zero outside [-1, size], samples in [-1, 0] and past the last cell clamped to the
    border cell). `size` is an int or a tensor broadcasting against `coords`.

    Returns:
        low, high (int64 cell indices) and low_weight, high_weight, each shaped as `coords`.
    """
    inside = (coords >= -1.0) & (coords <= size)
    coords = torch.where(inside, coords, 0.0).clamp(min=0)
    low = coords.floor().long()
    at_last_cell = low >= size - 1
    low = torch.where(at_last_cell, size - 1, low)
    high = torch.where(at_last_cell, size - 1, low + 1)
    coords = torch.where(at_last_cell, low.to(coords.dtype), coords)
    fraction = coords - low
    return low, high, (1.0 - fraction) * inside, fraction * inside
