"""`resolve_config`: the one place a run's config is completed from its train split, and
the `data.image_size: auto` plan it records is made once per run."""

from __future__ import annotations

import dataclasses

import pytest

from seglab.data import fingerprint
from seglab.data.config import DataConfig
from seglab.data.datasets import build_training_datasets
from seglab.data.fingerprint import ScalePlan
from seglab.engine.config import load_config
from seglab.engine.resolve import resolve_config
from seglab.errors import SeglabWarning


@dataclasses.dataclass
class TrainSplit:
    """What resolve_config reads of a train dataset."""

    intensity: tuple[float, float] | None = None
    scale_plan: ScalePlan | None = None
    class_names: tuple[str, ...] = ("a", "b", "c")
    images: int = 8

    def __len__(self) -> int:
        return self.images


def test_every_answer_the_data_gives_is_written_into_the_config():
    config = load_config("unet_shapes", ["data.image_size=auto", "train.batch_size=4"])
    plan = ScalePlan(image_size=48, scale=0.5, reason="planned")
    split = TrainSplit(intensity=(0.1, 0.9), scale_plan=plan, images=3)
    with pytest.warns(SeglabWarning, match="batch_size=4 is larger than the 3 training"):
        resolved = resolve_config(config, split)
    assert resolved.data.intensity_range == (0.1, 0.9)
    assert resolved.data.image_size == 48
    assert resolved.model.num_classes == 4  # 3 classes + background
    assert resolved.train.batch_size == 3
    # nothing else changes
    data = dataclasses.replace(resolved.data, intensity_range=None, image_size="auto")
    model = dataclasses.replace(resolved.model, num_classes=config.model.num_classes)
    train = dataclasses.replace(resolved.train, batch_size=4)
    assert dataclasses.replace(resolved, data=data, model=model, train=train) == config


def test_a_config_the_data_agrees_with_comes_back_equal():
    config = load_config("cnn_shapes", ["model.num_classes=3", "train.batch_size=2"])
    assert resolve_config(config, TrainSplit()) == config


def test_an_auto_image_size_is_planned_once_for_both_splits(tmp_path, monkeypatch):
    from seglab.data.cells import generate_cells

    root = generate_cells(tmp_path / "cells", task="instance", train=2, val=1, size=64, seed=0)
    plans = []

    def counted(found):
        plans.append(fingerprint.plan_scale(found))
        return plans[-1]

    monkeypatch.setattr("seglab.data.datasets.plan_scale", counted)
    cfg = DataConfig(root=str(root), layout="coco", image_size="auto")
    train_set, val_set = build_training_datasets(cfg, task="semantic", in_channels=1)
    assert len(plans) == 1 and train_set.scale_plan == plans[0]
    side = plans[0].image_size
    assert min(val_set[0][0].shape[-2:]) == min(train_set[0][0].shape[-2:]) == side
