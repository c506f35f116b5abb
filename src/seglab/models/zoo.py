"""Model names -> what each model is, and the safetensors files that carry a model.

`MODEL_SPECS` is the one table from a model name to its task and its parts (the builder
and the class whose keyword arguments the builder takes); `seglab.MODEL_BUILDERS` is its
name -> builder view. A saved model is its weights plus the metadata needed to rebuild it:
the architecture name, the builder's keyword arguments and the class names (without
background).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from seglab.errors import UserError, require_file
from seglab.files import atomic_write

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A model name's task and parts.

    The task is known before the model is built, so that the trainer can open the task's
    dataset and read `num_classes: auto` from it. `parts` returns the builder and the class
    whose keyword arguments it takes (an options dataclass, or the model class itself); it
    is a function so that a model's code is imported when the model is first asked for (the
    detectors import torchvision: seconds that `import seglab` and `seglab --help` spare).
    """

    task: str
    parts: Callable[[], tuple[Builder, type]]

    def build(self, **kwargs: Any) -> nn.Module:
        builder, _ = self.parts()
        return builder(**kwargs)

    def parameters(self) -> list[str]:
        """The keyword arguments the builder accepts, in order."""
        _, options = self.parts()
        return parameter_names(options)


def _cnn() -> tuple[Builder, type]:
    from seglab.models.classification.cnn import CNNClassifier, build_cnn

    return build_cnn, CNNClassifier


def _rcnn() -> tuple[Builder, type]:
    from seglab.models.detection.builders import RCNNOptions, build_rcnn

    return build_rcnn, RCNNOptions


def _fast_rcnn() -> tuple[Builder, type]:
    from seglab.models.detection.builders import FastRCNNOptions, build_fast_rcnn

    return build_fast_rcnn, FastRCNNOptions


def _faster_rcnn() -> tuple[Builder, type]:
    from seglab.models.detection.builders import FasterRCNNOptions, build_faster_rcnn

    return build_faster_rcnn, FasterRCNNOptions


def _mask_rcnn() -> tuple[Builder, type]:
    from seglab.models.detection.builders import MaskRCNNOptions, build_mask_rcnn

    return build_mask_rcnn, MaskRCNNOptions


def _unet() -> tuple[Builder, type]:
    from seglab.models.segmentation.unet import UNet, build_unet

    return build_unet, UNet


# The task of each model: docs/conventions.md, Models.
MODEL_SPECS: dict[str, ModelSpec] = {
    "cnn": ModelSpec("classification", _cnn),
    "rcnn": ModelSpec("detection", _rcnn),
    "fast_rcnn": ModelSpec("detection", _fast_rcnn),
    "faster_rcnn": ModelSpec("detection", _faster_rcnn),
    "mask_rcnn": ModelSpec("instance", _mask_rcnn),
    "unet": ModelSpec("semantic", _unet),
}
MODEL_BUILDERS: dict[str, Builder] = {name: spec.build for name, spec in MODEL_SPECS.items()}


def parameter_names(target: Callable[..., Any] | type) -> list[str]:
    """The keyword names `target` (a dataclass, or any callable) accepts, in order.

    A dataclass gives its `__init__` fields; `*args` and `**kwargs` are left out.
    """
    if dataclasses.is_dataclass(target):
        return [f.name for f in dataclasses.fields(target) if f.init]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    parameters = inspect.signature(target).parameters.values()
    return [p.name for p in parameters if p.kind not in variadic]


def model_spec(name: str) -> ModelSpec:
    """The spec of model `name`; UserError naming the known models when there is none."""
    if name not in MODEL_SPECS:
        known = ", ".join(sorted(MODEL_SPECS))
        raise UserError(f"unknown model name {name!r}; known models: {known}")
    return MODEL_SPECS[name]


def model_task(name: str) -> str:
    """The task (`classification`, `detection`, `instance`, `semantic`) of model `name`."""
    return model_spec(name).task


def builder_parameters(name: str) -> list[str]:
    """The keyword arguments the builder of model `name` accepts, in order."""
    return model_spec(name).parameters()


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model called `name` with the builder's keyword arguments.

    The name and arguments are kept on the model (`arch`, `arch_args`) so that `save_model`
    can write what `load_model` needs to rebuild it.
    """
    spec = model_spec(name)
    try:
        model = spec.build(**kwargs)
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
