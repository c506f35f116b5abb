"""`seglab convert torchvision NAME OUT --arch A`: torchvision's weight name for a COCO
detector, read from torchvision's cache (TORCH_HOME) with downloads forbidden (issue 22)."""

from __future__ import annotations

import urllib.error

import torch
import torchvision
from safetensors.torch import load_file

from seglab.cli.main import main

NAME = "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"
FILE = "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"  # the name's URL, as torchvision caches it


def offline(url, *args, **kwargs):
    raise urllib.error.URLError("no network")


def test_a_detector_weight_name_converts_from_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    folder = tmp_path / "home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3
    )
    torch.save(reference.state_dict(), folder / FILE)
    out = tmp_path / "converted.safetensors"
    argv = ["convert", "torchvision", NAME, str(out), "--arch", "faster_rcnn_resnet50_fpn",
            "--set", "frozen_bn_eps=1e-5"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: faster_rcnn")
    converted = load_file(str(out))
    assert torch.equal(converted["backbone.body.conv1.weight"],
                       reference.state_dict()["backbone.body.conv1.weight"])  # fmt: skip


def test_a_detector_weight_name_missing_offline_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    out = tmp_path / "converted.safetensors"
    argv = ["convert", "torchvision", NAME, str(out), "--arch", "faster_rcnn_resnet50_fpn"]
    assert main(argv) == 2
    folder = tmp_path / "home" / "hub" / "checkpoints"
    assert capsys.readouterr().err.strip().splitlines() == [
        f"seglab convert: error: IN.pth {NAME}: {FILE} is not in torchvision's cache and "
        f"could not be downloaded (<urlopen error no network>); put {FILE} from "
        f"https://download.pytorch.org/models/{FILE} in {folder} (TORCH_HOME sets the "
        "folder), or give the file's path"
    ]
    assert not out.exists()
