"""Pictures of predictions: detection overlays, semantic class maps, confusion matrices.

Every class has one colour everywhere (label k of a detector and class index k of a
semantic map share `class_colour(k)`). Drawing functions return PIL images; `save_image` and
`plot_confusion_matrix` write files atomically (temporary file, then rename).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from seglab.files import atomic_write

# Matplotlib's "tab10" colours, then a few more; class k > len uses a seeded random colour.
_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
]  # fmt: skip


def class_colour(label: int) -> tuple[int, int, int]:
    """RGB colour of class `label` (1..K; 0, background, is never drawn)."""
    if 1 <= label <= len(_PALETTE):
        return _PALETTE[label - 1]
    red, green, blue = np.random.default_rng(label).integers(40, 256, size=3)
    return int(red), int(green), int(blue)


def to_pil(image: Any) -> Image.Image:
    """An RGB PIL image from a PIL image, a float CHW tensor in [0, 1] or a uint8 HWC array."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        image = pixels.permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array.astype(np.uint8)).convert("RGB")


def _label_name(label: int, class_names: Sequence[str]) -> str:
    return class_names[label - 1] if 1 <= label <= len(class_names) else str(label)


def _blend(pixels: np.ndarray, region: np.ndarray, colour: tuple[int, int, int], alpha: float):
    """In place: pixels[region] = (1 - alpha) * pixels + alpha * colour."""
    pixels[region] = (1 - alpha) * pixels[region] + alpha * np.asarray(colour, np.float32)


def draw_detections(
    image: Any,
    output: dict[str, torch.Tensor],
    class_names: Sequence[str],
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    alpha: float = 0.45,
) -> Image.Image:
    """Boxes, "name score" labels and alpha-blended masks of the detections above a score.

    Args:
        image: the image the detections are in (PIL, float CHW tensor or uint8 HWC array).
        output: a detector's output: `boxes` (N, 4) xyxy, `labels` (N,) in 1..K, `scores`
            (N,), optionally `masks` (N, 1, H, W) probabilities.
        class_names: names of labels 1..K (background excluded).
    """
    canvas = to_pil(image)
    keep = (output["scores"] >= score_threshold).cpu()
    boxes = output["boxes"].detach().cpu()[keep].tolist()
    labels = output["labels"].cpu()[keep].tolist()
    scores = output["scores"].detach().cpu()[keep].tolist()
    if "masks" in output:
        pixels = np.asarray(canvas, dtype=np.float32).copy()
        masks = (output["masks"].detach().cpu()[keep][:, 0] > mask_threshold).numpy()
        for mask, label in zip(masks, labels, strict=True):
            _blend(pixels, mask, class_colour(label), alpha)
        canvas = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for box, label, score in zip(boxes, labels, scores, strict=True):
        colour = class_colour(label)
        draw.rectangle(box, outline=colour, width=2)
        text = f"{_label_name(label, class_names)} {score:.2f}"
        left, top, right, bottom = draw.textbbox((box[0], box[1]), text, font=font)
        # The label sits above the box, or inside it when the box touches the top edge.
        shift = bottom - top + 2 if box[1] >= bottom - top + 2 else 0
        draw.rectangle((left, top - shift, right + 2, bottom - shift), fill=colour)
        draw.text((box[0] + 1, box[1] - shift), text, fill=(255, 255, 255), font=font)
    return canvas


def draw_semantic(
    image: Any, class_map: Any, class_names: Sequence[str], *, alpha: float = 0.5
) -> Image.Image:
    """Class map blended over the image, with a legend of the classes present.

    Args:
        image: PIL, float CHW tensor or uint8 HWC array, H x W.
        class_map: (H, W) class indices; 0 (background) and 255 (ignored) are not coloured.
        class_names: names of classes 1..K (background excluded).
    """
    canvas = to_pil(image)
    class_map = np.asarray(class_map.cpu() if isinstance(class_map, torch.Tensor) else class_map)
    if class_map.shape != (canvas.height, canvas.width):
        raise ValueError(f"class map {class_map.shape} vs image {(canvas.height, canvas.width)}")
    pixels = np.asarray(canvas, dtype=np.float32).copy()
    present = [int(c) for c in np.unique(class_map) if c not in (0, 255)]
    for label in present:
        _blend(pixels, class_map == label, class_colour(label), alpha)
    canvas = Image.fromarray(pixels.round().astype(np.uint8))
    _draw_legend(canvas, [(class_colour(c), _label_name(c, class_names)) for c in present])
    return canvas


def _draw_legend(canvas: Image.Image, entries: list[tuple[tuple[int, int, int], str]]) -> None:
    """Colour squares and names, one per line, in the top-left corner."""
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    top = 2
    for colour, name in entries:
        text_bottom = draw.textbbox((14, top), name, font=font)[3]
        draw.rectangle((2, top, 11, top + 9), fill=colour, outline=(255, 255, 255))
        draw.text((14, top), name, fill=(255, 255, 255), font=font)
        top = max(top + 12, text_bottom + 2)


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write `image` atomically; the format follows the file's extension."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: unknown image extension")
    return atomic_write(path, lambda temporary: image.save(temporary, format=image_format))


def plot_confusion_matrix(
    matrix: Any, class_names: Sequence[str], path: str | Path, *, title: str = "Confusion matrix"
) -> Path:
    """Save a confusion-matrix figure (rows true class, columns predicted) atomically.

    Cells are shaded by the fraction of their row (recall per class) and print the count.
    `class_names` names rows/columns 0..K-1 in order.
    """
    # The Agg canvas directly, not pyplot: no global backend state, safe in threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.int64)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.5 * len(counts)
    figure = Figure(figsize=(size + 1, size), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    shading = axes.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shading, ax=axes, label="fraction of the true class")
    ticks = range(len(counts))
    names = [class_names[k] if k < len(class_names) else str(k) for k in ticks]
    axes.set_xticks(ticks, names, rotation=45, ha="right")
    axes.set_yticks(ticks, names)
    axes.set(xlabel="predicted class", ylabel="true class", title=title)
    for row in ticks:
        for column in ticks:
            colour = "white" if fractions[row, column] > 0.5 else "black"
            text = str(counts[row, column])
            axes.text(column, row, text, ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    image_format = Path(path).suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda temporary: figure.savefig(temporary, format=image_format))


def plot_precision_recall(curves: dict[str, Any], path: str | Path, *, title: str) -> Path:
    """Save COCO precision-recall curves, one panel per IoU threshold, one line per class.

    Args:
        curves: `seglab.evaluation.coco.precision_recall_curves`: "recall" (R,), "iou" (T,),
            "precision": {class: (T, R)}; -1 marks a class without ground truth (not drawn).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    recall = np.asarray(curves["recall"])
    figure = Figure(figsize=(5 * len(curves["iou"]), 4.5), dpi=100)
    FigureCanvasAgg(figure)
    for index, iou in enumerate(curves["iou"]):
        axes = figure.add_subplot(1, len(curves["iou"]), index + 1)
        for name, precision in curves["precision"].items():
            values = np.asarray(precision[index])
            if (values > -1).any():
                average = values[values > -1].mean()
                axes.plot(recall, np.clip(values, 0, None), label=f"{name} (AP {average:.3f})")
        axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
                 title=f"{title}, IoU {iou:.2f}")  # fmt: skip
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="lower left")
    figure.tight_layout()
    return atomic_write(path, lambda temporary: figure.savefig(temporary, format="png"))
