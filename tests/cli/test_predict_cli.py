"""`seglab predict`: classifier top-k + JSON; detector COCO results; semantic class maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import seglab
from seglab.cli.main import main
from seglab.errors import UserError
from seglab.inference.predictor import collect_inputs, gt_image_ids, predict_files


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    model = seglab.build_model("cnn", num_classes=3, widths=[4, 8], hidden=8)
    model.class_names = ["circle", "square", "triangle"]
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    config = {"data": {"root": "unused", "layout": "folders", "image_size": 32}}
    seglab.save_model(model.eval(), path, config=config)
    return path


@pytest.fixture()
def image_dir(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "a.png")
    Image.new("RGB", (32, 32), (10, 200, 10)).save(folder / "sub" / "a.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_classifier_prints_top_k_and_writes_json(classifier_path, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(classifier_path), str(image_dir), "--out", str(out),
                 "--top-k", "2"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith(str(image_dir))]
    assert len(lines) == 2  # both images, the sub-folder included
    assert "notes.txt: not an image, skipped" in captured.err
    predictions = json.loads((out / "predictions.json").read_text())
    assert [p["file_name"] for p in predictions] == [str(image_dir / "a.png"),
                                                    str(image_dir / "sub" / "a.jpg")]  # fmt: skip
    top = predictions[0]["top_k"]
    assert len(top) == 2 and top[0]["score"] >= top[1]["score"]
    assert top[0]["class"] in ("circle", "square", "triangle")
    assert f"{top[0]['class']} {top[0]['score']:.3f}" in lines[0]
    model = seglab.load_model(classifier_path)
    image = torch.tensor([200 / 255, 10 / 255, 10 / 255]).view(3, 1, 1).expand(3, 32, 32)
    expected = model([image])[0]["logits"].softmax(0).max().item()
    assert top[0]["score"] == pytest.approx(expected, abs=1e-5)


def run_error(capsys, args):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seglab predict: error: ")
    return err[0]


def test_explicit_non_image_file_is_refused(classifier_path, image_dir, tmp_path, capsys):
    line = run_error(capsys, ["predict", str(classifier_path), str(image_dir / "notes.txt"),
                              "--out", str(tmp_path / "o")])  # fmt: skip
    assert "notes.txt: not an image file" in line


def test_explicit_broken_image_is_refused(classifier_path, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    line = run_error(capsys, ["predict", str(classifier_path), str(tmp_path / "broken.png"),
                              "--out", str(tmp_path / "o")])  # fmt: skip
    assert "broken.png" in line and "not a readable image" in line


def test_missing_input_and_missing_model(classifier_path, tmp_path, capsys):
    line = run_error(capsys, ["predict", str(classifier_path), str(tmp_path / "nope.png"),
                              "--out", str(tmp_path / "o")])  # fmt: skip
    assert "nope.png: not found" in line
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    line = run_error(capsys, ["predict", str(tmp_path / "none.safetensors"),
                              str(tmp_path / "x.png"), "--out", str(tmp_path / "o")])  # fmt: skip
    assert "none.safetensors: model file not found" in line


def test_folder_without_images(classifier_path, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = run_error(capsys, ["predict", str(classifier_path), str(tmp_path / "empty"),
                              "--out", str(tmp_path / "o")])  # fmt: skip
    assert "no image files found" in line


class FixedDetector(nn.Module):
    """A detector that finds one box per image: enough to check the files predict writes."""

    task = "detection"
    class_names = ["circle", "square"]
    category_ids = [7, 9]

    def forward(self, images, targets=None):
        return [
            {"boxes": torch.tensor([[2.0, 3.0, 12.0, 9.0], [0.0, 0.0, 4.0, 4.0]]),
             "labels": torch.tensor([2, 1]), "scores": torch.tensor([0.9, 0.2])}
            for _ in images
        ]  # fmt: skip


def test_detector_writes_coco_results_images_and_overlays(image_dir, tmp_path):
    out = tmp_path / "out"
    inputs = collect_inputs([image_dir])
    lines = predict_files(FixedDetector(), inputs, out, score_threshold=0.5)
    assert "1 detections >= 0.5 (square 0.90)" in lines[0].line
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) == 4  # all detections, as COCO results; the threshold is for display
    assert results[0] == {"image_id": 0, "category_id": 9, "bbox": [2.0, 3.0, 10.0, 6.0],
                          "score": pytest.approx(0.9)}  # fmt: skip
    images = json.loads((out / "images.json").read_text())
    assert images[1] == {"id": 1, "file_name": str(image_dir / "sub" / "a.jpg"),
                         "height": 32, "width": 32}  # fmt: skip
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["00000_a.png", "00001_a.png"]


def test_semantic_model_writes_class_index_masks(image_dir, tmp_path):
    torch.manual_seed(0)
    model = seglab.build_model("unet", num_classes=3, base_channels=4, depth=2)
    model.class_names = ["circle", "square"]
    model.config = {"data": {"image_size": 32}}
    out = tmp_path / "out"
    predict_files(model, collect_inputs([image_dir / "a.png"]), out)
    mask = Image.open(out / "masks" / "00000_a.png")
    assert mask.size == (40, 30) and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) <= {0, 1, 2}
    assert (out / "overlays" / "00000_a.png").is_file()
    record = json.loads((out / "predictions.json").read_text())[0]
    assert record["mask"] == "masks/00000_a.png"
    assert sum(record["class_share"].values()) == pytest.approx(1.0)


def write_gt(tmp_path, file_names):
    images = [{"id": 100 + i, "file_name": name, "height": 32, "width": 32}
              for i, name in enumerate(file_names)]  # fmt: skip
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    return path


def test_detector_takes_image_ids_from_the_ground_truth(image_dir, tmp_path):
    # "sub/a.jpg" matches by its relative path, "val/a.png" by its base name; the entry
    # listed first is not the first image, so ids do not follow the input order
    gt = write_gt(tmp_path, ["sub/a.jpg", "other/b.png", "val/a.png"])
    inputs = collect_inputs([image_dir])
    ids = gt_image_ids(gt, inputs.images)
    assert ids == [102, 100]
    out = tmp_path / "out"
    predict_files(FixedDetector(), inputs, out, image_ids=ids)
    results = json.loads((out / "predictions.json").read_text())
    assert [r["image_id"] for r in results] == [102, 102, 100, 100]
    images = json.loads((out / "images.json").read_text())
    assert [(i["id"], i["file_name"]) for i in images] == [
        (102, str(image_dir / "a.png")), (100, str(image_dir / "sub" / "a.jpg"))]  # fmt: skip
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["00000_a.png", "00001_a.png"]


def test_relative_path_decides_between_equal_base_names(tmp_path):
    gt = write_gt(tmp_path, ["x/a.png", "y/a.png"])
    assert gt_image_ids(gt, [tmp_path / "y" / "a.png", tmp_path / "x" / "a.png"]) == [101, 100]
    with pytest.raises(UserError, match=r"z/a.png: several images of the ground truth .* 'a.png'"):
        gt_image_ids(gt, [tmp_path / "z" / "a.png"])


def test_image_not_in_the_ground_truth_is_refused(classifier_path, image_dir, tmp_path, capsys):
    gt = write_gt(tmp_path, ["a.png"])
    line = run_error(capsys, ["predict", str(classifier_path), str(image_dir), "--gt", str(gt),
                              "--out", str(tmp_path / "o")])  # fmt: skip
    assert f"{image_dir / 'sub' / 'a.jpg'}: not an image of the ground truth {gt}" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "content, message",
    [("{", "malformed JSON"), ('{"images": [{"id": 1}]}', "not a COCO ground truth")],
)
def test_bad_ground_truth_file(classifier_path, image_dir, tmp_path, capsys, content, message):
    (tmp_path / "gt.json").write_text(content)
    gt = tmp_path / "gt.json"
    line = run_error(capsys, ["predict", str(classifier_path), str(image_dir / "a.png"),
                              "--gt", str(gt), "--out", str(tmp_path / "o")])  # fmt: skip
    assert f"{tmp_path / 'gt.json'}: {message}" in line


def test_ground_truth_ids_are_for_detectors_only(classifier_path, image_dir, tmp_path, capsys):
    gt = write_gt(tmp_path, ["a.png"])
    line = run_error(capsys, ["predict", str(classifier_path), str(image_dir / "a.png"),
                              "--gt", str(gt), "--out", str(tmp_path / "o")])  # fmt: skip
    assert "--gt: only detectors write COCO results" in line
