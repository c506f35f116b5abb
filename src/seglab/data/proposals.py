"""Selective-search proposals, computed once per image and cached beside the dataset.

R-CNN and Fast R-CNN take their regions from selective search (R-CNN §2.1), which costs
a large fraction of a second per image on a CPU, far more than a training step can spend on
it. `load_proposals` returns the proposals of the images it is asked for, computing those
that are not cached yet (in parallel over images, with a progress bar), and keeps them in
`ROOT/proposals/<split>-<settings key>.npz`, one file per split and settings.

The cache file (`np.load`-able, no pickle) holds
- `settings`: the `ProposalSettings` (`seglab.ops.selective_search`) as JSON (a file whose
  settings differ is not used);
- `image_ids` (M,) int64 and `counts` (M,) int64: the images and how many boxes each has;
- `boxes` (sum of counts, 4) float32 xyxy in the original image's pixels, image after image;
- `digests` (M,) str: a hash of each image file's bytes when its boxes were computed, and
  `file_sizes`, `mtimes_ns`, `ctimes_ns` (M,) int64: the file's size, modification time and
  change time then.
An entry stays valid while its image file has the same size, modification time and change
time, or, when a time changed (a copied or touched dataset), the same bytes; otherwise it is
computed again. The change time is the kernel's, set by every write and never put back (a
tool that restores the modification time, or a clock too coarse to tell two writes apart,
leaves a rewritten file's modification time as it was). The
file is always written whole (temporary file, then rename), also every minute of a long
computation, so that an interrupted `seglab proposals` resumes where it was. Processes that
fill the same cache at once never corrupt it, but the last to write keeps only the entries
it knew of: precompute with `seglab proposals` before a multi-process (DDP) run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from seglab.data.images import channels_for_modes, load_image, read_header
from seglab.errors import SeglabWarning, UserError, read_json
from seglab.files import atomic_write
from seglab.ops.selective_search import ProposalSettings, selective_search_array
from seglab.progress import progress as progress_display
from seglab.structures.boxes import box_iou, xywh_to_xyxy

CACHE_FORMAT = 1
_FLUSH_EVERY_S = 60.0  # a long computation writes what it has this often


@dataclass(frozen=True)
class SplitFiles:
    """The images of a COCO split and their ground truth.

    Attributes:
        paths: image id -> image file, in the JSON's order.
        gt_boxes: image id -> (G, 4) float32 xyxy boxes of its non-crowd annotations.
    """

    paths: dict[int, Path]
    gt_boxes: dict[int, np.ndarray]


@dataclass(frozen=True)
class CacheUpdate:
    """What `update_cache` did: the proposals, how many images it computed, where it keeps them."""

    proposals: dict[int, np.ndarray]
    computed: int
    cache_path: Path


@dataclass
class _Entry:
    """One image's cached boxes and the fingerprint of the file they were computed from."""

    boxes: np.ndarray  # (N, 4) float32 xyxy, original image frame
    digest: str
    file_size: int
    mtime_ns: int
    ctime_ns: int = 0  # 0: not recorded (an older cache file): the bytes are checked once


def cache_path(root: str | Path, split: str, settings: ProposalSettings) -> Path:
    """`ROOT/proposals/<split>-<settings key>.npz`."""
    return Path(root) / "proposals" / f"{split}-{settings.key}.npz"


def read_split(root: str | Path, split: str) -> SplitFiles:
    """Image files and ground-truth boxes of the COCO split `ROOT/<split>.json`."""
    root = Path(root)
    json_path = root / f"{split}.json"
    if not json_path.is_file():
        splits = ", ".join(sorted(p.stem for p in root.glob("*.json"))) or "none"
        raise UserError(f"{json_path}: not found: no split {split!r} here (splits: {splits})")
    coco = read_json(json_path, "COCO annotation file")
    try:
        paths = {int(info["id"]): root / split / info["file_name"] for info in coco["images"]}
        gt_boxes = {image_id: [] for image_id in paths}
        for annotation in coco.get("annotations", []):
            if not annotation.get("iscrowd", 0):
                gt_boxes[annotation["image_id"]].append(annotation["bbox"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{json_path}: not a valid COCO file ({error!r})") from None
    if not paths:
        raise UserError(f"{json_path}: the split has no images")
    return SplitFiles(paths, {k: _xywh_to_xyxy(v) for k, v in gt_boxes.items()})


def _xywh_to_xyxy(boxes: list) -> np.ndarray:
    """COCO `bbox` lists [x, y, w, h] -> (N, 4) float32 xyxy."""
    return xywh_to_xyxy(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)).numpy()


def load_proposals(
    root: str | Path,
    split: str,
    image_ids: Iterable[int],
    settings: ProposalSettings,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> dict[int, np.ndarray]:
    """The selective-search proposals of some images of a COCO split, cached.

    Args:
        root: the dataset folder (`ROOT/<split>.json`, images in `ROOT/<split>/`).
        split: `train`, `val`, ...
        image_ids: the images wanted (COCO image ids of the split).
        settings: how proposals are computed.
        workers: processes computing the missing ones (None: one per CPU core; 0 or 1:
            in this process).
        progress: show a progress bar while computing.

    Returns:
        image id -> (N, 4) float32 xyxy boxes in the original image's pixels, N <=
        settings.max_proposals, in selective search's rank order.
    """
    return update_cache(
        root, split, image_ids, settings, workers=workers, progress=progress
    ).proposals


def update_cache(
    root: str | Path,
    split: str,
    image_ids: Iterable[int] | None,
    settings: ProposalSettings,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> CacheUpdate:
    """`load_proposals` (every image of the split when `image_ids` is None), and what it did."""
    paths = _select(root, split, image_ids)
    path = cache_path(root, split, settings)
    entries = _read_cache(path, settings)
    missing, refreshed = _check_entries(entries, paths)
    write = partial(_write_cache, path, settings, entries)
    if missing:
        try:
            _compute(missing, settings, entries, workers, progress, flush=write)
        finally:
            write()  # what was computed is kept, also when interrupted
    elif refreshed:
        write()
    proposals = {image_id: entries[image_id].boxes for image_id in paths}
    return CacheUpdate(proposals, len(missing), path)


def _select(root: str | Path, split: str, image_ids: Iterable[int] | None) -> dict[int, Path]:
    paths = read_split(root, split).paths
    if image_ids is None:
        return paths
    selected = {}
    for image_id in image_ids:
        if image_id not in paths:
            raise UserError(f"{Path(root) / (split + '.json')}: no image with id {image_id}")
        selected[image_id] = paths[image_id]
    return selected


def _check_entries(
    entries: dict[int, _Entry], paths: dict[int, Path]
) -> tuple[dict[int, Path], bool]:
    """The images whose entry is missing or stale, and whether a valid one got a new stat."""
    missing, refreshed = {}, False
    for image_id, path in paths.items():
        if not path.is_file():
            raise UserError(f"{path}: image file not found (image {image_id} of the split)")
        entry, stat = entries.get(image_id), path.stat()
        if entry is None or stat.st_size != entry.file_size:
            missing[image_id] = path
        elif (stat.st_mtime_ns, stat.st_ctime_ns) != (entry.mtime_ns, entry.ctime_ns):
            if _digest(path) == entry.digest:  # same bytes (a copy, a touch): still valid
                entry.mtime_ns, entry.ctime_ns = stat.st_mtime_ns, stat.st_ctime_ns
                refreshed = True
            else:
                missing[image_id] = path
    return missing, refreshed


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def _compute(
    missing: dict[int, Path],
    settings: ProposalSettings,
    entries: dict[int, _Entry],
    workers: int | None,
    progress: bool,
    *,
    flush: Callable[[], None],
) -> None:
    """Compute the missing entries into `entries`, calling `flush` every minute or so."""
    bar = progress_display(
        desc="selective search", total=len(missing), unit="image", enabled=progress
    )
    last_flush = time.monotonic()
    with bar:
        for image_id, entry in _propose_all(missing, settings, workers):
            entries[image_id] = entry
            bar.update()
            if time.monotonic() - last_flush > _FLUSH_EVERY_S:
                flush()
                last_flush = time.monotonic()


def _propose_all(
    missing: dict[int, Path], settings: ProposalSettings, workers: int | None
) -> Iterator[tuple[int, _Entry]]:
    """(image id, entry) for each missing image, in order, from `workers` processes."""
    work = partial(_propose_file, settings=settings)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(missing) <= 1:
        yield from zip(missing, map(work, missing.values()), strict=True)
        return
    # fork: the workers start at once with the modules already imported (a fresh
    # interpreter would spend seconds importing torch); they run only OpenCV and numpy.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ProcessPoolExecutor(min(workers, len(missing)), mp_context=context)
    try:
        yield from zip(missing, pool.map(work, missing.values()), strict=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: do not run the queue


def _propose_file(path: Path, *, settings: ProposalSettings) -> _Entry:
    """Selective search on one image file (run in a worker process)."""
    try:
        stat = path.stat()  # before reading: a later change gives a new stat, so a new check
        digest = _digest(path)
    except FileNotFoundError:
        raise UserError(f"{path}: image file removed while proposals were computed") from None
    channels = channels_for_modes([read_header(path)[0]])
    image = load_image(path, channels).permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    boxes = selective_search_array(image, **settings.search_arguments())
    return _Entry(boxes, digest, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _read_cache(path: Path, settings: ProposalSettings) -> dict[int, _Entry]:
    """The entries of the cache file at `path`; none if absent, unreadable or of other settings."""
    if not path.is_file():
        return {}
    try:
        with np.load(path) as archive:
            if int(archive["format"]) != CACHE_FORMAT or json.loads(
                str(archive["settings"])
            ) != dataclasses.asdict(settings):
                return {}
            counts = archive["counts"]
            # (sum N_i, 4) -> per image (N_i, 4)
            boxes = np.split(archive["boxes"], np.cumsum(counts)[:-1]) if len(counts) else []
            ctimes = (  # absent from files written before change times were kept
                archive["ctimes_ns"].tolist() if "ctimes_ns" in archive.files else [0] * len(counts)
            )
            columns = zip(
                archive["image_ids"].tolist(),
                boxes,
                archive["digests"].tolist(),
                archive["file_sizes"].tolist(),
                archive["mtimes_ns"].tolist(),
                ctimes,
                strict=True,
            )
            return {image_id: _Entry(*fields) for image_id, *fields in columns}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        message = f"{path}: unreadable proposal cache ({error!r}); computing it again"
        warnings.warn(message, SeglabWarning, stacklevel=3)
        return {}


def _write_cache(path: Path, settings: ProposalSettings, entries: dict[int, _Entry]) -> None:
    """Write all `entries` to `path` whole (temporary file in the same folder, then rename)."""
    ids = list(entries)
    arrays = {
        "format": np.array(CACHE_FORMAT),
        "settings": np.array(json.dumps(dataclasses.asdict(settings))),
        "image_ids": np.array(ids, dtype=np.int64),
        "counts": np.array([len(entries[i].boxes) for i in ids], dtype=np.int64),
        "boxes": np.concatenate(
            [entries[i].boxes for i in ids] or [np.zeros((0, 4), np.float32)]
        ).astype(np.float32),
        "digests": np.array([entries[i].digest for i in ids], dtype=str),
        "file_sizes": np.array([entries[i].file_size for i in ids], dtype=np.int64),
        "mtimes_ns": np.array([entries[i].mtime_ns for i in ids], dtype=np.int64),
        "ctimes_ns": np.array([entries[i].ctime_ns for i in ids], dtype=np.int64),
    }

    def save(temporary: str) -> None:
        with open(temporary, "wb") as file:  # a file object: np.savez would add ".npz"
            np.savez_compressed(file, **arrays)

    atomic_write(path, save)


def proposal_recall(
    proposals: Mapping[int, np.ndarray],
    gt_boxes: Mapping[int, np.ndarray],
    iou: Iterable[float] = (0.5, 0.7),
) -> dict[float, float]:
    """Fraction of ground-truth boxes that some proposal of their image overlaps enough.

    This bounds what a detector that only scores these proposals can find (R-CNN's box
    regression moves them a little). Every ground-truth box counts once, over all images.

    Args:
        proposals: image id -> (N, 4) xyxy proposals; every image of `gt_boxes` must be here.
        gt_boxes: image id -> (G, 4) xyxy ground-truth boxes, same frame.
        iou: the IoU thresholds (a box is found when its best IoU is >= the threshold).

    Returns:
        threshold -> recall in [0, 1]; -1 for every threshold when there is no ground
        truth (undefined, as COCO's AP; docs/conventions.md).
    """
    absent = [image_id for image_id in gt_boxes if image_id not in proposals]
    if absent:
        raise ValueError(f"no proposals for images {absent[:5]}")
    best = [_best_iou(proposals[image_id], boxes) for image_id, boxes in gt_boxes.items()]
    best_iou = np.concatenate(best) if best else np.zeros(0)
    if best_iou.size == 0:
        return {float(t): -1.0 for t in iou}
    return {float(t): float((best_iou >= t).mean()) for t in iou}


def _best_iou(proposals: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """(G,) the best IoU of each ground-truth box with any proposal (0 without proposals)."""
    if len(gt_boxes) == 0 or len(proposals) == 0:
        return np.zeros(len(gt_boxes))
    ious = box_iou(
        torch.as_tensor(gt_boxes, dtype=torch.float32),
        torch.as_tensor(proposals, dtype=torch.float32),
    )
    return ious.max(dim=1).values.numpy()
