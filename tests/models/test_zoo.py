"""The model zoo: one table of names (task, builder, options); model cards and model files."""

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
from seglab.models.card import ModelCard
from seglab.models.zoo import (
    MODEL_BUILDERS,
    MODEL_SPECS,
    build_from_card,
    builder_parameters,
    model_task,
    parameter_names,
    read_card,
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
        assert model.task == MODEL_SPECS[name].task == model_task(name)
        assert model.card == ModelCard(arch=name, arch_args=arguments, task=model.task)
        assert type(MODEL_BUILDERS[name](**arguments)) is type(model)


def test_builder_parameters_of_the_cnn():
    parameters = builder_parameters("cnn")
    assert {"num_classes", "in_channels", "widths", "activation", "norm"} <= set(parameters)


def test_unknown_model_name():
    with pytest.raises(UserError, match="unknown model name 'vgg'; known models: cnn"):
        seglab.build_model("vgg")
    with pytest.raises(UserError, match="unknown model name"):
        model_task("vgg")


def test_a_built_model_carries_its_card():
    model = seglab.build_model("cnn", num_classes=4, widths=[8])
    assert model.card == ModelCard("cnn", {"num_classes": 4, "widths": [8]}, "classification")
    assert model.card.class_names == () and model.card.config == {}
    assert model.card.label_category_ids() == [] and model.card.in_channels == 3


TRAINED = ModelCard(
    arch="cnn", arch_args={"num_classes": 2, "widths": [4], "in_channels": 1},
    task="classification", class_names=("a", "b"), category_ids=(3, 11),
    config={"seed": 1, "data": {"image_size": 32}},
)  # fmt: skip


def test_a_saved_model_comes_back_with_its_card_and_weights(tmp_path):
    model = build_from_card(TRAINED)
    assert model.card is TRAINED and model.in_channels == 1
    seglab.save_model(model, tmp_path / "m.safetensors")
    assert read_card(tmp_path / "m.safetensors") == TRAINED
    loaded = seglab.load_model(tmp_path / "m.safetensors")
    assert loaded.card == TRAINED and not loaded.training
    assert loaded.card.data == {"image_size": 32} and loaded.card.label_category_ids() == [3, 11]
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_save_model_can_name_the_classes_and_the_recipe_of_the_file(tmp_path):
    model = seglab.build_model("cnn", num_classes=2, widths=[4])
    seglab.save_model(model, tmp_path / "m.safetensors", class_names=["a", "b"], config={"x": 1})
    card = read_card(tmp_path / "m.safetensors")
    assert card.class_names == ("a", "b") and card.config == {"x": 1}
    assert model.card.class_names == ()  # the model's own card is left as it was


def test_files_written_before_the_card_still_load(tmp_path):
    """The metadata keys are those save_model always wrote; older files lack category ids."""
    model = seglab.build_model("cnn", num_classes=2, widths=[4])
    metadata = {"seglab_arch": "cnn", "seglab_args": '{"num_classes": 2, "widths": [4]}',
                "seglab_classes": '["a", "b"]', "seglab_config": "{}"}  # fmt: skip
    save_file(model.state_dict(), str(tmp_path / "old.safetensors"), metadata=metadata)
    loaded = seglab.load_model(tmp_path / "old.safetensors")
    assert loaded.card == ModelCard("cnn", {"num_classes": 2, "widths": [4]}, "classification",
                                    class_names=("a", "b"))  # fmt: skip
    assert loaded.card.label_category_ids() == [1, 2]


def test_a_model_without_a_card_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="Linear has no model card: build it with build_model"):
        seglab.save_model(torch.nn.Linear(2, 2), tmp_path / "m.safetensors")


def test_not_a_model_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a safetensors model file"):
        seglab.load_model(tmp_path / "x.safetensors")
    with pytest.raises(UserError, match="model file not found"):
        seglab.load_model(tmp_path / "missing.safetensors")
    run = tmp_path / "run"  # a run folder given for its model file: named, not errno 19/21
    run.mkdir()
    with pytest.raises(
        UserError, match=r"run: a folder, not a model file; pass the model file in it$"
    ):
        seglab.load_model(run)
    (run / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match=r"in it: .*run/model.safetensors$"):
        seglab.load_model(run)


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
