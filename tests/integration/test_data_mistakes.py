"""Data mistakes a user makes, through the command line as the user runs it: each one is
either handled as documented (with a warning line saying what was done) or stopped before
the first training step with one line naming the file (exit 2, no traceback)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import seglab
from seglab.cli.main import main
from seglab.data.shapes import generate_shapes

TINY_CNN = ["--set", "model.widths=[4, 8]", "--set", "model.hidden=8", "--set",
            "data.image_size=32"]  # fmt: skip
TINY_UNET = ["--set", "model.base_channels=4", "--set", "model.depth=2", "--set",
             "data.image_size=32", "--set", "data.cache_mb=0"]  # fmt: skip
TINY_DETECTOR = {
    "backbone": "resnet18", "norm": "bn", "trainable_stages": 5, "min_size": 64,
    "max_size": 64, "fpn_channels": 16, "anchor_sizes": [8, 16, 32, 64, 128],
    "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
    "rpn_batch_size_per_image": 32, "box_batch_size_per_image": 32,
    "representation_size": 32, "box_score_thresh": 0.0, "detections_per_img": 20,
}  # fmt: skip


def short_run(steps: int = 1) -> list[str]:
    settings = {"train.max_steps": steps, "train.eval_every": steps, "train.warmup_steps": 0,
                "train.checkpoint_every": steps, "train.batch_size": 2, "train.workers": 0,
                "train.device": "cpu"}  # fmt: skip
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def one_error_line(capsys, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def warning_lines(err: str, about: str) -> list[str]:
    return [line for line in err.splitlines() if ": warning: " in line and about in line]


@pytest.fixture(scope="module")
def classify_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify") / "data"
    return generate_shapes(root, task="classify", train=6, val=3, size=32, seed=0)


@pytest.fixture(scope="module")
def semantic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("semantic") / "data"
    return generate_shapes(root, task="semantic", train=12, val=3, size=32, seed=0)


def _copy(root, tmp_path, name="copy"):
    return shutil.copytree(root, tmp_path / name)


def test_16_bit_grayscale_png_is_predicted_as_its_8_bit_copy(tmp_path, capsys):
    """It was read as all white by `seglab predict` ("0 detections", exit 0)."""
    model = seglab.build_model("faster_rcnn", num_classes=2, **TINY_DETECTOR)
    seglab.save_model(model.eval(), tmp_path / "model.safetensors", class_names=["thing"])
    gray = np.zeros((48, 64), dtype=np.uint8)
    gray[8:30, 10:40], gray[25:45, 35:60] = 180, 90
    Image.fromarray(gray).save(tmp_path / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # same levels
    Image.fromarray(np.full_like(gray, 255)).save(tmp_path / "white.png")
    results = {}
    for name in ("gray8", "gray16", "white"):
        out = tmp_path / name
        args = ["predict", str(tmp_path / "model.safetensors"), str(tmp_path / f"{name}.png")]
        assert main([*args, "--out", str(out), "--score-threshold", "0"]) == 0
        results[name] = json.loads((out / "predictions.json").read_text())
        overlay = np.asarray(Image.open(next((out / "overlays").glob("*.png"))))
        if name != "white":  # the gray images are mostly black; read as all white before
            assert overlay.mean() < 200
    assert results["gray8"] and results["gray16"] == results["gray8"]
    assert results["white"] != results["gray16"]


def test_binary_0_255_masks_train_class_1_with_a_warning(semantic_root, tmp_path, capsys):
    """0/255 masks were read as background + ignored: mIoU 0.0000 and no word."""
    root = _copy(semantic_root, tmp_path)
    (root / "classes.txt").unlink()
    for path in root.glob("*/masks/*.png"):
        binary = (np.asarray(Image.open(path)) > 0).astype(np.uint8) * 255
        Image.fromarray(binary).save(path)
    run = tmp_path / "run"
    args = ["train", "unet_shapes", "--out", str(run), "--set", f"data.root={root}"]
    assert main([*args, *TINY_UNET, *short_run()]) == 0
    err = capsys.readouterr().err
    train_note = warning_lines(err, f"{root / 'train' / 'masks'}: binary masks (only 0 and 255)")
    assert len(train_note) == 1 and "12 read with 255 = class 1" in train_note[0]
    assert len(warning_lines(err, "binary masks")) == 2  # one line per split
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["per_class"]["1"]["iou"] is not None  # class 1 is in the ground truth


def test_stray_mask_value_without_classes_file_stops_with_the_file(semantic_root, tmp_path, capsys):
    """One stray value 7 used to give K = 7 silently."""
    root = _copy(semantic_root, tmp_path)
    (root / "classes.txt").unlink()
    stray = root / "train" / "masks" / "000004.png"
    mask = np.asarray(Image.open(stray)).copy()
    mask[0, 0] = 7
    Image.fromarray(mask).save(stray)
    args = ["train", "unet_shapes", "--out", str(tmp_path / "run"), "--set", f"data.root={root}"]
    line = one_error_line(capsys, [*args, *TINY_UNET, *short_run()])
    assert f"{stray}: mask values 7 are not classes" in line and "K = 3" in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert main(["data", "check", str(root)]) == 2
    out = capsys.readouterr().out
    assert "mask value that is no class" in out and "train/masks/000004.png" in out


def test_a_bad_mask_late_in_the_data_stops_the_run_before_step_1(semantic_root, tmp_path, capsys):
    """It failed after step 10, when the loader reached the image."""
    root = _copy(semantic_root, tmp_path)
    last = sorted((root / "train" / "masks").glob("*.png"))[-1]
    Image.fromarray(np.full((32, 32), 9, dtype=np.uint8)).save(last)
    run = tmp_path / "run"
    args = ["train", "unet_shapes", "--out", str(run), "--set", f"data.root={root}"]
    line = one_error_line(capsys, [*args, *TINY_UNET, *short_run(steps=20)])
    assert f"{last}: mask values 9 are not classes" in line and "classes.txt names 3" in line
    assert not (run / "checkpoint.pt").exists() and not (run / "metrics.jsonl").exists()


def test_coco_annotation_repairs_are_counted_in_one_line_and_training_runs(tmp_path, capsys):
    """Clipped and dropped boxes and polygons were silent; zero-area boxes rejected the data."""
    root = generate_shapes(tmp_path / "data", task="instance", train=3, val=2, size=64, seed=5)
    coco = json.loads((root / "train.json").read_text())
    annotations = coco["annotations"]
    annotations[0]["bbox"] = [10, 10, 0, 4]  # zero area
    annotations[1]["bbox"][0] = -3.0  # partly outside
    annotations[2]["bbox"] = [70, 70, 5, 5]  # entirely outside the 64 x 64 image
    annotations[3]["segmentation"] = [[1, 1, 5, 5]]  # 2 points
    annotations[4]["segmentation"] = [[1, 1, 9, 1, 9, 9, 1]]  # odd coordinate count
    (root / "train.json").write_text(json.dumps(coco))
    recipe = {"seed": 0, "model": {"name": "mask_rcnn", **TINY_DETECTOR},
              "data": {"root": str(root), "layout": "coco"}}  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    args = ["train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run")]
    assert main([*args, *short_run()]) == 0
    lines = warning_lines(capsys.readouterr().err, str(root / "train.json"))
    assert len(lines) == 1
    for part in ("box partly outside its image: 1 clipped", "box entirely outside its image: "
                 "1 dropped", "zero-area box: 1 dropped", "polygon with fewer than 3 points: 1 "
                 "dropped", "polygon with an odd number of coordinates: 1 dropped",
                 "annotation left without a valid polygon: 2 dropped (mask models)"):  # fmt: skip
        assert part in lines[0]


def test_grayscale_data_on_an_rgb_model_stops_up_front(classify_root, tmp_path, capsys):
    """It trained silently (1 channel broadcast over the 3-channel normalisation)."""
    root = _copy(classify_root, tmp_path)
    for path in root.rglob("*.png"):
        Image.open(path).convert("L").save(path)
    args = ["train", "cnn_shapes", "--out", str(tmp_path / "rgb"), "--set", f"data.root={root}"]
    line = one_error_line(capsys, [*args, *TINY_CNN, *short_run()])
    assert f"{root / 'train'}: every image is grayscale (1 channel) but the model takes 3" in line
    assert "set model.in_channels=1, or data.channels=3" in line
    assert not (tmp_path / "rgb" / "checkpoint.pt").exists()
    assert main([*args, *TINY_CNN, *short_run(), "--set", "data.channels=3"]) == 0
    args = ["train", "cnn_shapes", "--out", str(tmp_path / "gray"), "--set", f"data.root={root}"]
    assert main([*args, *TINY_CNN, *short_run(), "--set", "model.in_channels=1"]) == 0


def test_rgb_data_on_a_one_channel_model_stops_up_front(classify_root, tmp_path, capsys):
    """It ended in a RuntimeError traceback from the first convolution."""
    args = ["train", "cnn_shapes", "--out", str(tmp_path / "run"), "--set",
            f"data.root={classify_root}", *TINY_CNN, *short_run()]  # fmt: skip
    line = one_error_line(capsys, [*args, "--set", "model.in_channels=1"])
    assert "the images are colour (3 channels) but model.in_channels=1" in line
    assert "data.channels=1 to load them as grayscale" in line
    both = ["--set", "model.in_channels=1", "--set", "data.channels=1"]
    assert main([*args, *both]) == 0
    assert seglab.load_model(tmp_path / "run" / "model.safetensors").in_channels == 1


def test_an_image_that_fails_to_decode_in_a_loader_worker_is_one_line(
    classify_root, tmp_path, capsys
):
    """Headers are checked up front; pixels only when decoded, here in a worker process,
    whose exception torch raises again with the worker's traceback in its message."""
    root = _copy(classify_root, tmp_path)
    broken = sorted((root / "train").rglob("*.png"))[0]
    broken.write_bytes(broken.read_bytes()[:200])  # the header reads, the pixels do not
    args = ["train", "cnn_shapes", "--out", str(tmp_path / "run"), "--set", f"data.root={root}",
            *TINY_CNN, *short_run(steps=4), "--set", "train.workers=1"]  # fmt: skip
    line = one_error_line(capsys, args)
    assert line == (f"seglab train: error: {broken}: not a readable image (image file is "
                    "truncated); remove or replace it")  # fmt: skip
