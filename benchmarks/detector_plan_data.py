"""Data the detector recipes were not written for, made with seglab's own generators: the
check of the planned detector options (`model.*: auto`, `seglab.data.box_fingerprint`).

    python benchmarks/detector_plan_data.py OUT [--train 200 --val 50]

writes, each as a COCO folder under OUT:
- `cells128`: `seglab data cells --size 128` (grayscale; nuclei 5-17 px, up to 80 an image);
- `cells384_colour`: cells at 384 px tinted like an H&E stain (RGB; nuclei 16-50 px);
- `shapes_many_small`: shapes scenes of 256 px with 12-24 small objects (the generator's
  small radii, 6-16 px);
- `shapes_few_large`: shapes scenes of 256 px with 1-2 large objects (radii 16-51 px).

(`seglab data shapes` and `seglab data cells` at their defaults are the other two.) Then
train each recipe twice at equal steps, as planned (the recipe) and as written before
(`--set model.min_size=192 ...`: the commands are in docs/models/mask_rcnn.md).
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np

from seglab.data import cells, shapes, synthetic

_STAIN = np.array([[0.93, 0.62, 0.83], [0.35, 0.15, 0.55]], dtype=np.float32)  # eosin, haematoxylin


def coloured_cells(size: int, rng) -> tuple[np.ndarray, list]:
    """Cells drawn by the generator, then tinted: background pink, nuclei purple (RGB)."""
    image, nuclei = cells.render_cells(size, rng)
    stain = image.astype(np.float32)[..., None] / 255.0  # (H, W, 1) in [0, 1]
    rgb = 255 * ((1 - stain) * _STAIN[0] + stain * _STAIN[1])
    return np.clip(rgb, 0, 255).astype(np.uint8), nuclei


def small_radius(size: int, rng) -> float:
    return float(rng.uniform(size / 40, size / 16))


def large_radius(size: int, rng) -> float:
    return float(rng.uniform(size / 16, size / 5))


def shapes_scene(size: int, low: int, high: int, radius_fn, rng):
    count = int(rng.integers(low, high + 1))
    return shapes.render_scene(size, rng, count=count, radius_fn=radius_fn)


DATASETS = {
    "cells128": (partial(cells.render_cells, 128), cells.CLASS_NAMES, "cell"),
    "cells384_colour": (partial(coloured_cells, 384), cells.CLASS_NAMES, "cell"),
    "shapes_many_small": (
        partial(shapes_scene, 256, 12, 24, small_radius),
        shapes.CLASS_NAMES,
        "shape",
    ),
    "shapes_few_large": (
        partial(shapes_scene, 256, 1, 2, large_radius),
        shapes.CLASS_NAMES,
        "shape",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--val", type=int, default=50)
    args = parser.parse_args()
    for name, (render, class_names, supercategory) in DATASETS.items():
        for split, count in (("train", args.train), ("val", args.val)):
            (args.out / name / split).mkdir(parents=True, exist_ok=True)
            objects = synthetic.write_coco_split(
                args.out / name, split, count, 0, render, class_names, supercategory
            )
            print(f"{args.out / name}: {split} {count} images, {objects} objects")


if __name__ == "__main__":
    main()
