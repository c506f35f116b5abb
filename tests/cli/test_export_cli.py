"""`seglab export` as a user runs it (subprocess): a classifier and a Fast R-CNN exported,
their reports, and `seglab predict` on the .onnx file giving the PyTorch model's
predictions (Fast R-CNN: selective search run outside the graph with the model's settings);
the one-line refusals run in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import seglab
from seglab.cli.main import main
from seglab.inference.export import synthetic_image
from seglab.inference.onnx_model import OnnxModel


def seglab_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seglab", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(0)
    model = seglab.build_model("cnn", num_classes=3, widths=[4, 8], hidden=8)
    folder = tmp_path_factory.mktemp("run")
    config = {"data": {"root": "unused", "layout": "folders", "image_size": 32}}
    seglab.save_model(model.eval(), folder / "model.safetensors",
                      class_names=["circle", "square", "triangle"], config=config)  # fmt: skip
    return folder


def test_export_then_predict_the_onnx_file(classifier, tmp_path):
    exported = seglab_cli("export", str(classifier / "model.safetensors"), "--format", "onnx",
                          "--out", str(tmp_path / "model.onnx"))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'model.onnx'} (")
    assert lines[1] == "input: images (B, 3, H, W) float in [0, 1], any B, H, W"
    assert lines[3].startswith("checked (onnxruntime ")
    assert lines[4].startswith("  96x128: logits (3,), max |difference| logits ")
    assert lines[5].startswith("  72x160: logits (3,)")

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    Image.new("RGB", (32, 48), (10, 200, 10)).save(tmp_path / "green.png")
    results = {}
    for model in (classifier / "model.safetensors", tmp_path / "model.onnx"):
        out = tmp_path / model.suffix[1:]
        done = seglab_cli("predict", str(model), str(tmp_path / "red.png"),
                          str(tmp_path / "green.png"), "--out", str(out))  # fmt: skip
        assert done.returncode == 0, done.stderr
        results[model.suffix] = json.loads((out / "predictions.json").read_text())
    pytorch, onnx = results[".safetensors"], results[".onnx"]
    for mine, theirs in zip(onnx, pytorch, strict=True):
        assert [e["class"] for e in mine["top_k"]] == [e["class"] for e in theirs["top_k"]]
        scores = [[e["score"] for e in r["top_k"]] for r in (mine, theirs)]
        assert scores[0] == pytest.approx(scores[1], abs=1e-5)


@pytest.fixture(scope="module")
def fast_rcnn(tmp_path_factory):
    """A small Fast R-CNN whose sharpened class logits (background biased) find objects in
    the synthetic images and none in a flat one."""
    torch.manual_seed(0)
    model = seglab.build_model(
        "fast_rcnn", num_classes=3, backbone="resnet18", norm="bn", trainable_stages=5,
        min_size=96, max_size=160, representation_size=64, box_score_thresh=0.5,
        max_proposals=100,
    ).eval()  # fmt: skip
    class_logits = model.roi_heads.box_predictor.class_logits
    with torch.no_grad():
        class_logits.weight.mul_(20.0)
        class_logits.bias.zero_()
        class_logits.bias[0] = 2.0
    folder = tmp_path_factory.mktemp("run")
    seglab.save_model(model, folder / "model.safetensors", class_names=["a", "b"])
    return folder


# ~80 s (three commands, an export); tests/inference/test_export.py checks the same graphs
# (R-CNN's proposals input, RoI max pooling as MaxRoiPool, searched proposals) in-process
@pytest.mark.slow
def test_fast_rcnn_export_then_predict_the_onnx_file(fast_rcnn, tmp_path):
    onnx_file = tmp_path / "fast_rcnn.onnx"
    exported = seglab_cli("export", str(fast_rcnn / "model.safetensors"), "--out",
                          str(onnx_file))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert lines[1] == (
        "input: images (1, 3, H, W) float in [0, 1], any H, W >= 16; proposals (P, 4) float "
        "xyxy in the image's pixels, any P (selective search, fast mode, as it is, min size "
        "0 px, at most 100, run outside the graph)"
    )
    assert lines[2] == "outputs: boxes, labels, scores"
    assert lines[4].startswith("  96x128: ") and "ms (+ selective search " in lines[4]

    images = {"shapes": synthetic_image(3, (90, 120), seed=5),
              "more": synthetic_image(3, (120, 100), seed=6),
              "flat": torch.full((3, 80, 96), 0.5)}  # fmt: skip
    for name, image in images.items():
        pixels = (image * 255).round().byte().permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    results = {}
    for model in (fast_rcnn / "model.safetensors", onnx_file):
        out = tmp_path / model.suffix[1:]
        files = [str(tmp_path / f"{name}.png") for name in images]
        done = seglab_cli("predict", str(model), *files, "--out", str(out))
        assert done.returncode == 0, done.stderr
        results[model.suffix] = json.loads((out / "predictions.json").read_text())
    pytorch, onnx = results[".safetensors"], results[".onnx"]
    assert {result["image_id"] for result in pytorch} == {0, 1}  # none on the flat image
    assert len(onnx) == len(pytorch)
    for theirs in pytorch:  # each PyTorch detection has its own ONNX twin
        twins = [mine for mine in onnx if same_detection(mine, theirs)]
        assert twins, f"no detection of onnxruntime matches {theirs}"
        onnx.remove(twins[0])

    no_proposals = OnnxModel(onnx_file).detect_with_proposals([images["shapes"]],
                                                              [torch.zeros((0, 4))])[0]  # fmt: skip
    assert [tuple(value.shape) for value in no_proposals.values()] == [(0, 4), (0,), (0,)]


def same_detection(mine: dict, theirs: dict) -> bool:
    """COCO results of one detection: image, class, score within 1e-4, box within 0.01 px
    (the export check's tolerances)."""
    box_gap = max(abs(a - b) for a, b in zip(mine["bbox"], theirs["bbox"], strict=True))
    return (
        (mine["image_id"], mine["category_id"]) == (theirs["image_id"], theirs["category_id"])
        and abs(mine["score"] - theirs["score"]) <= 1e-4
        and box_gap <= 1e-2
    )


def test_export_needs_an_onnx_file_name(classifier, tmp_path, capsys):
    out = tmp_path / "model.bin"
    assert main(["export", str(classifier / "model.safetensors"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"seglab export: error: {out}: --out must end in .onnx (seglab predict tells the "
        "formats apart by it)"
    ]
    assert not out.exists()


def test_predict_refuses_an_onnx_file_not_written_by_seglab(tmp_path, capsys):
    (tmp_path / "other.onnx").write_bytes(b"not a model")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    argv = ["predict", str(tmp_path / "other.onnx"), str(tmp_path / "red.png"), "--out",
            str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "other.onnx: not an ONNX model onnxruntime can run" in error[0]
