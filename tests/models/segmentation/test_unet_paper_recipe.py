"""The `unet_shapes_paper` recipe: the U-Net paper's training rules, each written out in the
file (not left to a default), and a short run of it that trains and validates."""

from __future__ import annotations

import json

import pytest
import yaml

from seglab.engine.config import load_config, recipes_dir
from seglab.models.segmentation.unet import valid_margin, valid_output_size

RECIPE = "unet_shapes_paper"
# (section, key, value): Ronneberger et al. 2015; the section of the paper in the recipe.
PAPER_RULES = [
    ("model", "padding", "valid"),  # §2: unpadded convolutions
    ("model", "norm", "none"),  # §2: convolution + ReLU
    ("model", "upsampling", "transpose"),  # §2: 2x2 up-convolution
    ("model", "dropout", 0.5),  # §3.1: drop-out at the end of the contracting path
    ("model", "init", "he"),  # §3: std sqrt(2 / N)
    ("model", "loss", "ce"),  # §3: softmax cross entropy weighted by the weight map, eq. 1
    ("data", "weight_map", True),  # §3: eq. 2
    ("data", "weight_map_w0", 10),  # §3: w0 = 10
    ("data", "weight_map_sigma", 5),  # §3: sigma = 5 px
    ("data", "elastic", True),  # §3.1: elastic deformations
    ("data", "rot90", True),  # §3.1: rotation invariance
    ("train", "optimizer", "sgd"),  # §3: stochastic gradient descent
    ("train", "momentum", 0.99),  # §3: high momentum
    ("train", "batch_size", 1),  # §3: a single image per batch
]


def recipe_yaml() -> dict:
    return yaml.safe_load((recipes_dir() / f"{RECIPE}.yaml").read_text())


@pytest.mark.parametrize(("section", "key", "value"), PAPER_RULES)
def test_each_rule_of_the_paper_is_written_in_the_recipe(section, key, value):
    assert recipe_yaml()[section][key] == value


def test_large_tiles_extended_by_mirroring_so_the_output_is_the_whole_tile():
    """§2-3: the input tile is the output tile plus the network's margin on every side,
    mirrored beyond the image (data.mirror_margin); it is an allowed input size."""
    written = recipe_yaml()
    config = load_config(RECIPE)
    depth, crop = written["model"]["depth"], written["data"]["crop_size"]
    assert written["data"]["mirror_margin"] == valid_margin(depth)
    assert valid_output_size(crop + 2 * valid_margin(depth), depth) == crop
    assert crop >= 0.6 * config.data.image_size  # a large tile, most of the image


def test_the_recipe_trains_and_validates_every_pixel(tmp_path):
    """Three steps on 64 px shapes (resized to the recipe's 256 px) and a validation that
    scores the whole 256 x 256 val image (a forward pass would refuse 256 at depth 3)."""
    from seglab.cli.main import main
    from seglab.data.shapes import generate_shapes

    data = generate_shapes(tmp_path / "data", task="semantic", train=2, val=1, size=64, seed=0)
    run = tmp_path / "run"
    arguments = ["train", RECIPE, "--out", str(run), "-q"]
    for override in [f"data.root={data}", "train.max_steps=3", "train.max_minutes=null",
                     "train.schedule=cosine", "model.base_channels=2"]:  # fmt: skip
        arguments += ["--set", override]
    assert main(arguments) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validation = [record for record in records if record.get("split") == "val"]
    assert validation and 0 <= validation[-1]["mIoU"] <= 1
    assert validation[-1]["pixel_accuracy"] > 0
