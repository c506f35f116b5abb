"""Model names -> builders, and the safetensors files that carry a model.

`MODEL_BUILDERS` is the one dict from a name to the function that builds it. A saved model
is its weights plus the metadata needed to rebuild it: the architecture name, the builder's
keyword arguments and the class names (without background).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from seglab.errors import UserError, require_file
from seglab.files import atomic_write
from seglab.models.classification.cnn import build_cnn


def parameter_names(target: Callable[..., Any] | type) -> list[str]:
    """The keyword names `target` (a dataclass, or any callable) accepts, in order.

    A dataclass gives its `__init__` fields; `*args` and `**kwargs` are left out.
    """
    if dataclasses.is_dataclass(target):
        return [f.name for f in dataclasses.fields(target) if f.init]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    parameters = inspect.signature(target).parameters.values()
    return [p.name for p in parameters if p.kind not in variadic]


class _LazyBuilder:
    """`module.builder(**kwargs)`, imported on first call so that `import seglab` stays light.

    Its signature is that of `parameters` in the same module (the dataclass or class the
    builder passes its keyword arguments to), so that recipes can be checked without building.
    """

    def __init__(self, module: str, builder: str, parameters: str) -> None:
        self.module, self.builder, self.parameters = module, builder, parameters

    def __call__(self, **kwargs: Any) -> nn.Module:
        return getattr(importlib.import_module(self.module), self.builder)(**kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        target = getattr(importlib.import_module(self.module), self.parameters)
        names = parameter_names(target)
        parameters = inspect.signature(target).parameters.values()
        keyword = inspect.Parameter.KEYWORD_ONLY
        return inspect.Signature([p.replace(kind=keyword) for p in parameters if p.name in names])


_DETECTION = "seglab.models.detection.builders"
MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "cnn": build_cnn,
    "faster_rcnn": _LazyBuilder(_DETECTION, "build_faster_rcnn", "FasterRCNNOptions"),
    "mask_rcnn": _LazyBuilder(_DETECTION, "build_mask_rcnn", "MaskRCNNOptions"),
    "unet": _LazyBuilder("seglab.models.segmentation.unet", "build_unet", "UNet"),
}


# The task of each model (docs/conventions.md), known before the model is built so that the
# trainer can open the right dataset and read `num_classes: auto` from it.
MODEL_TASKS: dict[str, str] = {
    "cnn": "classification",
    "rcnn": "detection",
    "fast_rcnn": "detection",
    "faster_rcnn": "detection",
    "mask_rcnn": "instance",
    "unet": "semantic",
}


def model_task(name: str) -> str:
    """The task (`classification`, `detection`, `instance`, `semantic`) of model `name`."""
    _check_name(name)
    return MODEL_TASKS[name]


def builder_parameters(name: str) -> list[str] | None:
    """The keyword arguments the builder of `name` accepts, or None when it cannot tell.

    Builders state their arguments in their signature (`build_cnn` in `__signature__`, the
    lazy wrappers from their options); one that still takes bare `**kwargs` cannot be read,
    and `build_model` then turns an unknown argument into a UserError when it builds.
    """
    _check_name(name)
    builder = MODEL_BUILDERS[name]
    parameters = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return parameter_names(builder)


def _check_name(name: str) -> None:
    if name not in MODEL_BUILDERS:
        known = ", ".join(sorted(MODEL_BUILDERS))
        raise UserError(f"unknown model name {name!r}; known models: {known}")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model called `name` with the builder's keyword arguments.

    The name and arguments are kept on the model (`arch`, `arch_args`) so that `save_model`
    can write what `load_model` needs to rebuild it.
    """
    _check_name(name)
    try:
        model = MODEL_BUILDERS[name](**kwargs)
    except TypeError as error:
        raise UserError(f"model {name!r}: {error}") from None
    model.arch = name
    model.arch_args = dict(kwargs)
    if not hasattr(model, "class_names"):
        model.class_names = []
    return model


def save_model(
    model: nn.Module,
    path: str | Path,
    *,
    class_names: list[str] | None = None,
    config: dict | None = None,
) -> None:
    """Write weights and metadata to `path` atomically (temporary file, then rename).

    The metadata also keeps `model.category_ids` when the model has them (the COCO category
    id of each label 1..K, set by the trainer from a COCO dataset).
    """
    if not hasattr(model, "arch"):
        raise ValueError("save_model needs a model made by seglab.build_model")
    names = list(class_names if class_names is not None else getattr(model, "class_names", []))
    metadata = {
        "seglab_arch": model.arch,
        "seglab_args": json.dumps(model.arch_args),
        "seglab_classes": json.dumps(names),
        "seglab_config": json.dumps(config or {}),
    }
    if getattr(model, "category_ids", None) is not None:
        metadata["seglab_category_ids"] = json.dumps([int(c) for c in model.category_ids])
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    atomic_write(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a saved model: arch, args, classes, config (JSON-decoded)."""
    path = require_file(path, "model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as error:  # safetensors raises several types for a bad header
        raise UserError(f"{path}: not a safetensors model file ({error})") from None
    if "seglab_arch" not in raw:
        raise UserError(f"{path}: no seglab metadata; was it written by seglab.save_model?")
    return {
        "arch": raw["seglab_arch"],
        "args": json.loads(raw["seglab_args"]),
        "classes": json.loads(raw["seglab_classes"]),
        "config": json.loads(raw.get("seglab_config", "{}")),
        "category_ids": json.loads(raw.get("seglab_category_ids", "null")),
    }


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_model`; it comes back in eval mode."""
    metadata = read_metadata(path)
    model = build_model(metadata["arch"], **metadata["args"])
    with safe_open(str(path), framework="pt", device=str(map_location)) as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    load_weights(
        model, state, path,
        remedy="it was saved by other model code; retrain it or save it again from a model "
        "that matches",
    )  # fmt: skip
    model.class_names = metadata["classes"]
    model.config = metadata["config"]
    model.category_ids = metadata["category_ids"]  # None unless trained on COCO data
    return model.eval()


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, *, remedy: str
) -> None:
    """`model.load_state_dict(state)`, or a UserError naming `source` when they do not fit.

    Weights that do not fit (the architecture code changed, or another model wrote them)
    are a file the user gave, not a bug: say which keys and shapes differ and `remedy`.
    """
    problems = weight_mismatch(model.state_dict(), state)
    if problems:
        raise UserError(f"{source}: does not match the model ({problems}); {remedy}")
    model.load_state_dict(state)


def weight_mismatch(
    expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], *, shown: int = 3
) -> str:
    """What differs between two state dicts ("" when they fit), the first `shown` of each."""

    def first(items: list[str]) -> str:
        more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
        return ", ".join(items[:shown]) + more

    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    resized = [
        f"{key} {tuple(given[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in given and given[key].shape != value.shape
    ]
    parts = [
        f"{what}: {first(items)}"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shapes saved vs expected", resized),
        )
        if items
    ]
    return "; ".join(parts)
