"""An exported model scored on a split as `seglab eval` scores a PyTorch one: what
`seglab export --quantize int8` checks (`seglab.inference.quantize`).

- `check_datasets`: the model's own data (or another root) read as `seglab eval` reads it,
  evaluation transforms, for the splits asked (the train split to calibrate on, the split
  to check on);
- `split_metrics`: the task's metrics (`evaluate`) of a PyTorch model or an `OnnxModel`,
  which has outputs and no losses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seglab.errors import UserError, require_file
from seglab.evaluation.evaluator import evaluate
from seglab.evaluation.saved import model_data_config


def check_datasets(
    model: nn.Module, model_path: str | Path, data: str | None, splits: tuple[str, ...]
) -> list:
    """The `splits` of the data `model` was trained with (`data` None), or of the dataset
    root `data`, with the model's data settings, in evaluation transforms; UserError for a
    split without images or with other classes than the model's."""
    from seglab.data import build_dataset
    from seglab.data.splits import data_name

    root = require_file(data, "data folder") if data is not None else None
    datasets = []
    for split in splits:
        config = model_data_config(model.card.config, root, split, str(model_path))
        dataset = build_dataset(config, split, task=model.task, train=False)
        if len(dataset) == 0:
            raise UserError(f"{data_name(config)}: no images in the {split} split")
        names = model.card.class_names
        if names and list(dataset.class_names) != list(names):
            raise UserError(f"{data_name(config)}: classes {list(dataset.class_names)} "
                            f"differ from the model's {list(names)}; give --data with its "
                            "classes")  # fmt: skip
        datasets.append(dataset)
    return datasets


def split_metrics(engine, dataset) -> dict[str, Any]:
    """The task's metrics of a PyTorch model or an `OnnxModel` on `dataset`, as `seglab
    eval` computes them (`evaluate`, one image at a time, as the ONNX graphs of detectors
    take them), without the loss (ONNX graphs have none)."""
    if not isinstance(engine, nn.Module):
        engine = _Scored(engine)
    with torch.no_grad():
        metrics = evaluate(engine, dataset, batch_size=1, device="cpu")
    metrics.pop("loss")
    return metrics


class _Scored:
    """An `OnnxModel` as `evaluate` runs a model: its outputs, and no losses."""

    training = False

    def __init__(self, engine):
        self.engine = engine
        self.task = engine.task
        for name in ("padding", "depth"):  # U-Net: `evaluate` tiles a valid-padding one
            if hasattr(engine, name):
                setattr(self, name, getattr(engine, name))

    def __call__(self, images) -> list[dict[str, Tensor]]:
        return self.engine(images)

    def forward_with_losses(self, images, targets) -> tuple[list[dict[str, Tensor]], dict]:
        return self.engine(images), {}

    def losses(self, logits: Tensor, targets) -> dict:
        return {}

    def eval(self) -> _Scored:
        return self

    def train(self, mode: bool = True) -> _Scored:
        return self

    def to(self, device) -> _Scored:
        return self

    def parameters(self):
        return iter(())
