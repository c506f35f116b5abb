"""ONNX export (`seglab.inference.export`): each graph runs in onnxruntime at sizes other
than the one it was traced at and gives PyTorch's outputs, images without detections
included; a disagreement fails the export and writes nothing. R-CNN's graph takes the
selective-search proposals as a second input, any number of them, none included; RoI max
pooling (Fast R-CNN) becomes ONNX's MaxRoiPool with torchvision's numbers."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import seglab
from seglab.inference import onnx_model
from seglab.inference.export import (
    ExportCheckFailed,
    custom_translations,
    export_onnx,
    synthetic_image,
)
from seglab.inference.onnx_check import _compare_detections, compare_outputs
from seglab.inference.onnx_model import OnnxModel
from seglab.ops.roi_pool import roi_pool

# A Mask R-CNN small enough to export in a test: ResNet-18, narrow FPN and heads, few RoIs.
TINY_MASK_RCNN = {
    "backbone": "resnet18", "norm": "bn", "trainable_stages": 5, "min_size": 96,
    "max_size": 160, "fpn_channels": 32, "anchor_sizes": [8, 16, 32, 64, 128],
    "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
    "representation_size": 64, "mask_head_channels": 32, "box_score_thresh": 0.5,
}  # fmt: skip
# R-CNN and Fast R-CNN as small: 32 px warps (a 2 x 2 map of C4), at most 100 proposals.
TINY_SELECTIVE_SEARCH = {
    "backbone": "resnet18", "norm": "bn", "trainable_stages": 5, "min_size": 96,
    "max_size": 160, "representation_size": 64, "box_score_thresh": 0.5, "max_proposals": 100,
}  # fmt: skip
TINY_RCNN = {**TINY_SELECTIVE_SEARCH, "warp_size": 32, "context_padding": 2, "box_roi_size": 2}


def sharpened(model: torch.nn.Module) -> torch.nn.Module:
    """Sharpened class logits with a background bias: untrained, the detector finds objects
    in the synthetic images and none in a flat one (and few, above its score threshold)."""
    class_logits = model.roi_heads.box_predictor.class_logits
    with torch.no_grad():
        class_logits.weight.mul_(20.0)
        class_logits.bias.zero_()
        class_logits.bias[0] = 2.0
    return model


@pytest.fixture(scope="module")
def mask_rcnn_onnx(tmp_path_factory):
    """An exported Mask R-CNN whose detections depend on the image: sharpened class logits
    with a background bias find objects in the synthetic image and none in a flat one."""
    torch.manual_seed(0)
    model = sharpened(seglab.build_model("mask_rcnn", num_classes=3, **TINY_MASK_RCNN).eval())
    path = tmp_path_factory.mktemp("export") / "mask_rcnn.onnx"
    return model, path, export_onnx(model, path)


# The Mask R-CNN export traces for 40-110 s (torch.export of FPN, RPN, RoIAlign, mask paste):
# `make test-all` runs these two; the default run checks the same exporter, onnxruntime
# check and dynamic sizes on the R-CNN, U-Net and classifier graphs.
@pytest.mark.slow
def test_mask_rcnn_export_is_checked_on_two_sizes(mask_rcnn_onnx):
    _, path, report = mask_rcnn_onnx
    assert path.is_file() and report.path == path
    assert [check.size_hw for check in report.checks] == [(96, 128), (72, 160)]
    assert all(not check.problems for check in report.checks)
    assert all(check.summary != "0 detections" for check in report.checks)
    assert set(report.checks[0].differences) == {"boxes", "scores", "masks"}
    assert report.outputs == "boxes, labels, scores, masks"


@pytest.mark.slow  # as above
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


@pytest.mark.parametrize(
    "padding,sizes",
    [  # same padding is the valid case's graph without the crops (20 s each): test-all
        pytest.param("same", [(50, 70)], marks=pytest.mark.slow),
        ("valid", [(100, 124)]),
    ],
)
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


@pytest.fixture(scope="module")
def rcnn_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = sharpened(seglab.build_model("rcnn", num_classes=3, **TINY_RCNN).eval())
    path = tmp_path_factory.mktemp("export") / "rcnn.onnx"
    return model, path, export_onnx(model, path)


def test_rcnn_export_takes_the_proposals_as_a_second_input(rcnn_onnx):
    _, path, report = rcnn_onnx
    assert [check.size_hw for check in report.checks] == [(96, 128), (72, 160)]
    assert all(not check.problems for check in report.checks)
    assert all(check.summary != "0 detections" for check in report.checks)
    assert all(check.search_ms > 0 for check in report.checks)
    assert report.inputs.startswith("images (1, 3, H, W) float in [0, 1], any H, W >= 16; "
                                    "proposals (P, 4) float xyxy in the image's pixels, any P "
                                    "(selective search, fast mode")  # fmt: skip
    exported = OnnxModel(path)
    assert [entry.name for entry in exported.session.get_inputs()] == ["images", "proposals"]
    assert exported.proposal_generator.settings.max_proposals == 100  # from the card


def test_rcnn_onnx_searches_as_the_pytorch_model_and_takes_any_proposals(rcnn_onnx):
    model, path, _ = rcnn_onnx
    exported = OnnxModel(path)
    image = synthetic_image(3, (150, 90), seed=3)
    with torch.no_grad():
        expected = model([image])[0]
    got = exported([image])[0]  # its own selective search, outside the graph
    assert len(expected["scores"]) > 0 and torch.equal(got["labels"], expected["labels"])
    torch.testing.assert_close(got["boxes"], expected["boxes"], atol=1e-2, rtol=0)
    torch.testing.assert_close(got["scores"], expected["scores"], atol=1e-4, rtol=0)
    flat = torch.full((3, 80, 112), 0.5)  # no detections
    check = compare_outputs(model, exported, flat)
    assert not check.problems and check.summary == "0 detections"
    none = exported.detect_with_proposals([image], [torch.zeros((0, 4))])[0]
    assert none["boxes"].shape == (0, 4) and none["labels"].dtype == torch.int64
    assert none["scores"].shape == (0,)


@pytest.mark.parametrize("name", ["rcnn", "fast_rcnn"])
def test_detecting_with_searched_proposals_is_the_models_forward(name):
    """The graph exported is `detect_with_proposals`: with selective search's proposals it
    gives `forward`'s detections exactly."""
    torch.manual_seed(0)
    arguments = TINY_RCNN if name == "rcnn" else TINY_SELECTIVE_SEARCH
    model = sharpened(seglab.build_model(name, num_classes=3, **arguments).eval())
    images = [synthetic_image(3, (96, 128)), synthetic_image(3, (70, 90), seed=1)]
    proposals = [model.proposal_generator.search(image) for image in images]
    with torch.no_grad():
        expected = model(images)
        got = model.detect_with_proposals(images, proposals)
    assert any(len(detections["scores"]) for detections in expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[key], theirs[key]) for key in mine)


class RoIMaxPool(torch.nn.Module):
    """RoI max pooling of 3 x 2 bins from a stride-4 map."""

    def forward(self, features, rois):
        return roi_pool(features, rois, (3, 2), spatial_scale=0.25)


def test_roi_max_pooling_exports_with_torchvisions_numbers(tmp_path):
    """MaxRoiPool in onnxruntime: the regions rounded half away from zero, at least one
    cell, floor/ceil bins, empty bins 0, negative maxima kept: equal bit for bit."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 4, 10, 12, generator=generator)
    features[1] = -features[1].abs()  # every maximum negative
    # corners on halves (2 * 0.25 = 0.5, 6 * 0.25 = 1.5, -6 * 0.25 = -1.5), a malformed
    # region, regions partly or wholly outside the map, then random ones
    rois = torch.tensor([
        [0, 2.0, 2.0, 30.0, 20.0], [1, 0.0, 0.0, 47.0, 39.0], [1, 5.9, 6.1, 6.2, 6.0],
        [0, -10.0, -10.0, 100.0, 100.0], [0, 2.0, 6.0, 10.0, 14.0], [1, 18.0, 22.0, 26.0, 30.0],
        [0, -2.0, -6.0, 10.0, 10.0], [1, 45.0, 37.0, 60.0, 50.0],
    ])  # fmt: skip
    batch_index = torch.randint(0, 2, (40, 1), generator=generator)
    random_rois = torch.cat([batch_index, torch.rand(40, 4, generator=generator)], dim=1)
    rois = torch.cat([rois, random_rois * torch.tensor([1.0, 50, 50, 50, 50])])
    program = torch.onnx.export(
        RoIMaxPool().eval(), (features, rois), dynamic_shapes=(
            {2: Dim("height", min=2), 3: Dim("width", min=2)}, {0: Dim("rois", min=0, max=4096)}
        ), input_names=["features", "rois"], custom_translation_table=custom_translations(),
    )  # fmt: skip
    program.save(tmp_path / "roi_pool.onnx")
    import onnxruntime

    session = onnxruntime.InferenceSession(tmp_path / "roi_pool.onnx")
    for feature_map, regions in ((features, rois), (features[..., :7, :9], rois[:0])):
        (pooled,) = session.run(None, {"features": feature_map.numpy(), "rois": regions.numpy()})
        assert torch.equal(torch.from_numpy(pooled), roi_pool(feature_map, regions, (3, 2), 0.25))


def detections(boxes, scores, labels=None) -> dict[str, torch.Tensor]:
    labels = labels or [1] * len(scores)
    return {"boxes": torch.tensor(boxes), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}  # fmt: skip


def test_a_near_tie_may_keep_another_box_but_no_more():
    """Two overlapping boxes scored alike within rounding: which NMS keeps is arbitrary,
    one such swap passes (and is reported), as does another box of the lowest score (the
    top-N cut between equal scores); a larger score gap, or every box moved, fails."""
    boxes = [[0.0, 0.0, 40.0, 40.0], [50.0, 50.0, 90.0, 80.0], [0.0, 60.0, 20.0, 90.0]]
    reference = detections(boxes, [0.9, 0.8, 0.7])
    swapped = [boxes[0], [54.0, 50.0, 94.0, 80.0], boxes[2]]  # IoU 0.82 with the kept one
    summary, _, _, problems = _compare_detections(reference, detections(swapped,
                                                  [0.9, 0.8 + 4e-7, 0.7]))  # fmt: skip
    assert problems == [] and summary == "3 detections (1 near-tie: another box kept)"
    _, _, _, problems = _compare_detections(reference, detections(swapped, [0.9, 0.80002, 0.7]))
    assert problems and "1 of 3 detections have no counterpart" in problems[0]
    elsewhere = [boxes[0], boxes[1], [60.0, 0.0, 70.0, 30.0]]  # the last place, no overlap
    _, _, _, problems = _compare_detections(reference, detections(elsewhere, [0.9, 0.8, 0.7]))
    assert problems == []
    _, _, _, problems = _compare_detections(reference, detections(
        [boxes[0], [90.0, 0.0, 99.0, 30.0], boxes[2]], [0.9, 0.8, 0.7]))  # fmt: skip
    assert problems and "1 of 3 detections have no counterpart" in problems[0]
    moved = [[x0 + 2, y0, x1 + 2, y1] for x0, y0, x1, y1 in boxes]
    _, _, _, problems = _compare_detections(reference, detections(moved, [0.9, 0.8, 0.7]))
    assert problems == ["3 of 3 detections kept another box of the same label and score in "
                        "onnxruntime: more than ties explain"]  # fmt: skip
