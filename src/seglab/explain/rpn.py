"""Figures 7 and 8, the study text's "Faster R-CNN" and "âncoras": the RPN's anchors, its
top proposals, and how the matcher labels anchors for one ground-truth box.

Anchors are the RPN's own `AnchorGenerator` output for the image's feature maps, the labels
its own `Matcher` (IoU >= 0.7 positive, < 0.3 negative, in between ignored, and the best
anchors of each box positive whatever their IoU), the proposals what it returned while the
detector ran (`detector_run`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seglab.explain.context import Context
from seglab.explain.detector_run import DetectorRun, run_detector
from seglab.explain.figure import Figure, draw_box, new_figure, png, show_image, to_uint8_image
from seglab.ops.matcher import Matcher
from seglab.structures.boxes import box_iou

SHOWN_PER_LABEL = 12  # anchors drawn on the image per label (the panel beside has them all)
LEVEL_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628")


@dataclass(frozen=True)
class LevelAnchors:
    """The anchors of one feature level at the grid position nearest a point."""

    level: str
    stride: tuple[int, int]  # (y, x) pixels per cell
    position: tuple[int, int]  # (row, column) on the level's grid
    indices: Tensor  # (A,) indices into the RPN's concatenated anchors
    boxes: Tensor  # (A, 4) xyxy in the resized frame


def all_anchors(model, run: DetectorRun) -> Tensor:
    """(sum_l H_l W_l A_l, 4): every anchor of the image, in the RPN's order."""
    rpn = model.proposal_generator
    return rpn.anchor_generator(run.image_sizes, run.batch.padded_size,
                                list(run.features.values()))[0]  # fmt: skip


def anchors_at(model, run: DetectorRun, point_xy: tuple[float, float]) -> list[LevelAnchors]:
    """Per level, the A anchors of the grid position nearest `point_xy` (resized frame).

    Position (i, j) of a level with stride s is centred at (j * s, i * s): the generator
    puts no half-stride offset (as torchvision).
    """
    anchors = all_anchors(model, run)
    per_location = model.proposal_generator.anchor_generator.num_anchors_per_location()
    padded_h, padded_w = run.batch.padded_size
    result, offset = [], 0
    for (name, feature), count in zip(run.features.items(), per_location, strict=True):
        height, width = feature.shape[-2:]
        stride = (padded_h // height, padded_w // width)
        row = min(height - 1, round(point_xy[1] / stride[0]))
        column = min(width - 1, round(point_xy[0] / stride[1]))
        first = offset + (row * width + column) * count  # row-major positions, then anchors
        indices = torch.arange(first, first + count)
        result.append(LevelAnchors(name, stride, (row, column), indices, anchors[indices]))
        offset += height * width * count
    return result


@dataclass(frozen=True)
class AnchorLabels:
    """The RPN matcher's decision for each anchor against one ground-truth box."""

    gt_box: Tensor  # (4,) resized frame
    anchors: Tensor  # (N, 4)
    iou: Tensor  # (N,)
    matched: Tensor  # (N,) int64: 0 positive, Matcher.BACKGROUND, Matcher.IGNORED
    level: Tensor  # (N,) int64 index of each anchor's level


def anchor_labels(model, run: DetectorRun, gt_box: Tensor) -> AnchorLabels:
    """Label every anchor for `gt_box` with the RPN's own matcher."""
    anchors = all_anchors(model, run)
    iou = box_iou(gt_box[None].to(anchors), anchors)  # (1, N)
    matched = model.proposal_generator.matcher(iou)
    per_location = model.proposal_generator.anchor_generator.num_anchors_per_location()
    counts = [f.shape[-2] * f.shape[-1] * a for f, a in zip(run.features.values(), per_location,
                                                               strict=True)]  # fmt: skip
    level = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return AnchorLabels(gt_box, anchors, iou[0], matched, level)


def reference_box(context: Context, run: DetectorRun) -> tuple[Tensor, str]:
    """A ground-truth box in the resized frame: the page's largest object, or (an image
    without ground truth) the model's top detection."""
    target = context.page_image.target
    scale_w = run.image_sizes[0][1] / run.batch.original_sizes[0][1]
    scale_h = run.image_sizes[0][0] / run.batch.original_sizes[0][0]
    scale = torch.tensor([scale_w, scale_h, scale_w, scale_h])
    if target is not None and len(target["boxes"]):
        boxes = target["boxes"]
        largest = int(((boxes[:, 2:] - boxes[:, :2]).prod(dim=1)).argmax())
        return boxes[largest] * scale, "the ground-truth box of the largest object"
    if len(run.output["boxes"]):
        return run.output["boxes"][0] * scale, "the top detection, taken as ground truth"
    height, width = run.image_sizes[0]
    box = torch.tensor([width * 0.3, height * 0.3, width * 0.7, height * 0.7])
    return box, "a box at the centre (no object was found)"


# -- drawing ------------------------------------------------------------------------------


def faster_rcnn_figure(context: Context) -> Figure:
    model = context.model("faster_rcnn")
    run = run_detector(model, context.image_for(model))
    gt_box, _ = reference_box(context, run)
    centre = ((gt_box[0] + gt_box[2]) / 2, (gt_box[1] + gt_box[3]) / 2)
    levels = anchors_at(model, run, (float(centre[0]), float(centre[1])))
    pixels = to_uint8_image(run.resized_image)
    figure = new_figure(9.0, 4.6)
    left, right = figure.subplots(1, 2)
    show_image(left, pixels, "anchors at one position of each level")
    for index, level in enumerate(levels):
        for anchor_index, box in enumerate(level.boxes):
            draw_box(
                left,
                box,
                LEVEL_COLOURS[index % 6],
                width=1.2,
                label=f"{level.level}, stride {level.stride[0]}" if anchor_index == 0 else None,
            )
    left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), framealpha=0.8)
    corners = torch.cat([level.boxes for level in levels])
    left.set_xlim(
        min(0.0, float(corners[:, 0].min())), max(pixels.shape[1], float(corners[:, 2].max()))
    )
    left.set_ylim(
        max(pixels.shape[0], float(corners[:, 3].max())), min(0.0, float(corners[:, 1].min()))
    )
    show_image(right, pixels, "top 10 proposals (RPN objectness, after NMS)")
    for rank, box in enumerate(run.proposals[:10]):
        draw_box(right, box, LEVEL_COLOURS[rank % 6], width=1.5)
        right.text(float(box[0]) + 1, float(box[1]) + 4, str(rank + 1), fontsize=7,
                   color=LEVEL_COLOURS[rank % 6], fontweight="bold")  # fmt: skip
    figure.tight_layout()
    sizes = ", ".join(f"{len(level.boxes)} on {level.level}" for level in levels)
    return Figure(
        f"The Region Proposal Network of {context.note(model)}, on the image as the model "
        f"resized it. Left: the anchors centred at the grid position nearest the object's "
        f"centre on each feature level ({sizes}: one size per level times the aspect ratios "
        f"{_ratios(model)}). Right: the {len(run.proposals)} proposals the RPN kept are its "
        "anchors moved by the predicted deltas, ranked by objectness; the first ten are drawn.",
        png(figure),
    )


def anchors_figure(context: Context) -> Figure:
    model = context.model("faster_rcnn")
    run = run_detector(model, context.image_for(model))
    gt_box, gt_what = reference_box(context, run)
    labels = anchor_labels(model, run, gt_box)
    pixels = to_uint8_image(run.resized_image)
    positive = labels.matched >= 0
    ignored = labels.matched == Matcher.IGNORED
    near = labels.matched == Matcher.BACKGROUND
    figure = new_figure(9.6, 4.4)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.25]})
    show_image(left, pixels, "anchors as the matcher labels them")
    for mask, colour, style in ((near, "#999999", ":"), (ignored, "#ff7f00", "-"),
                                (positive, "#2ca02c", "-")):  # fmt: skip
        for index in _highest_iou(labels.iou, mask, SHOWN_PER_LABEL):
            draw_box(left, labels.anchors[index], colour, width=1.0, style=style)
    draw_box(left, gt_box, "black", width=2.5)
    _iou_panel(right, labels, model.proposal_generator.matcher, list(run.features))
    figure.tight_layout()
    matcher = model.proposal_generator.matcher
    return Figure(
        f"Training labels of the RPN of {context.note(model)} for {gt_what} (black). "
        f"{int(positive.sum())} anchors are positive (green: IoU >= {matcher.high_threshold}, "
        f"or the best IoU this box has with any anchor), {int(ignored.sum())} ignored "
        f"(orange: {matcher.low_threshold} <= IoU < {matcher.high_threshold}) and "
        f"{int((labels.matched == Matcher.BACKGROUND).sum())} negative (grey, IoU < "
        f"{matcher.low_threshold}); the image shows the {SHOWN_PER_LABEL} of highest IoU of "
        "each, the right panel every anchor by its level and IoU.",
        png(figure),
    )


def _highest_iou(iou: Tensor, mask: Tensor, count: int) -> Tensor:
    """Indices of the `count` anchors of `mask` with the highest IoU."""
    indices = torch.where(mask)[0]
    return indices[iou[indices].argsort(descending=True)[:count]]


def _iou_panel(axes, labels: AnchorLabels, matcher: Matcher, level_names: list[str]) -> None:
    generator = np.random.default_rng(0)
    jitter = generator.uniform(-0.3, 0.3, len(labels.iou))
    colours = np.where(
        (labels.matched >= 0).numpy(),
        "#2ca02c",
        np.where((labels.matched == Matcher.IGNORED).numpy(), "#ff7f00", "#999999"),
    )
    axes.scatter(labels.iou.numpy(), labels.level.numpy() + jitter, c=colours, s=4)
    for colour, name in (("#2ca02c", "positive"), ("#ff7f00", "ignored"), ("#999999", "negative")):
        axes.scatter([], [], color=colour, s=12, label=name)
    axes.legend(fontsize=7, loc="upper right", frameon=False)
    for threshold in (matcher.low_threshold, matcher.high_threshold):
        axes.axvline(threshold, color="black", linewidth=0.8, linestyle="--")
    axes.set_yticks(range(len(level_names)), labels=level_names, fontsize=8)
    axes.set_xlabel("IoU with the ground-truth box", fontsize=8)
    axes.set_title("every anchor: positive, ignored, negative", fontsize=9)
    axes.set_xlim(-0.02, 1.0)


def _ratios(model) -> str:
    ratios = model.proposal_generator.anchor_generator.aspect_ratios[0]
    return ", ".join(f"{ratio:g}" for ratio in ratios)
