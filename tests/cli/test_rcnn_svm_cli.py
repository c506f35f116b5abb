"""`seglab rcnn-svm` (the hook `seglab.cli.rcnn_svm`): fits R-CNN's SVM stage on a trained
model's training data and writes a model whose detections come from it."""

from __future__ import annotations

import argparse

import pytest
import torch

import seglab
from seglab.cli import rcnn_svm
from seglab.data.shapes import generate_shapes
from seglab.errors import UserError

TINY_RCNN = {
    "backbone": "resnet18", "norm": "bn", "min_size": 64, "max_size": 64, "warp_size": 32,
    "context_padding": 2, "box_roi_size": 2, "representation_size": 32,
    "proposal_mode": "single", "max_proposals": 30,
}  # fmt: skip


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), task="instance", train=4, val=2,
                           size=64, seed=2)  # fmt: skip


def saved_rcnn(path, shapes, **options):
    torch.manual_seed(0)
    model = seglab.build_model("rcnn", num_classes=4, **TINY_RCNN, **options)
    config = {"data": {"root": str(shapes), "layout": "coco"}}
    seglab.save_model(model, path, class_names=["circle", "square", "triangle"], config=config)
    return path


def cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    rcnn_svm.add_parser(parser.add_subparsers())
    args = parser.parse_args(["rcnn-svm", *map(str, argv)])
    return args.func(args)


def test_fits_the_svms_on_the_models_own_data_and_writes_the_model(shapes, tmp_path, capsys):
    model_path = saved_rcnn(tmp_path / "m.safetensors", shapes, second_stage="svm")
    assert cli(model_path, "--out", tmp_path / "svm.safetensors", "--max-images", 3) == 0
    out, err = capsys.readouterr()
    # a step of minutes on real data says what it does, and counts the images it reads
    assert "\nrcnn-svm: fc7 and pool5 of every region of 3 images" in err  # after the search
    assert "features: 3/3 image (100%)" in err
    assert "fitted on 3 images" in out and "circle:" in out and "hard negatives cached" in out
    fitted = seglab.load_model(tmp_path / "svm.safetensors").eval()
    assert fitted.roi_heads.box_svm.fitted
    assert fitted.roi_heads.box_svm.svm_weight[1:].abs().sum() > 0
    (detections,) = fitted([torch.rand(3, 64, 64)])
    assert torch.all((detections["scores"] >= 0) & (detections["scores"] <= 1))


def test_a_model_without_the_svm_stage_is_refused(shapes, tmp_path):
    model_path = saved_rcnn(tmp_path / "m.safetensors", shapes)
    with pytest.raises(UserError, match="second_stage: svm"):
        cli(model_path, "--out", tmp_path / "svm.safetensors")
    with pytest.raises(UserError, match="--max-images 0"):
        cli(model_path, "--out", tmp_path / "svm.safetensors", "--max-images", 0)
