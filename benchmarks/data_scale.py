"""Data at COCO scale: open and load seglab's datasets against pycocotools and torchvision.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data_scale.py --images 100000 \
        --load-images 5000 --out /work/scratch/data_scale

writes (once; kept and reused while its parameters are the same) under OUT:
- `coco/`: `train.json` with N images (COCO's sizes: 640x480, 480x640, 640x427, 427x640)
  and about 10 objects per image (polygons of 6 to 24 points, 1% crowd regions as
  uncompressed RLE, as COCO's own), 80 categories; `val.json` with N/100 images. The image
  files are hard links to 4 real JPEG files, so the disk holds 4 images.
- `masks/`: N/10 image + mask pairs (256 px, classes 0..3), links to 4 real pairs;
- `folders/`: N images in 10 class folders (64 px), links to 4 real images;

and measures, each in a fresh process (peak memory is that process's own):
1. opening the training split: seglab's `build_dataset` (what `seglab train` and
   `seglab data check` do before reading pixels) against pycocotools' `COCO(file)` (what
   torchvision's `CocoDetection` does), a plain image + mask folder listing, and
   torchvision's `ImageFolder`: seconds, peak memory above the process's memory before,
   and the memory the opened dataset keeps.
2. one pass of data loading over the first `--load-images` images of a fixed shuffle:
   the Dataset + DataLoader as training sets them (the Mask R-CNN / U-Net / CNN recipe's
   train transforms, batch size and `--workers`), against the peer with the same
   transforms, workers and batches (torchvision's `CocoDetection` wrapped for transforms
   v2, whose masks pycocotools decodes from the polygons, as ours): images per second, and
   the memory (PSS of the process and its workers) after the first batches, at the half
   and at the end. The objects made before the pass are frozen out of the garbage
   collector's walks first (`gc.freeze`, on both sides).
3. that seglab's annotations of sampled images are pycocotools' (an exact comparison).

`--layouts masks,folders` measures some of the three; `--repeats N` makes N loading passes
per side (alternating, each in a fresh process) and reports the median ratio, with each
pass's. The table is printed (markdown) and written to OUT/data_scale.md and
OUT/data_scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

COCO_SIZES = ((480, 640), (640, 480), (427, 640), (640, 427))  # (height, width)
MASK_SIZE, FOLDER_SIZE = 256, 64
CATEGORIES = 80
OBJECTS_PER_IMAGE = 10  # COCO train2017: 860k objects on 118k images (7.3 per image)
CROWD_FRACTION = 0.01
CLASSES = 10  # image folders
SEED = 0


# ---------------------------------------------------------------------------- data


def _base_image(path: Path, height: int, width: int, seed: int, mode: str = "RGB") -> None:
    """A real image file: a smooth gradient with noise (JPEG or PNG by suffix)."""
    import PIL.Image

    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    base = (rows * 255 // max(height - 1, 1) + columns * 255 // max(width - 1, 1)) // 2
    pixels = np.stack([base, base[::-1], 255 - base], axis=-1).astype(np.int16)
    pixels = np.clip(pixels + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
    image = PIL.Image.fromarray(pixels)
    (image if mode == "RGB" else image.convert(mode)).save(path)


def _linked(sources: list[Path], target: Path) -> None:
    """`target` as a hard link to `sources[...]` (a copy where links are refused)."""
    source = sources[hash(target.name) % len(sources)]
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())


def _polygon(rng: np.random.Generator, height: int, width: int) -> list[float]:
    """A star-shaped polygon of 6 to 24 points inside the image, coordinates to 0.01 px."""
    points = int(rng.integers(6, 25))
    radius = float(np.clip(rng.lognormal(np.log(24), 0.9), 3, min(height, width) / 3))
    center = rng.uniform([radius, radius], [width - radius, height - radius])
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radii = radius * rng.uniform(0.6, 1.0, points)
    xy = center + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    xy = np.clip(xy, 0, [width, height]).round(2)
    return xy.reshape(-1).tolist()  # [x0, y0, x1, y1, ...]


def _box_of(polygon: list[float]) -> list[float]:
    xs, ys = polygon[0::2], polygon[1::2]
    return [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]


def _rectangle_rle(box: list[float], height: int, width: int) -> dict:
    """Uncompressed (column-major) RLE of the pixels of `box` = [x, y, w, h], as COCO's
    crowd regions are stored."""
    x0, y0 = int(box[0]), int(box[1])
    x1, y1 = max(int(box[0] + box[2]), x0 + 1), max(int(box[1] + box[3]), y0 + 1)
    x1, y1 = min(x1, width), min(y1, height)
    tall = y1 - y0
    counts = [x0 * height + y0]
    for _ in range(x0, x1 - 1):
        counts += [tall, height - tall]
    counts += [tall, height * width - (x1 - 1) * height - y1]
    return {"counts": counts, "size": [height, width]}


def _coco_split(images: int, first_id: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    entries, annotations = [], []
    for index in range(images):
        image_id = first_id + index
        height, width = COCO_SIZES[image_id % len(COCO_SIZES)]
        entries.append({"id": image_id, "file_name": f"{image_id:012d}.jpg",
                        "height": height, "width": width, "license": 1})  # fmt: skip
        for _ in range(int(rng.integers(0, 2 * OBJECTS_PER_IMAGE + 1))):
            polygon = _polygon(rng, height, width)
            box = _box_of(polygon)
            crowd = bool(rng.random() < CROWD_FRACTION)
            segmentation = _rectangle_rle(box, height, width) if crowd else [polygon]
            annotations.append({
                "id": len(annotations) + 1 + first_id * 100, "image_id": image_id,
                "category_id": int(rng.integers(1, CATEGORIES + 1)),
                "segmentation": segmentation, "area": round(box[2] * box[3] * 0.7, 2),
                "bbox": box, "iscrowd": int(crowd),
            })  # fmt: skip
    categories = [{"id": k, "name": f"class{k}", "supercategory": "thing"}
                  for k in range(1, CATEGORIES + 1)]  # fmt: skip
    return {"images": entries, "annotations": annotations, "categories": categories}


def write_coco(root: Path, images: int) -> None:
    """COCO layout with `images` train images (and images // 100 val, at least 2)."""
    bases = []
    for k, (height, width) in enumerate(COCO_SIZES):
        bases.append(root / f"base{k}.jpg")
        _base_image(bases[-1], height, width, seed=k)
    for split, count, first_id in (("train", images, 1), ("val", max(images // 100, 2), 10**9)):
        coco = _coco_split(count, first_id, seed=SEED + first_id)
        (root / split).mkdir()
        for entry in coco["images"]:  # the base of the entry's size
            base = bases[COCO_SIZES.index((entry["height"], entry["width"]))]
            _linked([base], root / split / entry["file_name"])
        (root / f"{split}.json").write_text(json.dumps(coco))


def write_masks(root: Path, images: int) -> None:
    """Mask-folder layout: `images` pairs in train, images // 10 (at least 2) in val."""
    import PIL.Image

    pairs = []
    for k in range(4):
        image, mask = root / f"base{k}.png", root / f"base{k}_mask.png"
        _base_image(image, MASK_SIZE, MASK_SIZE, seed=k)
        rng = np.random.default_rng(k)
        classes = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
        for _ in range(12):
            y, x, r = rng.integers(0, MASK_SIZE, 2).tolist() + [int(rng.integers(6, 30))]
            rows, columns = np.ogrid[0:MASK_SIZE, 0:MASK_SIZE]
            classes[(rows - y) ** 2 + (columns - x) ** 2 < r * r] = rng.integers(1, 4)
        PIL.Image.fromarray(classes).save(mask)
        pairs.append((image, mask))
    for split, count in (("train", images), ("val", max(images // 10, 2))):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        for index in range(count):
            image, mask = pairs[index % len(pairs)]
            os.link(image, root / split / "images" / f"{index:07d}.png")
            os.link(mask, root / split / "masks" / f"{index:07d}.png")


def write_folders(root: Path, images: int) -> None:
    """Image-folder layout: `images` train images in CLASSES folders, images // 10 in val."""
    bases = []
    for k in range(4):
        bases.append(root / f"base{k}.jpg")
        _base_image(bases[-1], FOLDER_SIZE, FOLDER_SIZE, seed=k)
    for split, count in (("train", images), ("val", max(images // 10, CLASSES))):
        for index in range(count):
            folder = root / split / f"class{index % CLASSES}"
            if index < CLASSES:
                folder.mkdir(parents=True)
            os.link(bases[index % len(bases)], folder / f"{index:07d}.jpg")


WRITERS = {"coco": (write_coco, 1), "masks": (write_masks, 10), "folders": (write_folders, 1)}


def write_data(
    out: Path, images: int, layouts: tuple[str, ...] = tuple(WRITERS)
) -> dict[str, Path]:
    """The `layouts` under `out` (written once per size: `out/<layout>/done` records it)."""
    roots = {}
    for layout in layouts:
        writer, divisor = WRITERS[layout]
        root, count = out / layout, max(images // divisor, 8)
        done = root / "done"
        if not (done.is_file() and done.read_text() == str(count)):
            if root.exists():
                subprocess.run(["rm", "-rf", str(root)], check=True)
            root.mkdir(parents=True)
            started = time.perf_counter()
            writer(root, count)
            done.write_text(str(count))
            print(f"wrote {root}: {count} images in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)  # fmt: skip
        roots[layout] = root
    return roots


# ---------------------------------------------------------------------------- memory


def _mib_of(pid: int, field: str) -> float:
    """A `/proc/<pid>` memory field in MiB (0 when the process is gone)."""
    source = "smaps_rollup" if field == "Pss" else "status"
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def memory_of_tree() -> float:
    """MiB of this process and its DataLoader workers: the sum of their PSS (shared pages
    counted once, shared among the processes that map them)."""
    pid = os.getpid()
    return sum(_mib_of(p, "Pss") for p in [pid, *_children(pid)])


def _reset_peak() -> float:
    """Reset this process's peak RSS (Linux `clear_refs` 5); return the RSS now, in MiB."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _mib_of(os.getpid(), "VmRSS")


# ---------------------------------------------------------------------------- what is measured


def _recipe(layout: str, root: Path):
    """(data config, batch size, workers) of the layout's recipe, on `root`; the U-Net
    recipe's planned size is fixed (256 px, the masks' size) and its cache off."""
    from seglab.engine.config import load_config

    recipe, overrides = {
        "coco": ("mask_rcnn_r18_fpn_shapes", []),
        "masks": ("unet_shapes", [f"data.image_size={MASK_SIZE}", "data.cache_mb=0"]),
        "folders": ("cnn_shapes", []),
    }[layout]
    config = load_config(recipe, [f"data.root={root}", *overrides])
    return config.data, config.train.batch_size, config.train.workers


TASKS = {"coco": "instance", "masks": "semantic", "folders": "classification"}


def open_ours(layout: str, root: Path, data=None):
    """The training split as `seglab train` builds it before its first step (`data`: the
    recipe's data config, read here when not given)."""
    from seglab.data import build_dataset

    data = _recipe(layout, root)[0] if data is None else data
    return build_dataset(data, "train", task=TASKS[layout], train=True)


class MaskFolderPeer:
    """The plain mask-folder dataset of segmentation tutorials: sorted image files, the mask
    of the same stem, decoded with Pillow on each item; then the given transforms."""

    def __init__(self, root: Path, transforms=None):
        self.images = sorted((root / "images").iterdir())
        self.masks = [root / "masks" / f"{path.stem}.png" for path in self.images]
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        import PIL.Image
        import torch
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        with PIL.Image.open(self.images[index]) as image:
            pixels = tv_tensors.Image(F.pil_to_tensor(image.convert("RGB")))
        with PIL.Image.open(self.masks[index]) as mask:
            classes = torch.from_numpy(np.asarray(mask).astype(np.int64))
        item = pixels, {"semantic_mask": tv_tensors.Mask(classes), "image_id": index}
        return self.transforms(*item) if self.transforms else item


def _empty_targets(image, target: dict):
    """torchvision's wrapper leaves boxes, labels and masks out of an image without
    objects; the transforms (as seglab's targets) have them, empty."""
    import torch
    from torchvision import tv_tensors

    if "labels" not in target:
        height, width = image.shape[-2:]
        boxes = tv_tensors.BoundingBoxes(
            torch.zeros(0, 4), format="XYXY", canvas_size=(height, width)
        )
        masks = tv_tensors.Mask(torch.zeros(0, height, width, dtype=torch.uint8))
        target = {
            **target,
            "labels": torch.zeros(0, dtype=torch.int64),
            "boxes": boxes,
            "masks": masks,
        }
    return image, target


def open_peer(layout: str, root: Path, transforms=None):
    """pycocotools' COCO (inside torchvision's CocoDetection), the plain mask folder, or
    torchvision's ImageFolder, with `transforms` (v2, after the image is a tensor)."""
    from torchvision.datasets import CocoDetection, ImageFolder, wrap_dataset_for_transforms_v2
    from torchvision.transforms import v2

    if layout == "masks":
        return MaskFolderPeer(root / "train", transforms)
    if layout == "folders":
        pipeline = v2.Compose([v2.ToImage(), transforms]) if transforms else None
        return ImageFolder(str(root / "train"), transform=pipeline)
    pipeline = v2.Compose([v2.ToImage(), _empty_targets, transforms]) if transforms else None
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = CocoDetection(str(root / "train"), str(root / "train.json"), transforms=pipeline)
    # masks decoded from the polygons by pycocotools, as seglab's; crowd regions included
    keys = ("boxes", "labels", "masks", "image_id")
    return wrap_dataset_for_transforms_v2(coco, target_keys=keys)


def measure_open(layout: str, root: Path, who: str) -> dict:
    """Seconds and peak memory (MiB above the memory before) of opening the train split."""
    import torchvision.datasets  # noqa: F401  (imports are not what is measured)
    from pycocotools.coco import COCO  # noqa: F401

    import seglab.data.datasets  # noqa: F401
    import seglab.engine.config  # noqa: F401

    data = _recipe(layout, root)[0]  # the recipe's YAML, read before: the peers have none
    before = _reset_peak()
    started = time.perf_counter()
    dataset = open_ours(layout, root, data) if who == "seglab" else open_peer(layout, root)
    seconds = time.perf_counter() - started
    peak = _mib_of(os.getpid(), "VmHWM") - before
    gc.collect()
    held = _mib_of(os.getpid(), "VmRSS") - before  # what the open dataset keeps
    return {"seconds": seconds, "peak_mib": peak, "held_mib": held, "images": len(dataset)}


def _collate(batch):
    """seglab's batches, as its trainer makes them (packed in a worker, `unpack`ed after)."""
    from seglab.data import packed_collate

    return packed_collate(batch)


def _peer_collate(layout: str):
    """What a user of the peer batches with: PyTorch's default (stacks the fixed-size
    images and labels, or masks) for the folders; torchvision's detection references'
    lists (`tuple(zip(*batch))`) for COCO, whose images and targets differ in size."""
    from torch.utils.data import default_collate

    return _lists if layout == "coco" else default_collate


def _lists(batch):
    return tuple(zip(*batch, strict=True))


def measure_loading(layout: str, root: Path, who: str, images: int, workers: int | None) -> dict:
    """Images per second of a DataLoader pass over `images` items of a fixed shuffle (the
    first two batches, which start the workers, not counted), and the memory of the
    process and its workers after those batches, at the half and at the end: what grows
    over the second half grows with the images read."""
    import torch

    from seglab.data.transforms import build_transforms

    torch.manual_seed(SEED)
    data, batch_size, recipe_workers = _recipe(layout, root)
    workers = recipe_workers if workers is None else workers
    if who == "seglab":
        dataset = open_ours(layout, root)
    else:
        dataset = open_peer(layout, root, build_transforms(data, task=TASKS[layout], train=True))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SEED))
    subset = order[: min(images, len(dataset))].tolist()
    # The objects made so far (the imported libraries' ~360k, the opened dataset) out of the
    # collector's walks, on both sides: a full collection walks them all (0.2-0.3 s), and
    # whether one falls inside a 5000-image pass depends on the process's past, not on the
    # loading (it moved the ratio by about 10%). Forked workers inherit this.
    gc.collect()
    gc.freeze()
    collate_fn = _collate if who == "seglab" else _peer_collate(layout)
    try:
        return _timed_pass(dataset, subset, batch_size, workers, collate_fn)
    finally:
        gc.unfreeze()


def _timed_pass(dataset, subset: list[int], batch_size: int, workers: int, collate_fn) -> dict:
    """The DataLoader pass of `measure_loading` over `subset`."""
    from torch.utils.data import DataLoader

    from seglab.data.packing import unpack

    loader = DataLoader(dataset, batch_size=batch_size, sampler=subset, num_workers=workers,
                        collate_fn=collate_fn)  # fmt: skip
    warm = 2 if len(loader) > 3 else 0  # batches that start the workers, not timed
    seen, counted_from, memory = 0, 0, {"start": memory_of_tree()}
    started = time.perf_counter()
    for batch_index, batch in enumerate(loader):
        batch_images, _ = unpack(batch)
        seen += len(batch_images)
        if batch_index + 1 == warm:
            memory["start"], started, counted_from = memory_of_tree(), time.perf_counter(), seen
        if batch_index + 1 == max(len(loader) // 2, warm):
            memory["half"] = memory_of_tree()
        if batch_index + 1 == len(loader):  # the workers still run: measured with them
            seconds, memory["end"] = time.perf_counter() - started, memory_of_tree()
    return {
        "images": len(subset), "images_per_s": (seen - counted_from) / seconds,
        "workers": workers, "batch_size": batch_size, "memory_start_mib": memory["start"],
        "memory_half_mib": memory.get("half", memory["start"]), "memory_end_mib": memory["end"],
        "growth_mib": memory["end"] - memory["start"],
        "second_half_growth_mib": memory["end"] - memory.get("half", memory["start"]),
    }  # fmt: skip


def _expected_mask(coco, annotation: dict) -> np.ndarray:
    """pycocotools' `annToMask`; for an object without segmentation, its box filled (the
    rule of seglab.data.coco, which pycocotools has not)."""
    if annotation["segmentation"]:
        return coco.annToMask(annotation)
    image = coco.imgs[annotation["image_id"]]
    mask = np.zeros((image["height"], image["width"]), dtype=np.uint8)
    x, y, w, h = annotation["bbox"]
    mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = 1
    return mask


def same_annotations(root: Path, split: str, limit: int) -> dict:
    """Whether seglab's COCO dataset gives, for up to `limit` images of `split`, what
    pycocotools gives: the annotations (id, category, crowd, box, polygons or RLE), and the
    loaded targets (float32 xyxy boxes, labels, and masks equal to `annToMask`)."""
    import torch
    from pycocotools.coco import COCO

    from seglab.data import DataConfig, build_dataset

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(root / f"{split}.json"))
    ours = build_dataset(DataConfig(root=str(root)), split, task="instance", train=False)
    label_of = {cid: k for k, cid in enumerate(ours.category_ids, 1)}
    fields = ("id", "category_id", "iscrowd", "bbox", "segmentation")
    mismatched, objects = [], 0
    for index in range(min(limit, len(ours))):
        image_id = ours.images[index]["id"]
        theirs = coco.imgToAnns[image_id]
        kept = ours._annotations[image_id]
        same = [{f: a[f] for f in fields} for a in kept] == [
            {f: a[f] for f in fields} for a in theirs
        ]
        _, target = ours[index]
        solid = [a for a in theirs if not a["iscrowd"]]
        xywh = torch.tensor([a["bbox"] for a in solid], dtype=torch.float32).reshape(-1, 4)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        masks = np.stack([_expected_mask(coco, a) for a in solid]) if solid else None
        same = same and torch.equal(target["boxes"].as_subclass(torch.Tensor), xyxy)
        same = same and target["labels"].tolist() == [label_of[a["category_id"]] for a in solid]
        same = same and (not solid or np.array_equal(target["masks"].numpy(), masks))
        objects += len(theirs)
        if not same:
            mismatched.append(image_id)
    return {"split": split, "images": min(limit, len(ours)), "objects": objects,
            "mismatched_image_ids": mismatched[:10], "equal": not mismatched}  # fmt: skip


# ---------------------------------------------------------------------------- the run


def in_fresh_process(task: dict) -> dict:
    """Run one measurement in a new Python process (its memory is its own)."""
    command = [sys.executable, __file__, "--child", json.dumps(task)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{task}: failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(task: dict) -> dict:
    root = Path(task["root"])
    if task["what"] == "open":
        return measure_open(task["layout"], root, task["who"])
    return measure_loading(task["layout"], root, task["who"], task["images"], task["workers"])


PEERS = {
    "coco": "pycocotools COCO() / torchvision CocoDetection",
    "masks": "a plain image + mask folder Dataset (Pillow)",
    "folders": "torchvision ImageFolder",
}


def run(roots: dict[str, Path], load_images: int, workers: int | None, repeats: int = 1) -> dict:
    """Every measurement, ours and the peer's alternately, each in a fresh process; the
    loading pass `repeats` times per side (the order alternating), its ratio the median of
    the repetitions' ratios (one pass's ratio moves by about 0.1 with two workers)."""
    results: dict = {"open": {}, "loading": {}}
    for layout, root in roots.items():
        task = {"root": str(root), "layout": layout}
        opened = {who: in_fresh_process({**task, "what": "open", "who": who})
                  for who in ("seglab", "peer")}  # fmt: skip
        results["open"][layout] = {
            **opened, "peer_name": PEERS[layout],
            "time_ratio": opened["seglab"]["seconds"] / opened["peer"]["seconds"],
            "memory_ratio": opened["seglab"]["peak_mib"] / max(opened["peer"]["peak_mib"], 1e-9),
        }  # fmt: skip
        loading_task = {**task, "what": "load", "images": load_images, "workers": workers}
        passes: dict[str, list[dict]] = {"seglab": [], "peer": []}
        for repeat in range(repeats):
            for who in ("seglab", "peer")[:: 1 if repeat % 2 == 0 else -1]:
                passes[who].append(in_fresh_process({**loading_task, "who": who}))
        ratios = [ours["images_per_s"] / peer["images_per_s"]
                  for ours, peer in zip(passes["seglab"], passes["peer"], strict=True)]  # fmt: skip
        middle = sorted(range(repeats), key=ratios.__getitem__)[(repeats - 1) // 2]
        results["loading"][layout] = {
            # the median repetition (the lower of two middle ones) makes the table's row
            **{who: rows[middle] for who, rows in passes.items()},
            "peer_name": PEERS[layout], "speed_ratio": ratios[middle], "speed_ratios": ratios,
        }  # fmt: skip
    return results


def _memory(loaded: dict) -> str:
    start, half, end = (loaded[f"memory_{at}_mib"] for at in ("start", "half", "end"))
    return f"{start:.0f} -> {half:.0f} -> {end:.0f}"


def table(results: dict) -> str:
    """The markdown table of `results`."""
    lines = [
        "| data | measure | seglab | peer | seglab / peer |",
        "|---|---|---|---|---|",
    ]
    for layout, opened in results["open"].items():
        ours, peer = opened["seglab"], opened["peer"]
        name = f"{layout} ({ours['images']} train images; peer: {opened['peer_name']})"
        lines.append(f"| {name} | open: seconds | {ours['seconds']:.2f} | "
                     f"{peer['seconds']:.2f} | {opened['time_ratio']:.2f} |")  # fmt: skip
        lines.append(f"| | open: peak MiB | {ours['peak_mib']:.0f} | {peer['peak_mib']:.0f} | "
                     f"{opened['memory_ratio']:.2f} |")  # fmt: skip
        lines.append(f"| | open: MiB held by the dataset | {ours['held_mib']:.0f} | "
                     f"{peer['held_mib']:.0f} | |")  # fmt: skip
        loaded = results["loading"][layout]
        ours, peer = loaded["seglab"], loaded["peer"]
        how = f"{ours['images']} images, batch {ours['batch_size']}, {ours['workers']} workers"
        ratio = f"{loaded['speed_ratio']:.2f}"
        if len(loaded.get("speed_ratios", [])) > 1:
            how += f", median of {len(loaded['speed_ratios'])} passes"
            ratio += f" ({', '.join(f'{r:.2f}' for r in loaded['speed_ratios'])})"
        lines.append(f"| | loading ({how}): images/s | {ours['images_per_s']:.1f} | "
                     f"{peer['images_per_s']:.1f} | {ratio} |")  # fmt: skip
        lines.append(f"| | loading: MiB (start -> half -> end) | {_memory(ours)} | "
                     f"{_memory(peer)} | |")  # fmt: skip
    same = results.get("same_annotations")
    if same is None:  # COCO not measured
        return "\n".join(lines)
    lines.append(f"\nseglab's annotations and targets of {same['images']} {same['split']} images "
                 f"({same['objects']} objects) equal pycocotools': {same['equal']}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="COCO train images (default "
                        "200; COCO's scale: 100000); masks: a tenth, folders: as many")  # fmt: skip
    parser.add_argument("--load-images", type=int, default=64, help="images per loading pass")
    parser.add_argument("--workers", type=int, default=None, help="default: each recipe's")
    parser.add_argument("--repeats", type=int, default=1, help="loading passes per side; the "
                        "ratio is their median (with workers one pass moves by ~0.1)")  # fmt: skip
    parser.add_argument("--layouts", default=",".join(WRITERS), help="comma-separated, of "
                        f"{', '.join(WRITERS)} (default: all)")  # fmt: skip
    parser.add_argument("--out", default="/work/scratch/data_scale", help="data and table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    layouts = tuple(args.layouts.split(","))
    if not set(layouts) <= set(WRITERS) or args.repeats < 1:
        parser.error(f"--layouts: some of {', '.join(WRITERS)}; --repeats: at least 1")
    out = Path(args.out)
    roots = write_data(out / str(args.images), args.images, layouts)
    results = run(roots, args.load_images, args.workers, args.repeats)
    if "coco" in roots:
        split = "train" if args.images <= 5000 else "val"
        results["same_annotations"] = same_annotations(roots["coco"], split, limit=5000)
    results["machine"] = {"processor": platform.processor() or platform.machine(),
                          "cores": len(os.sched_getaffinity(0)),
                          "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                          "command": " ".join(sys.argv)}  # fmt: skip
    markdown = table(results)
    (out / "data_scale.md").write_text(markdown + "\n")
    (out / "data_scale.json").write_text(json.dumps(results, indent=1))
    print(markdown)


if __name__ == "__main__":
    main()
