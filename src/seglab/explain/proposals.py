"""Figures 4-6, the study text's "R-CNN", "busca seletiva" and "Fast R-CNN": region
proposals, warped and classified one by one, or pooled from one shared feature map.

The regions are `seglab.ops.selective_search`'s; the warp is RoIAlign on the image with
R-CNN's 16 pixels of context (`seglab.ops.roi_align`, as R-CNN's warp does); the classifier
of the warped regions is the page's CNN (`cnn.py`: R-CNN is regions plus a CNN classifier;
it has no background class, so its scores say what each region would be if it were an
object); the RoI max pooling is `seglab.ops.roi_pool` on the CNN's stride-8 feature map,
with the kernel's sub-windows (`roi_grids`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seglab.explain.cnn import classifier_input_side, record_outputs
from seglab.explain.context import Context
from seglab.explain.figure import Figure, draw_box, new_figure, png, show_image, to_uint8_image
from seglab.explain.grouping import hierarchical_grouping
from seglab.explain.roi_grids import SubWindow, roi_pool_windows
from seglab.ops.roi_align import roi_align
from seglab.ops.roi_pool import roi_pool
from seglab.ops.selective_search import selective_search
from seglab.structures.boxes import box_iou

CONTEXT_PADDING, WARP_SIZE = 16, 224  # R-CNN §2.1 / appendix A: p = 16 at a 224 px warp
SHOWN_CROPS = 4
POOLED = 7  # Fast R-CNN's H = W = 7
FEATURE_BLOCKS = 3  # the CNN's blocks before its map is pooled: stride 8


def proposals(image: Tensor) -> Tensor:
    """R-CNN's proposals: selective search "fast" (its setting), up to 2000."""
    return selective_search(image, mode="fast")


def with_context(boxes: Tensor) -> Tensor:
    """Dilate boxes so that, warped to 224 px, 16 px of context surround them (R-CNN §2.1)."""
    grow = CONTEXT_PADDING / (WARP_SIZE - 2 * CONTEXT_PADDING)
    sizes = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2) * torch.tensor([-1, -1, 1, 1])
    return boxes + sizes * grow


def warp(image: Tensor, boxes: Tensor, side: int) -> Tensor:
    """(C, H, W) image, (N, 4) boxes -> (N, C, side, side) warped regions (bilinear, 2 x 2
    samples per output pixel, zero outside the image)."""
    rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1)
    return roi_align(image[None], rois, side, 1.0, sampling_ratio=2, aligned=True)


@dataclass(frozen=True)
class WarpedRegion:
    box: Tensor  # (4,) the proposal
    crop: Tensor  # (C, S, S) warped with context
    probabilities: Tensor  # (K,) the classifier's softmax
    iou: float  # best IoU with a ground-truth box (-1 without ground truth)


def warped_regions(context: Context, model, boxes: Tensor) -> list[WarpedRegion]:
    """For the proposals that best cover each object (or the first ones), the warped crop
    and the classifier's probabilities."""
    image = context.image_for(model)
    chosen, ious = _chosen(context, boxes)
    crops = warp(image, with_context(boxes[chosen]), classifier_input_side(model))
    with torch.no_grad():
        logits = torch.stack([output["logits"] for output in model(list(crops))])
    return [
        WarpedRegion(boxes[index], crop, row.softmax(dim=0), iou)
        for index, crop, row, iou in zip(chosen, crops, logits, ious, strict=True)
    ]


def _chosen(context: Context, boxes: Tensor) -> tuple[list[int], list[float]]:
    target = context.page_image.target
    if target is None or len(target["boxes"]) == 0:
        return list(range(min(SHOWN_CROPS, len(boxes)))), [-1.0] * min(SHOWN_CROPS, len(boxes))
    iou = box_iou(target["boxes"], boxes)  # (G, N)
    best = iou.argmax(dim=1)[:SHOWN_CROPS].tolist()
    return best, [float(iou[:, index].max()) for index in best]


@dataclass(frozen=True)
class RoIPooling:
    feature: Tensor  # (C, h, w) the CNN's map of the whole image
    stride: int
    box: Tensor  # (4,) the RoI in image pixels
    windows: list[list[SubWindow]]
    pooled: Tensor  # (C, 7, 7) roi_pool's output
    channel: int  # the channel drawn


def roi_pooling(model, image: Tensor, box: Tensor) -> RoIPooling:
    """The CNN's map after `FEATURE_BLOCKS` blocks, and one RoI max pooled from it."""
    block = model.features[FEATURE_BLOCKS - 1]
    seen = record_outputs(model, {"map": block}, lambda: model([image]))
    feature = seen["map"][1][0]  # (C, h, w)
    stride = image.shape[-1] // feature.shape[-1]
    pooled = roi_pool(feature[None], torch.cat([box.new_zeros(1), box])[None], POOLED, 1 / stride)
    channel = int(pooled[0].flatten(1).std(dim=1).argmax())
    windows = roi_pool_windows(tuple(feature.shape[-2:]), box, POOLED, 1 / stride)
    return RoIPooling(feature, stride, box, windows, pooled[0], channel)


# -- drawing ------------------------------------------------------------------------------


def rcnn_figure(context: Context) -> Figure:
    model = context.model("cnn")
    image = context.image_for(model)
    boxes = proposals(image)
    regions = warped_regions(context, model, boxes)
    names = list(model.card.class_names) or [str(k) for k in range(model.head.fc.out_features)]
    figure = new_figure(10.0, 3.6)
    axes = figure.subplots(
        1, 1 + len(regions), gridspec_kw={"width_ratios": [2.2] + [1] * len(regions)}
    )
    show_image(axes[0], to_uint8_image(image), f"{len(boxes)} proposals (first 60 drawn)")
    for box in boxes[:60]:
        draw_box(axes[0], box, "#1f77b4", width=0.6, alpha=0.7)
    for index, region in enumerate(regions):
        colour = ("#d62728", "#2ca02c", "#ff7f00", "#9467bd")[index % 4]
        draw_box(axes[0], region.box, colour, width=2)
        best = int(region.probabilities.argmax())
        iou = f"IoU {region.iou:.2f}\n" if region.iou >= 0 else ""
        show_image(
            axes[index + 1],
            to_uint8_image(region.crop),
            f"{iou}{names[best]} {float(region.probabilities[best]):.2f}",
        )
        for spine in axes[index + 1].spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2)
    figure.tight_layout()
    return Figure(
        f"Left: the {len(boxes)} regions selective search proposes (its fast mode, as "
        "R-CNN); right: the regions that best cover the objects, each dilated by 16 px of "
        "context, warped to a fixed square and classified on its own by "
        f"{context.note(model)} (label and probability). One CNN pass per region is R-CNN's "
        "cost; its classifier also has a background class, this one does not.",
        png(figure),
    )


def selective_search_figure(context: Context) -> Figure:
    rgb = to_uint8_image(context.image)
    grouping = hierarchical_grouping(rgb)
    initial = int(grouping.labels.max()) + 1
    steps = [0, len(grouping.merges) // 3, 2 * len(grouping.merges) // 3, len(grouping.merges) - 1]
    figure = new_figure(10.0, 2.9)
    axes = figure.subplots(1, len(steps))
    colours = np.random.default_rng(0).uniform(0.15, 1.0, (len(grouping.boxes), 3))
    for panel, step in zip(axes, steps, strict=True):
        regions = grouping.regions_after(step)
        show_image(
            panel,
            (colours[regions] * 255).astype(np.uint8),
            f"after {step} merges: {len(np.unique(regions))} regions",
        )
        for merged in range(initial, initial + step):
            draw_box(panel, grouping.boxes[merged], "white", width=0.6, alpha=0.6)
    figure.tight_layout()
    return Figure(
        f"Selective search's hierarchical grouping on the page's image: a graph-based "
        f"over-segmentation into {initial} regions, then the two most similar neighbouring "
        "regions (colour, texture, size and fill) merged again and again until one is left. "
        f"Every region formed is a proposal ({len(grouping.boxes)} boxes, white: those merged "
        "so far); these are exactly the boxes of seglab's selective_search in its single mode.",
        png(figure),
    )


def fast_rcnn_figure(context: Context) -> Figure:
    model = context.model("cnn")
    image = context.image_for(model)
    boxes = proposals(image)
    index, _ = _chosen(context, boxes)
    data = roi_pooling(model, image, boxes[index[0]])
    figure = new_figure(10.0, 3.6)
    left, middle, right = figure.subplots(1, 3)
    show_image(left, to_uint8_image(image), "image and RoIs")
    for box in boxes[:30]:
        draw_box(left, box, "#1f77b4", width=0.6, alpha=0.7)
    draw_box(left, data.box, "#d62728", width=2)
    channel = data.feature[data.channel]
    height, width = channel.shape
    middle.imshow(
        channel.numpy(), cmap="viridis", extent=(0, width, height, 0), interpolation="nearest"
    )
    middle.set_title(
        f"feature map {height} x {width} x {data.feature.shape[0]} (channel "
        f"{data.channel}), stride {data.stride}",
        fontsize=9,
    )
    for row in data.windows:
        for window in row:
            draw_box(middle, (window.x0, window.y0, window.x1, window.y1), "white", width=0.8)
    draw_box(middle, data.box / data.stride, "#d62728", width=1.5, style="--")
    right.imshow(data.pooled[data.channel].numpy(), cmap="viridis", interpolation="nearest")
    right.set_title(f"RoI max pooling -> {POOLED} x {POOLED}", fontsize=9)
    for panel in (middle, right):
        panel.set_xticks([])
        panel.set_yticks([])
    figure.tight_layout()
    return Figure(
        f"Fast R-CNN runs the CNN once on the whole image ({context.note(model)}, its first "
        f"{FEATURE_BLOCKS} blocks, stride {data.stride}) and projects each region onto that "
        f"map. RoI max pooling splits the region (red) into {POOLED} x {POOLED} sub-windows of "
        "whole cells (white, as seglab's roi_pool cuts them: about h/7 x w/7, overlapping "
        "where the region is small) and keeps each one's maximum, per channel: a fixed-size "
        "input for the fully connected layers, whatever the region's size.",
        png(figure),
    )
