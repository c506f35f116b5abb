"""Building datasets: `build_dataset`, `build_training_datasets`, and the checks and
batching around them (`seglab.data` re-exports them; see its docstring).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.utils.data import Dataset, get_worker_info

from seglab.data.cache import MemoryCache
from seglab.data.coco import CocoDataset
from seglab.data.config import AUTO, LAYOUT_TASKS, TASKS, DataConfig, check_intensity
from seglab.data.findings import Findings
from seglab.data.fingerprint import ScalePlan, measure_fingerprint, plan_scale
from seglab.data.image_folders import ImageFolderDataset
from seglab.data.intensity import measure_intensity_range
from seglab.data.mask_folders import MaskFolderDataset
from seglab.data.packing import PackedBatch, pack
from seglab.data.proposals import load_proposals
from seglab.data.splits import (
    check_locations,
    coco_split,
    data_name,
    given_files,
    split_exists,
    split_place,
)
from seglab.data.transforms import build_transforms
from seglab.errors import UserError
from seglab.ops.selective_search import ProposalSettings


def build_dataset(
    cfg: DataConfig,
    split: str,
    *,
    task: str,
    train: bool,
    findings: Findings | None = None,
    proposals: ProposalSettings | None = None,
    every_file: bool | None = None,
) -> Dataset:
    """The `split` of the data (`seglab.data.splits` says where it is), with train or eval
    transforms for `task`, read with `cfg.intensity_range` when set.

    Returns a Dataset of `(image, target)` (see docs/conventions.md) with `.class_names`,
    `.class_counts`, `.task`, `.in_channels` and `.image_path(index)`; COCO datasets also
    have `.coco_gt` and `.category_ids`. Without `findings`, the first problem that stops
    training is raised as a UserError and handled ones are logged as one note line; with
    it, every problem is added there and the items with stopping problems are left out.
    COCO data, mask and image folders are opened from their JSON or listings and a seeded
    sample of their files (`seglab.data.coco`, `seglab.data.mask_folders`,
    `seglab.data.image_folders`); with `every_file`
    (default: when `findings` is given, as `seglab data check` gives it) every file is
    read up front.
    With `proposals` (R-CNN, Fast R-CNN), each target also has `proposals`: the image's
    selective-search boxes, from the cache beside the data (computed when missing). An
    `image_size: auto` (semantic) is planned here (`plan_image_size`), and the plan is the
    dataset's `.scale_plan` (None when the size was given).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    where = data_name(cfg)
    if cfg.layout not in LAYOUT_TASKS:
        raise UserError(
            f"{where}: unknown data.layout {cfg.layout!r}; choose one of {', '.join(LAYOUT_TASKS)}"
        )
    if task not in LAYOUT_TASKS[cfg.layout]:
        raise UserError(
            f"{where}: layout {cfg.layout!r} has no data for a {task} model; use "
            f"{' or '.join(k for k, v in LAYOUT_TASKS.items() if task in v)}"
        )
    _check_options(cfg)
    scale_plan = None
    if cfg.image_size == AUTO and task == "semantic":
        scale_plan = plan_image_size(cfg)
        cfg = dataclasses.replace(cfg, image_size=scale_plan.image_size)
    root = Path(cfg.root) if cfg.root is not None else None
    if given_files(cfg, split) is None and root is not None and not root.is_dir():
        raise UserError(f"{root}: data root not found")
    transforms = build_transforms(cfg, task=task, train=train)
    common = {"transforms": transforms, "channels": cfg.channels, "findings": findings}
    sampled = {"every_file": findings is not None if every_file is None else every_file}
    if cfg.layout == "coco":
        files = coco_split(cfg, split)
        dataset = CocoDataset(
            files.json_path, files.image_dir, split, task=task, keep_coco_gt=not train,
            **common, **sampled,
        )  # fmt: skip
    elif cfg.layout == "masks":
        dataset = MaskFolderDataset(root, split, mask_values=cfg.mask_values, **common, **sampled)
    else:
        dataset = ImageFolderDataset(root, split, **common, **sampled)
    dataset.intensity = cfg.intensity_range
    dataset.scale_plan = scale_plan
    if cfg.cache_mb:
        dataset.cache = MemoryCache(int(cfg.cache_mb * 2**20))
    if proposals is not None:
        if given_files(cfg, split) is not None:
            raise UserError(
                f"data.{split}_json: selective-search proposals are cached under data.root "
                f"(ROOT/{split}.json, ROOT/{split}/); give data.root for this model"
            )
        image_ids = [info["id"] for info in dataset.images]
        dataset.proposals = load_proposals(root, split, image_ids, proposals)
    return dataset


def plan_image_size(cfg: DataConfig) -> ScalePlan:
    """`data.image_size: auto`: the working scale planned from a fingerprint of the train
    split's masks (`seglab.data.fingerprint`)."""
    masks = dataclasses.replace(cfg, image_size=1, weight_map=False, elastic=False, cache_mb=0)
    train_set = build_dataset(
        masks, "train", task="semantic", train=False, findings=Findings(), every_file=False
    )  # its problems are the train split's own, said when that is built
    return plan_scale(measure_fingerprint(train_set))


def _check_options(cfg: DataConfig) -> None:
    """The `data:` keys that the dataset classes read (the transforms check their own)."""
    if cfg.cache_mb < 0:
        raise UserError(f"data.cache_mb must be >= 0 (0: no cache), not {cfg.cache_mb}")
    if cfg.channels not in (None, 1, 3):
        raise UserError(f"data.channels must be 1, 3 or null (from the images), not {cfg.channels}")
    if cfg.mask_values is not None and cfg.layout != "masks":
        raise UserError(f"data.mask_values: only for the masks layout, not {cfg.layout!r}")
    check_locations(cfg)
    check_intensity(cfg)


def build_training_datasets(
    cfg: DataConfig, *, task: str, in_channels: int, proposals: ProposalSettings | None = None
) -> tuple[Dataset, Dataset | None]:
    """The train and val datasets of a run, checked before its first step: every file as in
    `build_dataset`, the images' channels against the model's `in_channels`, and that the
    train split has something to learn. `proposals`: as in `build_dataset`.

    The val dataset is None when the data has no val split (`seglab.data.splits`). With
    `cfg.intensity_percentiles` and no `cfg.intensity_range`, the range is measured on the
    train split and set on both datasets (`.intensity`), for the run to record it. An
    `image_size: auto` (semantic) is planned once, with the train split, and used for both
    (the train dataset's `.scale_plan`).
    """
    train_set = build_dataset(cfg, "train", task=task, train=True, proposals=proposals)
    if train_set.scale_plan is not None:
        cfg = dataclasses.replace(cfg, image_size=train_set.scale_plan.image_size)
    val_set = None
    if split_exists(cfg, "val"):
        val_set = build_dataset(cfg, "val", task=task, train=False, proposals=proposals)
    datasets = {"train": train_set, "val": val_set}
    for split, dataset in datasets.items():
        if dataset is not None:
            _check_channels(cfg, split_place(cfg, split), dataset.in_channels, in_channels)
    if problem := learning_problem(train_set, split_place(cfg, "train")):
        raise UserError(problem)
    if val_set is not None:
        if problem := classes_problem(train_set, "val", val_set, data_name(cfg)):
            raise UserError(problem)
    if cfg.intensity_percentiles is not None and cfg.intensity_range is None:
        measured = measure_intensity_range(train_set, cfg.intensity_percentiles, seed=0)
        for dataset in datasets.values():
            if dataset is not None:
                dataset.intensity = measured
    return train_set, val_set


def _check_channels(cfg: DataConfig, where: Path, loaded: int, in_channels: int) -> None:
    if loaded == in_channels:
        return
    if cfg.channels is not None:
        raise UserError(
            f"data.channels={cfg.channels} but model.in_channels={in_channels}: "
            "the model takes the channels the images are loaded with; make them "
            "equal"
        )
    if loaded == 1:
        raise UserError(
            f"{where}: every image is grayscale (1 channel) but the model takes "
            f"{in_channels} (model.in_channels); set model.in_channels=1, or "
            f"data.channels={in_channels} to load the images with {in_channels} "
            "equal channels"
        )
    raise UserError(
        f"{where}: the images are colour (3 channels) but model.in_channels="
        f"{in_channels}; set model.in_channels=3, or data.channels={in_channels} to "
        "load them as grayscale (luma)"
    )


def learning_problem(dataset: Dataset, where: Path) -> str | None:
    """Why training on `dataset` (a train split, at `where`) would learn nothing, or None."""
    counts = dataset.class_counts
    if dataset.task == "classification":
        present = sum(1 for count in counts if count)
        if present < 2:
            return (
                f"{where}: images of {present} class only; a classifier learns nothing "
                "from fewer than 2 classes (one folder per class)"
            )
        return None
    if sum(counts):
        return None
    if isinstance(dataset, MaskFolderDataset):
        return (
            f"{where}: no mask holds a class pixel (0 is background, 255 ignored), so "
            "there is nothing to learn; for binary 0/255 masks set data.mask_values: "
            "[0, 255], for other values list them in data.mask_values"
        )
    return f"{where}: no object annotations in the train split, so there is nothing to learn"


def classes_problem(
    train_set: Dataset, split: str, dataset: Dataset, where: str | Path
) -> str | None:
    """Why `split` (`dataset`) cannot be scored by a model trained on `train_set`, or None
    (`where` names the data in the message)."""
    if list(dataset.class_names) == list(train_set.class_names):
        return None
    return (
        f"{where}: the {split} split's classes {list(dataset.class_names)} differ from "
        f"train's {list(train_set.class_names)}; give every split the same classes"
    )


def collate(batch: list[tuple]) -> tuple[list, list[dict]]:
    """`[(image, target), ...]` -> `([images], [targets])`; models stack images themselves."""
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)


def packed_collate(batch: list[tuple]) -> tuple[list, list[dict]] | PackedBatch:
    """`collate`, and in a DataLoader worker the batch packed into one block per dtype for
    the crossing to the main process (`seglab.data.packing`; the trainer's loader: it
    `unpack`s what it receives)."""
    collated = collate(batch)
    return pack(collated) if get_worker_info() is not None else collated


def batch_to_device(
    batch: tuple[list, list[dict]], device: str | torch.device
) -> tuple[list, list[dict]]:
    """A collated batch with its images and every tensor of its targets on `device`.

    The copies are `non_blocking`: from the pinned memory of a training loader, the copy
    overlaps the computation; elsewhere it is an ordinary copy (none on the CPU).
    """
    images, targets = batch
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [
        {
            key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in target.items()
        }
        for target in targets
    ]
    return images, targets
