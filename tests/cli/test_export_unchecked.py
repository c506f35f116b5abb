"""`seglab export` of a detector that finds nothing in the check images says that nothing
would be compared, before the export's minutes, and asks for `--image`; with
`--allow-unchecked` the file is written and the report says "NOT checked" (issue 22)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image
from tests.cli.test_export_cli import fast_rcnn  # noqa: F401  (the fixture)

from seglab.cli.main import main
from seglab.inference.export import ExportReport
from seglab.inference.onnx_check import CheckResult


def flat_image(tmp_path: Path) -> Path:
    """An image of one grey: the fixture's detector finds nothing there."""
    path = tmp_path / "flat.png"
    Image.fromarray(torch.full((80, 96, 3), 128, dtype=torch.uint8).numpy()).save(path)
    return path


def test_nothing_to_compare_is_refused_before_the_export(fast_rcnn, tmp_path, capsys,  # noqa: F811
                                                         monkeypatch):  # fmt: skip
    def no_export(*args, **kwargs):
        raise AssertionError("the export ran although nothing could be compared")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    out = tmp_path / "model.onnx"
    argv = ["export", str(fast_rcnn / "model.safetensors"), "--out", str(out),
            "--image", str(flat_image(tmp_path))]  # fmt: skip
    started = time.perf_counter()
    assert main(argv) == 1
    assert time.perf_counter() - started < 30  # PyTorch on two small images, no export
    assert capsys.readouterr().err.splitlines() == [
        f"seglab export: error: {out} not written: the model detects nothing in the check "
        "images (80x96 and 60x120: 0 detections in PyTorch), so the check would compare no "
        "box, score or mask; give an image in which the model finds objects with --image IMG "
        "(a validation image), instead of the image given, or --allow-unchecked to write it "
        "unchecked"
    ]
    assert not out.exists()


def test_an_unchecked_report_says_so(tmp_path):
    def check(size_hw, detections):
        differences, tolerances = {"boxes": 0.0, "scores": 0.0}, {"boxes": 0.01, "scores": 1e-4}
        summary = f"{detections} detections"
        return CheckResult(size_hw, summary, differences, tolerances, 1.0, 1.0,
                           detections=detections)  # fmt: skip

    (tmp_path / "m.onnx").write_bytes(b"0")
    nothing = ExportReport(tmp_path / "m.onnx", 1.0, "images", "boxes",
                           [check((80, 96), 0), check((60, 120), 0)])  # fmt: skip
    assert nothing.lines()[3].startswith("NOT checked (onnxruntime ")
    assert nothing.lines()[3].endswith(
        "no detection in the 2 images, nothing compared (--allow-unchecked):"
    )
    some = ExportReport(tmp_path / "m.onnx", 1.0, "images", "boxes",
                        [check((80, 96), 0), check((60, 120), 3)])  # fmt: skip
    assert some.lines()[3].startswith("checked (onnxruntime ")
