"""Figure 10, the study text's "ROIAlign" ("interpolação"): where RoI max pooling and
RoIAlign read the feature map for one box.

The box is pooled from the level the detector's own box pooler picks for it (FPN eq. 1),
with the pooler's output size, sampling ratio and alignment; the sub-windows, sample points
and bilinear weights are the kernels' (`roi_grids`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import Tensor

from seglab.explain.context import Context
from seglab.explain.detector_run import DetectorRun, run_detector
from seglab.explain.figure import Figure, draw_box, new_figure, png
from seglab.explain.roi_grids import (
    SubWindow,
    roi_align_samples,
    roi_align_weights,
    roi_pool_windows,
)
from seglab.explain.rpn import reference_box
from seglab.ops.roi_align import roi_align
from seglab.ops.roi_levels import infer_scale


@dataclass(frozen=True)
class RoIComparison:
    """RoI max pooling and RoIAlign of one box on one feature level.

    Attributes:
        level: the level's name; spatial_scale: its cells per pixel; feature: (C, H, W).
        box: (4,) xyxy in the resized frame's pixels.
        windows: RoI max pooling's sub-window of each of the out x out bins.
        weights: (out, out, H, W) RoIAlign's weight of each cell in each bin.
        samples: (out * g, out * g, 2) RoIAlign's sample points, in drawn cells.
    """

    level: str
    spatial_scale: float
    feature: Tensor
    box: Tensor
    output_size: int
    sampling_ratio: int
    aligned: bool
    windows: list[list[SubWindow]]
    weights: Tensor
    samples: Tensor


def pooling_level(pooler, run: DetectorRun, box: Tensor) -> str:
    """The level the detector's RoIAlign pooler reads `box` from: the one whose RoIAlign
    equals the pooler's output."""
    pooled = pooler(run.features, [box[None]], run.image_sizes)
    roi = torch.cat([box.new_zeros(1), box])[None]
    for name in pooler.featmap_names:
        level = run.features[name]
        scale = infer_scale(level, run.image_sizes)
        candidate = roi_align(level, roi, pooler.output_size, scale, pooler.sampling_ratio,
                              pooler.aligned)  # fmt: skip
        if torch.equal(candidate, pooled):
            return name
    raise RuntimeError("the pooler's output matches no single level")


def roi_comparison(model, run: DetectorRun, box: Tensor) -> RoIComparison:
    """Both poolings of `box` with the settings of the detector's box pooler."""
    pooler = model.roi_heads.box_roi_pool
    level = pooling_level(pooler, run, box)
    feature = run.features[level][0]
    scale = infer_scale(run.features[level], run.image_sizes)
    size, ratio, aligned = pooler.output_size[0], pooler.sampling_ratio, pooler.aligned
    hw = tuple(feature.shape[-2:])
    return RoIComparison(
        level=level, spatial_scale=scale, feature=feature, box=box, output_size=size,
        sampling_ratio=ratio, aligned=aligned,
        windows=roi_pool_windows(hw, box, size, scale),
        weights=roi_align_weights(hw, box, size, scale, ratio, aligned),
        samples=roi_align_samples(hw, box, size, scale, ratio, aligned),
    )  # fmt: skip


# -- drawing ------------------------------------------------------------------------------


def roi_align_figure(context: Context) -> Figure:
    model = context.model("mask_rcnn")
    run = run_detector(model, context.image_for(model))
    box, what = reference_box(context, run)
    data = roi_comparison(model, run, box)
    figure = new_figure(10.0, 5.4)
    pool_axes, align_axes = figure.subplots(1, 2)
    middle = data.output_size // 2
    _feature_background(pool_axes, data, "RoIPool: box snapped to cells, whole-cell sub-windows")
    for row in data.windows:
        for window in row:
            draw_box(pool_axes, (window.x0, window.y0, window.x1, window.y1), "#d62728",
                     width=1.0, alpha=0.8)  # fmt: skip
    chosen = data.windows[middle][middle]
    pool_axes.add_patch(_cells_patch(chosen))
    _feature_background(align_axes, data, "RoIAlign: exact box, bilinear samples")
    _bins(align_axes, data)
    weights = data.weights[middle, middle]
    for (row, column), weight in np.ndenumerate(weights.numpy()):
        if weight > 0:
            align_axes.add_patch(_cell(row, column, min(1.0, float(weight) * 2.5)))
            align_axes.text(column + 0.5, row + 0.5, f"{weight:.2f}", ha="center", va="center",
                            fontsize=6)  # fmt: skip
    samples = data.samples.reshape(-1, 2)
    align_axes.scatter(samples[:, 0], samples[:, 1], s=4, color="#1f77b4", zorder=3)
    for axes in (pool_axes, align_axes):
        draw_box(axes, data.box * data.spatial_scale, "#1f77b4", width=1.5, style="--")
    figure.tight_layout()
    x0, y0, x1, y1 = (float(v) for v in data.box * data.spatial_scale)
    return Figure(
        f"{what[0].upper()}{what[1:]} (dashed: {x0:.1f}..{x1:.1f} x {y0:.1f}..{y1:.1f} cells "
        f"of {data.level}, stride {1 / data.spatial_scale:g}) pooled to "
        f"{data.output_size} x {data.output_size} as {context.note(model)} pools it. RoIPool "
        "rounds the box to whole cells and takes the maximum of each sub-window (red; one is "
        "filled), so features shift by up to half a cell. RoIAlign keeps the exact box and "
        f"averages {data.samples.shape[0] // data.output_size} x "
        f"{data.samples.shape[1] // data.output_size} bilinear samples (dots) per bin: the "
        "numbers are the weights of the cells in the middle bin.",
        png(figure),
    )


def _feature_background(axes, data: RoIComparison, title: str) -> None:
    """The level's feature energy around the box, cells on integer coordinates."""
    height, width = data.feature.shape[-2:]
    x0, y0, x1, y1 = (float(v) for v in data.box * data.spatial_scale)
    energy = data.feature.norm(dim=0).numpy()
    axes.imshow(energy, cmap="Greys", alpha=0.35, extent=(0, width, height, 0),
                interpolation="nearest")  # fmt: skip
    axes.set_xticks(range(width + 1), labels=[])  # before the limits: ticks widen them
    axes.set_yticks(range(height + 1), labels=[])
    axes.set_xlim(max(0, np.floor(x0) - 1), min(width, np.ceil(x1) + 1))
    axes.set_ylim(min(height, np.ceil(y1) + 1), max(0, np.floor(y0) - 1))
    axes.grid(True, color="#bbbbbb", linewidth=0.5)
    axes.tick_params(length=0)
    axes.set_title(title, fontsize=9)


def _bins(axes, data: RoIComparison) -> None:
    """RoIAlign's bin edges: the box's exact extent split in `output_size` equal parts."""
    x0, y0, x1, y1 = (float(v) for v in data.box * data.spatial_scale)
    for k in range(data.output_size + 1):
        x = x0 + (x1 - x0) * k / data.output_size
        y = y0 + (y1 - y0) * k / data.output_size
        axes.plot([x, x], [y0, y1], color="#1f77b4", linewidth=0.6)
        axes.plot([x0, x1], [y, y], color="#1f77b4", linewidth=0.6)


def _cells_patch(window: SubWindow) -> Rectangle:
    return Rectangle((window.x0, window.y0), window.x1 - window.x0, window.y1 - window.y0,
                     color="#d62728", alpha=0.3)  # fmt: skip


def _cell(row: int, column: int, alpha: float) -> Rectangle:
    return Rectangle((column, row), 1, 1, color="#ff7f0e", alpha=alpha)
