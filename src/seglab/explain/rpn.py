"""Figures 7 and 8, the study text's "Faster R-CNN" and "âncoras": the RPN's anchors, its
top proposals, and how the matcher labels anchors for one ground-truth box; each drawn for
the paper's RPN (one stride-16 map, 9 anchors per position: 3 scales x 3 aspect ratios,
Faster R-CNN §3.1.1) and for FPN's (one scale per level, 3 ratios).

Anchors are the RPN's own `AnchorGenerator` output for the image's feature maps, the labels
its own `Matcher` (IoU >= 0.7 positive, < 0.3 negative, in between ignored, and the best
anchors of each box positive whatever their IoU), the proposals what it returned while the
detector ran (`detector_run`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from seglab.explain.context import Context, has_single_map_rpn
from seglab.explain.detector_run import DetectorRun, run_detector
from seglab.explain.figure import Figure, draw_box, new_figure, png, show_image, to_uint8_image
from seglab.explain.study_text import ANCHORS_ARE_REFERENCES, SHARED_COMPUTATION
from seglab.explain.training import PAPER_ANCHOR_SIZES, PAPER_SHORT_SIDE, paper_anchor_sizes
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
    sizes: Tensor  # (A,) int64 the generator's size (sqrt of the area, px) of each anchor


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
    generator = model.proposal_generator.anchor_generator
    padded_h, padded_w = run.batch.padded_size
    result, offset = [], 0
    for (name, feature), sizes in zip(run.features.items(), _sizes_per_position(generator),
                                      strict=True):  # fmt: skip
        height, width = feature.shape[-2:]
        stride = (padded_h // height, padded_w // width)
        row = min(height - 1, round(point_xy[1] / stride[0]))
        column = min(width - 1, round(point_xy[0] / stride[1]))
        count = len(sizes)
        first = offset + (row * width + column) * count  # row-major positions, then anchors
        indices = torch.arange(first, first + count)
        result.append(LevelAnchors(name, stride, (row, column), indices, anchors[indices], sizes))
        offset += height * width * count
    return result


def _sizes_per_position(generator) -> list[Tensor]:
    """Per level, (A,) the size of each anchor of a position, in the generator's order
    (ratio-major, then size: the sizes cycle fastest)."""
    pairs = zip(generator.sizes, generator.aspect_ratios, strict=True)
    return [torch.tensor(sizes).repeat(len(ratios)) for sizes, ratios in pairs]


@dataclass(frozen=True)
class AnchorLabels:
    """The RPN matcher's decision for each anchor against one ground-truth box."""

    gt_box: Tensor  # (4,) resized frame
    anchors: Tensor  # (N, 4)
    iou: Tensor  # (N,)
    matched: Tensor  # (N,) int64: 0 positive, Matcher.BACKGROUND, Matcher.IGNORED
    level: Tensor  # (N,) int64 index of each anchor's level
    size: Tensor  # (N,) int64 each anchor's size (px, sqrt of its area)


def anchor_labels(model, run: DetectorRun, gt_box: Tensor) -> AnchorLabels:
    """Label every anchor for `gt_box` with the RPN's own matcher."""
    anchors = all_anchors(model, run)
    iou = box_iou(gt_box[None].to(anchors), anchors)  # (1, N)
    matched = model.proposal_generator.matcher(iou)
    sizes = _sizes_per_position(model.proposal_generator.anchor_generator)
    positions = [feature.shape[-2] * feature.shape[-1] for feature in run.features.values()]
    pairs = list(zip(positions, sizes, strict=True))
    counts = [count * len(level_sizes) for count, level_sizes in pairs]
    level = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    # each level: positions row-major, then its A anchors -> (H_l W_l A_l,)
    size = torch.cat([level_sizes.repeat(count) for count, level_sizes in pairs])
    return AnchorLabels(gt_box, anchors, iou[0], matched, level, size)


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


# -- the two RPNs drawn --------------------------------------------------------------------

RPN_KINDS = ("faster_rcnn_single_map", "faster_rcnn")  # the paper's one map, then FPN's levels
_ROW_NAMES = ("Top", "Bottom")  # the figures' rows, one per kind


@dataclass(frozen=True)
class ShownRPN:
    """An RPN the figures draw: its detector and that detector's run on the page's image."""

    model: nn.Module
    run: DetectorRun

    @property
    def single_map(self) -> bool:
        return has_single_map_rpn(self.model)

    @property
    def name(self) -> str:
        return "the paper's RPN on one map" if self.single_map else "FPN's RPN on its levels"


def shown_rpns(context: Context) -> list[ShownRPN]:
    """The paper's single-map RPN, then FPN's, each of its model (the user's or a small one)."""
    models = [context.model(kind) for kind in RPN_KINDS]
    return [ShownRPN(model, run_detector(model, context.image_for(model))) for model in models]


def anchors_at_object(context: Context, shown: ShownRPN) -> list[LevelAnchors]:
    """Per level, the anchors of the position nearest the reference box's centre."""
    gt_box, _ = reference_box(context, shown.run)
    centre = ((gt_box[0] + gt_box[2]) / 2, (gt_box[1] + gt_box[3]) / 2)
    return anchors_at(shown.model, shown.run, (float(centre[0]), float(centre[1])))


# -- drawing ------------------------------------------------------------------------------


def faster_rcnn_figure(context: Context) -> Figure:
    rpns = shown_rpns(context)
    figure = new_figure(9.4, 4.4 * len(rpns))
    axes = figure.subplots(len(rpns), 2, squeeze=False)
    sentences = []
    for row, (shown, (left, right)) in enumerate(zip(rpns, axes, strict=True)):
        levels = anchors_at_object(context, shown)
        _draw_anchors_at(left, shown, levels)
        _draw_proposals(right, shown)
        sentences.append(f"{_ROW_NAMES[row]}: {_rpn_sentence(context, shown, levels)}")
    figure.tight_layout()
    kept = ", ".join(str(len(shown.run.proposals)) for shown in rpns)
    return Figure(
        "The Region Proposal Network, on the page's image as each model resized it. "
        + " ".join(sentences)
        + f" Right: the proposals each RPN kept ({kept}) are its anchors moved by the predicted "
        "deltas, ranked by objectness; the first ten are drawn.",
        png(figure),
        corrections=(SHARED_COMPUTATION,),
    )


def anchors_figure(context: Context) -> Figure:
    rpns = shown_rpns(context)
    figure = new_figure(9.6, 4.3 * len(rpns))
    axes = figure.subplots(len(rpns), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 1.25]})
    sentences = []
    for row, (shown, (left, right)) in enumerate(zip(rpns, axes, strict=True)):
        gt_box, gt_what = reference_box(context, shown.run)
        labels = anchor_labels(shown.model, shown.run, gt_box)
        _draw_labelled_anchors(left, shown, labels)
        _iou_panel(right, labels, shown.model.proposal_generator.matcher, list(shown.run.features))
        sentences.append(f"{_ROW_NAMES[row]}: {_labels_sentence(context, shown, labels, gt_what)}")
    figure.tight_layout()
    return Figure(
        "Training labels of each RPN for one ground-truth box (black). "
        + " ".join(sentences)
        + f" The image shows the {SHOWN_PER_LABEL} anchors of highest IoU of each label "
        "(green positive, orange ignored, grey negative), the right panel every anchor by its "
        "size and IoU.",
        png(figure),
        corrections=(ANCHORS_ARE_REFERENCES,),
    )


def _draw_anchors_at(axes, shown: ShownRPN, levels: list[LevelAnchors]) -> None:
    """The anchors of one position per level, one colour per (level, size)."""
    pixels = to_uint8_image(shown.run.resized_image)
    count = len(levels[0].boxes)
    what = f"the {count} anchors of one position" if shown.single_map else "one position a level"
    show_image(axes, pixels, f"{shown.name}: {what}")
    colour = 0
    for level in levels:
        for size in level.sizes.unique().tolist():
            label = f"{level.level}, stride {level.stride[0]}, {size} px"
            for box in level.boxes[level.sizes == size]:
                draw_box(axes, box, LEVEL_COLOURS[colour % 6], width=1.2, label=label)
                label = None  # one legend entry per size
            colour += 1
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
                frameon=False)  # fmt: skip
    corners = torch.cat([level.boxes for level in levels])
    axes.set_xlim(min(0.0, float(corners[:, 0].min())),
                  max(pixels.shape[1], float(corners[:, 2].max())))  # fmt: skip
    axes.set_ylim(max(pixels.shape[0], float(corners[:, 3].max())),
                  min(0.0, float(corners[:, 1].min())))  # fmt: skip


def _draw_proposals(axes, shown: ShownRPN) -> None:
    show_image(axes, to_uint8_image(shown.run.resized_image),
               "top 10 proposals (RPN objectness, after NMS)")  # fmt: skip
    for rank, box in enumerate(shown.run.proposals[:10]):
        draw_box(axes, box, LEVEL_COLOURS[rank % 6], width=1.5)
        axes.text(float(box[0]) + 1, float(box[1]) + 4, str(rank + 1), fontsize=7,
                  color=LEVEL_COLOURS[rank % 6], fontweight="bold")  # fmt: skip


def _rpn_sentence(context: Context, shown: ShownRPN, levels: list[LevelAnchors]) -> str:
    """What one row of the Faster R-CNN figure shows, for its caption."""
    ratios = _ratios(shown.model)
    if not shown.single_map:
        sizes = ", ".join(f"{level.sizes[0]} px on {level.level}" for level in levels)
        return (
            f"{shown.name}, of {context.note(shown.model)} (FPN §4.1): the same head on every "
            f"level, one anchor size per level ({sizes}) times {ratios}; left, the anchors of "
            "the position nearest the object's centre on each level."
        )
    level = levels[0]
    sizes = level.sizes.unique().tolist()
    return (
        f"{shown.name}, of {context.note(shown.model)}, as the Faster R-CNN paper has it "
        f"(§3.1): a 3 x 3 window slides over the one stride-{level.stride[0]} map "
        f"({level.level}; VGG16's conv5_3 in the paper), the map the RoI head pools from too, "
        f"and scores k = {len(level.sizes)} anchors at each position, {len(sizes)} sizes "
        f"({', '.join(map(str, sizes))} px{_scale_note(shown.model, sizes)}) x {ratios}; left, "
        f"the {len(level.sizes)} anchors of the position nearest the object's centre."
    )


def _scale_note(model, sizes: list[int]) -> str:
    """How the drawn sizes relate to the paper's 128, 256, 512 px at a 600 px short side."""
    short_side = model.transform.min_size[-1]
    paper = ", ".join(map(str, PAPER_ANCHOR_SIZES))
    if tuple(sizes) == PAPER_ANCHOR_SIZES:
        return f": the paper's, for its {PAPER_SHORT_SIDE} px short side"
    if short_side < PAPER_SHORT_SIDE and tuple(sizes) == paper_anchor_sizes(short_side):
        return (
            f": the paper's {paper} px for a {PAPER_SHORT_SIDE} px short side, scaled by "
            f"{short_side}/{PAPER_SHORT_SIDE} as the image is drawn small, at the "
            f"{short_side} px short side the model resizes it to"
        )
    return f", the model's own (the paper's: {paper} px for a {PAPER_SHORT_SIDE} px short side)"


def _draw_labelled_anchors(axes, shown: ShownRPN, labels: AnchorLabels) -> None:
    show_image(axes, to_uint8_image(shown.run.resized_image), f"{shown.name}: labels")
    positive = labels.matched >= 0
    ignored = labels.matched == Matcher.IGNORED
    near = labels.matched == Matcher.BACKGROUND
    for mask, colour, style in ((near, "#999999", ":"), (ignored, "#ff7f00", "-"),
                                (positive, "#2ca02c", "-")):  # fmt: skip
        for index in _highest_iou(labels.iou, mask, SHOWN_PER_LABEL):
            draw_box(axes, labels.anchors[index], colour, width=1.0, style=style)
    draw_box(axes, labels.gt_box, "black", width=2.5)


def _labels_sentence(context: Context, shown: ShownRPN, labels: AnchorLabels, gt_what: str):
    """What one row of the anchors figure shows, for its caption."""
    matcher = shown.model.proposal_generator.matcher
    low, high = matcher.low_threshold, matcher.high_threshold
    per_position = shown.model.proposal_generator.anchor_generator.num_anchors_per_location()
    where = f"{per_position[0]} per position of " + (
        "its one map" if shown.single_map else f"each of its {len(per_position)} levels"
    )
    return (
        f"{shown.name}, of {context.note(shown.model)}, for {gt_what}: of its "
        f"{len(labels.iou)} anchors ({where}), positive {int((labels.matched >= 0).sum())} "
        f"(IoU >= {high}, or the best IoU this box has with any anchor), ignored "
        f"{int((labels.matched == Matcher.IGNORED).sum())} ({low} <= IoU < {high}) and "
        f"negative {int((labels.matched == Matcher.BACKGROUND).sum())} (IoU < {low})."
    )


def _highest_iou(iou: Tensor, mask: Tensor, count: int) -> Tensor:
    """Indices of the `count` anchors of `mask` with the highest IoU."""
    indices = torch.where(mask)[0]
    return indices[iou[indices].argsort(descending=True)[:count]]


def _iou_panel(axes, labels: AnchorLabels, matcher: Matcher, level_names: list[str]) -> None:
    """Every anchor as a dot: its IoU across, its (level, size) group up (jittered)."""
    groups = torch.stack([labels.level, labels.size], dim=1).unique(dim=0)  # (G, 2) sorted
    names = [f"{level_names[level]} {size} px" for level, size in groups.tolist()]
    # (N, 1, 2) == (1, G, 2) -> (N, G): which group each anchor is in
    group = (torch.stack([labels.level, labels.size], dim=1)[:, None] == groups[None]).all(
        dim=2).int().argmax(dim=1)  # fmt: skip
    generator = np.random.default_rng(0)
    jitter = generator.uniform(-0.3, 0.3, len(labels.iou))
    colours = np.where(
        (labels.matched >= 0).numpy(),
        "#2ca02c",
        np.where((labels.matched == Matcher.IGNORED).numpy(), "#ff7f00", "#999999"),
    )
    axes.scatter(labels.iou.numpy(), group.numpy() + jitter, c=colours, s=4)
    for colour, name in (("#2ca02c", "positive"), ("#ff7f00", "ignored"), ("#999999", "negative")):
        axes.scatter([], [], color=colour, s=12, label=name)
    axes.legend(fontsize=7, loc="upper right", frameon=False)
    for threshold in (matcher.low_threshold, matcher.high_threshold):
        axes.axvline(threshold, color="black", linewidth=0.8, linestyle="--")
    axes.set_yticks(range(len(names)), labels=names, fontsize=8)
    axes.set_xlabel("IoU with the ground-truth box", fontsize=8)
    axes.set_title("every anchor: positive, ignored, negative", fontsize=9)
    axes.set_xlim(-0.02, 1.0)


def _ratios(model) -> str:
    ratios = model.proposal_generator.anchor_generator.aspect_ratios[0]
    return f"{len(ratios)} aspect ratios (height / width {', '.join(f'{r:g}' for r in ratios)})"
