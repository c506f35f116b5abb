"""Data at scale: COCO annotations in flat arrays are pycocotools' annotations exactly,
the training split does not keep the parsed file, the pool gives what a loop gives, and
benchmarks/data_scale.py writes its data and its table (at a tiny size)."""

import contextlib
import gc
import io
import json
import sys
import time
from pathlib import Path

import pytest
from tests.scripts import load_script

from seglab.data import DataConfig, Findings, build_dataset, coco_annotations
from seglab.data import parallel as parallel_module
from seglab.data.check import check_data
from seglab.data.coco_arrays import KeptRows
from seglab.data.images import header_or_problem

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "data_scale.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def coco_root(bench, tmp_path_factory):
    """The benchmark's COCO layout at 24 images, plus annotations of every kind: several
    polygons, integer coordinates, a box-only object, and a crowd RLE."""
    root = tmp_path_factory.mktemp("scale") / "coco"
    root.mkdir()
    bench.write_coco(root, 24)
    coco = json.loads((root / "train.json").read_text())
    first = coco["images"][0]
    extra = [
        {"segmentation": [[10, 10, 60, 12, 40, 50], [100.5, 100.25, 140, 100, 120, 160.75]],
         "bbox": [10, 10, 130, 150.75]},
        {"segmentation": [], "bbox": [200.5, 30.25, 40, 20]},
    ]  # fmt: skip
    for index, fields in enumerate(extra):
        common = {"id": 10**6 + index, "image_id": first["id"], "category_id": 3}
        coco["annotations"].append({**common, "iscrowd": 0, "area": 1.0, **fields})
    (root / "train.json").write_text(json.dumps(coco))
    return root


def test_kept_annotations_and_targets_are_pycocotools(bench, coco_root):
    same = bench.same_annotations(coco_root, "train", limit=100)
    assert same["equal"], same
    assert same["images"] == 24 and same["objects"] > 100
    coco = json.loads((coco_root / "train.json").read_text())
    kinds = [a["segmentation"] for a in coco["annotations"]]
    assert any(isinstance(s, dict) for s in kinds) and [] in kinds  # every kind was compared


def _mixed_annotations() -> list:
    """Annotations that need no repair among ones that do, of every kind."""
    square = [[10, 10, 30, 10, 30, 30, 10, 30]]
    return [
        {"bbox": [10, 10, 20, 20], "segmentation": square},
        {"bbox": [0.1, 0.2, 0.3, 0.4], "segmentation": square},  # (x + w) - x != w
        {"bbox": [630, 10, 20, 20], "segmentation": square},  # clipped
        {"bbox": [10, 10, 0, 5], "segmentation": square},  # zero width
        {"bbox": [10, 10, 20, 20], "segmentation": [[1, 2, 3, 4, 5, 6, 7]]},  # odd
        {"bbox": [10, 10, 20, 20], "segmentation": [[1, 2, 3, 4], *square]},  # short + good
        {"bbox": [10, 10, 20, 20], "segmentation": []},  # the box is the mask
        {"bbox": [10, 10, 20, 20], "segmentation": {"size": [480, 640], "counts": [10, 5]}},
        {"bbox": [10, 10, 20, 20], "segmentation": [["a", 2, 3, 4, 5, 6]]},  # fails on load
        {"bbox": [10, 10, 20, 20], "segmentation": square, "category_id": 99},  # unknown
        {"bbox": [10, 10, 20, 20], "segmentation": square, "image_id": 5},  # unreadable
        {"bbox": [10, 10, 20, 20], "segmentation": square, "iscrowd": 1},
    ]


@pytest.mark.parametrize("task", ["instance", "detection"])
def test_annotations_recognised_together_are_kept_as_when_checked_alone(task, monkeypatch):
    """The vectorised common path keeps each annotation as the one-by-one checks do, and
    the findings are the same, in the same order."""
    annotations = [{"id": k, "image_id": 1, "category_id": 3, "iscrowd": 0, **a}
                   for k, a in enumerate(_mixed_annotations())]  # fmt: skip
    args = (Path("t.json"), annotations, {1: (480, 640)}, {1, 5}, {3: 1, 4: 2})

    def kept(findings):
        store = coco_annotations.clean_annotations(*args, task=task, findings=findings)
        return store[1], store.boxes.tolist(), store.coordinates.tolist()

    together, together_findings = kept(fast := Findings()), fast.by_kind
    monkeypatch.setattr(coco_annotations, "_plain_rows",
                        lambda annotations, *_: KeptRows.empty(len(annotations)))  # fmt: skip
    alone, alone_findings = kept(slow := Findings()), slow.by_kind
    assert together == alone
    assert together_findings == alone_findings and "unknown" in " ".join(alone_findings)
    assert together[0][1]["bbox"] == [0.1, 0.2, 0.3, 0.4]  # as in the file


def test_the_training_split_keeps_no_parsed_file(coco_root):
    """The train dataset drops the parsed JSON (read again when evaluation asks for it);
    an evaluation split keeps it."""
    cfg = DataConfig(root=str(coco_root))
    train = build_dataset(cfg, "train", task="instance", train=True)
    assert train._coco_gt is None
    assert train.coco_gt == json.loads((coco_root / "train.json").read_text())
    assert build_dataset(cfg, "train", task="instance", train=False)._coco_gt is not None


def _containers_reachable(root_object) -> int:
    """The lists and dicts reachable from `root_object` (through the garbage collector's
    references, which NumPy arrays end: their values are not Python objects)."""
    seen, stack, count = set(), [root_object], 0
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type):
            continue
        seen.add(id(item))
        count += isinstance(item, (list, dict))
        stack.extend(gc.get_referents(item))
    return count


def test_the_dataset_keeps_no_python_object_per_annotation(bench, coco_root, tmp_path):
    """Every annotation a crowd RLE (kept as read): the training dataset holds a bounded
    number of lists and dicts, not some per annotation, which would also keep alive the
    memory of the parsed file around them."""
    coco = json.loads((coco_root / "train.json").read_text())
    sizes = {info["id"]: (info["height"], info["width"]) for info in coco["images"]}
    for annotation in coco["annotations"]:
        annotation.update(iscrowd=1, segmentation=bench._rectangle_rle(
            annotation["bbox"], *sizes[annotation["image_id"]]))  # fmt: skip
    (tmp_path / "train").symlink_to(coco_root / "train")
    (tmp_path / "train.json").write_text(json.dumps(coco))
    dataset = build_dataset(DataConfig(root=str(tmp_path)), "train", task="semantic",
                            train=True)  # fmt: skip
    assert len(coco["annotations"]) > 200
    assert _containers_reachable(dataset) < 100


def test_the_pool_gives_what_a_loop_gives(coco_root):
    paths = sorted((coco_root / "train").iterdir())[:6] + [coco_root / "train.json"]
    serial = parallel_module.map_files(header_or_problem, paths, desc="x", workers=1)
    pooled = parallel_module.map_files(header_or_problem, paths, desc="x", workers=2)
    assert pooled == serial
    assert serial[0][0] == "RGB" and "not a readable image" in serial[-1]


def _slow_first(number: int) -> int:
    time.sleep(0.3 if number == 0 else 0)
    return number


def test_the_pool_keeps_the_order_of_the_items():
    """Results come in the items' order, not in the order the workers finish them."""
    assert parallel_module.map_files(_slow_first, list(range(6)), desc="x", workers=2) == [
        0, 1, 2, 3, 4, 5,
    ]  # fmt: skip


def test_data_check_over_a_pool_reports_what_one_process_does(coco_root, monkeypatch):
    serial = check_data(coco_root)
    monkeypatch.setattr(parallel_module, "_POOL_FROM", 1)
    monkeypatch.setattr(parallel_module, "usable_cores", lambda: 2)
    pooled = check_data(coco_root)
    for split_serial, split_pooled in zip(serial.splits, pooled.splits, strict=True):
        assert split_pooled.sizes == split_serial.sizes and split_pooled.modes == split_serial.modes
        assert split_pooled.class_counts == split_serial.class_counts
    assert sum(serial.splits[0].modes.values()) == 24


def test_a_long_scan_shows_its_progress(coco_root, capsys):
    paths = sorted((coco_root / "train").iterdir())[:3]
    parallel_module.map_files(header_or_problem, paths, desc="train images", shown_from=3)
    assert "train images: 3/3 image (100%)" in capsys.readouterr().err
    parallel_module.map_files(header_or_problem, paths[:2], desc="train images", shown_from=3)
    assert capsys.readouterr().err == ""


def test_the_benchmark_writes_its_data_and_table(bench, tmp_path, monkeypatch):
    """The whole script at 16 images, its measurements run in this process (a fresh
    process each in a real run)."""
    monkeypatch.setattr(bench, "in_fresh_process", bench._child)
    argv = ["data_scale.py", "--images", "16", "--load-images", "6", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with contextlib.redirect_stdout(io.StringIO()) as shown:
        bench.main()
    results = json.loads((tmp_path / "data_scale.json").read_text())
    assert set(results["open"]) == set(results["loading"]) == {"coco", "masks", "folders"}
    for layout, opened in results["open"].items():
        ours, peer = opened["seglab"], opened["peer"]
        assert ours["images"] == peer["images"] > 0, layout
        assert opened["time_ratio"] == pytest.approx(ours["seconds"] / peer["seconds"])
        loaded = results["loading"][layout]
        assert loaded["seglab"]["images"] == loaded["peer"]["images"] == 6
        assert loaded["seglab"]["memory_end_mib"] > 0 and "second_half_growth_mib" in loaded["peer"]
        assert loaded["speed_ratio"] == pytest.approx(
            loaded["seglab"]["images_per_s"] / loaded["peer"]["images_per_s"]
        )
    assert results["same_annotations"]["equal"] and results["same_annotations"]["images"] == 16
    markdown = (tmp_path / "data_scale.md").read_text()
    assert markdown.strip() == shown.getvalue().strip()
    assert gc.get_freeze_count() == 0  # the loading passes froze the collector, then thawed it
    assert markdown.count("| open: seconds |") == 3 and "equal pycocotools': True" in markdown


def test_some_layouts_with_repeated_passes_report_the_median_pass(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "in_fresh_process", bench._child)
    argv = ["data_scale.py", "--images", "16", "--load-images", "6", "--layouts", "masks",
            "--repeats", "3", "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with contextlib.redirect_stdout(io.StringIO()):
        bench.main()
    results = json.loads((tmp_path / "data_scale.json").read_text())
    assert set(results["open"]) == set(results["loading"]) == {"masks"}
    assert "same_annotations" not in results  # no COCO data
    loaded = results["loading"]["masks"]
    ratios = loaded["speed_ratios"]
    assert len(ratios) == 3 and loaded["speed_ratio"] == sorted(ratios)[1]
    # the row shown is the median pass's own
    assert (
        loaded["speed_ratio"] == loaded["seglab"]["images_per_s"] / loaded["peer"]["images_per_s"]
    )
    markdown = (tmp_path / "data_scale.md").read_text()
    assert "median of 3 passes" in markdown and "equal pycocotools'" not in markdown


def test_an_unknown_layout_is_refused(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["data_scale.py", "--layouts", "masks,voc"])
    with pytest.raises(SystemExit) as stopped:
        bench.main()
    assert stopped.value.code == 2 and "--layouts" in capsys.readouterr().err
