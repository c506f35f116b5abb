"""`seglab eval MODEL --data DIR` against `seglab eval --gt --pred` on the model's own
predictions, and against metrics computed independently from the model's outputs.

(Named *_roundtrip so its module name differs from tests/cli/test_eval_cli.py: the test
folders have no __init__.py.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import seglab
from seglab.cli.main import main
from seglab.data import DataConfig, build_dataset
from seglab.data.coco_results import to_coco_results
from seglab.data.shapes import generate_shapes
from seglab.models import zoo

SHAPES = ["circle", "square", "triangle"]  # the class names of seglab.data.shapes


class ThresholdShapeDetector(nn.Module):
    """A classical instance segmenter for the shapes data, standing in for a trained model.

    Pixels far from the (median) background colour, 3x3 median filtered, split into
    connected components; the class is guessed from how much of its box a component fills.
    """

    task = "instance"

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.tensor(0.3))

    def forward(self, images, targets=None):
        return [self._detect(image) for image in images]

    def forward_with_losses(self, images, targets):
        return self.forward(images), {"loss": torch.zeros(())}

    def _detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        background = image.flatten(1).median(dim=1).values  # (3,)
        distance = (image - background[:, None, None]).abs().sum(dim=0)  # (H, W)
        foreground = ndimage.median_filter((distance > self.threshold).numpy(), size=3)
        components, count = ndimage.label(foreground)
        boxes, labels, scores, masks = [], [], [], []
        for index in range(1, count + 1):
            mask = components == index
            ys, xs = np.nonzero(mask)
            if len(ys) < 6:
                continue
            box = [xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0]
            fill = len(ys) / ((box[2] - box[0]) * (box[3] - box[1]))
            labels.append(2 if fill > 0.9 else 1 if fill > 0.65 else 3)  # square, circle, triangle
            boxes.append(box)
            scores.append(fill)
            masks.append(mask)
        height, width = image.shape[-2:]
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "masks": torch.from_numpy(np.stack(masks)).float()[:, None]
            if masks
            else torch.zeros(0, 1, height, width),
        }


def eval_saved(model, folder, data, class_names, config=None) -> dict:
    """Save `model` in `folder`, run `seglab eval` on it and return the metrics JSON."""
    seglab.save_model(model, folder / "model.safetensors", class_names=class_names, config=config)
    out = folder / "m.json"
    argv = ["eval", str(folder / "model.safetensors"), "--data", str(data), "--out", str(out)]
    assert main(argv) == 0
    return json.loads(out.read_text())


def val_dataset(data, layout: str, task: str, image_size: int = 256):
    config = DataConfig(root=str(data), layout=layout, image_size=image_size)
    return build_dataset(config, "val", task=task, train=False)


def dump_predictions(model, data_dir, path):
    dataset = build_dataset(DataConfig(root=str(data_dir)), "val", task=model.task, train=False)
    outputs, image_ids = [], []
    with torch.no_grad():
        for image, target in dataset:
            outputs += model([image])
            image_ids.append(target["image_id"])
    path.write_text(json.dumps(to_coco_results(outputs, image_ids, dataset.category_ids)))


def test_model_eval_equals_files_eval_on_its_predictions(tmp_path, monkeypatch):
    spec = zoo.ModelSpec("instance", lambda: (ThresholdShapeDetector, ThresholdShapeDetector))
    monkeypatch.setitem(zoo.MODEL_SPECS, "threshold_detector", spec)
    data = generate_shapes(tmp_path / "data", task="instance", train=1, val=6, size=96, seed=3)
    model = seglab.build_model("threshold_detector")
    run = tmp_path / "run"
    config = {"data": {"root": "/elsewhere", "layout": "coco", "scale_jitter": [0.5, 1.5]}}
    seglab.save_model(model, run / "model.safetensors", class_names=SHAPES, config=config)
    assert main(["eval", str(run / "model.safetensors"), "--data", str(data)]) == 0
    # default --out for data other than the model's (its config names /elsewhere)
    from_model = json.loads((run / "metrics-data-val.json").read_text())

    dump_predictions(seglab.load_model(run / "model.safetensors"), data, tmp_path / "pred.json")
    argv = ["eval", "--gt", str(data / "val.json"), "--pred", str(tmp_path / "pred.json")]
    assert main([*argv, "--out", str(tmp_path / "files.json")]) == 0
    from_files = json.loads((tmp_path / "files.json").read_text())

    assert sorted(from_model) == ["bbox", "loss", "per_class_AP", "segm"]
    assert sorted(from_files) == ["bbox", "per_class_AP", "segm"]
    for iou_type in ("bbox", "segm"):
        assert from_model[iou_type] == pytest.approx(from_files[iou_type], abs=1e-9)
        for name, values in from_model["per_class_AP"][iou_type].items():
            assert values == pytest.approx(from_files["per_class_AP"][iou_type][name], abs=1e-9)
    assert from_model["segm"]["AP"] > 0.1  # the stand-in detects shapes: not a vacuous 0 = 0


def test_mask_rcnn_eval_runs_in_the_image_frame(tmp_path):
    data = generate_shapes(tmp_path / "data", task="instance", train=1, val=2, size=64, seed=0)
    torch.manual_seed(0)
    model = seglab.build_model(
        "mask_rcnn", num_classes=4, backbone="resnet18", min_size=96, max_size=96,
        fpn_channels=16, representation_size=32, mask_head_channels=16,
        box_score_thresh=0.0, detections_per_img=10,
    )  # fmt: skip
    from_model = eval_saved(model, tmp_path, data, SHAPES)
    dump_predictions(seglab.load_model(tmp_path / "model.safetensors"), data, tmp_path / "p.json")
    predictions = json.loads((tmp_path / "p.json").read_text())
    # An untrained model with no score threshold still detects: there are masks to check.
    assert 0 < len(predictions) <= 20
    # --pred checks every mask's RLE against the ground-truth image size (64 x 64).
    argv = ["eval", "--gt", str(data / "val.json"), "--pred", str(tmp_path / "p.json")]
    assert main([*argv, "--out", str(tmp_path / "f.json")]) == 0
    from_files = json.loads((tmp_path / "f.json").read_text())
    for iou_type in ("bbox", "segm"):
        assert from_model[iou_type] == pytest.approx(from_files[iou_type], abs=1e-9)
    assert from_model["loss"] > 0


def test_classifier_eval_with_inferred_layout(tmp_path):
    data = generate_shapes(tmp_path / "data", task="classify", train=1, val=9, size=64, seed=1)
    torch.manual_seed(1)
    model = seglab.build_model("cnn", num_classes=3, widths=(8, 16), hidden=0)
    # No data config saved: the layout (folders) is inferred from DIR.
    metrics = eval_saved(model, tmp_path, data, SHAPES)

    model = seglab.load_model(tmp_path / "model.safetensors")
    dataset = val_dataset(data, "folders", "classification")
    expected = np.zeros((3, 3), np.int64)
    with torch.no_grad():
        for image, target in dataset:
            expected[int(target["labels"]), int(model([image])[0]["logits"].argmax())] += 1
    assert metrics["confusion_matrix"] == expected.tolist()
    assert metrics["accuracy"] == pytest.approx(np.trace(expected) / 9)
    assert set(metrics["per_class_recall"]) == set(dataset.class_names)
    assert (tmp_path / "plots" / "confusion_matrix.png").stat().st_size > 1000


def test_unet_eval_against_independent_miou(tmp_path):
    data = generate_shapes(tmp_path / "data", task="semantic", train=1, val=3, size=64, seed=2)
    torch.manual_seed(2)
    model = seglab.build_model("unet", num_classes=4, base_channels=4, depth=2)
    config = {"data": {"layout": "masks", "image_size": 64}}
    metrics = eval_saved(model, tmp_path, data, SHAPES, config)

    model = seglab.load_model(tmp_path / "model.safetensors")
    dataset = val_dataset(data, "masks", "semantic", image_size=64)
    intersection, union = np.zeros(4), np.zeros(4)
    with torch.no_grad():
        for image, target in dataset:
            predicted = model([image])[0]["logits"].argmax(0).numpy()
            truth = target["semantic_mask"].numpy()
            valid = truth != 255
            for c in range(4):
                intersection[c] += np.sum((predicted == c) & (truth == c) & valid)
                union[c] += np.sum(((predicted == c) | (truth == c)) & valid)
    present = union > 0
    assert metrics["mIoU"] == pytest.approx(np.mean(intersection[present] / union[present]))
    assert list(metrics["per_class"]) == ["background", "circle", "square", "triangle"]


def test_data_with_other_classes_than_the_model_is_refused(tmp_path, capsys):
    data = generate_shapes(tmp_path / "data", task="classify", train=1, val=3, size=64, seed=1)
    model = seglab.build_model("cnn", num_classes=3, widths=(4,), hidden=0)
    seglab.save_model(model, tmp_path / "model.safetensors", class_names=["cat", "dog", "eel"])
    assert main(["eval", str(tmp_path / "model.safetensors"), "--data", str(data)]) == 2
    error = capsys.readouterr().err
    assert "classes ['circle', 'square', 'triangle'] differ from the model's" in error
    assert not list(tmp_path.glob("metrics*.json"))
