"""Figures 4 and 5, the study text's "R-CNN" and "busca seletiva": region proposals,
each warped and classified on its own by R-CNN, and how selective search groups them.

Figure 4 shows an R-CNN (`seglab.models.detection.rcnn`) detecting on the page's image:
its proposals are those its own proposal generator (selective search) made, the crops are
what its `WarpedRegionCNN` warped (read with a forward hook on the CNN it runs on every
region) and the probabilities are the softmax of its box predictor's class logits for those
regions in the same forward pass. Figure 5 replays selective search's grouping
(`grouping.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from seglab.explain.context import Context
from seglab.explain.detector_run import DetectorRun, run_detector
from seglab.explain.figure import Figure, draw_box, new_figure, png, show_image, to_uint8_image
from seglab.explain.grouping import hierarchical_grouping
from seglab.structures.boxes import box_iou

SHOWN_REGIONS = 4  # three that cover objects, one that does not
DRAWN_PROPOSALS = 300
BACKGROUND_IOU = 0.3  # a region "on no object": below this IoU with every object
REGION_COLOURS = ("#d62728", "#2ca02c", "#ff7f00", "#9467bd")


@dataclass(frozen=True)
class RCNNRegions:
    """One R-CNN forward pass on the page's image, and the regions the figure shows.

    Attributes:
        run: the detector's parts' outputs (proposals in the resized frame).
        proposals: (P, 4) xyxy, the proposals in the page image's pixels.
        probabilities: (P, K + 1) softmax of the box predictor's class logits, column 0
            background.
        chosen: indices into `proposals` of the regions shown.
        crops: (n, C, S, S) what the CNN reads for each chosen region: the warp with
            context, in the model's normalised input.
        pixels: (n, C, S, S) the crops in [0, 1] (normalisation undone).
        ious: best IoU of each chosen region with a ground-truth box (-1 without them).
        matched_labels: the label (1..K) of that box (-1 without ground truth).
        class_names: K + 1 names, background first.
    """

    run: DetectorRun
    proposals: Tensor
    probabilities: Tensor
    chosen: list[int]
    crops: Tensor
    pixels: Tensor
    ious: list[float]
    matched_labels: list[int]
    class_names: list[str]


def rcnn_regions(
    model: nn.Module, image: Tensor, target: dict | None, shown: int = SHOWN_REGIONS
) -> RCNNRegions:
    """Run the R-CNN `model` on `image` and keep the crops of `shown` of its regions.

    Args:
        target: the image's ground truth (`boxes` in its pixels), or None: then the regions
            shown are the model's most confident (and its surest background one).
    """
    run = run_detector(model, image)
    proposals = run.to_original(run.proposals)
    probabilities = run.heads["box_predictor"][0].softmax(dim=1)  # (P, K + 1)
    chosen = choose_regions(proposals, probabilities, target, shown)
    ious, matched_labels = _best_matches(proposals[chosen], target)
    crops = warped_regions(model, run, run.proposals[chosen])
    mean = model.transform.image_mean.reshape(-1, 1, 1)
    std = model.transform.image_std.reshape(-1, 1, 1)
    return RCNNRegions(
        run=run, proposals=proposals, probabilities=probabilities, chosen=chosen,
        crops=crops, pixels=(crops * std + mean).clamp(0, 1), ious=ious,
        matched_labels=matched_labels,
        class_names=output_names(model, probabilities.shape[1]),
    )  # fmt: skip


def warped_regions(model: nn.Module, run: DetectorRun, boxes: Tensor) -> Tensor:
    """(n, 4) regions in the resized frame -> (n, C, S, S): what the model's region pooling
    (`WarpedRegionCNN`) hands its CNN for them, read with a forward hook on that CNN. Each
    region is warped on its own, so these are the crops of the full forward pass too."""
    pool = model.roi_heads.box_roi_pool
    crops: list[Tensor] = []
    handle = pool.cnn.register_forward_hook(lambda _module, inputs, _out: crops.append(inputs[0]))
    try:
        with torch.no_grad():
            pool(run.features, [boxes], run.image_sizes)
    finally:
        handle.remove()
    return torch.cat(crops)


def choose_regions(
    proposals: Tensor, probabilities: Tensor, target: dict | None, shown: int
) -> list[int]:
    """`shown - 1` regions on objects and one on none: with ground truth, each object's
    best-covering proposal and an object-sized proposal below `BACKGROUND_IOU` with all of
    them; without, the most confident distinct detections and the surest background."""
    if target is not None and len(target["boxes"]):
        iou = box_iou(target["boxes"].to(proposals), proposals)  # (G, P)
        on_objects = list(dict.fromkeys(iou.argmax(dim=1).tolist()))[: shown - 1]
        object_area = _areas(target["boxes"].float()).mean()
        free = torch.where(iou.max(dim=0).values < BACKGROUND_IOU)[0]
        if len(free):
            closest = (_areas(proposals[free]).log() - object_area.log()).abs().argmin()
            on_objects.append(int(free[closest]))
        return on_objects
    foreground = probabilities[:, 1:].max(dim=1).values
    chosen: list[int] = []
    for index in foreground.argsort(descending=True).tolist():
        if len(chosen) == shown - 1:
            break
        if not chosen or box_iou(proposals[index][None], proposals[chosen]).max() < 0.5:
            chosen.append(index)
    large = torch.where(_areas(proposals) >= _areas(proposals).median())[0]
    chosen.append(int(large[probabilities[large, 0].argmax()]))
    return chosen


def _best_matches(boxes: Tensor, target: dict | None) -> tuple[list[float], list[int]]:
    """Per box: its best IoU with a ground-truth box and that box's label (-1: none)."""
    if target is None or len(target["boxes"]) == 0:
        return [-1.0] * len(boxes), [-1] * len(boxes)
    best_iou, best = box_iou(target["boxes"].to(boxes), boxes).max(dim=0)  # over (G, n)
    return best_iou.tolist(), target["labels"][best].tolist()


def _areas(boxes: Tensor) -> Tensor:
    return (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6).prod(dim=1)


def output_names(model: nn.Module, outputs: int) -> list[str]:
    """Names of a detector's K + 1 class outputs: background, then its classes."""
    names = list(model.card.class_names)
    if len(names) != outputs - 1:
        names = [str(label) for label in range(1, outputs)]
    return ["background", *names]


# -- drawing ------------------------------------------------------------------------------


def rcnn_figure(context: Context) -> Figure:
    model = context.model("rcnn")
    data = rcnn_regions(model, context.image_for(model), context.page_image.target)
    pool = model.roi_heads.box_roi_pool
    figure = new_figure(10.0, 3.8)
    grid = figure.add_gridspec(2, 1 + len(data.chosen), height_ratios=[1.15, 1],
                               width_ratios=[2.3] + [1] * len(data.chosen))  # fmt: skip
    image_axes = figure.add_subplot(grid[:, 0])
    count = len(data.proposals)
    drawn = min(count, DRAWN_PROPOSALS)
    show_image(image_axes, to_uint8_image(context.image_for(model)),
               f"{count} selective-search proposals" + (f" ({drawn} drawn)" if drawn < count
                                                        else ""))  # fmt: skip
    for box in data.proposals[:drawn]:
        draw_box(image_axes, box, "#1f77b4", width=0.5, alpha=0.5)
    for column, index in enumerate(data.chosen):
        colour = REGION_COLOURS[column % len(REGION_COLOURS)]
        draw_box(image_axes, data.proposals[index], colour, width=2.2)
        crop_axes = figure.add_subplot(grid[0, column + 1])
        show_image(crop_axes, to_uint8_image(data.pixels[column]), _crop_title(data, column))
        for spine in crop_axes.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(2.5)
        bars = figure.add_subplot(grid[1, column + 1])
        _probability_bars(bars, data.probabilities[index], data.class_names, colour, column == 0)
    figure.tight_layout()
    side = pool.warp_size
    return Figure(
        f"Left: the {count} regions the R-CNN's selective search "
        f"({model.proposal_generator.settings.mode} mode; the paper's is fast) proposes on "
        "the page's image. Right: "
        f"{len(data.chosen)} of them as {context.note(model)} sees them, each dilated "
        f"by {pool.context_padding} px of context, warped to {side} x {side} px and run "
        "through its CNN on its own, and below each the probabilities its softmax gives "
        "(K classes and background) for that region. One CNN pass per region is what makes "
        "R-CNN slow.",
        png(figure),
    )


def _crop_title(data: RCNNRegions, column: int) -> str:
    iou, label = data.ious[column], data.matched_labels[column]
    if iou < 0:
        return f"region {data.chosen[column]}"
    return f"IoU {iou:.2f}, " + (data.class_names[label] if iou >= BACKGROUND_IOU else "no object")


def _probability_bars(axes, probabilities: Tensor, names: list[str], colour, labelled: bool):
    positions = np.arange(len(names))
    axes.barh(positions, probabilities.numpy(), color=colour, height=0.65)
    for position, value in zip(positions, probabilities.tolist(), strict=True):
        inside = value > 0.62  # written on the bar's end, else just after it
        axes.text(value - 0.03 if inside else value + 0.03, position, f"{value:.2f}",
                  va="center", ha="right" if inside else "left", fontsize=7,
                  color="white" if inside else "black")  # fmt: skip
    axes.set_xlim(0, 1)
    axes.set_ylim(len(names) - 0.5, -0.5)
    axes.set_yticks(positions, labels=names if labelled else [], fontsize=7)
    axes.tick_params(axis="x", labelsize=6)
    axes.tick_params(axis="y", length=0)


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
