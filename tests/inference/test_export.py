"""ONNX export (`seglab.inference.export`): each graph runs in onnxruntime at sizes other
than the one it was traced at and gives PyTorch's outputs, images without detections
included; a disagreement fails the export and writes nothing."""

from __future__ import annotations

import pytest
import torch

import seglab
from seglab.inference import onnx_model
from seglab.inference.export import ExportCheckFailed, export_onnx, synthetic_image
from seglab.inference.onnx_check import compare_outputs
from seglab.inference.onnx_model import OnnxModel

# A Mask R-CNN small enough to export in a test: ResNet-18, narrow FPN and heads, few RoIs.
TINY_MASK_RCNN = {
    "backbone": "resnet18", "norm": "bn", "trainable_stages": 5, "min_size": 96,
    "max_size": 160, "fpn_channels": 32, "anchor_sizes": [8, 16, 32, 64, 128],
    "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
    "representation_size": 64, "mask_head_channels": 32, "box_score_thresh": 0.5,
}  # fmt: skip


@pytest.fixture(scope="module")
def mask_rcnn_onnx(tmp_path_factory):
    """An exported Mask R-CNN whose detections depend on the image: sharpened class logits
    with a background bias find objects in the synthetic image and none in a flat one."""
    torch.manual_seed(0)
    model = seglab.build_model("mask_rcnn", num_classes=3, **TINY_MASK_RCNN).eval()
    class_logits = model.roi_heads.box_predictor.class_logits
    with torch.no_grad():
        class_logits.weight.mul_(20.0)
        class_logits.bias.zero_()
        class_logits.bias[0] = 2.0
    path = tmp_path_factory.mktemp("export") / "mask_rcnn.onnx"
    return model, path, export_onnx(model, path)


def test_mask_rcnn_export_is_checked_on_two_sizes(mask_rcnn_onnx):
    _, path, report = mask_rcnn_onnx
    assert path.is_file() and report.path == path
    assert [check.size_hw for check in report.checks] == [(96, 128), (72, 160)]
    assert all(not check.problems for check in report.checks)
    assert all(check.summary != "0 detections" for check in report.checks)
    assert set(report.checks[0].differences) == {"boxes", "scores", "masks"}
    assert report.outputs == "boxes, labels, scores, masks"


def test_mask_rcnn_onnx_runs_any_size_and_images_without_detections(mask_rcnn_onnx):
    model, path, _ = mask_rcnn_onnx
    exported = OnnxModel(path)
    assert exported.task == "instance" and exported.card.arch == "mask_rcnn"
    detected = compare_outputs(model, exported, synthetic_image(3, (150, 90), seed=3))
    assert not detected.problems and detected.summary != "0 detections"
    flat = torch.full((3, 80, 112), 0.5)
    assert not compare_outputs(model, exported, flat).problems
    nothing = exported([flat])[0]
    assert nothing["boxes"].shape == (0, 4) and nothing["labels"].shape == (0,)
    assert nothing["masks"].shape == (0, 1, 80, 112)


@pytest.mark.parametrize("padding,sizes", [("same", [(50, 70)]), ("valid", [(100, 124)])])
def test_unet_exports_with_dynamic_sides(tmp_path, padding, sizes):
    torch.manual_seed(0)
    model = seglab.build_model("unet", num_classes=3, base_channels=4, depth=2, padding=padding)
    path = tmp_path / "unet.onnx"
    report = export_onnx(model.eval(), path)
    assert len({check.size_hw for check in report.checks}) == 2
    exported = OnnxModel(path)
    assert (exported.padding, exported.depth) == (padding, 2)  # what tiling reads
    for size in sizes:  # a third size, and a batch of two
        images = [synthetic_image(3, size, seed=seed) for seed in (1, 2)]
        with torch.no_grad():
            expected = torch.stack([out["logits"] for out in model(images)])
        got = torch.stack([out["logits"] for out in exported(images)])
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_a_disagreement_fails_the_export_and_writes_nothing(tmp_path, monkeypatch):
    run = OnnxModel.__call__

    def off_by_a_little(self, images):
        return [{"logits": out["logits"] + 1e-2} for out in run(self, images)]

    monkeypatch.setattr(onnx_model.OnnxModel, "__call__", off_by_a_little)
    model = seglab.build_model("cnn", num_classes=3, widths=[4, 8], hidden=8).eval()
    with pytest.raises(ExportCheckFailed, match=r"96x128 image: logits differ by up to 1\.00e-02"):
        export_onnx(model, tmp_path / "cnn.onnx")
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left


def test_selective_search_detectors_are_refused_before_exporting(tmp_path):
    model = seglab.build_model("fast_rcnn", num_classes=3, backbone="resnet18")
    with pytest.raises(seglab.UserError, match="fast_rcnn: its proposals come from selective"):
        export_onnx(model.eval(), tmp_path / "fast.onnx")
    assert list(tmp_path.iterdir()) == []
