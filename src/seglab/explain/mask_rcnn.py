"""Figures 9, 11 and 12, the study text's "Mask R-CNN": the FPN's pyramid, the mask head,
and the whole pipeline with the shape at each stage.

All three read one eval-mode forward of the detector (`detector_run`): the pyramid is the
backbone's output, the 28 x 28 mask what the mask branch returned for a detection, the
pasted mask the model's own output, the shapes those of each part's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from seglab.explain.context import Context
from seglab.explain.detector_run import DetectorRun, run_detector
from seglab.explain.figure import Figure, draw_box, new_figure, png, show_image, to_uint8_image
from seglab.explain.study_text import FPN_DIRECTION
from seglab.inference.visualize import draw_detections

OVERLAY_ENLARGEMENT = 2  # the output overlay is drawn at 2x: its labels cover less


@dataclass(frozen=True)
class PyramidLevel:
    name: str
    stride: int  # image pixels per cell (padded batch height / level height)
    shape: tuple[int, ...]  # (1, C, H, W)
    energy: Tensor  # (H, W) L2 norm over the channels


def pyramid_levels(run: DetectorRun) -> list[PyramidLevel]:
    """The backbone's output maps (FPN P2..P6) with their strides."""
    padded_height = run.batch.padded_size[0]
    return [
        PyramidLevel(name, padded_height // feature.shape[-2], tuple(feature.shape),
                     feature[0].norm(dim=0))
        for name, feature in run.features.items()
    ]  # fmt: skip


@dataclass(frozen=True)
class Stage:
    part: str  # the model's part (attribute path)
    what: str  # what its output is
    shape: tuple[int, ...]


def pipeline_stages(model, image: Tensor, run: DetectorRun) -> list[Stage]:
    """Each stage of Mask R-CNN on one image, with the shape of what it returned."""

    def stage(part: str, what: str, value: Tensor) -> Stage:
        return Stage(part, what, tuple(value.shape))

    heads = run.heads
    logits, deltas = heads["box_predictor"]
    stages = [
        stage("input", "image in [0, 1]", image),
        stage("transform", "resized, normalised, padded", run.batch.tensors),
    ]
    stages += [stage("backbone.body", name, value) for name, value in run.body.items()]
    stages += [stage("backbone.fpn", name, value) for name, value in run.features.items()]
    stages += [
        stage("proposal_generator", "proposals (RPN, after NMS)", run.proposals),
        stage("roi_heads.box_roi_pool", "RoIAlign of each proposal", heads["box_roi_pool"]),
        stage("roi_heads.box_head", "fc6, fc7", heads["box_head"]),
        stage("roi_heads.box_predictor", "class scores", logits),
        stage("roi_heads.box_predictor", "box deltas per class", deltas),
        stage("roi_heads", "detections: boxes after NMS", run.detections["boxes"]),
    ]
    if "mask_roi_pool" in heads:
        convs = len(model.roi_heads.mask_head.convs)
        stages += [
            stage("roi_heads.mask_roi_pool", "RoIAlign of each detection", heads["mask_roi_pool"]),
            stage("roi_heads.mask_head", f"{convs} conv layers", heads["mask_head"]),
            stage(
                "roi_heads.mask_predictor",
                "upsampled, mask logits per class",
                heads["mask_predictor"],
            ),
            stage("output", "masks pasted into the image", run.output["masks"]),
        ]
    return stages  # fmt: skip


@dataclass(frozen=True)
class MaskOfOneRoI:
    """The mask branch for one detection."""

    index: int  # the detection's rank in the output
    label: int
    score: float
    box_resized: Tensor  # (4,) in the resized frame (where the RoI is pooled)
    box: Tensor  # (4,) in the original image
    features: Tensor  # (14, 14) L2 norm over the channels of the RoIAlign features
    mask: Tensor  # (28, 28) probabilities of the detection's class
    pasted: Tensor  # (H, W) probabilities in the image (the model's output)


def mask_of_one_roi(run: DetectorRun, index: int = 0) -> MaskOfOneRoI:
    """Detection `index` of the run, followed through the mask branch."""
    return MaskOfOneRoI(
        index=index,
        label=int(run.output["labels"][index]),
        score=float(run.output["scores"][index]),
        box_resized=run.detections["boxes"][index],
        box=run.output["boxes"][index],
        features=run.heads["mask_roi_pool"][index].norm(dim=0),
        mask=run.detections["masks"][index, 0],
        pasted=run.output["masks"][index, 0],
    )


# -- drawing ------------------------------------------------------------------------------


def fpn_figure(context: Context) -> Figure:
    model = context.model("mask_rcnn")
    run = run_detector(model, context.image_for(model))
    levels = pyramid_levels(run)
    figure = new_figure(2.0 * (len(levels) + 1), 2.6)
    axes = figure.subplots(1, len(levels) + 1)
    show_image(axes[0], to_uint8_image(run.resized_image),
               f"input {tuple(run.resized_image.shape[-2:])}")  # fmt: skip
    for panel, level in zip(axes[1:], levels, strict=True):
        panel.imshow(level.energy.numpy(), cmap="magma", interpolation="nearest")
        panel.set_title(f"{level.name}: stride {level.stride}\n{level.shape[-2]} x "
                        f"{level.shape[-1]} x {level.shape[1]}", fontsize=8)  # fmt: skip
        panel.set_xticks([])
        panel.set_yticks([])
    figure.tight_layout()
    return Figure(
        f"The feature pyramid of {context.note(model)} for the page's image (padded to "
        f"{run.batch.padded_size[0]} x {run.batch.padded_size[1]} px), each level drawn as the "
        "length of its feature vector per cell. The top-down pathway adds the upsampled "
        "coarser level to a 1 x 1 projection of each backbone stage, so every level, fine or "
        "coarse, has the same channels; the last level is the previous one subsampled.",
        png(figure),
        corrections=(FPN_DIRECTION,),
    )


def mask_head_figure(context: Context) -> Figure:
    model = context.model("mask_rcnn")
    run = run_detector(model, context.image_for(model))
    if len(run.output["boxes"]) == 0:
        return _nothing_detected(context, model)
    roi = mask_of_one_roi(run)
    name = _class_name(model, roi.label)
    image = to_uint8_image(context.image_for(model))
    figure = new_figure(10.0, 2.9)
    axes = figure.subplots(1, 4)
    show_image(axes[0], image, f"detection: {name} {roi.score:.2f}")
    draw_box(axes[0], roi.box, "yellow", width=2)
    axes[1].imshow(roi.features.numpy(), cmap="magma", interpolation="nearest")
    axes[1].set_title(f"RoIAlign {roi.features.shape[0]} x {roi.features.shape[1]}", fontsize=9)
    axes[2].imshow(roi.mask.numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    axes[2].set_title(f"mask {roi.mask.shape[0]} x {roi.mask.shape[1]} ({name})", fontsize=9)
    for panel in axes[1:3]:
        panel.set_xticks([])
        panel.set_yticks([])
    overlay = image.astype(np.float32)
    overlay[..., 0] = (
        overlay[..., 0] * (1 - roi.pasted.numpy() * 0.6) + 255 * roi.pasted.numpy() * 0.6
    )
    show_image(axes[3], overlay.astype(np.uint8), "pasted into the image")
    centres_x, centres_y = np.arange(image.shape[1]) + 0.5, np.arange(image.shape[0]) + 0.5
    axes[3].contour(centres_x, centres_y, roi.pasted.numpy(), levels=[0.5], colors="yellow",
                    linewidths=1)  # fmt: skip
    figure.tight_layout()
    return Figure(
        f"The mask branch of {context.note(model)} for its top detection. The RoI's "
        f"{roi.features.shape[0]} x {roi.features.shape[1]} RoIAlign features go through "
        "convolutions and a 2x upsampling to one 28 x 28 mask per class; the mask of the "
        "predicted class is resized to the box and pasted into the image (yellow: "
        "probability 0.5).",
        png(figure),
    )


def mask_rcnn_figure(context: Context) -> Figure:
    model = context.model("mask_rcnn")
    image = context.image_for(model)
    run = run_detector(model, image)
    stages = pipeline_stages(model, image, run)
    figure = new_figure(10.0, 0.3 * len(stages) + 1.2)
    grid = figure.add_gridspec(2, 2, width_ratios=[2.3, 1])
    _stage_list(figure.add_subplot(grid[:, 0]), stages)
    show_image(figure.add_subplot(grid[0, 1]), to_uint8_image(image), "input")
    overlay = draw_detections(*_enlarged(image, run.output), list(model.card.class_names))
    show_image(figure.add_subplot(grid[1, 1]), np.asarray(overlay), "output (score >= 0.5)")
    figure.tight_layout()
    return Figure(
        f"One forward pass of {context.note(model)}, each part's output as the model "
        "returned it: the backbone and FPN once per image, the RPN's proposals, RoIAlign and "
        "the box head per proposal, then RoIAlign and the mask head per detection. N is the "
        "batch, K the proposals or detections; masks come back at the image's size.",
        png(figure),
    )


def _enlarged(image: Tensor, output: dict, factor: int = OVERLAY_ENLARGEMENT):
    """The image and its detections at `factor` times the size (pixels repeated, boxes and
    masks scaled), so that the overlay's labels cover less of the objects."""
    enlarged = image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    detections = {**output, "boxes": output["boxes"] * factor}
    if "masks" in output:
        detections["masks"] = output["masks"].repeat_interleave(factor, dim=-2)
        detections["masks"] = detections["masks"].repeat_interleave(factor, dim=-1)
    return enlarged, detections


def _stage_list(axes, stages: list[Stage]) -> None:
    for index, stage in enumerate(stages):
        colour = (
            "#4c72b0"
            if stage.part.startswith("backbone")
            else ("#dd8452" if "mask" in stage.part else "#55a868")
        )
        axes.text(0, index, stage.part, va="center", fontsize=8, color=colour)
        axes.text(36, index, stage.what, va="center", fontsize=8)
        axes.text(72, index, str(stage.shape), va="center", fontsize=8, family="monospace")
    axes.set_xlim(0, 100)
    axes.set_ylim(len(stages) - 0.5, -0.8)
    axes.axis("off")


def _class_name(model, label: int) -> str:
    names = model.card.class_names
    return names[label - 1] if 1 <= label <= len(names) else f"class {label}"


def _nothing_detected(context: Context, model) -> Figure:
    figure = new_figure(6.0, 2.0)
    axes = figure.subplots()
    axes.text(0.5, 0.5, "the model detected nothing in this image", ha="center")
    axes.axis("off")
    return Figure(f"{context.note(model)} found no object in the image, so there is no "
                  "mask to show.", png(figure))  # fmt: skip
