"""What the COCO dataset keeps of each annotation: clipped, dropped and counted, never silent."""

import json
import warnings

import pytest
import torch
from PIL import Image

from seglab.data import DataConfig, build_dataset
from seglab.data.findings import Findings
from seglab.errors import SeglabWarning, UserError

WIDTH, HEIGHT = 40, 30
SQUARE = [[10, 10, 20, 10, 20, 20, 10, 20]]  # a valid 10 x 10 polygon


def _coco(tmp_path, annotations: list[dict]):
    (tmp_path / "train").mkdir(parents=True)
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "train" / "a.png")
    for index, annotation in enumerate(annotations, 1):
        annotation.setdefault("segmentation", SQUARE)
        annotation.update(id=index, image_id=1, category_id=5, iscrowd=0)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}],
        "annotations": annotations,
        "categories": [{"id": 5, "name": "thing"}],
    }
    (tmp_path / "train.json").write_text(json.dumps(coco))
    return tmp_path


def _build(root, task="instance", findings=None):
    cfg = DataConfig(root=str(root), layout="coco")
    return build_dataset(cfg, "train", task=task, train=False, findings=findings)


def test_boxes_outside_and_degenerate_are_clipped_or_dropped_and_counted(tmp_path):
    root = _coco(tmp_path, [
        {"bbox": [10, 10, 10, 10]},  # kept as is
        {"bbox": [-5, 20, 15, 20]},  # partly outside (left and bottom): clipped
        {"bbox": [50, 5, 10, 10]},  # entirely outside: dropped
        {"bbox": [10, 10, 0, 10]},  # zero area: dropped
        {"bbox": [10, 10, -3, 4]},  # negative width: dropped
    ])  # fmt: skip
    with pytest.warns(SeglabWarning) as caught:
        dataset = _build(root)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{root / 'train.json'}: box partly outside its image: 1 clipped; box entirely "
        "outside its image: 1 dropped; zero-area box: 2 dropped (seglab data check lists them)"
    )
    target = dataset[0][1]
    assert target["boxes"].tolist() == [[10, 10, 20, 20], [0, 20, 10, 30]]
    assert dataset.class_counts == [2]
    assert len(dataset.coco_gt["annotations"]) == 5  # evaluation keeps the file as it is


def test_bad_polygons_are_dropped_and_mask_models_drop_what_has_none_left(tmp_path):
    root = _coco(tmp_path, [
        {"bbox": [10, 10, 10, 10], "segmentation": [[1, 1, 5, 5], *SQUARE]},  # one of two bad
        {"bbox": [10, 10, 10, 10], "segmentation": [[1, 1, 5, 5]]},  # 2 points only
        {"bbox": [10, 10, 10, 10], "segmentation": [[10, 10, 20, 10, 20, 20, 10]]},  # odd count
    ])  # fmt: skip
    findings = Findings()
    instance = _build(root, findings=findings)
    counts = {kind: len(f.places) for kind, f in findings.by_kind.items()}
    assert counts == {
        "polygon with fewer than 3 points": 2,
        "polygon with an odd number of coordinates": 1,
        "annotation left without a valid polygon": 2,
    }
    masks = instance[0][1]["masks"]
    assert masks.shape == (1, HEIGHT, WIDTH) and masks.sum() == 100  # the valid square only
    with pytest.warns(SeglabWarning, match="polygon with fewer than 3 points: 2 dropped"):
        detection = _build(root, task="detection")
    assert len(detection[0][1]["boxes"]) == 3  # detection keeps the boxes


def test_zero_area_boxes_no_longer_reject_the_dataset_and_clean_data_is_silent(tmp_path):
    with pytest.warns(SeglabWarning, match="zero-area box: 1 dropped"):
        dataset = _build(_coco(tmp_path / "a", [{"bbox": [3, 3, 0, 0]}, {"bbox": [1, 1, 5, 5]}]))
    assert len(dataset) == 1 and dataset.class_counts == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _build(_coco(tmp_path / "b", [{"bbox": [0, 0, WIDTH, HEIGHT]}]))  # touching edges: kept


def test_rle_of_another_size_stops_before_any_item_is_loaded(tmp_path):
    rle = {"size": [HEIGHT + 1, WIDTH], "counts": [0, 10]}
    root = _coco(tmp_path, [{"bbox": [1, 1, 5, 5], "segmentation": rle}])
    with pytest.raises(UserError, match=r"train.json annotation 1 has an RLE of size \[31, 40\]"):
        _build(root)


def test_stopping_problems_are_gathered_with_every_file(tmp_path):
    root = _coco(tmp_path, [{"bbox": "oops"}, {"bbox": [1, 1, 5, 5]}, {"bbox": [1, 1, 5, 5]}])
    coco = json.loads((root / "train.json").read_text())
    coco["annotations"][1]["category_id"] = 9
    coco["annotations"][2]["image_id"] = 7
    (root / "train.json").write_text(json.dumps(coco))
    findings = Findings()
    dataset = _build(root, findings=findings)
    assert [f.kind for f in findings.stopping()] == [
        "annotation without a valid bbox/image_id/category_id",
        "annotation of an unknown category",
        "annotation of an unknown image",
    ]
    assert sum(dataset.class_counts) == 0 and torch.is_tensor(dataset[0][1]["boxes"])
    with pytest.raises(UserError, match="train.json annotation 1 lacks a valid bbox"):
        _build(root)
