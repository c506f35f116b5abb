"""The model zoo: names, tasks, builder arguments, and the saved-model metadata."""

from __future__ import annotations

import pytest
import torch

import seglab
from seglab.errors import UserError
from seglab.models.zoo import (
    MODEL_BUILDERS,
    MODEL_TASKS,
    builder_parameters,
    model_task,
    read_metadata,
)


def test_every_registered_model_has_a_task():
    assert set(MODEL_BUILDERS) <= set(MODEL_TASKS)
    assert set(MODEL_TASKS) == {"cnn", "rcnn", "fast_rcnn", "faster_rcnn", "mask_rcnn", "unet"}


def test_model_task_matches_the_built_model():
    assert model_task("cnn") == seglab.build_model("cnn", num_classes=2).task == "classification"
    assert seglab.build_model("unet", num_classes=2, base_channels=4, depth=1).task == (
        model_task("unet")
    )


def test_builder_parameters_of_the_cnn():
    parameters = builder_parameters("cnn")
    assert {"num_classes", "in_channels", "widths", "activation", "norm"} <= set(parameters)


def test_unknown_model_name():
    with pytest.raises(UserError, match="unknown model name 'vgg'; known models: cnn"):
        seglab.build_model("vgg")
    with pytest.raises(UserError, match="unknown model name"):
        model_task("vgg")


def test_build_model_keeps_name_and_arguments():
    model = seglab.build_model("cnn", num_classes=4, widths=[8])
    assert model.arch == "cnn" and model.arch_args == {"num_classes": 4, "widths": [8]}
    assert model.class_names == []


def test_saved_model_carries_classes_config_and_category_ids(tmp_path):
    model = seglab.build_model("cnn", num_classes=2, widths=[4])
    model.category_ids = [3, 11]
    seglab.save_model(model, tmp_path / "m.safetensors", class_names=["a", "b"],
                       config={"seed": 1})  # fmt: skip
    metadata = read_metadata(tmp_path / "m.safetensors")
    assert metadata["arch"] == "cnn" and metadata["classes"] == ["a", "b"]
    loaded = seglab.load_model(tmp_path / "m.safetensors")
    assert loaded.category_ids == [3, 11] and loaded.config == {"seed": 1}
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_not_a_model_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a safetensors model file"):
        seglab.load_model(tmp_path / "x.safetensors")
    with pytest.raises(UserError, match="model file not found"):
        seglab.load_model(tmp_path / "missing.safetensors")
