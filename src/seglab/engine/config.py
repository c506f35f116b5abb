"""Recipes: frozen dataclasses read from YAML, with `--set a.b=value` overrides.

A recipe has four sections: `seed`, `model` (its `name`, `num_classes` and the
builder's keyword arguments), `data` (`seglab.data.config.DataConfig`) and `train`. Every
key is checked: an unknown key, a value of the wrong type or an unknown model argument is a
`UserError` that names the key and the valid ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import types
import typing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# No torch below: a config is read and checked before PyTorch loads (issue 22).
from seglab.data.config import LAYOUT_TASKS, DataConfig, check_intensity, check_transform_options
from seglab.data.splits import check_locations
from seglab.errors import SeglabWarning, UserError, did_you_mean
from seglab.files import atomic_write_text
from seglab.models.specs import builder_parameters, model_spec, model_task
from seglab.models.weight_names import is_weight_name


@dataclass(frozen=True)
class ModelConfig:
    """`model:`: the architecture name, its number of outputs and its builder's arguments."""

    name: str
    num_classes: int | str = "auto"  # "auto": read from the training data
    args: dict = field(default_factory=dict)  # the other keys of `model:`
    # torchvision ImageNet ResNet state dict loaded into the ResNet backbone before step 1:
    # a file, or a torchvision weight name (`ResNet50_Weights.IMAGENET1K_V2`, `imagenet`)
    # read from torchvision's cache (`seglab.models.backbones.pretrained`)
    backbone_weights: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """`train:`: optimisation, schedule, budget and bookkeeping."""

    batch_size: int = 4
    lr: float = 0.02
    optimizer: str = "sgd"  # sgd | adamw
    max_steps: int = 5000
    max_minutes: float | None = None  # wall-clock budget of the whole run (resumes included)
    eval_every: int = 500
    checkpoint_every: int = 200
    workers: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD momentum; AdamW's beta1
    warmup_steps: int = 0  # linear warmup from lr/1000 to lr
    # cosine (to 0 at max_steps) | step | cosine_budget (to 0 at the step count that fits
    # max_minutes, planned once from the measured step time: engine/budget.py)
    schedule: str = "cosine"
    # cosine_budget's plan: written by the run into RUN/config.yaml; given, it is followed
    # without measuring (the same run again, bit for bit)
    planned_steps: int | None = None
    milestones: tuple[int, ...] = ()  # step schedule: lr *= gamma at each of these steps
    gamma: float = 0.1
    grad_clip: float | None = None  # max global gradient norm
    # stop early once converged: `patience` evaluations in a row have not raised the primary
    # validation metric by more than `min_delta` (Keras' EarlyStopping; engine/convergence.py);
    # null: the run uses its budget (max_minutes, max_steps)
    patience: int | None = None
    min_delta: float = 0.0
    # fp32 | bf16: bfloat16 autocast of the forward (fp32 master weights, losses and box /
    # mask decoding; `seglab.ops.precision`); `amp: none|bf16` is its earlier spelling
    precision: str = "fp32"
    log_every: int = 20
    # a seglab model file to start from: tensors whose name and shape fit are kept, the
    # class-dependent ones re-initialised when num_classes differs (`seglab.models.transfer`)
    init: str | None = None
    # TensorBoard event files in RUN/tensorboard/ (needs the tensorboard extra)
    tensorboard: bool = False
    # several processes (torchrun, DDP): BatchNorm statistics over all processes' images
    # (torch.nn.SyncBatchNorm, GPUs only); otherwise each process normalises its own batch
    sync_batchnorm: bool = False


@dataclass(frozen=True)
class Config:
    seed: int
    model: ModelConfig
    data: DataConfig
    train: TrainConfig


CHOICES = {
    "train.optimizer": ("sgd", "adamw"),
    "train.schedule": ("cosine", "step", "cosine_budget"),
    "train.precision": ("fp32", "bf16"),
}
POSITIVE = ("train.batch_size", "train.max_steps", "train.eval_every", "train.checkpoint_every")
POSITIVE += ("train.log_every", "train.lr")


# Keys that name a file or a folder. Relative values in a YAML file are read from the file's
# folder; those of `--set` and of a shipped recipe named by name, from the current folder.
PATH_KEYS = (
    "data.root",
    "data.train_json",
    "data.train_images",
    "data.val_json",
    "data.val_images",
    "model.backbone_weights",
    "train.init",
)


class ConfigKeyError(UserError):
    """A mistake in one key's name or value: `key` (dotted) lets `load_config` blame the
    `--set` that gave it rather than the file."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.key, self.problem = key, problem


def recipes_dir() -> Path:
    """The shipped recipes: `configs/` inside the installed package (in the repository a
    link to its top-level `configs/`)."""
    return Path(__file__).parents[1] / "configs"  # seglab/engine/config.py -> seglab/configs


def load_config(
    path_or_recipe: str | Path, overrides: list[str] | tuple = (), *, model_args: bool = True
) -> Config:
    """Read a YAML file (or a shipped recipe by name), apply `a.b=value` overrides, check it.

    Relative paths (`PATH_KEYS`) of a YAML file are resolved against the file's folder, as
    most tools read their config files; a recipe's and the overrides' against the current
    folder. A mistake in an override's key or value names `--set`, not the file.

    `model_args=False` leaves out the check of the model's keyword arguments, the one check
    that imports torch (the builder's signature is read from its code): `seglab train`
    checks the rest, and the files, first (`check_model_args` then).
    """
    path, is_recipe = _find_config(str(path_or_recipe))
    raw = _read_yaml(path)
    if not is_recipe:
        _resolve_paths(raw, path.parent)
    for override in overrides:
        _apply_override(raw, override, path)
    with _blaming_overrides(overrides):
        return config_from_dict(raw, source=str(path), model_args=model_args)


def check_model_args(config: Config, source: str, overrides: list[str] | tuple = ()) -> None:
    """The `model:` keys are the builder's arguments (imports the model's code, and torch)."""
    with _blaming_overrides(overrides):
        _check_model_args(config.model, source)


@contextlib.contextmanager
def _blaming_overrides(overrides: list[str] | tuple) -> Iterator[None]:
    """A ConfigKeyError about a key that an override set names the override, not the file:
    `--set train.lrr=0.1: unknown key 'train.lrr' (did you mean train.lr?); ...`."""
    try:
        yield
    except ConfigKeyError as error:
        for override in overrides:
            key = override.partition("=")[0]
            if key == error.key or key.startswith(f"{error.key}."):
                raise UserError(f"--set {override}: {error.problem}") from None
        raise


def recipe_names() -> list[str]:
    return sorted(path.stem for path in recipes_dir().glob("*.yaml"))


def _find_config(path_or_recipe: str) -> tuple[Path, bool]:
    """The config file, and whether it is a shipped recipe given by its name."""
    path = Path(path_or_recipe)
    if path.is_file():
        return path, False
    if path.exists():
        raise UserError(f"{path}: is not a file; give a YAML config file or a recipe name")
    recipe = recipes_dir() / f"{path_or_recipe}.yaml"
    if "/" not in path_or_recipe and path.suffix not in (".yaml", ".yml") and recipe.is_file():
        return recipe, True
    if "/" in path_or_recipe or path.suffix in (".yaml", ".yml"):
        raise UserError(f"{path}: config file not found")
    known = recipe_names()
    hint = did_you_mean(path_or_recipe, known)
    raise UserError(
        f"{path_or_recipe}: no such config file or shipped recipe{hint}; recipes: "
        f"{', '.join(known) or 'none'} (`seglab train --list` describes them)"
    )


def _resolve_paths(raw: dict, folder: Path) -> None:
    """Relative `PATH_KEYS` values of `raw` (read from a file in `folder`) -> `folder/value`."""
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        values = raw.get(section)
        if not isinstance(values, dict) or not isinstance(values.get(key), str):
            continue
        value = values[key]
        if _is_path(dotted, value) and not Path(value).is_absolute():
            values[key] = str(folder / value)


def _is_path(key: str, value: str) -> bool:
    """False for a weight name (`model.backbone_weights: ResNet50_Weights.IMAGENET1K_V2`)."""
    return key != "model.backbone_weights" or not is_weight_name(value)


def check_paths_exist(config: Config, source: str, overrides: list[str] | tuple = ()) -> None:
    """Each file or folder the config names is there (before any work: `seglab train`);
    a missing one that `overrides` set is blamed on its `--set`.

    A relative path is shown with the folder it was read from, so that a path resolved
    against the config file's folder is not mistaken for one from the current folder.
    """
    flat = {
        "data.root": (config.data.root, "folder"),
        "data.train_json": (config.data.train_json, "file"),
        "data.train_images": (config.data.train_images, "folder"),
        "data.val_json": (config.data.val_json, "file"),
        "data.val_images": (config.data.val_images, "folder"),
        "model.backbone_weights": (config.model.backbone_weights, "file"),
        "train.init": (config.train.init, "file"),
    }
    with _blaming_overrides(overrides):
        for key, (value, kind) in flat.items():
            if value is not None and _is_path(key, value):
                _check_path(Path(value), kind, key, source)


def _check_path(path: Path, kind: str, key: str, source: str) -> None:
    if path.is_dir() if kind == "folder" else path.is_file():
        return
    problem = f"{key}: {path} {'is not a ' + kind if path.exists() else 'not found'}"
    if not path.is_absolute():
        problem += (
            f" (from the current folder, {Path.cwd()}); relative paths in a config file are "
            "read from the file's folder, in --set from the current folder"
        )
    raise ConfigKeyError(source, key, problem)


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = str(error).splitlines()[0]
        raise UserError(f"{path}: not valid YAML ({problem}); fix the file") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config is a YAML mapping with seed, model, data, train")
    return raw


def _apply_override(raw: dict, override: str, path: Path) -> None:
    """`train.lr=0.01` -> raw["train"]["lr"] = 0.01 (the value is read as YAML)."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise UserError(f"--set {override}: expected key=value, e.g. --set train.lr=0.01")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    *parents, leaf = key.split(".")
    section = raw
    for name in parents:
        section = section.setdefault(name, {})
        if not isinstance(section, dict):
            raise UserError(f"--set {override}: {name!r} in {path} is not a section")
    section[leaf] = value


def config_from_dict(raw: dict, *, source: str = "config", model_args: bool = True) -> Config:
    """Check every key and value of a recipe mapping and build the frozen `Config`."""
    _check_keys(raw, ("seed", "model", "data", "train"), "", source)
    for section in ("model", "data"):
        if not isinstance(raw.get(section), dict):
            raise UserError(f"{source}: section {section!r} is missing or not a mapping")
    train_raw = raw.get("train") or {}
    if not isinstance(train_raw, dict):
        raise UserError(f"{source}: section 'train' is not a mapping")
    train_raw = renamed_train_keys(train_raw, source)
    config = Config(
        seed=_coerce(raw.get("seed", 0), int, "seed", source),
        model=_model_config(raw["model"], source),
        data=_dataclass_from(DataConfig, raw["data"], "data", source),
        train=_dataclass_from(TrainConfig, train_raw, "train", source),
    )
    _check_values(config, source)
    _check_data(config, source)
    if model_args:  # last: the builder's arguments are read from its code, which imports torch
        _check_model_args(config.model, source)
    return config


def renamed_train_keys(train: dict, source: str) -> dict:
    """`train:` with earlier spellings read as today's, with a warning that names the new
    one: `amp: none|bf16` -> `precision: fp32|bf16` (a run's config.yaml written before
    the rename resumes as it was)."""
    if "amp" not in train:
        return train
    if "precision" in train:
        raise ConfigKeyError(source, "train.amp", "train.amp is the old name of "
                             "train.precision; give train.precision only")  # fmt: skip
    train = dict(train)
    amp = train.pop("amp")
    train["precision"] = {"none": "fp32"}.get(amp, amp)
    warnings.warn(
        f"{source}: train.amp is now spelled train.precision (amp: {amp} read as "
        f"precision: {train['precision']})",
        SeglabWarning,
        stacklevel=4,
    )
    return train


def _model_config(raw: dict, source: str) -> ModelConfig:
    name = raw.get("name")
    if not isinstance(name, str):
        raise UserError(f"{source}: model.name is missing; e.g. model: {{name: cnn}}")
    try:
        model_task(name)
    except UserError as error:  # an unknown model name: say which file names it
        raise UserError(f"{source}: model.name: {error}") from None
    num_classes = raw.get("num_classes", "auto")
    if num_classes != "auto":
        num_classes = _coerce(num_classes, int, "model.num_classes", source)
    backbone_weights = raw.get("backbone_weights")
    if backbone_weights is not None:
        backbone_weights = _coerce(backbone_weights, str, "model.backbone_weights", source)
    own = ("name", "num_classes", "backbone_weights")
    args = {key: value for key, value in raw.items() if key not in own}
    return ModelConfig(name, num_classes, args, backbone_weights)


def _check_model_args(model: ModelConfig, source: str) -> None:
    valid = [key for key in builder_parameters(model.name) if key != "num_classes"]
    _check_keys(model.args, [*valid, "backbone_weights"], "model.", source)
    _check_model_values(model, source)


def _check_model_values(model: ModelConfig, source: str) -> None:
    """The values of a model whose options are a dataclass (the detectors), checked by its
    `__post_init__` now rather than when the model is built, after the data is read."""
    _, options = model_spec(model.name).parts()
    if not dataclasses.is_dataclass(options):
        return
    num_classes = 2 if model.num_classes == "auto" else model.num_classes  # any valid count
    try:
        options(num_classes=num_classes, **model.args)
    except UserError as error:
        name = re.split(r"[ =:]", str(error), maxsplit=1)[0]
        key = f"model.{name}" if name in model.args else "model"
        raise ConfigKeyError(source, key, f"model: {error}") from None
    except (TypeError, ValueError):  # a value of the wrong type: the builder says which
        return


def _dataclass_from(cls: type, raw: dict, prefix: str, source: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(raw, list(fields), f"{prefix}.", source)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(value, hints[name], f"{prefix}.{name}", source)
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UserError(f"{source}: {prefix}.{missing[0]} is required; set it in the config")
    return cls(**values)


def _check_keys(raw: dict, valid: list[str] | tuple, prefix: str, source: str) -> None:
    for key in raw:
        if key not in valid:
            hint = did_you_mean(str(key), valid, prefix)
            raise ConfigKeyError(
                source, f"{prefix}{key}",
                f"unknown key '{prefix}{key}'{hint}; valid keys: {', '.join(valid)}",
            )  # fmt: skip


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """`value` checked against the type `hint` (int, float, str, bool, X | None, tuples)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, key, source)
            except UserError:
                continue
        return _bad_type(value, hint, key, source)
    if typing.get_origin(hint) is tuple:
        return _coerce_tuple(value, hint, key, source)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads `1e-3` (no dot) as a string
        except ValueError:
            pass
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if hint is dict and isinstance(value, dict):
        return value
    return _bad_type(value, hint, key, source)


def _coerce_tuple(value: Any, hint: Any, key: str, source: str) -> tuple:
    if not isinstance(value, list | tuple):
        return _bad_type(value, hint, key, source)
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    if len(args) != len(value):
        raise UserError(f"{source}: {key} needs {len(args)} values, got {list(value)}")
    return tuple(_coerce(item, arg, key, source) for item, arg in zip(value, args, strict=True))


def _bad_type(value: Any, hint: Any, key: str, source: str):
    wanted = getattr(hint, "__name__", None) or str(hint)
    raise ConfigKeyError(source, key, f"{key} must be {wanted}, got {value!r}")


def _check_values(config: Config, source: str) -> None:
    flat = {f"train.{key}": value for key, value in dataclasses.asdict(config.train).items()}
    for key, choices in CHOICES.items():
        if flat[key] not in choices:
            hint = did_you_mean(str(flat[key]), choices)
            raise ConfigKeyError(source, key, f"{key} must be one of {', '.join(choices)}{hint}")
    for key in POSITIVE:
        if flat[key] <= 0:
            raise ConfigKeyError(source, key, f"{key} must be positive, got {flat[key]}")
    device = config.train.device
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"{source}: train.device must be auto, cpu, cuda or cuda:N")
    if config.train.workers < 0:
        raise UserError(f"{source}: train.workers must be >= 0")
    if config.train.grad_clip is not None and config.train.grad_clip <= 0:
        raise UserError(f"{source}: train.grad_clip must be positive (or null: no clipping)")
    if not 0 <= config.train.momentum < 1:
        raise UserError(f"{source}: train.momentum (AdamW's beta1) must be in [0, 1)")
    if config.train.gamma <= 0:
        raise UserError(f"{source}: train.gamma must be positive")
    if config.train.schedule == "cosine_budget" and config.train.max_minutes is None:
        raise UserError(f"{source}: train.schedule=cosine_budget needs train.max_minutes")
    if config.train.planned_steps is not None and config.train.planned_steps <= 0:
        raise UserError(f"{source}: train.planned_steps must be positive (or null: planned)")
    _check_convergence(config.train, source)


def _check_convergence(cfg: TrainConfig, source: str) -> None:
    """`train.patience`: at least one evaluation (null: off); `train.min_delta`: a gain of the
    metric, finite and not negative (a negative one would count a loss as a gain)."""
    if cfg.patience is not None and cfg.patience <= 0:
        problem = (f"train.patience must be positive (the evaluations without a gain before "
                   f"the run stops) or null, got {cfg.patience}")  # fmt: skip
        raise ConfigKeyError(source, "train.patience", problem)
    if not 0 <= cfg.min_delta < math.inf:
        problem = (f"train.min_delta must be a finite number >= 0 (the least gain of the "
                   f"metric that counts), got {cfg.min_delta}")  # fmt: skip
        raise ConfigKeyError(source, "train.min_delta", problem)


def _check_data(config: Config, source: str) -> None:
    """The `data:` values, when the config is read: before any file is read or written."""
    data, task = config.data, model_task(config.model.name)
    if data.layout not in LAYOUT_TASKS:
        layouts = ", ".join(LAYOUT_TASKS)
        raise UserError(f"{source}: data.layout must be one of {layouts}, not {data.layout!r}")
    if task not in LAYOUT_TASKS[data.layout]:
        fitting = " or ".join(layout for layout, tasks in LAYOUT_TASKS.items() if task in tasks)
        raise UserError(
            f"{source}: data.layout {data.layout!r} has no data for model {config.model.name} "
            f"({task}); use {fitting}"
        )
    try:  # the data options, checked by the code that uses them
        check_transform_options(data, task=task)
        check_locations(data)
        check_intensity(data)
    except UserError as error:
        raise UserError(f"{source}: {error}") from None


def config_warnings(config: Config) -> list[str]:
    """Settings that run but cannot do what they were surely meant to: one line each."""
    cfg, messages = config.train, []
    if cfg.warmup_steps >= cfg.max_steps:
        messages.append(
            f"train.warmup_steps={cfg.warmup_steps} >= train.max_steps={cfg.max_steps}: the "
            f"learning rate never reaches train.lr={cfg.lr}"
        )
    if cfg.schedule != "step" and cfg.milestones:
        messages.append("train.milestones are for schedule: step; the cosine schedule ignores them")
    if cfg.schedule == "step" and not cfg.milestones:
        messages.append(
            "train.schedule=step without train.milestones keeps the learning rate constant"
        )
    if config.model.args.get("norm") == "frozen_bn" and not (
        config.model.backbone_weights or cfg.init
    ):
        messages.append(
            "model.norm=frozen_bn without model.backbone_weights or train.init: frozen norms "
            "keep the statistics they are given, here none (the identity); give pretrained "
            "weights, or use norm: bn to train from scratch"
        )
    if cfg.patience is not None and cfg.eval_every >= cfg.max_steps:
        messages.append(
            f"train.patience={cfg.patience} with train.eval_every={cfg.eval_every} >= "
            f"train.max_steps={cfg.max_steps}: no evaluation before the end, so the run never "
            "stops as converged; lower train.eval_every"
        )
    late = [milestone for milestone in cfg.milestones if milestone >= cfg.max_steps]
    if cfg.schedule == "step" and late:
        messages.append(
            f"train.milestones {late} are not before train.max_steps={cfg.max_steps}: the "
            "learning rate is never lowered there"
        )
    return messages


def config_to_dict(config: Config) -> dict:
    """The YAML mapping of a config (model arguments back at the top of `model:`)."""
    model = {"name": config.model.name, "num_classes": config.model.num_classes}
    if config.model.backbone_weights is not None:
        model["backbone_weights"] = config.model.backbone_weights
    model.update(config.model.args)
    raw = {
        "seed": config.seed,
        "model": model,
        "data": dataclasses.asdict(config.data),
        "train": dataclasses.asdict(config.train),
    }
    return _plain(raw)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML safe_dump writes lists only)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically, its paths absolute: a run's
    `config.yaml` names the same files whatever folder it is resumed from."""
    raw = config_to_dict(config)
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        value = raw[section].get(key)
        if isinstance(value, str) and _is_path(dotted, value):
            raw[section][key] = os.path.abspath(value)
    text = yaml.safe_dump(raw, sort_keys=False)
    return atomic_write_text(path, text)


def with_planned_steps(config: Config, planned_steps: int | None) -> Config:
    """The config with `train.planned_steps` set (the budget plan a run made, recorded so that
    a resume and a rerun follow it)."""
    train = dataclasses.replace(config.train, planned_steps=planned_steps)
    return dataclasses.replace(config, train=train)
