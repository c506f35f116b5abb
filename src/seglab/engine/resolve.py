"""A run's config completed from its data: what `auto` and the train split decide.

A recipe may leave to the data what only the data knows: `model.num_classes: auto`,
`data.image_size: auto` (U-Net: a scale planned from the masks, `seglab.data.fingerprint`),
`data.intensity_percentiles` (a range measured on the train split), a detector's `auto`
options (scale, anchors, detections and RoIs per image, planned from the training boxes:
`seglab.data.box_fingerprint`), and a `train.batch_size` larger than the split.
`resolve_config` writes each answer into the config, once, after the datasets are built
and before the model is: the config a run records in `config.yaml` and in its model file
is the one it trained with, so that evaluation, predict and a resume read the data alike;
a resume takes the detector options its run recorded (`recorded_options`) rather than
planning again. (The budget plan, `planned_steps`, is the run's own record, made by the
trainer: `seglab.engine.budget`.)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from seglab.data.box_fingerprint import measure_box_fingerprint, plan_detector
from seglab.data.splits import data_name
from seglab.engine.config import Config
from seglab.engine.run_dir import CONFIG_NAME
from seglab.errors import SeglabWarning, UserError
from seglab.models.detection.options import AUTO, AUTO_OPTIONS
from seglab.models.specs import model_spec, model_task


def resolve_config(
    config: Config, train_set: Any, report: Callable[[str], None] = lambda line: None
) -> Config:
    """The config with what the train split decides written in.

    Args:
        config: the recipe with the command line's overrides.
        train_set: the run's train dataset (`seglab.data.build_training_datasets`): its
            `intensity` (the range it is read with, or None), `scale_plan` (the planned
            image size of `data.image_size: auto`, or None), `class_names` and length; for
            a detector with `auto` options its `coco_gt` and `images`.
        report: receives the detector plan's line (once per run: a resume has no `auto`
            left, `recorded_options`).

    Returns:
        `config` with `data.intensity_range`, `data.image_size`, `model.num_classes`, the
        detector's `auto` options and `train.batch_size` resolved; UserError when
        `model.num_classes` disagrees with the data, a warning when the batch is cut to the
        split's size.
    """
    data = dataclasses.replace(config.data, intensity_range=train_set.intensity)
    if train_set.scale_plan is not None:
        data = dataclasses.replace(data, image_size=train_set.scale_plan.image_size)
    config = dataclasses.replace(config, data=data)
    config = resolve_num_classes(config, list(train_set.class_names))
    config = plan_detector_options(config, train_set, report)
    return fit_batch_size(config, len(train_set))


def plan_detector_options(config: Config, train_set: Any, report: Callable[[str], None]) -> Config:
    """A detector's `auto` options (`AUTO_OPTIONS`) planned from the train split's boxes
    (`seglab.data.box_fingerprint`), written into `model:` and said in one line; the options
    given a value are kept, and the plan follows them."""
    auto = [name for name in AUTO_OPTIONS if config.model.args.get(name) == AUTO]
    if not auto:
        return config
    _, options_class = model_spec(config.model.name).parts()
    options = {field.name: field.default for field in dataclasses.fields(options_class)
               if field.default is not dataclasses.MISSING}  # fmt: skip
    options |= config.model.args
    plan = plan_detector(measure_box_fingerprint(train_set), options, fpn=bool(options["fpn"]))
    report(plan.reason)
    planned = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in plan.values.items()
    }  # fmt: skip (as YAML gives them)
    model = dataclasses.replace(config.model, args={**config.model.args, **planned})
    return dataclasses.replace(config, model=model)


def recorded_options(config: Config, run_dir: Path) -> Config:
    """The config with each `auto` model option that `run_dir`'s `config.yaml` records a
    value for set to that value: a resumed run keeps the plan it trained with, whatever the
    data holds now, and says no plan again."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        return config
    saved = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("model") or {}
    recorded = {
        name: saved[name]
        for name, value in config.model.args.items()
        if value == AUTO and saved.get(name, AUTO) != AUTO
    }
    if not recorded:
        return config
    model = dataclasses.replace(config.model, args={**config.model.args, **recorded})
    return dataclasses.replace(config, model=model)


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
