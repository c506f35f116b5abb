"""`seglab predict`: classifier top-k + JSON; detector COCO results; semantic class maps
(tiled) or instances as COCO results."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import seglab
from seglab.cli.main import main
from seglab.errors import UserError
from seglab.inference.predictor import collect_inputs, gt_image_ids, predict_files
from seglab.inference.visualize import class_colour
from seglab.models.card import ModelCard


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    model = seglab.build_model("cnn", num_classes=3, widths=[4, 8], hidden=8)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    config = {"data": {"root": "unused", "layout": "folders", "image_size": 32}}
    seglab.save_model(model.eval(), path, class_names=["circle", "square", "triangle"],
                      config=config)  # fmt: skip
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
    card = ModelCard("fixed", {}, "detection", class_names=("circle", "square"),
                     category_ids=(7, 9))  # fmt: skip

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
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a-2.png", "a.png"]


def test_models_run_in_inference_mode(image_dir, tmp_path):
    """predict needs no autograd at all: inference_mode, not only no_grad (no version
    counters, no view tracking)."""
    modes = []
    detector = FixedDetector()
    detector.register_forward_pre_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))
    predict_files(detector, collect_inputs([image_dir]), tmp_path / "out")
    assert modes and all(modes)


def trained_at_32_px(model):
    """`model` with the card of a U-Net trained on circles and squares at 32 px."""
    model.card = dataclasses.replace(
        model.card, class_names=("circle", "square"), config={"data": {"image_size": 32}}
    )
    return model


def test_semantic_model_writes_class_index_masks(image_dir, tmp_path):
    torch.manual_seed(0)
    model = trained_at_32_px(seglab.build_model("unet", num_classes=3, base_channels=4, depth=2))
    out = tmp_path / "out"
    predict_files(model, collect_inputs([image_dir / "a.png"]), out)
    mask = Image.open(out / "masks" / "a.png")
    assert mask.size == (40, 30) and mask.mode == "P"  # class indices, shown in colour
    assert set(np.unique(np.asarray(mask))) <= {0, 1, 2}
    palette = mask.getpalette()  # the overlays' colours: background black, classes 1, 2
    assert palette[:3] == [0, 0, 0] and palette[3:9] == [*class_colour(1), *class_colour(2)]
    assert (out / "overlays" / "a.png").is_file()
    record = json.loads((out / "predictions.json").read_text())[0]
    assert record["mask"] == "masks/a.png"
    assert sum(record["class_share"].values()) == pytest.approx(1.0)


def test_semantic_model_predicts_at_the_scale_it_was_trained_at(tmp_path):
    # data.image_size 32: trained and evaluated on images whose shortest side is 32 px, so a
    # 64 x 96 image is seen at 32 x 48 and the class map is brought back to 64 x 96.
    torch.manual_seed(0)
    model = seglab.build_model("unet", num_classes=3, base_channels=4, depth=2).eval()
    model = trained_at_32_px(model)
    seen = []
    model.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0][0].shape[-2:])))
    image = random_png(tmp_path / "big.png", (64, 96))
    predict_files(model, collect_inputs([tmp_path / "big.png"]), tmp_path / "out")
    assert seen == [(32, 48)]
    small = torch.nn.functional.interpolate(image[None], size=(32, 48), mode="bilinear",
                                            antialias=True)  # fmt: skip
    with torch.no_grad():
        logits = model([small[0]])[0]["logits"].softmax(0)
    expected = torch.nn.functional.interpolate(logits[None], size=(64, 96), mode="bilinear")[0]
    class_map = np.asarray(Image.open(tmp_path / "out" / "masks" / "big.png"))
    top2 = expected.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-3).numpy()
    assert class_map.shape == (64, 96) and clear.mean() > 0.9
    np.testing.assert_array_equal(class_map[clear], expected.argmax(0).numpy()[clear])


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
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a-2.png", "a.png"]


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
    assert "--gt: only detectors and --instances write COCO results" in line


def save_unet(path, **arch):
    """A tiny U-Net with weights of our own (He-normal, small random biases: few exact ties),
    so that what these tests see does not hang on the U-Net's default initialisation."""
    torch.manual_seed(0)
    arch = {"depth": 2, **arch}
    model = seglab.build_model("unet", base_channels=4, norm="none", **arch)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.normal_(module.bias, std=0.1)
    names = [f"c{k}" for k in range(1, arch.get("num_classes", 2))]
    seglab.save_model(model.eval(), path, class_names=names)
    return seglab.load_model(path).eval()


def whole_image_probabilities(model, image):
    """One forward pass of a valid U-Net on the image mirror-padded to an allowed size."""
    from seglab.models.segmentation.unet import valid_margin, valid_output_size

    margin, (height, width) = valid_margin(model.depth), image.shape[-2:]
    extra = [next(e for e in range(64) if valid_output_size(side + 2 * margin + e, model.depth))
             for side in (height, width)]  # fmt: skip
    padded = np.pad(image.numpy(), ((0, 0), (margin, margin + extra[0]),
                                    (margin, margin + extra[1])), mode="reflect")  # fmt: skip
    with torch.no_grad():
        logits = model([torch.from_numpy(padded)])[0]["logits"]
    return logits.softmax(dim=0)[:, :height, :width]


def random_png(path, size_hw, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (*size_hw, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255


def test_valid_unet_tiled_class_map_equals_whole_image_prediction(tmp_path):
    from seglab.models.segmentation.unet import valid_output_size

    model = save_unet(tmp_path / "unet.safetensors", num_classes=3, padding="valid")
    image = random_png(tmp_path / "big.png", (70, 90))
    assert valid_output_size(60, 2) < 70  # --tile-size 60: several tiles across the image
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "unet.safetensors"), str(tmp_path / "big.png"),
                 "--tile-size", "60", "--out", str(out)]) == 0  # fmt: skip
    class_map = np.asarray(Image.open(out / "masks" / "big.png"))
    probabilities = whole_image_probabilities(model, image)
    top2 = probabilities.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-4).numpy()  # pixels whose argmax float error cannot flip
    assert class_map.shape == (70, 90) and clear.mean() > 0.95
    np.testing.assert_array_equal(class_map[clear], probabilities.argmax(0).numpy()[clear])


def test_valid_unet_with_a_tile_too_small_for_its_depth(tmp_path, capsys):
    """depth 4: --tile-size 132 is below the smallest working tile (204 px), which is used."""
    model = save_unet(tmp_path / "unet.safetensors", padding="valid", depth=4)
    image = random_png(tmp_path / "img.png", (30, 42))
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "unet.safetensors"), str(tmp_path / "img.png"),
                 "--tile-size", "132", "--out", str(out), "-q"]) == 0  # fmt: skip
    assert capsys.readouterr().err == ""
    class_map = np.asarray(Image.open(out / "masks" / "img.png"))
    probabilities = whole_image_probabilities(model, image)
    top2 = probabilities.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-4).numpy()
    assert class_map.shape == (30, 42) and clear.mean() > 0.95
    np.testing.assert_array_equal(class_map[clear], probabilities.argmax(0).numpy()[clear])


def test_same_unet_uses_tile_size_and_overlap_and_small_images_go_whole(tmp_path):
    from seglab.inference.tiling import predict_tiled

    model = save_unet(tmp_path / "unet.safetensors", num_classes=3)
    big = random_png(tmp_path / "big.png", (64, 80), seed=1)
    small = random_png(tmp_path / "small.png", (24, 30), seed=2)  # fits in one 32 px tile
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "unet.safetensors"), str(tmp_path / "big.png"),
                 str(tmp_path / "small.png"), "--tile-size", "32", "--overlap", "8",
                 "--out", str(out)]) == 0  # fmt: skip
    expected = predict_tiled(model, big, tile_size=32, overlap=8).argmax(0).numpy()
    whole = predict_tiled(model, big, tile_size=80).argmax(0).numpy()
    assert (expected != whole).any()  # the tiling is visible, so the options were used
    np.testing.assert_array_equal(np.asarray(Image.open(out / "masks" / "big.png")), expected)
    with torch.no_grad():
        probabilities = model([small])[0]["logits"].softmax(0)  # one pass on the whole image
    small_map = np.asarray(Image.open(out / "masks" / "small.png"))
    top2 = probabilities.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-5).numpy()
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(small_map[clear], probabilities.argmax(0).numpy()[clear])


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    from seglab.data.shapes import generate_shapes

    return generate_shapes(tmp_path_factory.mktemp("shapes"), task="instance", train=1, val=2,
                           size=64)  # fmt: skip


@pytest.mark.parametrize("method", ["components", "watershed"])
def test_instances_write_coco_results_that_seglab_eval_scores(
    shapes_root, tmp_path, capsys, method
):
    from seglab.data import DataConfig, build_dataset
    from seglab.inference.instances import coco_instance_results

    dataset = build_dataset(DataConfig(root=str(shapes_root), image_size=64), "val",
                            task="semantic", train=False)  # fmt: skip
    model_path = tmp_path / "unet.safetensors"
    model = save_unet(model_path, num_classes=len(dataset.class_names) + 1)
    out, gt = tmp_path / "out", shapes_root / "val.json"
    assert main(["predict", str(model_path), str(shapes_root / "val"), "--instances", method,
                 "--gt", str(gt), "--out", str(out)]) == 0  # fmt: skip
    assert "instances >= 0.5" in capsys.readouterr().out
    results = json.loads((out / "predictions.json").read_text())
    expected = coco_instance_results(model, dataset, tile_size=256, method=method)
    assert results and len(results) == len(expected)

    def key(result):
        return result["image_id"], -result["score"], result["bbox"]

    for got, want in zip(sorted(results, key=key), sorted(expected, key=key), strict=True):
        assert got == {**want, "score": pytest.approx(want["score"], abs=1e-6)}
    gt_ids = {image["file_name"]: image["id"] for image in json.loads(gt.read_text())["images"]}
    images = json.loads((out / "images.json").read_text())
    assert {Path(i["file_name"]).name: i["id"] for i in images} == gt_ids
    assert len(list((out / "overlays").iterdir())) == 2 and not (out / "masks").exists()
    assert main(["eval", "--gt", str(gt), "--pred", str(out / "predictions.json"),
                 "--iou-type", "segm"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    from seglab.evaluation.coco import evaluate_coco

    ap = evaluate_coco(json.loads(gt.read_text()), expected, "segm")["AP"]
    assert "AP" in printed and (f"{ap:.3f}" in printed or ap == -1)


def test_instances_on_a_detector_is_refused(image_dir, tmp_path):
    with pytest.raises(UserError, match="--instances: only semantic models .* task is detection"):
        predict_files(FixedDetector(), collect_inputs([image_dir]), tmp_path / "o",
                      instances="components")  # fmt: skip
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "options, message",
    [(["--instances", "watershed"], "--instances: only semantic models (U-Net) are split into "
      "instances; this model's task is classification"),
     (["--tile-size", "64"], "--tile-size/--overlap: only semantic models are predicted in tiles"),
     (["--overlap", "8"], "--tile-size/--overlap: only semantic models")],
)  # fmt: skip
def test_semantic_options_on_a_classifier_are_refused(
    classifier_path, image_dir, tmp_path, capsys, options, message
):
    line = run_error(capsys, ["predict", str(classifier_path), str(image_dir / "a.png"),
                              "--out", str(tmp_path / "o"), *options])  # fmt: skip
    assert message in line
    assert not (tmp_path / "o").exists()


def test_bad_tiles_and_gt_without_instances_on_a_unet(image_dir, tmp_path, capsys):
    save_unet(tmp_path / "unet.safetensors", num_classes=2)
    args = ["predict", str(tmp_path / "unet.safetensors"), str(image_dir / "a.png"),
            "--out", str(tmp_path / "o")]  # fmt: skip
    line = run_error(capsys, [*args, "--tile-size", "32", "--overlap", "32"])
    assert "--tile-size 32 --overlap 32: need a tile size >= 1 and 0 <= overlap < tile size" in line
    gt = write_gt(tmp_path, ["a.png"])
    line = run_error(capsys, [*args, "--gt", str(gt)])
    assert "this model's task is semantic, so leave out --gt (or add --instances)" in line
    assert not (tmp_path / "o").exists()


def test_batches_give_the_detections_of_single_images(tmp_path, capsys):
    torch.manual_seed(0)
    detector = seglab.build_model(
        "faster_rcnn", num_classes=3, backbone="resnet18", norm="bn", min_size=64, max_size=96,
        fpn_channels=16, anchor_sizes=[8, 16, 32, 64, 128], rpn_pre_nms_top_n_test=50,
        rpn_post_nms_top_n_test=20, representation_size=16, box_score_thresh=0.0,
        detections_per_img=10,
    )  # fmt: skip
    seglab.save_model(detector.eval(), tmp_path / "model.safetensors", class_names=["a", "b"])
    folder = tmp_path / "images"
    folder.mkdir()
    for index, size in enumerate([(48, 40), (48, 40), (48, 40), (64, 32), (48, 40)]):
        colour = (40 * index, 200 - 30 * index, 90)
        Image.new("RGB", size, colour).save(folder / f"{index}.png")
    found = {}
    for batch_size in (1, 3):
        out = tmp_path / f"batch{batch_size}"
        assert main(["predict", str(tmp_path / "model.safetensors"), str(folder), "--out",
                     str(out), "--batch-size", str(batch_size)]) == 0  # fmt: skip
        found[batch_size] = json.loads((out / "predictions.json").read_text())
        assert "predict: 5/5 image" in capsys.readouterr().err  # the progress display
    assert len(found[1]) == len(found[3]) == 50
    for single, batched in zip(found[1], found[3], strict=True):
        assert single["image_id"] == batched["image_id"]
        assert single["category_id"] == batched["category_id"]
        assert single["bbox"] == pytest.approx(batched["bbox"], abs=1e-3)
        assert single["score"] == pytest.approx(batched["score"], abs=1e-5)
