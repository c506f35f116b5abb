"""Recipes: YAML + overrides -> frozen, checked dataclasses."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from seglab.engine.config import (
    Config,
    config_to_dict,
    config_warnings,
    load_config,
    recipes_dir,
    save_config,
)
from seglab.engine.resolve import fit_batch_size, resolve_num_classes
from seglab.errors import SeglabWarning, UserError


def write(tmp_path, raw, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def minimal(**sections):
    raw = {
        "seed": 1,
        "model": {"name": "cnn", "widths": [8, 16]},
        "data": {"root": "d", "layout": "folders"},
        "train": {"batch_size": 2, "lr": 0.1},
    }
    raw.update(sections)
    return raw


def test_shipped_recipe_by_name():
    config = load_config("cnn_shapes")
    assert (recipes_dir() / "cnn_shapes.yaml").is_file()
    assert isinstance(config, Config)
    assert config.model.name == "cnn"
    assert config.model.num_classes == "auto"
    assert config.data.layout == "folders"
    assert config.train.max_minutes == 2


def test_yaml_file_with_overrides(tmp_path):
    config = load_config(
        write(tmp_path, minimal()),
        ["train.lr=0.01", "model.widths=[4, 8, 16]", "train.max_minutes=null", "seed=7",
         "data.scale_jitter=[0.5, 2]", "train.grad_clip=1"],
    )  # fmt: skip
    assert config.train.lr == 0.01
    assert config.model.args == {"widths": [4, 8, 16]}
    assert config.train.max_minutes is None
    assert config.seed == 7
    assert config.data.scale_jitter == (0.5, 2.0)
    assert config.train.grad_clip == 1.0 and isinstance(config.train.grad_clip, float)
    assert config.train.batch_size == 2


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, minimal()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.lr = 1.0  # type: ignore[misc]


def test_exponent_without_dot_is_a_float(tmp_path):
    # YAML 1.1 reads `1e-3` as a string; a learning rate written so is still a float
    config = load_config(write(tmp_path, minimal(train={"lr": "1e-3"})))
    assert config.train.lr == pytest.approx(1e-3)


def test_save_and_load_round_trip(tmp_path):
    config = load_config(write(tmp_path, minimal()), ["train.milestones=[10, 20]"])
    save_config(config, tmp_path / "run" / "config.yaml")
    assert load_config(tmp_path / "run" / "config.yaml") == config


@pytest.mark.parametrize(
    "override, key",
    [
        ("colour=red", "'colour'"),
        ("train.learning_rate=0.1", "'train.learning_rate'"),
        ("model.depthh=3", "'model.depthh'"),
        ("data.flip=0.5", "'data.flip'"),
    ],
)
def test_unknown_key_names_the_key_and_the_valid_ones(tmp_path, override, key):
    with pytest.raises(UserError, match="unknown key") as error:
        load_config(write(tmp_path, minimal()), [override])
    assert key in str(error.value)
    assert "valid keys:" in str(error.value)


def test_unknown_model_argument_lists_the_builder_arguments(tmp_path):
    with pytest.raises(UserError) as error:
        load_config(write(tmp_path, minimal()), ["model.depthh=3"])
    assert "widths" in str(error.value) and "activation" in str(error.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=abc", "train.batch_size must be int"),
        ("train.batch_size=2.5", "train.batch_size must be int"),
        ("train.lr=fast", "train.lr must be float"),
        ("train.optimizer=adam", "train.optimizer must be one of sgd, adamw"),
        ("train.precision=fp16", "train.precision must be one of fp32, bf16"),
        ("train.amp=fp16", "train.precision must be one of fp32, bf16"),
        ("train.device=tpu", "train.device"),
        ("train.max_steps=0", "train.max_steps must be positive"),
        ("model.num_classes=many", "model.num_classes must be int"),
        ("data.scale_jitter=[1]", "data.scale_jitter"),
        ("data.hflip=yes", "data.hflip must be float"),
        ("train=5", "'train' is not a mapping"),
        ("train.grad_clip=0", "train.grad_clip must be positive"),
        ("train.momentum=1.5", r"train.momentum \(AdamW's beta1\) must be in \[0, 1\)"),
        ("train.gamma=0", "train.gamma must be positive"),
        # every data.* value when the config is read, before a file is read or written
        ("data.layout=cocoo", "data.layout must be one of coco, masks, folders, not 'cocoo'"),
        ("data.layout=masks", "data.layout 'masks' has no data for model cnn .classification."),
        ("data.hflip=1.5", r"c.yaml: data.hflip is a probability in \[0, 1\], not 1.5"),
        ("data.image_size=0", "c.yaml: data.image_size must be a positive number of pixels"),
        ("data.scale_jitter=[2, 1]", "c.yaml: data.scale_jitter must be .lo, hi. with 0 < lo"),
        ("data.weight_map=true", "c.yaml: data.weight_map: only for semantic segmentation"),
    ],
)
def test_bad_values_are_user_errors(tmp_path, override, message):
    with pytest.raises(UserError, match=message):
        load_config(write(tmp_path, minimal()), [override])


def test_amp_is_read_as_precision_with_a_rename_note(tmp_path):
    """`train.amp` (none | bf16), the key's earlier name, still reads, and says the new one;
    a resumed run's config.yaml written before the rename compares equal (run_dir)."""
    for amp, precision in (("none", "fp32"), ("bf16", "bf16")):
        with pytest.warns(SeglabWarning, match="train.amp is now spelled train.precision"):
            config = load_config(write(tmp_path, minimal(train={"lr": 0.1, "amp": amp})))
        assert config.train.precision == precision
    with pytest.raises(UserError, match="train.amp is the old name of train.precision"):
        load_config(write(tmp_path, minimal(train={"lr": 0.1, "amp": "bf16", "precision": "bf16"})))


def test_unknown_model_name(tmp_path):
    with pytest.raises(UserError, match="unknown model name 'resnet'; known models: .*cnn"):
        load_config(write(tmp_path, minimal()), ["model.name=resnet"])


def test_missing_data_root(tmp_path):
    raw = minimal(data={"layout": "folders"})
    with pytest.raises(UserError, match="data.root is required"):
        load_config(write(tmp_path, raw))


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_recipe_lists_the_recipes():
    with pytest.raises(UserError, match=r"shipped recipe \(did you mean cnn_shapes\?\); .*unet"):
        load_config("cnn_shapez")


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: cnn\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(path)


def test_override_without_equals_sign(tmp_path):
    with pytest.raises(UserError, match="expected key=value"):
        load_config(write(tmp_path, minimal()), ["train.lr"])


def test_num_classes_auto_counts_background_except_for_the_classifier(tmp_path):
    classifier = load_config(write(tmp_path, minimal()))
    assert resolve_num_classes(classifier, ["a", "b", "c"]).model.num_classes == 3
    unet = load_config(write(tmp_path, minimal(model={"name": "unet"})), ["data.layout=masks"])
    assert resolve_num_classes(unet, ["a", "b", "c"]).model.num_classes == 4


def test_num_classes_that_disagrees_with_the_data(tmp_path):
    config = load_config(write(tmp_path, minimal()), ["model.num_classes=5"])
    with pytest.raises(UserError, match="model.num_classes must be 3, not 5"):
        resolve_num_classes(config, ["a", "b", "c"])


@pytest.mark.parametrize(
    "name, valid",
    [
        ("cnn", ["widths", "activation"]),
        ("faster_rcnn", ["backbone", "fpn_channels", "rpn_nms_thresh", "box_score_thresh"]),
        ("mask_rcnn", ["backbone", "mask_head_channels", "detections_per_img"]),
        ("unet", ["base_channels", "depth", "padding", "upsampling"]),
    ],
)
def test_unknown_model_key_lists_each_builders_keys(tmp_path, name, valid):
    layout = {"cnn": "folders", "unet": "masks"}.get(name, "coco")  # the rest is checked first
    raw = minimal(model={"name": name}, data={"root": "d", "layout": layout})
    with pytest.raises(
        UserError, match=r"^--set model.bogus=1: unknown key 'model\.bogus'; valid keys: "
    ) as error:
        load_config(write(tmp_path, raw), ["model.bogus=1"])
    listed = str(error.value).split("valid keys: ")[1].split(", ")
    assert set(valid) <= set(listed) and "num_classes" not in listed
    assert len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["train.warmup_steps=100", "train.max_steps=100"],
         "train.warmup_steps=100 >= train.max_steps=100: the learning rate never reaches"),
        (["train.milestones=[10]"], "the cosine schedule ignores them"),
        (["train.schedule=step"], "without train.milestones keeps the learning rate constant"),
        (["train.schedule=step", "train.milestones=[50, 200]", "train.max_steps=100"],
         "train.milestones [200] are not before train.max_steps=100"),
    ],
)  # fmt: skip
def test_settings_that_cannot_do_what_was_meant_are_warned(tmp_path, overrides, expected):
    config = load_config(write(tmp_path, minimal()), overrides)
    messages = config_warnings(config)
    assert len(messages) == 1 and expected in messages[0]
    assert all("\n" not in message for message in messages)


def test_sensible_settings_give_no_warning(tmp_path):
    assert config_warnings(load_config(write(tmp_path, minimal()))) == []
    step = ["train.schedule=step", "train.milestones=[50, 80]", "train.max_steps=100"]
    assert config_warnings(load_config(write(tmp_path, minimal()), step)) == []
    assert config_warnings(load_config("cnn_shapes")) == []


def test_a_batch_larger_than_the_train_split_is_the_whole_split(tmp_path):
    config = load_config(write(tmp_path, minimal()), ["train.batch_size=16"])
    with pytest.warns(SeglabWarning, match="train.batch_size=16 is larger than the 5 training"):
        fitted = fit_batch_size(config, 5)
    assert fitted.train.batch_size == 5
    assert fitted == dataclasses.replace(config, train=fitted.train)  # nothing else changes
    assert fit_batch_size(config, 16) is config


def test_a_run_saved_with_amp_resumes_with_precision(tmp_path):
    """A run folder whose config.yaml says `amp: none` (written before the rename) resumes
    with the same config: the old key is compared as today's `precision: fp32`."""
    from seglab.engine.checkpoint import CHECKPOINT_NAME
    from seglab.engine.run_dir import CONFIG_NAME, check_resume

    config = load_config(write(tmp_path, minimal()))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    raw = config_to_dict(config)
    raw["train"]["amp"] = "none" if raw["train"].pop("precision") == "fp32" else "bf16"
    (run_dir / CONFIG_NAME).write_text(yaml.safe_dump(raw))
    (run_dir / CHECKPOINT_NAME).write_bytes(b"")
    check_resume(run_dir, config)  # no "the run was started with train.amp=..." refusal
    bf16 = dataclasses.replace(config, train=dataclasses.replace(config.train, precision="bf16"))
    with pytest.raises(UserError, match="train.precision='fp32', now 'bf16'"):
        check_resume(run_dir, bf16)
