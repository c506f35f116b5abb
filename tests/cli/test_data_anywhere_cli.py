"""Data where users keep it, through the command line: COCO files anywhere, no val split,
one intensity range for a 16-bit dataset recorded in the run and used by predict."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import seglab
from seglab.cli.main import main
from seglab.data.images import load_image
from seglab.data.shapes import generate_shapes
from seglab.inference.predictor import preprocessor

# A Faster R-CNN small enough for a few CPU steps on 64 px images
DETECTOR = {
    "name": "faster_rcnn", "backbone": "resnet18", "norm": "gn", "fpn_norm": "gn",
    "trainable_stages": 5, "min_size": 64, "max_size": 64, "fpn_channels": 32,
    "anchor_sizes": [8, 16, 32, 64, 128], "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 32, "representation_size": 64,
}  # fmt: skip
TRAIN = {"batch_size": 4, "lr": 0.001, "optimizer": "adamw", "max_steps": 2, "eval_every": 2,
         "checkpoint_every": 2, "workers": 0, "device": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def scattered(tmp_path_factory):
    """COCO files kept as COCO itself keeps them: annotations/ apart from the images."""
    out = tmp_path_factory.mktemp("anywhere")
    shapes = generate_shapes(out / "shapes", task="instance", train=8, val=4, size=64, seed=1)
    (out / "annotations").mkdir()
    for split in ("train", "val"):
        shutil.copy(shapes / f"{split}.json", out / "annotations" / f"instances_{split}.json")
        shutil.copytree(shapes / split, out / "images" / f"{split}2017")
    shutil.rmtree(shapes)
    return out


def _config(path, data, model=DETECTOR, train=TRAIN):
    path.write_text(yaml.safe_dump({"seed": 0, "model": model, "data": data, "train": train}))
    return str(path)


def _files(out, *splits):
    return {
        key: str(value)
        for split in splits
        for key, value in (
            (f"{split}_json", out / "annotations" / f"instances_{split}.json"),
            (f"{split}_images", out / "images" / f"{split}2017"),
        )
    }


def test_train_check_and_eval_coco_files_anywhere(scattered, tmp_path, capsys):
    config = _config(tmp_path / "c.yaml", _files(scattered, "train", "val"))
    assert main(["data", "check", config, "-q"]) == 0
    out = capsys.readouterr().out
    assert "instances_train.json: coco layout, 3 classes" in out and "problems: none" in out
    run = tmp_path / "run"
    assert main(["train", config, "--out", str(run), "-q"]) == 0
    assert "step 2; loss=" in capsys.readouterr().out
    assert (run / "best.safetensors").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert saved["val_json"] == str(scattered / "annotations" / "instances_val.json")
    assert main(["eval", str(run / "model.safetensors"), "-q"]) == 0  # the run's own val split
    assert "AP50" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"loss", "bbox"}


def test_training_without_a_val_split_says_so_and_keeps_no_best(scattered, tmp_path, capsys):
    config = _config(tmp_path / "c.yaml", _files(scattered, "train"))
    assert main(["data", "check", config, "-q"]) == 0
    out = capsys.readouterr().out
    assert "no val split: training runs without validation" in out and "training can start" in out
    run = tmp_path / "run"
    assert main(["train", config, "--out", str(run), "-q"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "no val split" in line]
    assert len(warnings) == 1 and "no best-model selection" in warnings[0]
    assert warnings[0].startswith("seglab train: warning: ")
    assert "step 2; no validation" in captured.out
    assert "(no val split: no best.safetensors)" in captured.out
    assert (run / "model.safetensors").is_file() and not (run / "best.safetensors").exists()
    assert (run / "plots" / "loss.png").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all(record["split"] == "train" for record in records)
    assert main(["train", config, "--out", str(run), "--set", "train.max_steps=3", "-q"]) == 0
    assert "step 3; no validation" in capsys.readouterr().out  # and it resumes


def test_half_given_files_are_refused_when_the_config_is_read(scattered, tmp_path, capsys):
    files = _files(scattered, "train")
    del files["train_images"]
    config = _config(tmp_path / "c.yaml", files)
    assert main(["train", config, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"seglab train: error: {config}: data.train_json without data.train_images: give "
        "both, the COCO file and the folder its images' file_name are relative to"
    )
    assert not (tmp_path / "run").exists()


def _sixteen_bit_folders(root):
    """Two classes of 16-bit images whose values lie in 1000..3000 of 0..65535."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for name, low in (("dim", 1000), ("bright", 2000)):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                values = rng.integers(low, low + 1000, (16, 16)).astype(np.uint16)
                Image.fromarray(values).save(root / split / name / f"{index}.tif")
    return root


def test_percentiles_measured_on_train_are_recorded_and_used_by_predict(tmp_path, capsys):
    root = _sixteen_bit_folders(tmp_path / "data")
    model = {"name": "cnn", "in_channels": 1, "widths": [4, 8], "hidden": 8}
    data = {"root": str(root), "layout": "folders", "image_size": 16,
            "intensity_percentiles": [0, 100]}  # fmt: skip
    train = {**TRAIN, "lr": 0.01, "optimizer": "sgd"}
    config = _config(tmp_path / "c.yaml", data, model, train)
    assert main(["data", "check", config, "-q"]) == 0
    train_pixels = np.stack([np.asarray(Image.open(p)) for p in root.glob("train/*/*.tif")])
    low, high = float(train_pixels.min()), float(train_pixels.max())
    assert f"intensity: stored values {low:g}..{high:g} read as 0..1" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", config, "--out", str(run), "-q"]) == 0
    capsys.readouterr()
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["intensity_range"] == [
        low, high,
    ]  # fmt: skip
    image = next(root.glob("val/bright/*.tif"))
    assert main(["predict", str(run / "model.safetensors"), str(image), "--out",
                 str(tmp_path / "pred"), "-q"]) == 0  # fmt: skip
    predicted = json.loads((tmp_path / "pred" / "predictions.json").read_text())[0]["top_k"]
    trained = seglab.load_model(run / "model.safetensors")
    prepare = preprocessor(trained)
    with torch.no_grad():
        for intensity, same in (((low, high), True), (None, False)):
            logits = trained([prepare(load_image(image, 1, intensity))])[0]["logits"]
            score = float(logits.softmax(0)[predicted[0]["label"]])
            # the same computation on the same CPU, up to float32 summation order
            assert (abs(score - predicted[0]["score"]) < 1e-6) is same
