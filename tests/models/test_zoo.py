"""The model zoo: one table of names (task, builder, options), and the saved-model metadata."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import seglab
from seglab.errors import UserError
from seglab.models.zoo import (
    MODEL_BUILDERS,
    MODEL_SPECS,
    builder_parameters,
    model_task,
    parameter_names,
    read_metadata,
)

# the smallest arguments that build each model (the detectors' defaults are ImageNet-sized)
SMALL_ARGS = {
    "cnn": {"num_classes": 2, "widths": [4]},
    "rcnn": {"num_classes": 2, "backbone": "resnet18", "representation_size": 8},
    "fast_rcnn": {"num_classes": 2, "backbone": "resnet18", "representation_size": 8},
    "faster_rcnn": {"num_classes": 2, "backbone": "resnet18", "representation_size": 8},
    "mask_rcnn": {"num_classes": 2, "backbone": "resnet18", "representation_size": 8},
    "unet": {"num_classes": 2, "base_channels": 4, "depth": 1},
}


def test_every_model_name_builds_a_model_of_its_task():
    assert set(MODEL_BUILDERS) == set(MODEL_SPECS) == set(SMALL_ARGS)
    for name, arguments in SMALL_ARGS.items():
        model = seglab.build_model(name, **arguments)
        assert model.task == MODEL_SPECS[name].task == model_task(name) and model.arch == name
        assert type(MODEL_BUILDERS[name](**arguments)) is type(model)


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


def test_builder_arguments_are_those_of_each_options_class():
    from seglab.models.classification.cnn import CNNClassifier
    from seglab.models.detection import options
    from seglab.models.segmentation.unet import UNet

    for name, option_class in [
        ("rcnn", options.RCNNOptions), ("fast_rcnn", options.FastRCNNOptions),
        ("faster_rcnn", options.FasterRCNNOptions), ("mask_rcnn", options.MaskRCNNOptions),
    ]:  # fmt: skip
        assert builder_parameters(name) == [f.name for f in dataclasses.fields(option_class)]
    assert "mask_head_channels" not in builder_parameters("faster_rcnn")
    assert "rpn_nms_thresh" not in builder_parameters("fast_rcnn")
    assert builder_parameters("unet") == parameter_names(UNet)
    assert builder_parameters("cnn") == parameter_names(CNNClassifier)


def test_import_seglab_leaves_the_detectors_and_torchvision_unimported():
    """A model's code is imported when the model is asked for (`ModelSpec.parts`)."""
    code = (
        "import sys, seglab; assert seglab.MODEL_BUILDERS and seglab.build_model; "
        "print(sorted(m for m in sys.modules if m.startswith(('torchvision', "
        "'seglab.models.detection', 'seglab.models.segmentation'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_parameter_names_of_a_dataclass_and_of_callables():
    @dataclasses.dataclass
    class Options:
        width: int
        depth: int = 2
        derived: int = dataclasses.field(init=False, default=0)

    def builder(a, *rest, b=1, **extra):
        return a

    assert parameter_names(Options) == ["width", "depth"]
    assert parameter_names(builder) == ["a", "b"]


def saved_with_weights(tmp_path, change):
    model = seglab.build_model("cnn", num_classes=2, widths=[4])
    path = tmp_path / "m.safetensors"
    seglab.save_model(model, path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    change(state)
    save_file(state, str(path), metadata=metadata)
    return path


def test_weights_that_do_not_fit_the_rebuilt_model(tmp_path):
    def drop_one(state):
        state.pop(sorted(state)[0])
        state["extra.weight"] = torch.zeros(1)

    path = saved_with_weights(tmp_path, drop_one)
    with pytest.raises(UserError, match="does not match the model") as error:
        seglab.load_model(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "unexpected keys: extra.weight" in message
    assert "missing keys: " in message and "retrain it" in message


def test_predict_and_eval_refuse_weights_that_do_not_fit(tmp_path, capsys):
    def resize(state):
        name = next(key for key in sorted(state) if key.endswith("weight"))
        state[name] = torch.zeros(1, *state[name].shape[1:])

    from PIL import Image

    from seglab.cli.main import main

    path = saved_with_weights(tmp_path, resize)
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    for argv in (["predict", str(path), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")],
                 ["eval", str(path), "--data", str(tmp_path)]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{path}: does not match the model" in err[0]
        assert "shapes saved vs expected" in err[0]
