"""Datasets, transforms and the synthetic shapes generator.

`build_dataset(cfg, split, task=..., train=...)` is the one entry point: it picks the
dataset class from `cfg.layout` and the augmentation pipeline from the task.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from seglab.data.cache import MemoryCache
from seglab.data.coco import CocoDataset
from seglab.data.config import DataConfig
from seglab.data.image_folders import ImageFolderDataset
from seglab.data.mask_folders import MaskFolderDataset
from seglab.data.transforms import build_transforms
from seglab.errors import UserError

TASKS = ("classification", "detection", "instance", "semantic")
# layout -> tasks it can serve
LAYOUT_TASKS = {
    "coco": ("detection", "instance", "semantic"),
    "masks": ("semantic",),
    "folders": ("classification",),
}


def build_dataset(cfg: DataConfig, split: str, *, task: str, train: bool) -> Dataset:
    """The `split` of the data under `cfg.root`, with train or eval transforms for `task`.

    Returns a Dataset of `(image, target)` (see docs/conventions.md) with `.class_names`,
    `.task` and `.in_channels`; COCO datasets also have `.coco_gt` and `.category_ids`.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    root = Path(cfg.root)
    if cfg.layout not in LAYOUT_TASKS:
        raise UserError(
            f"{root}: unknown data.layout {cfg.layout!r}; choose one of {', '.join(LAYOUT_TASKS)}"
        )
    if task not in LAYOUT_TASKS[cfg.layout]:
        raise UserError(
            f"{root}: layout {cfg.layout!r} has no data for a {task} model; use "
            f"{' or '.join(k for k, v in LAYOUT_TASKS.items() if task in v)}"
        )
    if not root.is_dir():
        raise UserError(f"{root}: data root not found")
    if cfg.cache_mb < 0:
        raise UserError(f"data.cache_mb must be >= 0 (0: no cache), not {cfg.cache_mb}")
    transforms = build_transforms(cfg, task=task, train=train)
    if cfg.layout == "coco":
        dataset = CocoDataset(root, split, task=task, transforms=transforms)
    elif cfg.layout == "masks":
        dataset = MaskFolderDataset(root, split, transforms=transforms)
    else:
        dataset = ImageFolderDataset(root, split, transforms=transforms)
    if cfg.cache_mb:
        dataset.cache = MemoryCache(int(cfg.cache_mb * 2**20))
    return dataset


def collate(batch: list[tuple]) -> tuple[list, list[dict]]:
    """`[(image, target), ...]` -> `([images], [targets])`; models stack images themselves."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)


__all__ = ["DataConfig", "build_dataset", "collate", "LAYOUT_TASKS", "TASKS"]
