"""train.init: a 4-class model started from a converted 91-class torchvision Mask R-CNN keeps
every backbone, FPN, RPN and head tensor and re-initialises only the class predictors."""

import pytest
import torch
import torchvision

import seglab
from seglab.cli.main import main
from seglab.errors import UserError
from seglab.models.transfer import init_from

# what a converted torchvision v1 Mask R-CNN was built with (a random torchvision model has
# BatchNorm eps 1e-5, hence the --set at conversion)
V1 = {"backbone": "resnet50", "roi_align_half_pixel": False, "frozen_bn_eps": 1e-5}
CLASS_DEPENDENT = {
    "roi_heads.box_predictor.class_logits.weight": ((91, 1024), (4, 1024)),
    "roi_heads.box_predictor.class_logits.bias": ((91,), (4,)),
    "roi_heads.box_predictor.box_deltas.weight": ((364, 1024), (16, 1024)),
    "roi_heads.box_predictor.box_deltas.bias": ((364,), (16,)),
    "roi_heads.mask_predictor.mask_logits.weight": ((91, 256, 1, 1), (4, 256, 1, 1)),
    "roi_heads.mask_predictor.mask_logits.bias": ((91,), (4,)),
}


@pytest.fixture(scope="module")
def coco_model(tmp_path_factory):
    """A torchvision COCO Mask R-CNN (random weights, 91 classes) converted by the CLI."""
    folder = tmp_path_factory.mktemp("convert")
    torch.manual_seed(0)
    torchvision_model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None
    )
    torch.save(torchvision_model.state_dict(), folder / "maskrcnn_coco.pth")
    out = folder / "maskrcnn_coco.safetensors"
    argv = ["convert", "torchvision", str(folder / "maskrcnn_coco.pth"), str(out),
            "--arch", "mask_rcnn_resnet50_fpn", "--set", "frozen_bn_eps=1e-5"]  # fmt: skip
    assert main(argv) == 0
    (folder / "maskrcnn_coco.pth").unlink()  # 170 MB no test reads, kept all module long
    return out


def _fresh(**changes):
    torch.manual_seed(1)
    return seglab.build_model("mask_rcnn", **{"num_classes": 4, **V1, **changes})


def test_four_classes_from_coco_keep_all_but_the_predictors(coco_model):
    model, fresh = _fresh(), _fresh()  # the same seed: the same initialisation
    report = init_from(model, coco_model)
    saved = seglab.load_model(coco_model).state_dict()
    state = model.state_dict()
    assert {name: (old, new) for name, old, new in report.reinitialised} == CLASS_DEPENDENT
    assert set(report.kept) == set(state) - set(CLASS_DEPENDENT)
    assert report.not_in_file == [] and report.unused == [] and report.options == []
    for name in report.kept:  # backbone.body, backbone.fpn, proposal_generator, heads
        assert torch.equal(state[name], saved[name]), name
    for name in CLASS_DEPENDENT:  # as the builder initialised them
        assert torch.equal(state[name], fresh.state_dict()[name]), name
    kept = {name.split(".")[0] for name in report.kept}
    assert kept == {"backbone", "proposal_generator", "roi_heads"}
    assert "roi_heads.mask_predictor.upsample.weight" in report.kept  # not class-dependent


def test_the_report_says_what_was_kept_and_re_initialised(coco_model):
    lines = init_from(_fresh(roi_align_half_pixel=True), coco_model).lines()
    assert lines[0] == (
        f"{coco_model}: mask_rcnn with 90 classes; kept 301 tensors: backbone.body (265), "
        "backbone.fpn (16), proposal_generator.head (6), roi_heads.box_head (4), "
        "roi_heads.mask_head (8), roi_heads.mask_predictor (2)"
    )
    assert lines[1] == (
        "re-initialised (other shape): roi_heads.box_predictor.class_logits.weight "
        "(91, 1024) -> (4, 1024), roi_heads.box_predictor.class_logits.bias (91,) -> (4,), "
        "roi_heads.box_predictor.box_deltas.weight (364, 1024) -> (16, 1024), "
        "roi_heads.box_predictor.box_deltas.bias (364,) -> (16,) (+2 more)"
    )
    assert lines[2:] == [
        "model options that differ from the file's: roi_align_half_pixel False -> True"
    ]


def test_a_model_nothing_of_which_fits_is_refused(coco_model):
    with pytest.raises(UserError, match="no tensor of this mask_rcnn model fits model cnn"):
        init_from(seglab.build_model("cnn", num_classes=3), coco_model)
