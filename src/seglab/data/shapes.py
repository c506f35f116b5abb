"""The built-in synthetic dataset: circles, squares and triangles on noisy backgrounds.

Every scene is drawn from its own random generator seeded by `(seed, split, index)`, so a
dataset is byte-identical for a seed whatever order or subset is generated
(`seglab.data.synthetic` writes the COCO and mask-folder layouts). Objects overlap
and occlude each other (later ones are drawn on top; an object is placed only if every
earlier object keeps at least half of its area visible), come in small, medium and large
sizes (COCO's 32^2 / 96^2 area limits at 256 px), random colours, on flat, gradient and
noisy backgrounds; some scenes are empty (negatives).

Layouts written: `instance` -> COCO (`train.json` written last, so an
interrupted run is never taken as complete); `semantic` -> mask folders plus `classes.txt`;
`classify` -> image folders of single-object crops. Mask and image folders are built in a
hidden `.<split>.partial` folder and renamed into place when complete.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from seglab.data import synthetic
from seglab.data.synthetic import Summary, publish, scene_rng
from seglab.errors import UserError
from seglab.files import atomic_write_bytes

CLASS_NAMES = ("circle", "square", "triangle")
TASKS = ("instance", "semantic", "classify")
_SUBPIXEL_BITS = 4  # cv2 drawing with 1/16 pixel precision
_MAX_OBJECTS = 6
_EMPTY_FRACTION = 0.08


@dataclass
class Shape:
    """One drawn object: its class (1..3), full mask and occlusion-aware visible mask."""

    label: int
    full_mask: np.ndarray  # (H, W) bool, inside the image
    visible_mask: np.ndarray  # (H, W) bool
    colour: np.ndarray  # (3,) float32 RGB


def _draw_mask(kind: int, centre: np.ndarray, radius: float, angle: float, size: int, rng):
    """Rasterise one shape (without anti-aliasing, so the mask is exactly what is drawn)."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    scale = 1 << _SUBPIXEL_BITS
    if kind == 1:  # circle
        centre_fixed = tuple(int(round(c * scale)) for c in centre)
        cv2.circle(canvas, centre_fixed, int(round(radius * scale)), 1, -1, cv2.LINE_8, 4)
        return canvas.astype(bool)
    if kind == 2:  # square, rotated
        corner_angles = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        distances = np.full(4, radius * np.sqrt(2))
    else:  # triangle: roughly equilateral, vertices jittered
        corner_angles = angle + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        distances = radius * rng.uniform(0.85, 1.15, 3)
    offsets = np.stack([np.cos(corner_angles), np.sin(corner_angles)], axis=1) * distances[:, None]
    points = np.round((centre + offsets) * scale).astype(np.int32)
    cv2.fillPoly(canvas, [points], 1, cv2.LINE_8, _SUBPIXEL_BITS)
    return canvas.astype(bool)


def _random_colour(rng) -> np.ndarray:
    """A saturated-enough RGB colour, float32 in [0, 255]."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(90, 255), rng.uniform(80, 255)]]])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _background(size: int, rng) -> np.ndarray:
    """Flat colour or linear gradient between two colours, (size, size, 3) float32."""
    start = rng.uniform(0, 255, 3).astype(np.float32)
    if rng.random() < 0.3:
        return np.broadcast_to(start, (size, size, 3)).copy()
    end = rng.uniform(0, 255, 3).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    coords = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    ramp = (
        np.float32(np.cos(direction)) * coords[None, :]
        + np.float32(np.sin(direction)) * coords[:, None]
        + np.float32(0.5)
    )
    ramp = np.clip(ramp, 0, 1)[:, :, None]
    return start + (end - start) * ramp


def _object_radius(size: int, rng) -> float:
    """Radius: 30% small objects (area below 32^2 at 256 px), the rest medium or large."""
    if rng.random() < 0.3:
        return float(rng.uniform(size / 40, size / 16))
    return float(rng.uniform(size / 16, size / 5))


def _place_objects(image: np.ndarray, count: int, rng, radius_fn, margin: float) -> list[Shape]:
    """Draw up to `count` objects onto `image` in place, keeping each >= 50% visible.

    Centres stay `margin * radius` from the border: 0.5 lets objects be cut by it.
    """
    size = image.shape[0]
    shapes: list[Shape] = []
    for _ in range(count):
        for _attempt in range(10):
            kind = int(rng.integers(1, len(CLASS_NAMES) + 1))
            radius = radius_fn(size, rng)
            centre = rng.uniform(radius * margin, size - radius * margin, 2)
            mask = _draw_mask(kind, centre, radius, rng.uniform(0, 2 * np.pi), size, rng)
            area = mask.sum()
            if area < 12 or not all(
                (s.visible_mask & ~mask).sum() >= max(0.5 * s.full_mask.sum(), 12) for s in shapes
            ):
                continue
            colour = _random_colour(rng)
            if np.abs(image[mask].mean(axis=0) - colour).sum() < 80:
                colour = 255 - colour  # too close to what is underneath: take the complement
            for shape in shapes:
                shape.visible_mask &= ~mask
            image[mask] = colour
            shapes.append(Shape(kind, mask, mask.copy(), colour))
            break
    return shapes


def _finish(image: np.ndarray, rng) -> np.ndarray:
    """Soften edges, add per-pixel noise, quantise to uint8 RGB."""
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image = cv2.scaleAdd(noise, rng.uniform(2, 18), image)  # image + sigma * noise
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)  # round to nearest


def render_scene(
    size: int, rng, *, count: int | None = None, radius_fn=_object_radius, margin: float = 0.5
):
    """Draw one scene; returns (uint8 (size, size, 3) RGB image, list of Shape)."""
    if count is None:
        count = 0 if rng.random() < _EMPTY_FRACTION else int(rng.integers(1, _MAX_OBJECTS + 1))
    image = _background(size, rng)
    shapes = _place_objects(image, count, rng, radius_fn, margin)
    return _finish(image, rng), shapes


# Crops hold one whole object (a square's corner lies at sqrt(2) radius, a jittered
# triangle's at 1.15 radius), large enough to be recognised after resizing to 64 px.
_CROP_MARGIN = 1.55  # plus > 1 px to spare at the smallest radius


def _crop_radius(size: int, rng) -> float:
    return float(rng.uniform(size * 0.15, size * 0.32))


def _write_classify_split(out_dir: Path, split: str, count: int, size: int, seed: int) -> int:
    building = out_dir / f".{split}.partial"
    shutil.rmtree(building, ignore_errors=True)
    for name in CLASS_NAMES:
        (building / name).mkdir(parents=True)
    for index in range(count):
        rng = scene_rng(seed, split, index)
        while True:  # one object per crop; retry the rare scene where it did not fit
            image, shapes = render_scene(
                size, rng, count=1, radius_fn=_crop_radius, margin=_CROP_MARGIN
            )
            if shapes:
                break
        name = CLASS_NAMES[shapes[0].label - 1]
        atomic_write_bytes(building / name / f"{index:06d}.png", synthetic.png_bytes(image))
    publish(building, out_dir / split)
    return count


def _write_coco_split(out_dir: Path, split: str, count: int, size: int, seed: int) -> int:
    render = partial(render_scene, size)
    return synthetic.write_coco_split(out_dir, split, count, seed, render, CLASS_NAMES, "shape")


def _write_semantic_split(out_dir: Path, split: str, count: int, size: int, seed: int) -> int:
    return synthetic.write_semantic_split(out_dir, split, count, seed, partial(render_scene, size))


_WRITERS = {
    "instance": _write_coco_split,
    "semantic": _write_semantic_split,
    "classify": _write_classify_split,
}


def generate_shapes_summary(
    out_dir: str | Path,
    *,
    task: str = "instance",
    train: int = 1000,
    val: int = 200,
    size: int = 256,
    seed: int = 0,
) -> Summary:
    """Write the shapes dataset for `task`; see `generate_shapes`. Returns counts and time."""
    if task not in TASKS:
        raise UserError(f"unknown shapes task {task!r}; choose one of {', '.join(TASKS)}")
    if size < 32 or train < 0 or val < 0:
        raise UserError(f"shapes: need --size >= 32 and non-negative counts (got {size}px)")
    return synthetic.write_dataset(
        out_dir, {"train": train, "val": val},
        lambda root, split, count: _WRITERS[task](root, split, count, size, seed),
        CLASS_NAMES, classes_file=task == "semantic",
    )  # fmt: skip


def generate_shapes(
    out_dir: str | Path,
    *,
    task: str = "instance",
    train: int = 1000,
    val: int = 200,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write the synthetic shapes dataset and return its root folder.

    Args:
        out_dir: root folder to write (created if needed).
        task: `instance` (COCO layout), `semantic` (mask folders) or `classify` (image folders).
        train, val: number of images per split.
        size: image side in pixels.
        seed: everything written is a function of the seed.
    """
    return generate_shapes_summary(
        out_dir, task=task, train=train, val=val, size=size, seed=seed
    ).out_dir
