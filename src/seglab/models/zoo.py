"""Model names -> what each model is, and the safetensors files that carry a model.

`MODEL_SPECS` (`specs.py`, no torch) is the one table from a model name to its task and its
parts (the builder and the class whose keyword arguments the builder takes);
`seglab.MODEL_BUILDERS` is its name -> builder view; `data_proposals` says which
selective-search proposals a model reads from its data. A model built here carries its card
(`model.card`, `seglab.models.card.ModelCard`); a saved model is its weights plus that card.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from seglab.errors import UserError, require_file
from seglab.files import atomic_write
from seglab.models.card import ModelCard
from seglab.models.specs import (  # noqa: F401  (re-exported: the zoo's names)
    MODEL_SPECS,
    Builder,
    ModelSpec,
    builder_parameters,
    data_proposals,
    model_spec,
    model_task,
    parameter_names,
)

MODEL_BUILDERS: dict[str, Builder] = {name: spec.build for name, spec in MODEL_SPECS.items()}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model called `name` with the builder's keyword arguments (fresh weights).

    The model carries its card (`model.card`): the name and arguments that `load_model`
    rebuilds it from, and no classes yet.
    """
    return build_from_card(ModelCard(arch=name, arch_args=dict(kwargs), task=model_task(name)))


def build_from_card(card: ModelCard) -> nn.Module:
    """The model `card` describes, with fresh weights; `model.card` is `card`."""
    spec = model_spec(card.arch)
    try:
        model = spec.build(**card.arch_args)
    except TypeError as error:  # an unknown keyword argument
        raise UserError(f"model {card.arch!r}: {error}") from None
    model.card = card
    return model


def model_card(model: nn.Module) -> ModelCard:
    """`model.card`; ValueError for a model that `build_model` did not make."""
    card = getattr(model, "card", None)
    if not isinstance(card, ModelCard):
        raise ValueError(f"{type(model).__name__} has no model card: build it with build_model")
    return card


def save_model(
    model: nn.Module,
    path: str | Path,
    *,
    class_names: list[str] | None = None,
    config: dict | None = None,
) -> None:
    """Write the weights and the model's card to `path` atomically (temporary file, then
    rename). `class_names` and `config`, when given, are written in place of the card's."""
    card = model_card(model)
    if class_names is not None:
        card = dataclasses.replace(card, class_names=tuple(class_names))
    if config is not None:
        card = dataclasses.replace(card, config=config)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    metadata = card.to_metadata()
    atomic_write(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def read_card(path: str | Path) -> ModelCard:
    """The card of a model file written by `save_model`."""
    path = require_file(path, "model file")
    if path.is_dir():  # a run folder: name the file in it rather than the OS's error
        inside = path / "model.safetensors"
        hint = f": {inside}" if inside.is_file() else ""
        raise UserError(f"{path}: a folder, not a model file; pass the model file in it{hint}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises several types for a bad header
        raise UserError(f"{path}: not a safetensors model file ({error})") from None
    if "seglab_arch" not in metadata:
        raise UserError(f"{path}: no seglab metadata; was it written by seglab.save_model?")
    return ModelCard.from_metadata(metadata, task=model_task(metadata["seglab_arch"]))


def load_model(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save_model`, with its card; it comes back in eval mode."""
    model = build_from_card(read_card(path))
    with safe_open(str(path), framework="pt", device=str(map_location)) as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    load_weights(
        model, state, path,
        remedy="it was saved by other model code; retrain it or save it again from a model "
        "that matches",
    )  # fmt: skip
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
