"""Figure 6, the study text's "Fast R-CNN": the CNN once per image, each region max pooled
from its feature map to a fixed 7 x 7 grid.

Everything comes from one forward pass of a Fast R-CNN (`seglab.models.detection.fast_rcnn`)
on the page's image, read with forward hooks (`detector_run`): the feature map is its
backbone's output, the RoIs its selective-search proposals, the 7 x 7 result the output of
its RoI pooling module (`ops.roi_pool.MultiScaleRoIPool`) for one RoI, and the probabilities
its box predictor's softmax for that RoI. The sub-windows are those that module's kernel
maxes over (`roi_grids.roi_pool_windows`, asked of the kernel itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from seglab.explain.context import Context
from seglab.explain.detector_run import DetectorRun, run_detector
from seglab.explain.figure import Figure, draw_box, new_figure, png, show_image, to_uint8_image
from seglab.explain.proposals import output_names
from seglab.explain.roi_grids import SubWindow, roi_pool_windows
from seglab.ops.roi_levels import infer_scale
from seglab.ops.roi_pool import roi_pool
from seglab.structures.boxes import box_iou

DRAWN_PROPOSALS = 150
HIGHLIGHT = "#d62728"


@dataclass(frozen=True)
class RoIPooling:
    """One RoI of a Fast R-CNN forward pass, pooled from the feature map.

    Attributes:
        run: the detector's parts' outputs.
        level: the feature map the RoI was pooled from; feature: (C, h, w) that map.
        spatial_scale: its cells per pixel of the resized image (1 / stride).
        index: the RoI among the proposals; box: (4,) xyxy in the resized frame.
        windows: the sub-window (cells of `feature`) of each of the H x W output bins.
        pooled: (C, H, W) the RoI pooling module's output for the RoI.
        probabilities: (K + 1,) the box predictor's softmax for the RoI, background first.
        class_names: K + 1 names, background first.
        channel: the channel drawn (the one most active in the RoI, `_most_active_channel`).
    """

    run: DetectorRun
    level: str
    feature: Tensor
    spatial_scale: float
    index: int
    box: Tensor
    windows: list[list[SubWindow]]
    pooled: Tensor
    probabilities: Tensor
    class_names: list[str]
    channel: int


def roi_pooling(model: nn.Module, image: Tensor, target: dict | None) -> RoIPooling:
    """Run the Fast R-CNN `model` on `image` and take one RoI: the proposal that best covers
    the largest ground-truth object, or (no ground truth) its most confident one."""
    run = run_detector(model, image)
    probabilities = run.heads["box_predictor"][0].softmax(dim=1)  # (P, K + 1)
    index = _chosen_roi(run, probabilities, target)
    pooled = run.heads["box_roi_pool"][index]  # (C, H, W)
    box = run.proposals[index]
    level, scale = pooled_level(model.roi_heads.box_roi_pool, run, box, pooled)
    feature = run.features[level][0]
    output_size = pooled.shape[-1]
    return RoIPooling(
        run=run, level=level, feature=feature, spatial_scale=scale, index=index, box=box,
        windows=roi_pool_windows(tuple(feature.shape[-2:]), box, output_size, scale),
        pooled=pooled, probabilities=probabilities[index],
        class_names=output_names(model, probabilities.shape[1]),
        channel=_most_active_channel(feature, pooled),
    )  # fmt: skip


def pooled_level(pooler: nn.Module, run: DetectorRun, box: Tensor, pooled: Tensor):
    """(name, cells per pixel) of the map whose RoI max pooling of `box` is `pooled` (the
    pooler's one map, or on an FPN the level it picked)."""
    roi = torch.cat([box.new_zeros(1), box])[None]  # (1, 5)
    for name in pooler.featmap_names:
        scale = infer_scale(run.features[name], run.image_sizes)
        if torch.equal(roi_pool(run.features[name], roi, pooled.shape[-2:], scale)[0], pooled):
            return name, scale
    raise RuntimeError("the RoI pooling module's output matches no feature map")


def _most_active_channel(feature: Tensor, pooled: Tensor) -> int:
    """The channel whose pooled RoI stands out most from the rest of its map (in standard
    deviations of the map): one that responds to what the RoI holds."""
    flat = feature.flatten(1)  # (C, h, w) -> (C, h*w)
    contrast = (pooled.flatten(1).mean(dim=1) - flat.mean(dim=1)) / (flat.std(dim=1) + 1e-6)
    return int(contrast.argmax())


def _chosen_roi(run: DetectorRun, probabilities: Tensor, target: dict | None) -> int:
    if target is not None and len(target["boxes"]):
        boxes = target["boxes"].float()
        largest = boxes[(boxes[:, 2:] - boxes[:, :2]).prod(dim=1).argmax()]
        proposals = run.to_original(run.proposals)
        return int(box_iou(largest[None], proposals)[0].argmax())
    return int(probabilities[:, 1:].max(dim=1).values.argmax())


# -- drawing ------------------------------------------------------------------------------

NEIGHBOUR = "#ff7f0e"


def fast_rcnn_figure(context: Context) -> Figure:
    model = context.model("fast_rcnn")
    data = roi_pooling(model, context.image_for(model), context.page_image.target)
    stride = 1 / data.spatial_scale
    size = data.pooled.shape[-1]
    bins = ((size // 2, size // 2, HIGHLIGHT), (size // 2, size // 2 + 1, NEIGHBOUR))
    figure = new_figure(10.0, 3.4)
    image_axes, map_axes, zoom_axes, pooled_axes = figure.subplots(
        1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 0.9]}
    )
    _image_panel(image_axes, data)
    _map_panel(map_axes, data, f"{data.level} map {_shape(data.feature)}, stride {stride:g}")
    _zoom_panel(zoom_axes, data, bins)
    _pooled_panel(pooled_axes, data, bins)
    figure.tight_layout()
    middle, right = (data.windows[row][column] for row, column, _ in bins)
    shared = max(0, middle.x1 - right.x0)
    return Figure(
        f"Fast R-CNN runs its CNN once on the whole image ({context.note(model)}) and "
        f"projects each of the {len(data.run.proposals)} selective-search RoIs onto that "
        f"map (stride {stride:g}; one RoI in red). RoI max pooling snaps the RoI to whole "
        f"cells and splits it into {size} x {size} sub-windows of about h/{size} x w/{size} "
        "cells (white, as its kernel cuts them), each giving its maximum, per channel: the "
        f"middle one ({_cells_text(middle)}, red) gives the red output cell, its right "
        f"neighbour ({_cells_text(right)}, orange) the orange one"
        + (f"; they share {_count(shared, 'column')} of cells, as windows are cut from floor "
           f"to ceiling of i x w/{size}" if shared else "")
        + f". Channel {data.channel} of {data.feature.shape[0]} is drawn (the one most active "
        "in the RoI). Whatever the RoI's size, fc6 and fc7 get a fixed-size input, and the "
        "softmax scores it.",
        png(figure),
    )  # fmt: skip


def _cells_text(window: SubWindow) -> str:
    return f"{window.y1 - window.y0} x {window.x1 - window.x0} cells"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _shape(tensor: Tensor) -> str:
    channels, height, width = tensor.shape
    return f"{height} x {width} x {channels}"


def _image_panel(axes, data: RoIPooling) -> None:
    pixels = to_uint8_image(data.run.resized_image)
    height, width = pixels.shape[:2]
    show_image(axes, pixels, f"image {height} x {width}, {len(data.run.proposals)} RoIs")
    for box in data.run.proposals[:DRAWN_PROPOSALS]:
        draw_box(axes, box, "#1f77b4", width=0.5, alpha=0.5)
    draw_box(axes, data.box, HIGHLIGHT, width=2)


def _feature_image(axes, data: RoIPooling) -> None:
    channel = data.feature[data.channel].numpy()
    height, width = channel.shape
    axes.imshow(channel, cmap="viridis", extent=(0, width, height, 0), interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])


def _cells(data: RoIPooling) -> tuple[int, int, int, int]:
    """[y0, y1) x [x0, x1): the cells the RoI covers once snapped (all sub-windows)."""
    windows = [window for row in data.windows for window in row if window.y1 > window.y0]
    return (min(w.y0 for w in windows), max(w.y1 for w in windows),
            min(w.x0 for w in windows), max(w.x1 for w in windows))  # fmt: skip


def _map_panel(axes, data: RoIPooling, title: str) -> None:
    _feature_image(axes, data)
    y0, y1, x0, x1 = _cells(data)
    draw_box(axes, data.box * data.spatial_scale, "white", width=1.2, style="--")
    draw_box(axes, (x0, y0, x1, y1), HIGHLIGHT, width=2)
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("dashed: the RoI / stride; red: whole cells", fontsize=8)


def _zoom_panel(axes, data: RoIPooling, bins) -> None:
    """The RoI's cells, every sub-window (white), and the highlighted ones with the cell
    holding their maximum."""
    _feature_image(axes, data)
    y0, y1, x0, x1 = _cells(data)
    for row in data.windows:
        for window in row:
            draw_box(axes, (window.x0 + 0.06, window.y0 + 0.06, window.x1 - 0.06,
                            window.y1 - 0.06), "white", width=0.6, alpha=0.7)  # fmt: skip
    for inset, (row, column, colour) in zip((0.0, 0.12), bins, strict=True):
        window = data.windows[row][column]
        draw_box(axes, (window.x0 + inset, window.y0 + inset, window.x1 - inset,
                        window.y1 - inset), colour, width=2)  # fmt: skip
        values = data.feature[data.channel, window.y0 : window.y1, window.x0 : window.x1]
        top, left = np.unravel_index(int(values.argmax()), tuple(values.shape))
        axes.plot(window.x0 + left + 0.5, window.y0 + top + 0.5, "o", color=colour,
                  markeredgecolor="white", markersize=6)  # fmt: skip
    axes.set_xlim(x0 - 0.5, x1 + 0.5)
    axes.set_ylim(y1 + 0.5, y0 - 0.5)
    axes.set_title(f"the RoI's {y1 - y0} x {x1 - x0} cells, {len(data.windows)} x "
                   f"{len(data.windows[0])} sub-windows", fontsize=9)  # fmt: skip
    axes.set_xlabel("two sub-windows and their maxima", fontsize=8)


def _pooled_panel(axes, data: RoIPooling, bins) -> None:
    size = data.pooled.shape[-1]
    axes.imshow(data.pooled[data.channel].numpy(), cmap="viridis", extent=(0, size, size, 0),
                interpolation="nearest")  # fmt: skip
    for row, column, colour in bins:
        axes.add_patch(Rectangle((column, row), 1, 1, fill=False, edgecolor=colour,
                                 linewidth=2))  # fmt: skip
    axes.set_xticks([])
    axes.set_yticks([])
    best = int(data.probabilities.argmax())
    axes.set_title(f"RoI max pooling: {_shape(data.pooled)}", fontsize=9)
    axes.set_xlabel(
        f"fc6, fc7 -> {data.class_names[best]} {float(data.probabilities[best]):.2f}", fontsize=9
    )
