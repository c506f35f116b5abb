"""The fine-tuning recipes: their base recipe's model with frozen BatchNorm and early stages,
a lower learning rate and a shorter schedule; a run of the base recipe loads into them whole."""

from __future__ import annotations

import dataclasses

import pytest

import seglab
from seglab.engine.config import config_warnings, load_config, recipes_dir
from seglab.models.transfer import init_from

FINETUNE = sorted(path.stem for path in recipes_dir().glob("*_finetune.yaml"))


def test_every_detector_has_a_finetune_recipe():
    detectors = ("rcnn_r18_c4", "fast_rcnn_r18_c4", "faster_rcnn_r18_fpn", "mask_rcnn_r18_fpn")
    assert {f"{name}_shapes_finetune" for name in detectors} <= set(FINETUNE)


@pytest.mark.parametrize("name", FINETUNE)
def test_the_model_is_the_base_recipes_with_frozen_norms(name):
    finetune, base = load_config(name), load_config(name.removesuffix("_finetune"))
    assert (
        finetune.model.args["norm"] == "frozen_bn" and finetune.model.args["trainable_stages"] == 3
    )
    unchanged = {
        k: v for k, v in finetune.model.args.items() if k not in ("norm", "trainable_stages")
    }
    assert unchanged == {
        k: v for k, v in base.model.args.items() if k not in ("norm", "trainable_stages")
    }
    assert finetune.model.name == base.model.name
    assert finetune.train.lr < base.train.lr and finetune.train.max_steps < base.train.max_steps
    assert finetune.train.init is None  # given with --set train.init=... or backbone_weights
    assert any("frozen_bn without model.backbone_weights" in m for m in config_warnings(finetune))
    given = dataclasses.replace(finetune, train=dataclasses.replace(finetune.train, init="m"))
    assert not any("frozen_bn" in message for message in config_warnings(given))


# What the detector recipes' `auto` options become on the shapes (seglab.data.box_fingerprint)
SHAPES_PLAN = {"min_size": 192, "max_size": 192, "anchor_sizes": [16, 32, 64, 128, 256],
               "aspect_ratios": [0.5, 1.0, 2.0], "detections_per_img": 100,
               "box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 300,
               "rpn_post_nms_top_n_test": 300}  # fmt: skip


def planned(args: dict) -> dict:
    return {**args, **{name: SHAPES_PLAN[name] for name in args if args[name] == "auto"}}


@pytest.mark.parametrize("name", FINETUNE)
def test_a_run_of_the_base_recipe_loads_whole(name, tmp_path):
    finetune, base = load_config(name), load_config(name.removesuffix("_finetune"))
    trained = seglab.build_model(base.model.name, num_classes=4, **planned(base.model.args))
    seglab.save_model(trained, tmp_path / "base.safetensors")
    model = seglab.build_model(finetune.model.name, num_classes=4, **planned(finetune.model.args))
    report = init_from(model, tmp_path / "base.safetensors")
    assert report.kept == list(model.state_dict()) and report.reinitialised == []
    # frozen norms have no place for BatchNorm's batch counters, which are no weights
    assert report.not_in_file == [] and report.unused == []
