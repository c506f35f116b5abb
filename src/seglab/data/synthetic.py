"""Writing synthetic datasets: what `seglab data shapes` and `seglab data cells` share.

A generator is a function `render(rng) -> (image, objects)`: a uint8 image, (H, W, 3) RGB
or (H, W) grayscale, and its objects, each with a `label` (1..K) and a `visible_mask`
((H, W) bool; the visible masks of one image never overlap). Every scene is drawn from its
own random generator seeded by `(seed, split, index)` (`scene_rng`), so a dataset is
byte-identical for a seed whatever order or subset is generated.

Layouts: `write_coco_split` (`<split>.json` written last, so an interrupted run is never
taken as complete) and `write_semantic_split` (mask folders, built in a hidden
`.<split>.partial` folder and renamed into place when complete).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seglab.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_output_folder,
)
from seglab.structures.masks import mask_to_rle

_SPLIT_IDS = {"train": 0, "val": 1}

Render = Callable[[np.random.Generator], tuple[np.ndarray, list]]


@dataclass
class Summary:
    """What a generation wrote, for the CLI's one-line report."""

    out_dir: Path
    images: int
    objects: int
    classes: int
    seconds: float


def write_dataset(
    out_dir: str | Path,
    counts: dict[str, int],
    write_split: Callable[[Path, str, int], int],
    class_names: Sequence[str],
    *,
    classes_file: bool,
) -> Summary:
    """Write each split of `counts` ({split: images}) with `write_split(root, split, count)`,
    which returns the objects it drew; mask folders also get `classes.txt`."""
    out_dir = check_output_folder(out_dir, "OUT")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    objects = sum(write_split(out_dir, split, count) for split, count in counts.items())
    if classes_file:
        atomic_write_text(out_dir / "classes.txt", "\n".join(class_names) + "\n")
    seconds = time.perf_counter() - started
    return Summary(out_dir, sum(counts.values()), objects, len(class_names), seconds)


def png_bytes(array: np.ndarray) -> bytes:
    """Encode RGB (H, W, 3) or grayscale / index (H, W) uint8 as PNG (deterministic bytes)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one scene: a function of `(seed, split, index)` only."""
    return np.random.default_rng([seed, _SPLIT_IDS[split], index])


def coco_annotations(objects: list, image_id: int, first_id: int) -> list[dict]:
    """COCO annotations (RLE masks, xywh boxes) of the objects that are visible at all."""
    annotations = []
    for item in objects:
        ys, xs = np.nonzero(item.visible_mask)
        if len(xs) == 0:
            continue
        x0, y0 = int(xs.min()), int(ys.min())
        annotations.append(
            {
                "id": first_id + len(annotations),
                "image_id": image_id,
                "category_id": item.label,
                "segmentation": mask_to_rle(item.visible_mask),
                "area": int(len(xs)),
                "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
                "iscrowd": 0,
            }
        )
    return annotations


def write_coco_split(
    out_dir: Path,
    split: str,
    count: int,
    seed: int,
    render: Render,
    class_names: Sequence[str],
    supercategory: str,
) -> int:
    """Write `count` scenes of `split` as `split/*.png` + `split.json`; returns the objects."""
    # Regenerating over an old dataset: drop its JSON first, so until the new one is written
    # the split is visibly incomplete rather than old annotations over new images.
    (out_dir / f"{split}.json").unlink(missing_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, objects = render(scene_rng(seed, split, index))
        file_name = f"{index:06d}.png"
        atomic_write_bytes(out_dir / split / file_name, png_bytes(image))
        height, width = image.shape[:2]
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        annotations += coco_annotations(objects, image_id, first_id=len(annotations) + 1)
    categories = [
        {"id": k, "name": name, "supercategory": supercategory}
        for k, name in enumerate(class_names, 1)
    ]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_json(out_dir / f"{split}.json", coco, indent=None)
    return len(annotations)


def publish(partial: Path, final: Path) -> None:
    """Move a completely written split folder into place."""
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)


def write_semantic_split(out_dir: Path, split: str, count: int, seed: int, render: Render) -> int:
    """Write `count` scenes as `split/images/*.png` + `split/masks/*.png` (class per pixel)."""
    partial = out_dir / f".{split}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    objects_written = 0
    for index in range(count):
        image, objects = render(scene_rng(seed, split, index))
        class_map = np.zeros(image.shape[:2], dtype=np.uint8)
        for item in objects:
            class_map[item.visible_mask] = item.label
        objects_written += sum(bool(item.visible_mask.any()) for item in objects)
        atomic_write_bytes(partial / "images" / f"{index:06d}.png", png_bytes(image))
        atomic_write_bytes(partial / "masks" / f"{index:06d}.png", png_bytes(class_map))
    publish(partial, out_dir / split)
    return objects_written
