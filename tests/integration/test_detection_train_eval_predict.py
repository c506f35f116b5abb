"""Faster / Mask R-CNN through the command line: `seglab train` a tiny model, `seglab eval`
it, `seglab predict --gt` the val images (image ids from the ground truth), and re-score those
predictions with `seglab eval --gt --pred`: both ways give the same COCO AP."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from seglab.cli.main import main
from seglab.data.shapes import generate_shapes

TINY_MODEL = {
    "backbone": "resnet18", "norm": "bn", "trainable_stages": 5, "min_size": 64,
    "max_size": 64, "fpn_channels": 16, "anchor_sizes": [8, 16, 32, 64, 128],
    "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
    "rpn_batch_size_per_image": 32, "box_batch_size_per_image": 32,
    "representation_size": 32, "box_score_thresh": 0.0, "detections_per_img": 20,
}  # fmt: skip
TINY_MASK_BRANCH = {"mask_head_channels": 16, "mask_head_convs": 1}  # mask_rcnn only


@pytest.mark.parametrize("name", ["faster_rcnn", "mask_rcnn"])
def test_train_eval_predict_rescore(name, tmp_path):
    data = generate_shapes(tmp_path / "data", task="instance", train=3, val=3, size=64, seed=5)
    # validate on the training images: a model this small and this briefly trained finds
    # objects there, so the AP compared below is not a vacuous 0 = 0
    shutil.rmtree(data / "val")
    shutil.copytree(data / "train", data / "val")
    shutil.copy(data / "train.json", data / "val.json")
    config = {
        "seed": 0,
        "model": {"name": name, "num_classes": "auto", **TINY_MODEL,
                  **(TINY_MASK_BRANCH if name == "mask_rcnn" else {})},  # fmt: skip
        "data": {"root": str(data), "layout": "coco"},
        "train": {"batch_size": 3, "lr": 0.003, "optimizer": "adamw", "max_steps": 30,
                  "eval_every": 100, "checkpoint_every": 100, "workers": 0, "device": "cpu"},
    }  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "recipe.yaml"), "--out", str(run)]) == 0
    model = str(run / "model.safetensors")

    assert main(["eval", model, "--data", str(data), "--out", str(tmp_path / "m.json")]) == 0
    from_model = json.loads((tmp_path / "m.json").read_text())

    out = tmp_path / "predicted"
    gt = str(data / "val.json")
    assert main(["predict", model, str(data / "val"), "--gt", gt, "--out", str(out)]) == 0
    assert len(list((out / "overlays").glob("*.png"))) == 3
    argv = ["eval", "--gt", gt, "--pred", str(out / "predictions.json")]
    assert main([*argv, "--out", str(tmp_path / "f.json")]) == 0
    from_files = json.loads((tmp_path / "f.json").read_text())

    iou_types = ["bbox", "segm"] if name == "mask_rcnn" else ["bbox"]
    assert sorted(from_files) == sorted([*iou_types, "per_class_AP"])
    for iou_type in iou_types:
        assert from_model[iou_type] == pytest.approx(from_files[iou_type], abs=1e-9)
        per_class = from_model["per_class_AP"][iou_type]
        assert per_class.keys() == from_files["per_class_AP"][iou_type].keys()
        for class_name, values in per_class.items():
            expected = from_files["per_class_AP"][iou_type][class_name]
            assert values == pytest.approx(expected, abs=1e-9)
    assert from_model["bbox"]["AP50"] > 0  # some detections hit: the comparison is not 0 = 0
    assert from_model["loss"] > 0
