"""Regions of several images, and the FPN level each is pooled from (FPN paper eq. 1).

What RoIAlign (`roi_align.py`) and RoI max pooling (`roi_pool.py`) share: the regions of a
batch as (K, 5) `[batch_index, x0, y0, x1, y1]` rows (`boxes_to_rois`, `as_rois`), each
level's stride read from its size (`infer_scale`), and `MultiLevelRoIPooler`, which sends
every region to the level that fits its size; its subclasses say how one level is pooled.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import optimization_hint
from torch.nn.modules.utils import _pair

from seglab.ops.precision import full_precision_dtype
from seglab.structures.boxes import box_area


def as_rois(rois: Tensor | list[Tensor], features: Tensor) -> Tensor:
    """Regions in either of torchvision's forms -> (K, 5) `[batch_index, x0, y0, x1, y1]`.

    Args:
        rois: a (K, 5) tensor, or a list (tuple) of (K_i, 4) xyxy boxes, one per image.
        features: (N, C, H, W), the maps the regions are pooled from (dtype, device).

    Raises:
        ValueError: for any other shape, saying which forms are accepted.
    """
    accepted = "(K, 5) [batch_index, x0, y0, x1, y1] rois or a list of (K_i, 4) xyxy boxes"
    if isinstance(rois, (list, tuple)):
        for index, boxes in enumerate(rois):
            if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
                shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
                raise ValueError(f"regions: image {index}'s boxes are {shape}; need {accepted}")
        if not rois:
            return features.new_zeros((0, 5))
        dtype = full_precision_dtype(features.dtype)  # float32 coordinates for bf16 features
        return boxes_to_rois([boxes.to(dtype) for boxes in rois])
    if not isinstance(rois, Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        shape = tuple(rois.shape) if isinstance(rois, Tensor) else type(rois).__name__
        raise ValueError(f"regions: got {shape}; need {accepted}")
    return rois


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
        level_of_roi = self._assign_levels(rois[:, 1:], scales)  # (K,) in 0..L-1
        return self._pool_levels(levels, rois, level_of_roi, scales)

    def _pool_levels(
        self, levels: list[Tensor], rois: Tensor, level_of_roi: Tensor, scales: list[float]
    ) -> Tensor:
        """(K, C, out_h, out_w): each region pooled from its level, one level at a time."""
        if len(levels) == 1:
            return self._pool_level(levels[0], rois, scales[0])
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


def infer_scale(feature: Tensor, image_sizes: list[tuple[int, int]]) -> float:
    """Feature cells per pixel of a level: (its height / the largest image height) rounded
    to a power of two (the images are padded up to a multiple of the coarsest stride)."""
    # Under ONNX export the sizes are symbolic; a level's stride does not depend on the
    # image size, so the example image's sizes (optimization_hint: no guard) give it.
    max_height = max(optimization_hint(height) for height, _ in image_sizes)
    approx_scale = float(optimization_hint(feature.shape[-2])) / float(max_height)
    return 2 ** float(torch.tensor(approx_scale).log2().round())
