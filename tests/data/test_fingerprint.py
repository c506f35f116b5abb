import json

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage
from torchvision import tv_tensors

from seglab.data import DataConfig, build_dataset, plan_image_size
from seglab.data.fingerprint import (
    MIN_OBJECT_PX,
    Fingerprint,
    measure_fingerprint,
    neighbour_gaps,
    object_diameters,
    plan_scale,
)
from seglab.data.transforms import ResizeShortSide
from seglab.errors import UserError
from seglab.structures.masks import mask_to_rle


def _disc(ids, centre, radius, value):
    ys, xs = np.mgrid[: ids.shape[0], : ids.shape[1]] + 0.5
    ids[(xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2] = value


def test_diameters_are_equivalent_diameters_of_objects_inside_the_image():
    ids = np.zeros((128, 128), dtype=np.int64)
    _disc(ids, (30, 30), 10, 1)  # diameter 20
    _disc(ids, (80, 80), 4, 2)  # diameter 8
    _disc(ids, (2, 100), 12, 3)  # cut by the left border: left out
    diameters = np.sort(object_diameters(ids))
    # a rasterised disc's area is pi r^2 to within about its perimeter's half-pixels
    np.testing.assert_allclose(diameters, [8, 20], atol=0.6)


def test_gap_is_the_background_width_between_close_neighbours_of_one_class():
    ids = np.zeros((60, 80), dtype=np.int64)
    ids[10:50, 10:30] = 1
    ids[10:50, 33:53] = 2  # 3 px of background between 1 and 2
    ids[10:50, 70:80] = 3  # 17 px from 2: farther than half a diameter, not a narrow gap
    classes = (ids > 0).astype(np.int64)
    np.testing.assert_array_equal(neighbour_gaps(ids, classes), [3.0])
    classes[ids == 2] = 2  # neighbours of different classes: the class tells them apart
    assert len(neighbour_gaps(ids, classes)) == 0


def _fingerprint(small, gap, side=256.0):
    diameters = np.full(100, float(small))
    gaps = np.full(50, float(gap)) if gap is not None else np.zeros(0)
    return Fingerprint(images=10, short_side=side, diameters=diameters, gaps=gaps)


def test_plan_keeps_small_objects_and_narrow_gaps_and_never_upsamples():
    by_objects = plan_scale(_fingerprint(small=32, gap=None))
    assert by_objects.image_size == round(256 * MIN_OBJECT_PX / 32) == 40
    assert "small objects" in by_objects.reason and "40 px" in by_objects.reason
    by_gaps = plan_scale(_fingerprint(small=64, gap=2))
    assert by_gaps.image_size == 128 and "narrow gaps" in by_gaps.reason
    tiny = plan_scale(_fingerprint(small=4, gap=0.5))
    assert tiny.image_size == 256 and "never upsampled" in tiny.reason


def test_plan_takes_the_stricter_of_objects_and_gaps_when_both_bind():
    """Both needs are measured: the larger scale wins, whichever it is."""
    objects_stricter = plan_scale(_fingerprint(small=10, gap=4))  # needs 0.5 vs 0.25
    assert objects_stricter.image_size == 128 and "small objects" in objects_stricter.reason
    gaps_stricter = plan_scale(_fingerprint(small=20, gap=1.6))  # needs 0.25 vs 0.625
    assert gaps_stricter.image_size == 160 and "narrow gaps" in gaps_stricter.reason


def _two_touching_squares(size):
    """A COCO split with one image: two squares of one class sharing a vertical border."""
    squares = np.zeros((2, size, size), dtype=np.uint8)
    squares[0, 20:60, 20:44] = 1
    squares[1, 20:60, 44:70] = 1
    annotations = [
        {"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": mask_to_rle(m),
         "area": int(m.sum()), "bbox": [20 + 24 * i, 20, 24 + 2 * i, 40], "iscrowd": 0}
        for i, m in enumerate(squares)
    ]  # fmt: skip
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": size, "height": size}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cell"}],
    }


@pytest.fixture
def touching_coco(tmp_path):
    from PIL import Image

    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((96, 96), dtype=np.uint8)).save(tmp_path / "train" / "a.png")
    (tmp_path / "train.json").write_text(json.dumps(_two_touching_squares(96)))
    return tmp_path


def test_touching_objects_of_one_class_are_parted_by_background(touching_coco):
    cfg = DataConfig(root=str(touching_coco), layout="coco", image_size=96)
    _, target = build_dataset(cfg, "train", task="semantic", train=False)[0]
    semantic = target["semantic_mask"].numpy()
    _, count = ndimage.label(semantic == 1)
    assert count == 2
    assert (semantic[20:60, 43:45] == 0).all() and semantic[20:60, 42].all()
    assert (target["instance_ids"].numpy()[semantic == 0] == 0).all()


def test_planned_scale_keeps_the_gap_between_touching_objects(touching_coco):
    # Parted, the two squares are 2 px apart: the plan must keep a scale >= 1/2, at which
    # sampling at pixel centres (one source pixel every 1/scale) cannot miss the gap.
    cfg = DataConfig(root=str(touching_coco), layout="coco", image_size="auto")
    plan = plan_image_size(cfg)
    assert plan.image_size == 48 and "narrow gaps" in plan.reason  # 2 px gap -> scale 0.5
    _, target = build_dataset(cfg, "train", task="semantic", train=False)[0]
    assert target["semantic_mask"].shape == (48, 48)
    assert ndimage.label(target["semantic_mask"].numpy() == 1)[1] == 2
    # below the planned scale the gap can vanish and the two objects merge
    source = build_dataset(
        DataConfig(root=str(touching_coco), layout="coco", image_size=96),
        "train", task="semantic", train=False,
    )[0][1]["semantic_mask"]  # fmt: skip
    merged = ResizeShortSide(37)(tv_tensors.Mask(source[None]))[0].numpy()  # scale 0.39
    assert ndimage.label(merged == 1)[1] == 1


def test_fingerprint_of_mask_folders_takes_connected_components_as_objects():
    class Masks:
        def __len__(self):
            return 3

        def load(self, index):
            mask = np.zeros((64, 80), dtype=np.int64)
            mask[10:26, 10:26] = 1  # 16 x 16 square: equivalent diameter 18.05
            mask[40:48, 40:48] = 2
            return None, {"semantic_mask": torch.from_numpy(mask)}

    fingerprint = measure_fingerprint(Masks())
    assert fingerprint.images == 3 and fingerprint.short_side == 64
    np.testing.assert_allclose(np.sort(fingerprint.diameters), [9.03] * 3 + [18.05] * 3, atol=0.01)


def test_training_with_auto_records_the_planned_size(tmp_path, capsys):
    from seglab.cli.main import main
    from seglab.data.cells import generate_cells

    root = generate_cells(tmp_path / "cells", task="instance", train=2, val=1, size=96, seed=0)
    run = tmp_path / "run"
    arguments = ["train", "unet_shapes", "--out", str(run), "-q", "--set", f"data.root={root}",
                 "--set", "data.layout=coco", "--set", "model.in_channels=1",
                 "--set", "train.max_steps=1", "--set", "train.batch_size=2"]  # fmt: skip
    assert main(arguments) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "data.image_size auto" in x]
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]["image_size"]
    assert len(line) == 1 and f": {recorded} px" in line[0]
    assert isinstance(recorded, int) and 16 <= recorded <= 96


def test_auto_is_refused_for_classifiers_and_ignored_by_data_check(tmp_path, capsys):
    from seglab.cli.main import main
    from seglab.data.cells import generate_cells
    from seglab.data.transforms import build_transforms

    with pytest.raises(UserError, match="image_size auto: for semantic segmentation"):
        build_transforms(DataConfig(image_size="auto"), task="classification", train=True)
    root = generate_cells(tmp_path / "cells", task="instance", train=2, val=1, size=64, seed=0)
    config = tmp_path / "u.yaml"
    config.write_text(
        yaml.safe_dump({"model": {"name": "unet", "in_channels": 1},
                        "data": {"root": str(root), "layout": "coco", "image_size": "auto"}})
    )  # fmt: skip
    assert main(["data", "check", str(config)]) == 0
    assert "training can start" in capsys.readouterr().out
