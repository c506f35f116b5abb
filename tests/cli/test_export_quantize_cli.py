"""`seglab export --quantize int8` as a user runs it (in-process): the report of a small
U-Net's int8 export (the float32 graph's exact check, what was quantized, the metric of
each engine on a split), and the one-line refusals of bad input, exit code 2, before any
export."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from tests.inference import int8_fixtures

import seglab
from seglab.cli.main import main
from seglab.inference import quantize

unet_run = int8_fixtures.unet_run  # the fixture, built once for both modules
CLASSES = int8_fixtures.CLASSES


def test_int8_export_reports_the_metric_of_each_engine(unet_run, tmp_path, capsys,
                                                       monkeypatch):  # fmt: skip
    """The float32 export itself is tests/inference/test_export.py's: here it is the
    fixture's file, copied."""
    _, path, _, fp32_path, fp32_report = unet_run

    def exported(model, out, **kwargs):
        shutil.copyfile(fp32_path, out)
        return dataclasses.replace(fp32_report, path=Path(out))

    monkeypatch.setattr(quantize, "export_onnx", exported)
    out = tmp_path / "unet.int8.onnx"
    argv = ["export", str(path), "--out", str(out), "--quantize", "int8", "--check-split",
            "train", "-q"]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out} (") and " MB int8; float32 " in lines[0]
    assert lines[3].startswith("float32 graph checked (onnxruntime ")
    int8 = lines.index(next(line for line in lines if line.startswith("int8: ")))
    assert lines[int8] == ("int8: onnxruntime static quantization, QDQ, int8 weights per "
                           "channel, uint8 activations (MinMax over 8 train images)")  # fmt: skip
    assert lines[int8 + 1] == "  quantized: 11 Conv"
    assert lines[int8 + 2] == "  float32: 2 ConvTranspose and every other node"
    assert lines[int8 + 3] == ("checked on train (8 images): PyTorch float32, ONNX float32, "
                               "ONNX int8")  # fmt: skip
    assert lines[int8 + 4].startswith("  mIoU: ")
    assert lines[int8 + 5].startswith("  mIoU lost: ")
    assert lines[int8 + 5].endswith("(at most 0.01)")
    assert out.is_file()


@pytest.mark.parametrize(
    "options,message",
    [
        (["--quantize", "int8", "--calibration-images", "0"],
         "--calibration-images 0: must be at least 1"),
        (["--quantize", "int8", "--max-drop", "-0.1"], "--max-drop -0.1: must be 0 or more"),
        (["--check-split", "test", "--data", "somewhere"],
         "--check-split, --data only apply with --quantize int8"),
    ],
)  # fmt: skip
def test_bad_int8_options_give_one_line(options, message, tmp_path, capsys):
    model = tmp_path / "model.safetensors"
    seglab.save_model(seglab.build_model("cnn", num_classes=3, widths=[4], hidden=4), model)
    out = tmp_path / "model.onnx"
    assert main(["export", str(model), "--out", str(out), *options]) == 2
    assert capsys.readouterr().err.splitlines() == [f"seglab export: error: {message}"]
    assert not out.exists()


def test_a_format_other_than_onnx_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "m.safetensors", "--format", "torchscript", "--quantize", "int8",
              "--out", str(tmp_path / "m.pt")])  # fmt: skip
    assert exit_info.value.code == 2
    assert "invalid choice: 'torchscript'" in capsys.readouterr().err.splitlines()[-1]


def test_r_cnn_is_refused_in_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    model = seglab.build_model("rcnn", num_classes=3, backbone="resnet18", norm="bn",
                               representation_size=16, warp_size=32, context_padding=2)  # fmt: skip
    path = tmp_path / "rcnn.safetensors"
    seglab.save_model(model, path, class_names=CLASSES[:2])
    out = tmp_path / "rcnn.onnx"
    assert main(["export", str(path), "--out", str(out), "--quantize", "int8"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "seglab export: error: --quantize int8: R-CNN takes selective-search proposals as a "
        "second input, which calibration would compute for every image, and the search "
        "outside the graph takes most of its time; export it in float32 (without --quantize)"
    ]
    assert not out.exists()


def test_a_model_without_its_data_asks_for_data(tmp_path, capsys):
    """A converted model records no training data: calibration has no images."""
    model = tmp_path / "model.safetensors"
    seglab.save_model(seglab.build_model("cnn", num_classes=3, widths=[4], hidden=4), model)
    out = tmp_path / "model.onnx"
    assert main(["export", str(model), "--out", str(out), "--quantize", "int8"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"seglab export: error: {model}: no training data recorded in the model (converted "
        "weights?); give --data DIR"
    ]
    assert not out.exists()
