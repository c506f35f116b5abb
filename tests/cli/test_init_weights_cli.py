"""Where a run's weights start, through the command line: model.backbone_weights (an
ImageNet ResNet state dict) and train.init (a whole seglab model)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
import yaml
from safetensors.torch import load_file

from seglab.cli.main import main
from seglab.data.shapes import generate_shapes

DETECTOR = {
    "name": "faster_rcnn", "backbone": "resnet18", "min_size": 64, "max_size": 64,
    "fpn_channels": 32, "anchor_sizes": [8, 16, 32, 64, 128], "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 32, "representation_size": 64,
}  # fmt: skip
TRAIN = {"batch_size": 4, "lr": 0.001, "optimizer": "adamw", "max_steps": 1, "eval_every": 100,
         "checkpoint_every": 1, "workers": 0, "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), task="instance", train=4, val=2,
                           size=64, seed=2)  # fmt: skip


@pytest.fixture(scope="module")
def two_classes(shapes, tmp_path_factory):
    """The same images with triangles dropped: 2 classes, so 3 outputs instead of 4."""
    root = tmp_path_factory.mktemp("two")
    for split in ("train", "val"):
        coco = json.loads((shapes / f"{split}.json").read_text())
        triangle = next(c["id"] for c in coco["categories"] if c["name"] == "triangle")
        coco["categories"] = [c for c in coco["categories"] if c["id"] != triangle]
        coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != triangle]
        (root / f"{split}.json").write_text(json.dumps(coco))
        (root / split).symlink_to(shapes / split)
    return root


def _config(path, root, model=None, train=None):
    raw = {"seed": 0, "model": {**DETECTOR, **(model or {})}, "data": {"root": str(root)},
           "train": {**TRAIN, **(train or {})}}  # fmt: skip
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _torchvision_resnet18(path):
    torch.manual_seed(1)  # not the run's seed 0, which would draw the same random weights
    resnet = torchvision.models.resnet18(weights=None)
    for module in resnet.modules():  # trained statistics, not the identity of a fresh norm
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(resnet.state_dict(), path)
    return resnet.state_dict()


def test_backbone_weights_load_once_and_frozen_stages_keep_them(shapes, tmp_path, capsys):
    imagenet = _torchvision_resnet18(tmp_path / "resnet18.pth")
    config = _config(tmp_path / "c.yaml", shapes,
                     {"backbone_weights": str(tmp_path / "resnet18.pth")})  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", config, "--out", str(run), "-q"]) == 0
    assert (
        f"{tmp_path / 'resnet18.pth'}: ResNet-18 weights, 100 tensors loaded into backbone.body; "
        "not used: fc.weight, fc.bias; missing: none\n"
    ) in capsys.readouterr().out
    saved = load_file(str(run / "model.safetensors"))
    # frozen BN everywhere and trainable_stages 3: the stem and layer1 are ImageNet's
    for name in ("conv1.weight", "bn1.running_var", "layer1.1.conv2.weight"):
        assert torch.equal(saved[f"backbone.body.{name}"], imagenet[name]), name
    assert not torch.equal(saved["backbone.body.layer4.0.conv1.weight"],
                           imagenet["layer4.0.conv1.weight"])  # fmt: skip  # trained a step
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["backbone_weights"] == str(
        tmp_path / "resnet18.pth"
    )
    assert main(["train", "--out", str(run), "--set", "train.max_steps=2", "-q"]) == 0
    assert "ResNet-18 weights" not in capsys.readouterr().out  # resumed: the checkpoint's


def test_weights_of_another_resnet_stop_before_the_run_exists(shapes, tmp_path, capsys):
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    config = _config(tmp_path / "c.yaml", shapes, {"backbone_weights": str(tmp_path / "r34.pth")})
    assert main(["train", config, "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"seglab train: error: {tmp_path / 'r34.pth'}: ResNet-34 weights, but the model's "
        "backbone is resnet18; set model.backbone: resnet34, or give resnet18 weights"
    ]
    assert not (tmp_path / "run").exists()


def test_init_from_a_run_with_other_classes(shapes, two_classes, tmp_path, capsys):
    first = tmp_path / "three"
    assert main(["train", _config(tmp_path / "a.yaml", shapes), "--out", str(first), "-q"]) == 0
    capsys.readouterr()
    source = first / "model.safetensors"
    frozen = {"trainable_stages": 0}  # the backbone body stays what train.init gave it
    config = _config(tmp_path / "b.yaml", two_classes, frozen, {"init": str(source)})
    second = tmp_path / "two"
    assert main(["train", config, "--out", str(second), "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"{source}: faster_rcnn with 3 classes; kept 126 tensors: backbone.body (100), "
        "backbone.fpn (16), proposal_generator.head (6), roi_heads.box_head (4)"
    )
    assert out[1] == (
        "re-initialised (other shape): roi_heads.box_predictor.class_logits.weight "
        "(4, 64) -> (3, 64), roi_heads.box_predictor.class_logits.bias (4,) -> (3,), "
        "roi_heads.box_predictor.box_deltas.weight (16, 64) -> (12, 64), "
        "roi_heads.box_predictor.box_deltas.bias (16,) -> (12,)"
    )
    assert out[2] == "model options that differ from the file's: trainable_stages 3 -> 0"
    before, after = load_file(str(source)), load_file(str(second / "model.safetensors"))
    body = [name for name in after if name.startswith("backbone.body.")]
    assert body and all(torch.equal(after[name], before[name]) for name in body)
    assert after["roi_heads.box_predictor.class_logits.weight"].shape == (3, 64)


def test_a_torchvision_weight_name_is_read_from_its_cache_offline(shapes, tmp_path, capsys,
                                                                  monkeypatch):  # fmt: skip
    """`model.backbone_weights: ResNet18_Weights.IMAGENET1K_V1` (or `imagenet`) is the file
    torchvision's weights API names, in its cache ($TORCH_HOME/hub/checkpoints): placed
    there by hand, it loads with no network (any download attempt fails the test)."""

    def offline(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    imagenet = _torchvision_resnet18(cached)
    for name in ("ResNet18_Weights.IMAGENET1K_V1", "imagenet"):
        run = tmp_path / f"run-{name}"
        config = _config(tmp_path / "c.yaml", shapes, {"backbone_weights": name})
        assert main(["train", config, "--out", str(run), "-q"]) == 0
        assert f"{cached}: ResNet-18 weights, 100 tensors loaded into backbone.body" in (
            capsys.readouterr().out
        )
        saved = load_file(str(run / "model.safetensors"))
        assert torch.equal(saved["backbone.body.conv1.weight"], imagenet["conv1.weight"])
        # the run records the name, not a path resolved against the config's folder
        recorded = yaml.safe_load((run / "config.yaml").read_text())["model"]["backbone_weights"]
        assert recorded == name


def test_a_weight_name_not_in_the_cache_offline_names_the_file_and_folder(
    shapes, tmp_path, capsys, monkeypatch
):
    import urllib.error

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    for name, message in [
        ("ResNet18_Weights.IMAGENET1K_V1",
         f"seglab train: error: model.backbone_weights ResNet18_Weights.IMAGENET1K_V1: "
         f"resnet18-f37072fd.pth is not in torchvision's cache and could not be downloaded "
         f"(<urlopen error no network>); put resnet18-f37072fd.pth from "
         f"https://download.pytorch.org/models/resnet18-f37072fd.pth in {folder} (TORCH_HOME "
         f"sets the folder), or give the file's path"),
        ("ResNet18_Weights.IMAGENET9K",
         "seglab train: error: model.backbone_weights: 'ResNet18_Weights.IMAGENET9K' is no "
         "torchvision weight name; e.g. ResNet18_Weights.IMAGENET1K_V1, "
         "ResNet18_Weights.DEFAULT or imagenet"),
    ]:  # fmt: skip
        config = _config(tmp_path / "c.yaml", shapes, {"backbone_weights": name})
        assert main(["train", config, "--out", str(tmp_path / "run"), "-q"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [message]
        assert not (tmp_path / "run").exists()
