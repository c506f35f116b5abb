import json

import numpy as np
import pytest
from PIL import Image

from seglab.cli.main import main
from seglab.data import shapes, synthetic
from seglab.data.shapes import CLASS_NAMES, generate_shapes
from seglab.structures.masks import segmentation_to_mask


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("task", ["instance", "semantic", "classify"])
def test_same_seed_gives_byte_identical_files(tmp_path, task):
    first = generate_shapes(tmp_path / "a", task=task, train=5, val=2, size=64, seed=7)
    second = generate_shapes(tmp_path / "b", task=task, train=5, val=2, size=64, seed=7)
    other = generate_shapes(tmp_path / "c", task=task, train=5, val=2, size=64, seed=8)
    assert _files(first) == _files(second)
    assert len(_files(first)) >= 7
    assert _files(first) != _files(other)


def test_coco_layout_annotations_match_the_visible_masks(shapes_coco):
    coco = json.loads((shapes_coco / "train.json").read_text())
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert [c["name"] for c in coco["categories"]] == list(CLASS_NAMES)
    assert len(coco["images"]) == 40
    for info in coco["images"]:
        assert Image.open(shapes_coco / "train" / info["file_name"]).size == (96, 96)
    per_image = {}
    for annotation in coco["annotations"]:
        mask = segmentation_to_mask(annotation["segmentation"], 96, 96)
        ys, xs = np.nonzero(mask)
        x0, y0 = xs.min(), ys.min()
        assert annotation["bbox"] == [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0]
        assert annotation["area"] == mask.sum() and annotation["iscrowd"] == 0
        per_image.setdefault(annotation["image_id"], []).append(mask)
    # Visible masks are occlusion-aware: within an image they never overlap.
    assert any(len(masks) >= 3 for masks in per_image.values())
    for masks in per_image.values():
        assert np.stack(masks).sum(axis=0).max() == 1
    # Some scenes are negatives: images without any annotation.
    assert len(per_image) < len(coco["images"])


def test_object_sizes_cover_coco_small_and_medium(tmp_path):
    root = generate_shapes(tmp_path, task="instance", train=30, val=0, size=256, seed=0)
    areas = np.array(
        [a["area"] for a in json.loads((root / "train.json").read_text())["annotations"]]
    )
    assert (areas < 32**2).mean() > 0.15
    assert ((areas >= 32**2) & (areas < 96**2)).mean() > 0.3


def test_semantic_layout_has_class_maps_and_class_names(shapes_semantic):
    assert (shapes_semantic / "classes.txt").read_text().split() == list(CLASS_NAMES)
    images = sorted((shapes_semantic / "train" / "images").glob("*.png"))
    assert len(images) == 6
    values = set()
    for path in images:
        class_map = np.asarray(Image.open(shapes_semantic / "train" / "masks" / path.name))
        assert class_map.shape == (64, 64)
        values |= set(np.unique(class_map).tolist())
    assert values <= {0, 1, 2, 3} and len(values) >= 3
    assert not list(shapes_semantic.glob(".*partial"))


def test_classify_layout_has_one_folder_per_class(shapes_classify):
    folders = sorted(p.name for p in (shapes_classify / "val").iterdir())
    assert folders == sorted(CLASS_NAMES)
    assert sum(len(list((shapes_classify / "train" / c).glob("*.png"))) for c in CLASS_NAMES) == 12


def test_classify_crops_hold_one_whole_object():
    for index in range(40):
        rng = np.random.default_rng([0, index])
        _, objects = shapes.render_scene(
            64, rng, count=1, radius_fn=shapes._crop_radius, margin=shapes._CROP_MARGIN
        )
        mask = objects[0].full_mask
        assert mask.sum() > 0.025 * 64 * 64  # a triangle of radius 0.15 * 64 covers ~3%
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _fail_after(count):
    calls = {"n": 0}
    original = synthetic.png_bytes

    def encode(array):
        calls["n"] += 1
        if calls["n"] > count:
            raise KeyboardInterrupt
        return original(array)

    return encode


@pytest.mark.parametrize("task,marker", [("instance", "train.json"), ("semantic", "train")])
def test_interrupted_generation_is_never_complete(tmp_path, monkeypatch, task, marker):
    monkeypatch.setattr(synthetic, "png_bytes", _fail_after(3))
    with pytest.raises(KeyboardInterrupt):
        generate_shapes(tmp_path, task=task, train=6, val=2, size=64)
    assert not (tmp_path / marker).exists()


def test_interrupted_regeneration_never_mixes_old_and_new(tmp_path, monkeypatch):
    # COCO: the old JSON is removed before new images are written.
    generate_shapes(tmp_path / "coco", train=6, val=2, size=64, seed=1)
    # Mask folders: the old split stays whole until the new one replaces it.
    generate_shapes(tmp_path / "sem", task="semantic", train=6, val=2, size=64, seed=1)
    old_split = _files(tmp_path / "sem" / "train")
    for root, task in ((tmp_path / "coco", "instance"), (tmp_path / "sem", "semantic")):
        monkeypatch.setattr(synthetic, "png_bytes", _fail_after(3))
        with pytest.raises(KeyboardInterrupt):
            generate_shapes(root, task=task, train=6, val=2, size=64, seed=2)
    assert not (tmp_path / "coco" / "train.json").exists()
    assert _files(tmp_path / "sem" / "train") == old_split


def test_cli_writes_and_prints_a_summary(tmp_path, capsys):
    assert (
        main(["data", "shapes", str(tmp_path / "s"), "--train", "4", "--val", "2", "--size", "64"])
        == 0
    )
    line = capsys.readouterr().out.strip()
    assert "6 images" in line and "3 classes" in line and line.endswith(" s")
    assert (tmp_path / "s" / "val.json").is_file()


def test_cli_bad_size_exits_2(tmp_path, capsys):
    assert main(["data", "shapes", str(tmp_path / "s"), "--size", "8"]) == 2
    assert "--size" in capsys.readouterr().err


def test_cli_out_is_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["data", "shapes", str(tmp_path / "f"), "--train", "1", "--val", "0"]) == 2
    assert f"{tmp_path / 'f'}: OUT is a file; give a folder" in capsys.readouterr().err


def test_cli_help_works(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "shapes", "--help"])
    assert exit_info.value.code == 0
    assert "--task" in capsys.readouterr().out
