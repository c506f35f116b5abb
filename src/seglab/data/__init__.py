"""Datasets, transforms and the synthetic shapes generator.

`build_dataset(cfg, split, task=..., train=...)` is the one entry point: it picks the
dataset class from `cfg.layout` and the augmentation pipeline from the task. Building a
dataset checks its files (`seglab.data.findings`); `build_training_datasets` adds the checks
that need the model (channels) or the whole train split (something to learn).

The builders live in `datasets.py` and are imported on first use (PEP 562 module
`__getattr__`): `seglab.data.config`, the `data:` section and its checks, imports no torch,
so that a config mistake is reported before PyTorch is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seglab.data.config import AUTO, LAYOUT_TASKS, TASKS, DataConfig

# names of `seglab.data.datasets` (and one of `findings`) read through `seglab.data`
_LAZY = {
    "batch_to_device": "seglab.data.datasets",
    "build_dataset": "seglab.data.datasets",
    "build_training_datasets": "seglab.data.datasets",
    "classes_problem": "seglab.data.datasets",
    "collate": "seglab.data.datasets",
    "packed_collate": "seglab.data.datasets",
    "learning_problem": "seglab.data.datasets",
    "plan_image_size": "seglab.data.datasets",
    "Findings": "seglab.data.findings",
}

if TYPE_CHECKING:
    from seglab.data.datasets import (
        batch_to_device,
        build_dataset,
        build_training_datasets,
        classes_problem,
        collate,
        learning_problem,
        packed_collate,
        plan_image_size,
    )
    from seglab.data.findings import Findings


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'seglab.data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later reads skip this function
    return value


__all__ = [
    "AUTO",
    "DataConfig",
    "Findings",
    "batch_to_device",
    "build_dataset",
    "build_training_datasets",
    "classes_problem",
    "collate",
    "packed_collate",
    "learning_problem",
    "LAYOUT_TASKS",
    "plan_image_size",
    "TASKS",
]
