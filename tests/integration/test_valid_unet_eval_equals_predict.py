"""`seglab eval` of a valid-padding U-Net scores what `seglab predict` writes: every pixel
of each whole image, predicted by overlap-tile, at a size the network's poolings refuse
(256 px for depth 3), so the metrics equal those of the predicted masks exactly."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from torch import nn

import seglab
from seglab.cli.main import main
from seglab.data.shapes import generate_shapes
from seglab.evaluation.confusion import ConfusionMatrix
from seglab.evaluation.semantic import semantic_metrics
from seglab.models.segmentation.unet import valid_output_size

CLASSES = ["circle", "square", "triangle"]  # seglab.data.shapes


def save_valid_unet(path, data):
    """A depth-3 valid U-Net with weights of our own (He-normal, random biases: several
    classes are predicted) and the card of a run trained on `data` at 256 px."""
    torch.manual_seed(0)
    model = seglab.build_model("unet", num_classes=4, base_channels=4, depth=3,
                               padding="valid", norm="none")  # fmt: skip
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.normal_(module.bias, std=0.1)
    config = {"data": {"root": str(data), "layout": "masks", "image_size": 256}}
    seglab.save_model(model, path, class_names=CLASSES, config=config)


def test_valid_unet_eval_equals_the_metrics_of_its_predicted_masks(tmp_path):
    data, model, predicted = tmp_path / "data", tmp_path / "unet.safetensors", tmp_path / "out"
    generate_shapes(data, task="semantic", train=1, val=2, size=256, seed=0)
    save_valid_unet(model, data)
    assert valid_output_size(256, 3) is None  # a forward pass of the image is refused
    assert main(["eval", str(model), "--out", str(tmp_path / "m.json"), "-q"]) == 0
    assert main(["predict", str(model), str(data / "val" / "images"), "--out", str(predicted),
                 "-q"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "m.json").read_text())
    confusion = ConfusionMatrix(4)
    for mask_path in sorted((data / "val" / "masks").glob("*.png")):
        truth = torch.from_numpy(np.asarray(Image.open(mask_path)).astype(np.int64))
        class_map = np.asarray(Image.open(predicted / "masks" / mask_path.name))
        assert class_map.shape == truth.shape == (256, 256)  # whole images
        confusion.update(torch.from_numpy(class_map.astype(np.int64)), truth)
    assert int(confusion.matrix.sum()) == 2 * 256 * 256
    expected = semantic_metrics(confusion.matrix, ["background", *CLASSES])
    assert {key: metrics[key] for key in expected} == expected  # the same confusion matrix
    assert (confusion.matrix.sum(dim=0) > 0).sum() >= 3  # classes predicted: not a trivial map
