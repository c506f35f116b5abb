"""`seglab eval`: agreement with pycocotools, the files it writes, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from safetensors.torch import save_file
from tests.scripts import load_script

import seglab
from seglab.cli.main import main

# The random COCO ground truth / predictions shared with tests/evaluation/test_coco.py.
synthetic_coco = load_script(Path(__file__).parents[1] / "evaluation" / "synthetic_coco.py")


def write_files(tmp_path: Path, seed: int, *, masks: bool) -> tuple[Path, Path]:
    gt = synthetic_coco.make_gt(seed)
    predictions = synthetic_coco.make_predictions(gt, seed, masks=masks)
    return synthetic_coco.write_json(tmp_path, gt, predictions)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("masks", [False, True])
def test_eval_files_agrees_with_pycocotools(tmp_path, capsys, seed, masks):
    gt_path, pred_path = write_files(tmp_path, seed, masks=masks)
    out = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    # Without --iou-type: bbox, and segm when the predictions have masks.
    iou_types = ["bbox", "segm"] if masks else ["bbox"]
    assert list(metrics) == [*iou_types, "per_class_AP"]
    assert list(metrics["per_class_AP"]) == iou_types
    for iou_type in iou_types:
        values = metrics[iou_type]
        reference = synthetic_coco.pycocotools_stats(gt_path, pred_path, iou_type)
        assert 0.05 < reference[0] < 0.95
        assert list(values.values()) == pytest.approx(reference, abs=1e-3)
        assert list(values) == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["metric", *iou_types]
    assert f"{metrics['bbox']['AP']:.4f}" in table.splitlines()[1]


def test_eval_files_prints_per_class_ap_and_draws_precision_recall(tmp_path, capsys):
    gt_path, pred_path = write_files(tmp_path, 0, masks=True)
    out = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--out", str(out)]) == 0
    per_class = json.loads(out.read_text())["per_class_AP"]
    lines = capsys.readouterr().out.splitlines()
    for iou_type in ("bbox", "segm"):
        header = lines.index(f"class{'':<11}{iou_type + ' AP':>10}{iou_type + ' AP50':>12}")
        for offset, (name, values) in enumerate(per_class[iou_type].items(), start=1):
            assert lines[header + offset].split() == [name, f"{values['AP']:.4f}",
                                                      f"{values['AP50']:.4f}"]  # fmt: skip
        plot = tmp_path / "plots" / f"precision_recall_{iou_type}.png"
        assert plot.read_bytes().startswith(b"\x89PNG") and f"wrote {plot}" in lines


def test_eval_files_with_iou_type_segm_only(tmp_path):
    gt_path, pred_path = write_files(tmp_path, 4, masks=True)
    out = tmp_path / "m.json"
    argv = ["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--iou-type", "segm"]
    assert main([*argv, "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["segm", "per_class_AP"]
    assert list(metrics["segm"].values()) == pytest.approx(
        synthetic_coco.pycocotools_stats(gt_path, pred_path, "segm"), abs=1e-3
    )


def test_empty_prediction_list_is_zero_ap_not_a_crash(tmp_path):
    gt_path, pred_path = write_files(tmp_path, 0, masks=False)
    pred_path.write_text("[]")
    out = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["bbox"]["AP"] == 0.0
    argv = ["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--iou-type", "segm"]
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["segm"]["AP"] == 0.0


def run_bad(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    return error


def test_bad_coco_files(tmp_path, capsys):
    gt_path, pred_path = write_files(tmp_path, 0, masks=False)
    gt, predictions = json.loads(gt_path.read_text()), json.loads(pred_path.read_text())

    def bad(name: str, content) -> str:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    cases = {
        "ground-truth file not found": [
            "--gt", str(tmp_path / "no.json"), "--pred", str(pred_path)
        ],
        "predictions file not found": ["--gt", str(gt_path), "--pred", str(tmp_path / "no.json")],
        "malformed JSON": ["--gt", str(gt_path), "--pred", bad("broken.json", '[{"image_id": ')],
        "must be a JSON list": ["--gt", str(gt_path), "--pred", bad("dict.json", {"a": 1})],
        "image_id 999 is not in the ground truth": [
            "--gt", str(gt_path), "--pred", bad("id.json", [{**predictions[0], "image_id": 999}])
        ],
        "lacks score": [
            "--gt", str(gt_path), "--pred",
            bad("score.json", [{k: v for k, v in predictions[0].items() if k != "score"}]),
        ],
        "bbox must be [x, y, width, height]": [
            "--gt", str(gt_path), "--pred", bad("box.json", [{**predictions[0], "bbox": [1, 2]}])
        ],
        "--iou-type 'keypoints': unknown": [
            "--gt", str(gt_path), "--pred", str(pred_path), "--iou-type", "keypoints"
        ],
        "--iou-type segm needs a 'segmentation'": [
            "--gt", str(gt_path), "--pred", str(pred_path), "--iou-type", "segm"
        ],
        "not a COCO ground truth (no 'images' list)": [
            "--gt", bad("gt_list.json", []), "--pred", str(pred_path)
        ],
        "lacks area": [
            "--gt", bad("gt_area.json", {**gt, "annotations": [
                {k: v for k, v in gt["annotations"][0].items() if k != "area"}
            ]}),
            "--pred", str(pred_path),
        ],
        "--gt and --pred go together": ["--gt", str(gt_path)],
    }  # fmt: skip
    for expected, argv in cases.items():
        error = run_bad(capsys, ["eval", *argv])
        assert error.startswith("seglab eval: error: ") and expected in error, (expected, error)


def test_unknown_categories_are_ignored_as_pycocotools_does_with_a_warning(tmp_path, capsys):
    gt_path, pred_path = write_files(tmp_path, 1, masks=True)
    predictions = json.loads(pred_path.read_text())
    for prediction in predictions[::3]:
        prediction["category_id"] = 2  # the ground truth's categories are 1, 3, 7
    pred_path.write_text(json.dumps(predictions))
    out = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--out", str(out)]) == 0
    assert "category ids [2] are not in the ground truth" in capsys.readouterr().err
    metrics = json.loads(out.read_text())
    for iou_type in ("bbox", "segm"):
        reference = synthetic_coco.pycocotools_stats(gt_path, pred_path, iou_type)
        assert list(metrics[iou_type].values()) == pytest.approx(reference, abs=1e-3)


def test_polygon_and_uncompressed_rle_predictions_with_boxes(tmp_path):
    gt_path, pred_path = write_files(tmp_path, 2, masks=True)
    predictions = json.loads(pred_path.read_text())
    for index, prediction in enumerate(predictions):
        x, y, w, h = prediction["bbox"]
        if index % 2:
            prediction["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        else:
            rle = mask_utils.decode(prediction["segmentation"])
            prediction["segmentation"] = uncompressed_rle(rle)
    pred_path.write_text(json.dumps(predictions))
    out = tmp_path / "m.json"
    argv = ["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--iou-type", "segm"]
    assert main([*argv, "--out", str(out)]) == 0
    reference = synthetic_coco.pycocotools_stats(gt_path, pred_path, "segm")
    assert reference[0] > 0.05
    assert list(json.loads(out.read_text())["segm"].values()) == pytest.approx(reference, abs=1e-3)


def uncompressed_rle(mask) -> dict:
    """COCO's uncompressed RLE: run lengths of 0s and 1s in column-major order."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def test_segm_prediction_of_the_wrong_size(tmp_path, capsys):
    gt_path, pred_path = write_files(tmp_path, 0, masks=True)
    predictions = json.loads(pred_path.read_text())
    predictions[0]["segmentation"]["size"] = [5, 5]
    pred_path.write_text(json.dumps(predictions))
    error = run_bad(capsys, ["eval", "--gt", str(gt_path), "--pred", str(pred_path)])
    assert "prediction 0: segmentation must be a compressed RLE" in error
    del predictions[0]["bbox"]
    predictions[0]["segmentation"] = [[1, 1, 5, 1, 5, 5]]  # a polygon needs a bbox
    pred_path.write_text(json.dumps([predictions[0]]))
    argv = ["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--iou-type", "segm"]
    error = run_bad(capsys, argv)
    assert "prediction 0: segmentation must be a compressed RLE" in error


def test_bad_model_arguments(tmp_path, capsys):
    not_a_model = tmp_path / "model.safetensors"
    not_a_model.write_bytes(b"hello, not a safetensors file")
    error = run_bad(capsys, ["eval", str(not_a_model), "--data", str(tmp_path)])
    assert str(not_a_model) in error and "not a safetensors model file" in error

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    error = run_bad(capsys, ["eval", str(foreign), "--data", str(tmp_path)])
    assert "no seglab metadata" in error

    missing = tmp_path / "missing.safetensors"
    assert "model file not found" in run_bad(capsys, ["eval", str(missing), "--data", "."])
    assert "model file not found" in run_bad(capsys, ["eval", str(missing)])  # --data: its own
    assert "give MODEL [--data DIR]" in run_bad(capsys, ["eval"])
    gt_path, pred_path = write_files(tmp_path, 0, masks=False)
    argv = ["eval", str(missing), "--gt", str(gt_path), "--pred", str(pred_path)]
    assert "not both" in run_bad(capsys, argv)


def test_bad_device_and_batch_size(tmp_path, capsys):
    model = tmp_path / "model.safetensors"  # never read: the options are checked first
    argv = ["eval", str(model), "--data", str(tmp_path)]
    assert "--device 'gpu': unknown" in run_bad(capsys, [*argv, "--device", "gpu"])
    assert "must be at least 1" in run_bad(capsys, [*argv, "--batch-size", "0"])
    if not torch.cuda.is_available():
        assert "CUDA is not available" in run_bad(capsys, [*argv, "--device", "cuda"])


def test_data_folder_without_a_recognisable_layout(tmp_path, capsys):
    import seglab

    model = seglab.build_model("cnn", num_classes=3, widths=(4,), hidden=0)
    seglab.save_model(model, tmp_path / "model.safetensors", class_names=["a", "b", "c"])
    (tmp_path / "data").mkdir()
    argv = ["eval", str(tmp_path / "model.safetensors"), "--data", str(tmp_path / "data")]
    assert "no val.json, val/images/ or val/<class>/ found" in run_bad(capsys, argv)
    argv[-1] = str(tmp_path / "missing")
    assert "data folder not found" in run_bad(capsys, argv)


def test_evaluating_other_data_keeps_the_runs_own_metrics(tmp_path, capsys):
    """Without --out: metrics.json for the val split of the model's training data; a file
    named after the data and split for anything else, never over the run's own numbers."""
    from seglab.data.shapes import generate_shapes

    trained_on = generate_shapes(tmp_path / "shapes", task="classify", train=1, val=3, size=32)
    other = generate_shapes(tmp_path / "other", task="classify", train=2, val=3, size=32, seed=1)
    model = seglab.build_model("cnn", num_classes=3, widths=[4], hidden=0)
    run = tmp_path / "run"
    config = {"data": {"root": str(trained_on), "layout": "folders", "image_size": 32}}
    seglab.save_model(model, run / "model.safetensors",
                      class_names=["circle", "square", "triangle"], config=config)  # fmt: skip
    evaluations = [
        ([str(trained_on) + "/"], run / "metrics.json"),
        ([str(other)], run / "metrics-other-val.json"),
        ([str(trained_on), "--split", "train"], run / "metrics-shapes-train.json"),
    ]
    for data, written in evaluations:
        assert main(["eval", str(run / "model.safetensors"), "--data", *data, "-q"]) == 0
        assert f"wrote {written}\n" in capsys.readouterr().out
    own = json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "metrics-other-val.json").read_text()) != own
    assert sorted(p.name for p in run.glob("metrics*.json")) == [
        "metrics-other-val.json",
        "metrics-shapes-train.json",
        "metrics.json",
    ]


@pytest.mark.parametrize("loss, independent", [("ce", True), ("ce+dice", False)])
def test_validation_loss_and_the_batch_size(tmp_path, capsys, loss, independent):
    """docs/conventions.md: batches are weighted by their images, so a loss that is a mean
    over images (cross-entropy, images of one size) does not depend on --batch-size; U-Net's
    Dice, one soft Dice over all pixels of a batch, does."""
    from seglab.data.shapes import generate_shapes

    data = generate_shapes(tmp_path / "d", task="semantic", train=1, val=8, size=48, seed=0)
    torch.manual_seed(0)
    model = seglab.build_model("unet", num_classes=4, base_channels=4, depth=2, loss=loss)
    config = {"data": {"root": str(data), "layout": "masks", "image_size": 48}}
    seglab.save_model(model, tmp_path / "unet.safetensors", config=config,
                      class_names=["circle", "square", "triangle"])  # fmt: skip
    losses = []
    for batch_size in (1, 3, 8):
        out = tmp_path / f"m{batch_size}.json"
        argv = ["eval", str(tmp_path / "unet.safetensors"), "--data", str(data), "-q"]
        assert main([*argv, "--batch-size", str(batch_size), "--out", str(out)]) == 0
        losses.append(json.loads(out.read_text())["loss"])
    spread = max(losses) - min(losses)
    # float32 sums of 48 x 48 pixel losses per image: a few 1e-7 relative apart at most
    assert (spread < 1e-5 * losses[0]) == independent, losses


def test_unet_on_coco_instance_data_reports_the_mask_ap_of_its_instances(tmp_path, capsys):
    """`seglab eval` of a U-Net on COCO data: mIoU and, from its connected components, the
    mask AP that `seglab predict --instances components` + `seglab eval --gt --pred` give."""
    from seglab.data.shapes import generate_shapes

    root = generate_shapes(tmp_path / "shapes", task="instance", train=1, val=3, size=64)
    torch.manual_seed(0)
    model = seglab.build_model("unet", num_classes=4, base_channels=4, depth=2, norm="none")
    for module in model.modules():  # large weights: confident, blob-shaped class maps
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.normal_(module.bias, std=0.1)
    config = {"data": {"root": str(root), "layout": "coco", "image_size": 64}}
    seglab.save_model(model.eval(), tmp_path / "unet.safetensors",
                      class_names=["circle", "square", "triangle"], config=config)  # fmt: skip
    model_path, gt = str(tmp_path / "unet.safetensors"), str(root / "val.json")
    assert main(["eval", model_path, "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"mIoU", "segm", "per_class_AP"} <= set(metrics)
    assert list(metrics["per_class_AP"]["segm"]) == ["circle", "square", "triangle"]

    assert main(["predict", model_path, str(root / "val"), "--instances", "components",
                 "--gt", gt, "--out", str(tmp_path / "p")]) == 0  # fmt: skip
    results = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert results  # the untrained U-Net finds regions: the AP compared is of real results
    assert main(["eval", "--gt", gt, "--pred", str(tmp_path / "p" / "predictions.json"),
                 "--iou-type", "segm", "--out", str(tmp_path / "f.json")]) == 0  # fmt: skip
    from_files = json.loads((tmp_path / "f.json").read_text())
    assert metrics["segm"] == pytest.approx(from_files["segm"], abs=1e-9)
    assert (tmp_path / "plots" / "precision_recall_segm.png").is_file()
