"""A second built-in synthetic dataset: grayscale microscopy-like images of cell nuclei.

It differs from the shapes on purpose (issue 12: recipes must not be tuned to the shapes):
one class, one channel, many small objects in clusters where neighbours touch, textured
interiors, uneven illumination, blur and noise, and an object size that changes from
image to image (mean diameter about size/24 to size/7.5: 11 to 34 px at 256 px).

A nucleus is an irregular ellipse: semi-axes `r * sqrt(aspect)` and `r / sqrt(aspect)`,
its radius modulated by a few low harmonics of the angle. Pixels are given to the nucleus
in whose shape their normalised distance `d` (0 at the centre, 1 on the outline) is the
smallest, so where two outlines overlap the nuclei share a border with no background
between them, as touching nuclei do in fluorescence images. Brightness falls off towards
the outline (a shallow valley where two nuclei touch, the cue the U-Net paper's border
weight map makes the network learn).

Layouts written (`seglab.data.synthetic`): `instance` -> COCO, `semantic` -> mask folders
(0 background, 1 nucleus) plus `classes.txt`. Images are 8-bit grayscale PNGs: the readers
load them with 1 channel, so models take `model.in_channels: 1` (or `data.channels: 3`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from seglab.data import synthetic
from seglab.data.synthetic import Summary
from seglab.errors import UserError

CLASS_NAMES = ("nucleus",)
TASKS = ("instance", "semantic")
_MAX_NUCLEI = 80
_MIN_AREA = 12  # pixels; smaller remnants of a nucleus are dropped
_HARMONICS = (2, 3, 4)


@dataclass
class Nucleus:
    """One drawn nucleus (class 1) and its mask; the masks of one image never overlap."""

    label: int
    visible_mask: np.ndarray  # (H, W) bool


@dataclass(frozen=True)
class _Outline:
    centre: np.ndarray  # (2,) x, y in pixels
    radius: float
    aspect: float
    angle: float
    harmonics: np.ndarray  # (len(_HARMONICS), 2) amplitude, phase

    @property
    def extent(self) -> float:
        """A radius that contains the whole outline."""
        return self.radius * np.sqrt(self.aspect) * (1 + self.harmonics[:, 0].sum())

    def distance(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Normalised distance `d` of pixel centres (broadcast xs, ys): < 1 inside."""
        dx, dy = xs - self.centre[0], ys - self.centre[1]
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        along = (cos * dx + sin * dy) / (self.radius * np.sqrt(self.aspect))
        across = (-sin * dx + cos * dy) * np.sqrt(self.aspect) / self.radius
        theta = np.arctan2(across, along)
        wobble = 1 + sum(
            amplitude * np.cos(k * theta + phase)
            for k, (amplitude, phase) in zip(_HARMONICS, self.harmonics, strict=True)
        )
        return np.hypot(along, across) / wobble


def _random_outline(centre: np.ndarray, mean_radius: float, rng) -> _Outline:
    harmonics = np.stack(
        [rng.uniform(0, 0.08, len(_HARMONICS)), rng.uniform(0, 2 * np.pi, len(_HARMONICS))],
        axis=1,
    )
    radius = mean_radius * float(np.exp(rng.normal(0, 0.15)))
    return _Outline(centre, radius, float(rng.uniform(1, 1.6)), rng.uniform(0, np.pi), harmonics)


def _place_outlines(size: int, mean_radius: float, count: int, rng) -> list[_Outline]:
    """Clustered centres: each nucleus starts a cluster or leans on one already placed,
    at a distance that makes their outlines overlap (so the two touch)."""
    outlines: list[_Outline] = []
    for _ in range(count):
        for _attempt in range(20):
            if outlines and rng.random() < 0.75:
                neighbour = outlines[int(rng.integers(len(outlines)))]
                direction = rng.uniform(0, 2 * np.pi)
                gap = (neighbour.radius + mean_radius) * rng.uniform(0.8, 1.0)
                centre = neighbour.centre + gap * np.array([np.cos(direction), np.sin(direction)])
            else:
                centre = rng.uniform(0, size, 2)
            outline = _random_outline(centre, mean_radius, rng)
            if not (0 <= centre[0] < size and 0 <= centre[1] < size):
                continue
            if not outlines or np.all(
                np.hypot(*(centre[:, None] - np.stack([o.centre for o in outlines], 1)))
                > 0.75 * (outline.radius + np.array([o.radius for o in outlines]))
            ):
                outlines.append(outline)
                break
    return outlines


def _window(outline: _Outline, size: int) -> tuple[slice, slice]:
    """The rows and columns of the image that the outline can reach."""
    x0, y0 = np.maximum(np.floor(outline.centre - outline.extent), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(outline.centre + outline.extent) + 1, size).astype(int)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _partition(size: int, outlines: list[_Outline]) -> tuple[np.ndarray, np.ndarray]:
    """(label map (H, W) int32, 0 background and i + 1 for outline i; distance map (H, W)
    float32, each pixel's normalised distance `d` in its nucleus, 1 on the background)."""
    labels = np.zeros((size, size), dtype=np.int32)
    nearest = np.ones((size, size), dtype=np.float32)
    for index, outline in enumerate(outlines):
        rows, cols = _window(outline, size)
        ys, xs = np.mgrid[rows, cols].astype(np.float32) + 0.5  # pixel centres
        distance = outline.distance(xs, ys).astype(np.float32)
        closer = distance < nearest[rows, cols]
        nearest[rows, cols][closer] = distance[closer]
        labels[rows, cols][closer] = index + 1
    return labels, nearest


def _nuclei(labels: np.ndarray, outlines: list[_Outline]) -> list[Nucleus]:
    """One Nucleus per outline: its largest 8-connected piece, if at least _MIN_AREA
    pixels. Pieces left out become background in `labels` (changed in place)."""
    nuclei = []
    for label, outline in enumerate(outlines, 1):
        window = _window(outline, labels.shape[0])
        mask = (labels[window] == label).astype(np.uint8)
        pieces, piece_of_pixel, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if pieces < 2:
            continue
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        keep = piece_of_pixel == largest
        if keep.sum() < _MIN_AREA:
            keep[:] = False
        labels[window][(mask > 0) & ~keep] = 0
        if keep.any():
            visible = np.zeros(labels.shape, dtype=bool)
            visible[window] = keep
            nuclei.append(Nucleus(1, visible))
    return nuclei


def _smooth_noise(size: int, sigma: float, rng) -> np.ndarray:
    """Gaussian noise blurred at `sigma` pixels, rescaled to unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal((size, size), dtype=np.float32), (0, 0), sigma)
    return noise / max(float(noise.std()), 1e-6)


def _illumination(size: int, rng) -> np.ndarray:
    """Uneven illumination: a broad bright spot on a tilted plane, in about [0.55, 1]."""
    coords = np.linspace(0, 1, size, dtype=np.float32)
    xs, ys = coords[None, :], coords[:, None]
    centre = rng.uniform(0, 1, 2)
    spot = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / rng.uniform(0.2, 0.6))
    tilt = rng.uniform(-0.15, 0.15) * (xs - 0.5) + rng.uniform(-0.15, 0.15) * (ys - 0.5)
    return (0.55 + 0.4 * spot + tilt).astype(np.float32)


def _image(labels: np.ndarray, distance: np.ndarray, mean_radius: float, rng) -> np.ndarray:
    """Stained nuclei: per-nucleus brightness, chromatin texture, darker outlines; uneven
    illumination, optical blur, shot and read noise. Returns (H, W) uint8."""
    size = labels.shape[0]
    brightness = rng.uniform(0.45, 1.0, labels.max() + 1).astype(np.float32)
    brightness[0] = 0
    texture = 1 + rng.uniform(0.08, 0.22) * _smooth_noise(size, mean_radius / 4, rng)
    falloff = 1 - rng.uniform(0.25, 0.45) * distance**3  # dimmer towards each outline
    stain = brightness[labels] * texture * falloff * rng.uniform(120, 220)
    background = rng.uniform(8, 40) * (1 + 0.15 * _smooth_noise(size, size / 8, rng))
    image = (background + stain) * _illumination(size, rng)
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.5, 1.3))
    shot = np.sqrt(np.maximum(image, 0)) * rng.uniform(0.4, 1.0)
    image = image + (shot + rng.uniform(1, 6)) * rng.standard_normal(image.shape, np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)  # round to nearest


def render_cells(size: int, rng) -> tuple[np.ndarray, list[Nucleus]]:
    """Draw one image; returns (uint8 (size, size) grayscale image, list of Nucleus)."""
    mean_radius = float(rng.uniform(size / 48, size / 15))
    coverage = rng.uniform(0.15, 0.45)
    count = int(np.clip(round(coverage * size**2 / (np.pi * mean_radius**2)), 3, _MAX_NUCLEI))
    outlines = _place_outlines(size, mean_radius, count, rng)
    labels, distance = _partition(size, outlines)
    nuclei = _nuclei(labels, outlines)
    return _image(labels, distance, mean_radius, rng), nuclei


def generate_cells_summary(
    out_dir: str | Path,
    *,
    task: str = "instance",
    train: int = 1000,
    val: int = 200,
    size: int = 256,
    seed: int = 0,
) -> Summary:
    """Write the cells dataset for `task`; see `generate_cells`. Returns counts and time."""
    if task not in TASKS:
        raise UserError(f"unknown cells task {task!r}; choose one of {', '.join(TASKS)}")
    if size < 64 or train < 0 or val < 0:
        raise UserError(f"cells: need --size >= 64 and non-negative counts (got {size}px)")
    render = partial(render_cells, size)

    def write_split(root: Path, split: str, count: int) -> int:
        if task == "instance":
            return synthetic.write_coco_split(root, split, count, seed, render, CLASS_NAMES, "cell")
        return synthetic.write_semantic_split(root, split, count, seed, render)

    counts = {"train": train, "val": val}
    return synthetic.write_dataset(
        out_dir, counts, write_split, CLASS_NAMES, classes_file=task == "semantic"
    )


def generate_cells(
    out_dir: str | Path,
    *,
    task: str = "instance",
    train: int = 1000,
    val: int = 200,
    size: int = 256,
    seed: int = 0,
) -> Path:
    """Write the synthetic cells dataset and return its root folder.

    Args:
        out_dir: root folder to write (created if needed).
        task: `instance` (COCO layout) or `semantic` (mask folders, 0 background, 1 nucleus).
        train, val: number of images per split.
        size: image side in pixels (>= 64).
        seed: everything written is a function of the seed.
    """
    return generate_cells_summary(
        out_dir, task=task, train=train, val=val, size=size, seed=seed
    ).out_dir
