"""Overlays and the confusion-matrix plot: pixels where they should be, files written whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.inference.visualize import (
    class_colour,
    draw_detections,
    draw_semantic,
    plot_confusion_matrix,
    save_image,
    to_pil,
)


def grey_image(height=64, width=80):
    return torch.full((3, height, width), 0.5)


def detection_output():
    masks = torch.zeros(2, 1, 64, 80)
    masks[0, 0, 30:50, 40:70] = 0.9
    masks[1, 0, 5:15, 5:15] = 0.9
    return {
        "boxes": torch.tensor([[40.0, 30.0, 70.0, 50.0], [5.0, 5.0, 15.0, 15.0]]),
        "labels": torch.tensor([2, 1]),
        "scores": torch.tensor([0.9, 0.3]),
        "masks": masks,
    }


def test_draw_detections_blends_masks_and_draws_boxes_above_the_threshold():
    canvas = draw_detections(grey_image(), detection_output(), ["circle", "square"])
    pixels = np.asarray(canvas).astype(int)
    assert canvas.size == (80, 64) and canvas.mode == "RGB"
    expected = np.round(0.55 * 128 + 0.45 * np.array(class_colour(2)))
    np.testing.assert_allclose(pixels[40, 55], expected, atol=1)  # inside the mask
    assert tuple(pixels[45, 40]) == class_colour(2)  # left edge of the box
    assert tuple(pixels[60, 10]) == (128, 128, 128)  # untouched background
    # the 0.3-score detection is not drawn: neither its mask nor its box
    assert tuple(pixels[10, 10]) == (128, 128, 128)
    assert tuple(pixels[10, 5]) == (128, 128, 128)
    shown = np.asarray(draw_detections(grey_image(), detection_output(), [], score_threshold=0.2))
    assert tuple(shown[10, 5]) == class_colour(1)


def test_draw_detections_without_masks_or_detections():
    output = {k: v for k, v in detection_output().items() if k != "masks"}
    pixels = np.asarray(draw_detections(grey_image(), output, ["a", "b"]))
    assert tuple(pixels[40, 55]) == (128, 128, 128)  # no mask: the box inside is untouched
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    empty["scores"] = torch.zeros(0)
    assert np.all(np.asarray(draw_detections(grey_image(), empty, [])) == 128)


def test_draw_semantic_colours_classes_and_leaves_background_and_ignored():
    class_map = torch.zeros(64, 80, dtype=torch.int64)
    class_map[40:60, 40:70] = 3
    class_map[0:4, 70:80] = 255
    canvas = draw_semantic(grey_image(), class_map, ["a", "b", "c"])
    pixels = np.asarray(canvas).astype(int)
    np.testing.assert_allclose(
        pixels[50, 60], np.round(0.5 * 128 + 0.5 * np.array(class_colour(3))), atol=1
    )
    assert tuple(pixels[60, 10]) == (128, 128, 128)
    assert tuple(pixels[2, 75]) == (128, 128, 128)
    assert tuple(pixels[6, 6]) == class_colour(3)  # legend square
    with pytest.raises(ValueError, match="class map"):
        draw_semantic(grey_image(), class_map[:10], ["a"])


def test_to_pil_accepts_tensors_arrays_and_grayscale():
    assert to_pil(torch.ones(1, 4, 5)).getpixel((0, 0)) == (255, 255, 255)
    assert to_pil(np.zeros((4, 5, 3), np.uint8)).size == (5, 4)
    assert to_pil(Image.new("L", (5, 4))).mode == "RGB"


def test_plot_confusion_matrix_writes_a_png_atomically(tmp_path):
    path = tmp_path / "plots" / "confusion.png"
    plot_confusion_matrix([[5, 1, 0], [2, 7, 1], [0, 0, 9]], ["circle", "square", "tri"], path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # not a blank figure
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]  # no temporary left


def test_save_image_by_extension(tmp_path):
    save_image(Image.new("RGB", (4, 3)), tmp_path / "x.jpg")
    with Image.open(tmp_path / "x.jpg") as image:
        assert image.format == "JPEG"
    with pytest.raises(ValueError, match="unknown image extension"):
        save_image(Image.new("RGB", (4, 3)), tmp_path / "x.nope")
