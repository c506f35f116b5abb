"""RoIAlign (Mask R-CNN §3) and its multi-level form for FPN (FPN paper eq. 1).

RoI pooling snaps a region to the feature grid twice (its corners, then its bins); RoIAlign
keeps the real-valued region, splits it into `output_size` bins and averages a few
bilinearly interpolated samples in each bin, so features stay aligned with the pixels.

`roi_align` is torchvision's compiled kernel (the fast path); `roi_align_reference` is the
same computation in plain PyTorch, written to be read, and tested against the kernel for
values and gradients. Both follow the kernel's exact rules: sample points outside
[-1, size] contribute zero, points in [-1, 0] are clamped to 0, the adaptive grid
(`sampling_ratio <= 0`) uses `ceil(roi_size / output_size)` samples per bin, and with
`aligned=False` a region is at least 1 x 1 feature cell.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import optimization_hint
from torch.nn.modules.utils import _pair

from seglab.structures.boxes import box_area


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> Tensor:
    """RoIAlign with torchvision's kernel.

    Args:
        features: (N, C, H, W) feature maps of a batch.
        rois: (K, 5) `[batch_index, x0, y0, x1, y1]` in input-image pixels.
        output_size: `out` or `(out_h, out_w)` bins per region.
        spatial_scale: feature cells per image pixel (1/stride, e.g. 1/16).
        sampling_ratio: samples per bin side; <= 0 picks `ceil(roi_size / output_size)`.
        aligned: shift by half a pixel so that pixel centres sit at .5 (Detectron2 fix);
            torchvision's v1 Mask R-CNN uses False. Note the default differs from
            torchvision's (False): our models use True (docs/conventions.md).

    Returns:
        (K, C, out_h, out_w) pooled features.
    """
    return torchvision.ops.roi_align(
        features, rois, _pair(output_size), spatial_scale, sampling_ratio, aligned
    )


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
    """Regularly spaced sample centres: `per_bin` of them inside each of `bins` bins."""
    bin_index = torch.arange(bins, device=start.device)[:, None]  # (bins, 1)
    sample_index = torch.arange(per_bin, device=start.device)[None, :] + 0.5  # (1, per_bin)
    points = start + bin_index * bin_size + sample_index.to(start.dtype) * bin_size / per_bin
    return points.reshape(-1)  # (bins * per_bin,), bin-major


def _interpolation_matrix(coords: Tensor, size: int) -> Tensor:
    """Linear-interpolation weights of 1-D sample coordinates over `size` cells.

    Args:
        coords: (S,) positions in feature cells (cell i has its centre at i).
        size: number of cells along the axis.

    Returns:
        (S, size): row s holds the two weights of sample s (zero row when the sample lies
        outside [-1, size], as in the kernel; samples in [-1, 0] and past the last cell are
        clamped to the border cell).
    """
    inside = (coords >= -1.0) & (coords <= size)
    coords = torch.where(inside, coords, 0.0).clamp(min=0)
    low = coords.floor().long()
    at_last_cell = low >= size - 1
    low = torch.where(at_last_cell, size - 1, low)
    high = torch.where(at_last_cell, size - 1, low + 1)
    coords = torch.where(at_last_cell, low.to(coords.dtype), coords)
    high_weight = (coords - low) * inside  # (S,)
    low_weight = (1.0 - (coords - low)) * inside
    matrix = coords.new_zeros((len(coords), size))
    matrix.scatter_add_(1, low[:, None], low_weight[:, None])
    matrix.scatter_add_(1, high[:, None], high_weight[:, None])
    return matrix


def boxes_to_rois(boxes_per_image: list[Tensor]) -> Tensor:
    """[(N_i, 4) xyxy per image] -> (sum N_i, 5) `[batch_index, x0, y0, x1, y1]`."""
    rois = [
        torch.cat((torch.full_like(boxes[:, :1], index), boxes), dim=1)
        for index, boxes in enumerate(boxes_per_image)
    ]
    return torch.cat(rois, dim=0)


class MultiLevelRoIPooler(nn.Module):
    """Pool each region from the feature level that fits its size (one level: no choice).

    FPN paper eq. (1): a region of `w x h` pixels goes to level
    `k = floor(k0 + log2(sqrt(w h) / 224))`, clamped to the levels given, so a 224 x 224
    region (an ImageNet-sized object) comes from `canonical_level` k0 = 4 (stride 16).
    The stride of each level is inferred from its size relative to the largest image, as
    a power of two (like torchvision's `MultiScaleRoIAlign`, whose results this matches;
    torchvision infers the strides once and caches them, we infer them on every call).
    Subclasses say how one level is pooled (`_pool_level`): RoIAlign or RoI max pooling.

    Args:
        featmap_names: names of the feature maps to pool from, finest (largest) first.
        output_size: `out` or `(out_h, out_w)`.
        canonical_scale: the 224 of eq. (1).
        canonical_level: the k0 of eq. (1).
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int],
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = _pair(output_size)
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def _pool_level(self, level: Tensor, rois: Tensor, scale: float) -> Tensor:
        """(N, C, H, W) level, (K, 5) rois in pixels -> (K, C, out_h, out_w)."""
        raise NotImplementedError

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> Tensor:
        """Pool every proposal of every image.

        Args:
            features: name -> (N, C, H_l, W_l); only `featmap_names` are used.
            proposals: per image (K_i, 4) xyxy in pixels of the (resized) input image.
            image_sizes: per image (height, width) of the input before padding.

        Returns:
            (sum K_i, C, out_h, out_w), in the order of the concatenated proposals.
        """
        levels = [features[name] for name in self.featmap_names]
        scales = [infer_scale(level, image_sizes) for level in levels]
        rois = boxes_to_rois(proposals)  # (K, 5)
        if len(levels) == 1:
            return self._pool_level(levels[0], rois, scales[0])
        level_of_roi = self._assign_levels(rois[:, 1:], scales)  # (K,) in 0..L-1
        pooled = levels[0].new_zeros((rois.shape[0], levels[0].shape[1], *self.output_size))
        for level_index, (level, scale) in enumerate(zip(levels, scales, strict=True)):
            in_level = torch.where(level_of_roi == level_index)[0]
            pooled[in_level] = self._pool_level(level, rois[in_level], scale).to(pooled.dtype)
        return pooled

    def _assign_levels(self, boxes: Tensor, scales: list[float]) -> Tensor:
        """FPN eq. (1): (K, 4) boxes -> (K,) int64 index into the levels (0 = finest)."""
        finest_level = int(-math.log2(scales[0]))
        coarsest_level = int(-math.log2(scales[-1]))
        box_size = torch.sqrt(box_area(boxes))
        # The small epsilon keeps a region of exactly 2^k * 224 on level k0 + k (torchvision).
        eps = torch.tensor(1e-6, dtype=box_size.dtype)
        level = torch.floor(
            self.canonical_level + torch.log2(box_size / self.canonical_scale) + eps
        )
        level = level.clamp(min=finest_level, max=coarsest_level)
        return level.to(torch.int64) - finest_level


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

    def _pool_level(self, level: Tensor, rois: Tensor, scale: float) -> Tensor:
        return roi_align(level, rois, self.output_size, scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


def infer_scale(feature: Tensor, image_sizes: list[tuple[int, int]]) -> float:
    """Feature cells per pixel of a level: (its height / the largest image height) rounded
    to a power of two (the images are padded up to a multiple of the coarsest stride)."""
    # Under ONNX export the sizes are symbolic; a level's stride does not depend on the
    # image size, so the example image's sizes (optimization_hint: no guard) give it.
    max_height = max(optimization_hint(height) for height, _ in image_sizes)
    approx_scale = float(optimization_hint(feature.shape[-2])) / float(max_height)
    return 2 ** float(torch.tensor(approx_scale).log2().round())
