"""A run's config completed from its data: what `auto` and the train split decide.

A recipe may leave to the data what only the data knows: `model.num_classes: auto`,
`data.image_size: auto` (U-Net: a scale planned from the masks, `seglab.data.fingerprint`),
`data.intensity_percentiles` (a range measured on the train split), and a
`train.batch_size` larger than the split. `resolve_config` writes each answer into the
config, once, after the datasets are built and before the model is: the config a run
records in `config.yaml` and in its model file is the one it trained with, so that
evaluation, predict and a resume read the data alike. (The budget plan, `planned_steps`,
is the run's own record, made by the trainer: `seglab.engine.budget`.)
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from seglab.data.splits import data_name
from seglab.engine.config import Config
from seglab.errors import SeglabWarning, UserError
from seglab.models.specs import model_task


def resolve_config(config: Config, train_set: Any) -> Config:
    """The config with what the train split decides written in.

    Args:
        config: the recipe with the command line's overrides.
        train_set: the run's train dataset (`seglab.data.build_training_datasets`): its
            `intensity` (the range it is read with, or None), `scale_plan` (the planned
            image size of `data.image_size: auto`, or None), `class_names` and length.

    Returns:
        `config` with `data.intensity_range`, `data.image_size`, `model.num_classes` and
        `train.batch_size` resolved; UserError when `model.num_classes` disagrees with the
        data, a warning when the batch is cut to the split's size.
    """
    data = dataclasses.replace(config.data, intensity_range=train_set.intensity)
    if train_set.scale_plan is not None:
        data = dataclasses.replace(data, image_size=train_set.scale_plan.image_size)
    config = dataclasses.replace(config, data=data)
    config = resolve_num_classes(config, list(train_set.class_names))
    return fit_batch_size(config, len(train_set))


def resolve_num_classes(config: Config, class_names: list[str]) -> Config:
    """`num_classes: auto` -> K for a classifier, K + 1 (background) for the other tasks."""
    expected = len(class_names) + (model_task(config.model.name) != "classification")
    if config.model.num_classes == "auto":
        model = dataclasses.replace(config.model, num_classes=expected)
        return dataclasses.replace(config, model=model)
    if config.model.num_classes != expected:
        raise UserError(
            f"{data_name(config.data)}: the data has {len(class_names)} classes, so "
            f"model.num_classes must be {expected}, not {config.model.num_classes}; "
            f"use num_classes: auto"
        )
    return config


def fit_batch_size(config: Config, train_images: int) -> Config:
    """`train.batch_size` no larger than the train split, with a warning.

    A batch then holds every training image once, as PyTorch's DataLoader gives it (rather
    than repeating images within a batch, as detectron2's infinite sampler does); the
    config written to the run records the size used.
    """
    batch_size = config.train.batch_size
    if batch_size <= train_images:
        return config
    warnings.warn(
        f"train.batch_size={batch_size} is larger than the {train_images} training images; "
        f"batches of {train_images} are used (config.yaml records it)",
        SeglabWarning,
        stacklevel=4,  # the line that calls the trainer
    )
    train = dataclasses.replace(config.train, batch_size=train_images)
    return dataclasses.replace(config, train=train)
