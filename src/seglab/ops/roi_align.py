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
  backward's scatter on one; the regions of all FPN levels go into one matrix
  (`ops/roi_align_sparse.py`, which also pools several sets of regions, and the box head's
  fc6, as one autograd node: `pool_jointly`, what a training step's RoI heads use).
- `roi_align`: `roi_align_sparse` where it applies (CPU, float, fixed sampling ratio, not
  under a tracer), else torchvision's kernel (GPU, ONNX export, the adaptive grid).
All follow the kernel's rules: sample points outside [-1, size] contribute zero, points in
[-1, 0] are clamped to 0, the adaptive grid (`sampling_ratio <= 0`) uses
`ceil(roi_size / output_size)` samples per bin, and with `aligned=False` a region is at
least 1 x 1 feature cell.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from seglab.ops.precision import full_precision_dtype
from seglab.ops.roi_align_sparse import (
    BLOCK_VALUES,
    SparsePooling,
    bilinear_taps,
    pool_pyramid,
    sample_points,
    sparse_pooling,
)
from seglab.ops.roi_levels import MultiLevelRoIPooler, as_rois, boxes_to_rois, infer_scale
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
    """RoIAlign of regions from one or more feature levels as one sparse matrix product
    (`ops/roi_align_sparse.py`).

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
    pooling = _sparse_pooling(levels, rois, level_of_roi, scales, output_size, sampling_ratio,
                              aligned)  # fmt: skip
    return pool_pyramid(levels, [pooling])[0]


def _sparse_pooling(
    levels, rois, level_of_roi, scales, output_size, sampling_ratio, aligned, block_regions=None
) -> SparsePooling:
    """`sparse_pooling` of `levels` (M^T built where the levels need a gradient)."""
    backward = torch.is_grad_enabled() and any(level.requires_grad for level in levels)
    return sparse_pooling(
        [(level.shape[0], level.shape[2], level.shape[3]) for level in levels], rois,
        level_of_roi, scales, output_size, sampling_ratio, aligned,
        dtype=full_precision_dtype(levels[0].dtype), backward=backward,
        block_regions=block_regions,
    )  # fmt: skip


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
    sample_ys = sample_points(y0, roi_h / out_h, out_h, grid_h)  # (out_h * grid_h,)
    sample_xs = sample_points(x0, roi_w / out_w, out_w, grid_w)  # (out_w * grid_w,)

    # Bilinear interpolation is separable: sample rows, then columns.
    weights_y = _interpolation_matrix(sample_ys, feature.shape[1])  # (S_y, H)
    weights_x = _interpolation_matrix(sample_xs, feature.shape[2])  # (S_x, W)
    samples = weights_y @ feature @ weights_x.T  # (C, S_y, S_x)
    # (C, out_h * grid_h, out_w * grid_w) -> (C, out_h, grid_h, out_w, grid_w): average per bin
    samples = samples.reshape(feature.shape[0], out_h, grid_h, out_w, grid_w)
    return samples.sum(dim=(2, 4)) / max(grid_h * grid_w, 1)


def _interpolation_matrix(coords: Tensor, size: int) -> Tensor:
    """Linear-interpolation weights of 1-D sample coordinates over `size` cells.

    Args:
        coords: (S,) positions in feature cells (cell i has its centre at i).
        size: number of cells along the axis.

    Returns:
        (S, size): row s holds the two weights of sample s (`bilinear_taps`).
    """
    low, high, low_weight, high_weight = bilinear_taps(coords, size)
    matrix = coords.new_zeros((len(coords), size))
    matrix.scatter_add_(1, low[:, None], low_weight[:, None])
    matrix.scatter_add_(1, high[:, None], high_weight[:, None])
    return matrix


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


def pool_jointly(
    poolers: list[nn.Module],
    features: dict[str, Tensor],
    proposals: list[list[Tensor]],
    image_sizes: list[tuple[int, int]],
    *,
    linear: nn.Linear | None = None,
) -> list[Tensor] | None:
    """Several `MultiScaleRoIAlign`s of the same levels (a training step's box and mask
    RoIs) as one autograd node: one stacked pyramid, one buffer per level for its gradient, and
    `linear` applied to the first pooling inside the node (`roi_align_sparse.pool_pyramid`).

    Args:
        poolers: the modules; proposals: for each, per image (K_i, 4) xyxy boxes.
        features, image_sizes: as `MultiLevelRoIPooler.forward`.
        linear: a layer taking the first pooling's (K, C out_h out_w) flattened features.

    Returns:
        Each pooler's `pooler(features, proposals[i], image_sizes)`, the first one through
        `linear(pooled.flatten(1))` if given; None where a pooler is no `MultiScaleRoIAlign`
        on the sparse path or reads other levels than the first.
    """
    first = poolers[0]
    if not all(isinstance(pooler, MultiScaleRoIAlign) for pooler in poolers):
        return None  # (R-CNN's warped regions, RoI max pooling)
    levels = [features[name] for name in first.featmap_names]
    joinable = all(
        pooler.featmap_names == first.featmap_names
        and sparse_applies(levels[0], pooler.sampling_ratio)
        for pooler in poolers
    )
    if not joinable:
        return None
    scales = [infer_scale(level, image_sizes) for level in levels]
    poolings = []
    for index, (pooler, boxes) in enumerate(zip(poolers, proposals, strict=True)):
        rois = boxes_to_rois(boxes)  # (K, 5)
        level_of_roi = pooler._assign_levels(rois[:, 1:], scales)
        values_per_region = levels[0].shape[1] * pooler.output_size[0] * pooler.output_size[1]
        block = BLOCK_VALUES // values_per_region if index == 0 and linear is not None else None
        poolings.append(_sparse_pooling(
            levels, rois, level_of_roi, scales, pooler.output_size,
            pooler.sampling_ratio, pooler.aligned, block,
        ))  # fmt: skip
    return pool_pyramid(levels, poolings, linear)
