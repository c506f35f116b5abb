"""RoIAlign (Mask R-CNN §3) and its multi-level form for FPN (`ops/roi_levels.py`).

RoI pooling snaps a region to the feature grid twice (its corners, then its bins); RoIAlign
keeps the real-valued region, splits it into `output_size` bins and averages a few
bilinearly interpolated samples in each bin, so features stay aligned with the pixels.

Three forms of one computation, tested against each other for values and gradients:
- `roi_align_reference`: plain PyTorch, one region at a time, written to be read;
- `roi_align_sparse`: the CPU fast path. With a fixed number of samples per bin, every
  output cell is a fixed weighted sum of at most 4 g^2 feature cells (g x g samples, four
  bilinear neighbours each), so RoIAlign over K regions is one sparse (K out_h out_w) x
  (N H W) matrix times the features laid out (N H W, C), and its backward is the transposed
  product. Sparse BLAS runs both on every thread, where torchvision's CPU kernel runs its
  backward's scatter on one; the regions of all FPN levels go into one matrix.
- `roi_align`: `roi_align_sparse` where it applies (CPU, float, fixed sampling ratio, not
  under a tracer), else torchvision's kernel (GPU, ONNX export, the adaptive grid).
All follow the kernel's rules: sample points outside [-1, size] contribute zero, points in
[-1, 0] are clamped to 0, the adaptive grid (`sampling_ratio <= 0`) uses
`ceil(roi_size / output_size)` samples per bin, and with `aligned=False` a region is at
least 1 x 1 feature cell.
"""

from __future__ import annotations

import warnings

import torch
import torchvision
from torch import Tensor
from torch.nn.modules.utils import _pair

from seglab.ops.precision import full_precision_dtype
from seglab.ops.roi_levels import MultiLevelRoIPooler, as_rois
from seglab.ops.tracing import tracing


def roi_align(
    features: Tensor,
    rois: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> Tensor:
    """RoIAlign: `roi_align_sparse` on the CPU, torchvision's kernel elsewhere.

    Args:
        features: (N, C, H, W) feature maps of a batch.
        rois: (K, 5) `[batch_index, x0, y0, x1, y1]` in input-image pixels, or, as
            torchvision takes them, a list of N (K_i, 4) xyxy boxes, one per image.
        output_size: `out` or `(out_h, out_w)` bins per region.
        spatial_scale: feature cells per image pixel (1/stride, e.g. 1/16).
        sampling_ratio: samples per bin side; <= 0 picks `ceil(roi_size / output_size)`.
        aligned: shift by half a pixel so that pixel centres sit at .5 (Detectron2 fix);
            torchvision's v1 Mask R-CNN uses False. Note the default differs from
            torchvision's (False): our models use True (docs/conventions.md).

    Returns:
        (K, C, out_h, out_w) pooled features.
    """
    rois = as_rois(rois, features)
    if sparse_applies(features, sampling_ratio):
        return roi_align_sparse(
            [features], rois, torch.zeros_like(rois[:, 0], dtype=torch.int64), [spatial_scale],
            output_size, sampling_ratio, aligned,
        )  # fmt: skip
    return torchvision.ops.roi_align(
        features, rois, _pair(output_size), spatial_scale, sampling_ratio, aligned
    )


def sparse_applies(features: Tensor, sampling_ratio: int) -> bool:
    """Whether `roi_align_sparse` computes this RoIAlign: float on a CPU, a fixed grid of
    samples per bin, eager mode (a tracer gets torchvision's operator, which ONNX knows)."""
    return (
        features.device.type == "cpu"
        and features.is_floating_point()
        and sampling_ratio > 0
        and not tracing()
    )


def roi_align_sparse(
    levels: list[Tensor],
    rois: Tensor,
    level_of_roi: Tensor,
    scales: list[float],
    output_size: int | tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """RoIAlign of regions from one or more feature levels as one sparse matrix product.

    Args:
        levels: L feature maps (N, C, H_l, W_l); channels-last ones are read without a copy.
        rois: (K, 5) `[batch_index, x0, y0, x1, y1]` in input-image pixels.
        level_of_roi: (K,) int64, the level each region is pooled from.
        scales: the L levels' `spatial_scale`.
        output_size, aligned: as in `roi_align`; sampling_ratio: g > 0 samples per bin side.

    Returns:
        (K, C, out_h, out_w), laid out channels-last, float32 for half-precision levels
        (bfloat16 coordinates past 256 px are multiples of 2: the sampling points, weights
        and sums are float32, as in torchvision's kernel under autocast). Gradients flow
        to the levels.
    """
    out_h, out_w = _pair(output_size)
    grid = sampling_ratio
    count, channels = rois.shape[0], levels[0].shape[1]
    if count == 0:
        return levels[0].new_zeros((0, channels, out_h, out_w))
    shapes = torch.tensor([level.shape[-2:] for level in levels])  # (L, 2)
    cells = shapes[:, 0] * shapes[:, 1] * levels[0].shape[0]  # (L,) cells per level
    first_cell = torch.cumsum(cells, 0) - cells  # (L,) where each level starts in the stack
    height, width = shapes[level_of_roi].unbind(1)  # (K,) each
    dtype = full_precision_dtype(levels[0].dtype)
    scale = torch.tensor(scales, dtype=dtype)[level_of_roi]  # (K,)

    rois = rois.detach().to(dtype)
    offset = 0.5 if aligned else 0.0
    x0, y0, x1, y1 = (rois[:, 1:] * scale[:, None] - offset).unbind(1)  # feature-map frame
    roi_w, roi_h = x1 - x0, y1 - y0
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    # (K, out * g) sample positions per axis -> their two neighbours and weights, (K, out * g)
    ys = _sample_points(y0, roi_h / out_h, out_h, grid)
    xs = _sample_points(x0, roi_w / out_w, out_w, grid)
    y_low, y_high, wy_low, wy_high = _bilinear_taps(ys, height[:, None])
    x_low, x_high, wx_low, wx_high = _bilinear_taps(xs, width[:, None])
    rows = torch.stack((y_low, y_high), -1).view(count, out_h, 1, grid, 2, 1, 1)
    columns = torch.stack((x_low, x_high), -1).view(count, 1, out_w, 1, 1, grid, 2)
    weight_y = torch.stack((wy_low, wy_high), -1).view(count, out_h, 1, grid, 2, 1, 1)
    weight_x = torch.stack((wx_low, wx_high), -1).view(count, 1, out_w, 1, 1, grid, 2)
    # (K, out_h, out_w, g, 2, g, 2): the cell each tap reads in the stacked levels, its weight
    start = first_cell[level_of_roi] + rois[:, 0].long() * height * width  # (K,) image start
    cell = start.view(-1, 1, 1, 1, 1, 1, 1) + rows * width.view(-1, 1, 1, 1, 1, 1, 1) + columns
    weight = weight_y * weight_x / (grid * grid)
    taps = 4 * grid * grid
    with warnings.catch_warnings():  # torch calls its CSR tensors beta
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        matrix = torch.sparse_csr_tensor(
            torch.arange(0, count * out_h * out_w * taps + 1, taps),  # `taps` per row
            cell.reshape(-1),  # repeats (taps reading one cell) add up in the product
            weight.reshape(-1),
            size=(count * out_h * out_w, int(cells.sum())),
            check_invariants=False,
        )
    flat = [level.permute(0, 2, 3, 1).reshape(-1, channels).to(dtype) for level in levels]
    stacked = flat[0] if len(flat) == 1 else torch.cat(flat)  # (sum N H W, C)
    with torch.autocast("cpu", enabled=False):  # autocast would make the sparse product bf16
        pooled = _SparseProduct.apply(matrix, stacked)  # (K out_h out_w, C)
    return pooled.view(count, out_h, out_w, channels).permute(0, 3, 1, 2)


class _SparseProduct(torch.autograd.Function):
    """`matrix @ dense` for a constant CSR matrix, and its backward `matrix^T @ grad`, each
    product written straight into its result.

    `torch.mm` of a CSR matrix is `addmm` onto a matrix of zeros the size of the result, and
    its backward multiplies by the matrix's transpose (CSC) the same way: each product held
    twice its result's memory (49 MiB more for a box head's 1024 RoIs of 7 x 7 x 256, 42.5
    MiB more for the gradient of a 2 x 512 px pyramid). The values are `torch.mm`'s, bit
    for bit (tests/ops/test_roi_align.py).
    """

    @staticmethod
    def forward(ctx, matrix: Tensor, dense: Tensor) -> Tensor:
        ctx.save_for_backward(matrix)
        return _product(matrix, dense)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        (matrix,) = ctx.saved_tensors
        return None, _product(matrix.t().to_sparse_csr(), grad.contiguous())


def _product(matrix: Tensor, dense: Tensor) -> Tensor:
    """(R, S) CSR @ (S, C) -> (R, C), the result the only dense allocation (beta=0: the
    uninitialised `out` is not read)."""
    out = dense.new_empty((matrix.shape[0], dense.shape[1]))
    return torch.addmm(out, matrix, dense, beta=0, out=out)


def roi_align_reference(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> Tensor:
    """Plain-PyTorch RoIAlign; same arguments and result as `roi_align`.

    Gradients flow to `features` only (as with the kernel, the regions are constants).
    """
    out_h, out_w = _pair(output_size)
    rois = rois.detach()
    pooled = [
        _align_one_roi(
            features[int(roi[0])], roi[1:], out_h, out_w, spatial_scale, sampling_ratio, aligned
        )
        for roi in rois
    ]
    if not pooled:
        return features.new_zeros((0, features.shape[1], out_h, out_w))
    return torch.stack(pooled)


def _align_one_roi(
    feature: Tensor,
    box: Tensor,
    out_h: int,
    out_w: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """(C, H, W) feature map, (4,) box in pixels -> (C, out_h, out_w)."""
    offset = 0.5 if aligned else 0.0
    x0, y0, x1, y1 = box.to(feature.dtype) * spatial_scale - offset  # feature-map frame
    roi_w, roi_h = x1 - x0, y1 - y0
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    grid_h = sampling_ratio if sampling_ratio > 0 else int(torch.ceil(roi_h / out_h))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(torch.ceil(roi_w / out_w))
    sample_ys = _sample_points(y0, roi_h / out_h, out_h, grid_h)  # (out_h * grid_h,)
    sample_xs = _sample_points(x0, roi_w / out_w, out_w, grid_w)  # (out_w * grid_w,)

    # Bilinear interpolation is separable: sample rows, then columns.
    weights_y = _interpolation_matrix(sample_ys, feature.shape[1])  # (S_y, H)
    weights_x = _interpolation_matrix(sample_xs, feature.shape[2])  # (S_x, W)
    samples = weights_y @ feature @ weights_x.T  # (C, S_y, S_x)
    # (C, out_h * grid_h, out_w * grid_w) -> (C, out_h, grid_h, out_w, grid_w): average per bin
    samples = samples.reshape(feature.shape[0], out_h, grid_h, out_w, grid_w)
    return samples.sum(dim=(2, 4)) / max(grid_h * grid_w, 1)


def _sample_points(start: Tensor, bin_size: Tensor, bins: int, per_bin: int) -> Tensor:
    """Regularly spaced sample centres: `per_bin` of them inside each of `bins` bins, for each
    (...) start and bin size -> (..., bins * per_bin), bin-major; computed in the kernel's
    order of operations (the same rounding)."""
    bin_index = torch.arange(bins, device=start.device)[:, None]  # (bins, 1)
    sample_index = torch.arange(per_bin, device=start.device)[None, :] + 0.5  # (1, per_bin)
    start, bin_size = start[..., None, None], bin_size[..., None, None]  # (..., 1, 1)
    points = start + bin_index * bin_size + sample_index.to(start.dtype) * bin_size / per_bin
    return points.flatten(-2)


def _interpolation_matrix(coords: Tensor, size: int) -> Tensor:
    """Linear-interpolation weights of 1-D sample coordinates over `size` cells.

    Args:
        coords: (S,) positions in feature cells (cell i has its centre at i).
        size: number of cells along the axis.

    Returns:
        (S, size): row s holds the two weights of sample s (`_bilinear_taps`).
    """
    low, high, low_weight, high_weight = _bilinear_taps(coords, size)
    matrix = coords.new_zeros((len(coords), size))
    matrix.scatter_add_(1, low[:, None], low_weight[:, None])
    matrix.scatter_add_(1, high[:, None], high_weight[:, None])
    return matrix


def _bilinear_taps(coords: Tensor, size: int | Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
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


class MultiScaleRoIAlign(MultiLevelRoIPooler):
    """RoIAlign (Mask R-CNN §3) over one feature map or an FPN (FPN paper eq. 1).

    Args:
        featmap_names, output_size, canonical_scale, canonical_level: as `MultiLevelRoIPooler`.
        sampling_ratio: as in `roi_align` (torchvision's detectors use 2).
        aligned: as in `roi_align` (torchvision's detectors use False).
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int],
        sampling_ratio: int,
        aligned: bool,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__(featmap_names, output_size, canonical_scale, canonical_level)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def _pool_levels(
        self, levels: list[Tensor], rois: Tensor, level_of_roi: Tensor, scales: list[float]
    ) -> Tensor:
        """On the CPU: every level in one sparse product (`roi_align_sparse`)."""
        if sparse_applies(levels[0], self.sampling_ratio):
            return roi_align_sparse(
                levels, rois, level_of_roi, scales, self.output_size, self.sampling_ratio,
                self.aligned,
            )  # fmt: skip
        return super()._pool_levels(levels, rois, level_of_roi, scales)

    def _pool_level(self, level: Tensor, rois: Tensor, scale: float) -> Tensor:
        return roi_align(level, rois, self.output_size, scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
