"""`seglab export` as a user runs it (subprocess): a classifier exported, its report, and
`seglab predict` on the .onnx file giving the PyTorch model's predictions; the one-line
refusals run in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import seglab
from seglab.cli.main import main


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
