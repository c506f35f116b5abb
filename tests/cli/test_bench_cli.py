"""`seglab bench lineage`: a quick run trains, evaluates and times a detector through the
real trainer and writes the report; bad input is one line and exit 2 before any work."""

import json

import pytest

from seglab.bench.stages import STAGES
from seglab.cli.main import main
from seglab.data.shapes import generate_shapes


def test_quick_lineage_run_on_a_coco_dataset_writes_the_report(tmp_path, capsys):
    data = generate_shapes(tmp_path / "coco", train=6, val=3, size=96, seed=1)
    out = tmp_path / "report" / "lineage.json"
    argv = ["bench", "lineage", "--quick", "--models", "rcnn,fast_rcnn", "--data", str(data),
            "--out", str(out), "--work", str(tmp_path / "work")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| R-CNN |" in printed and "| Fast R-CNN |" in printed
    assert "| paper | claim | paper's number | measured | holds | why |" in printed
    assert printed.rstrip().endswith(f"wrote {out}, {out.with_suffix('.md')}, "
                                     f"{out.with_suffix('.png')}")  # fmt: skip
    report = json.loads(out.read_text())
    assert report["settings"]["data"] == str(data)
    for name in ("rcnn", "fast_rcnn"):
        row = report["models"][name]
        assert all(row[stage] > 0 for stage in STAGES)
        assert sum(row[stage] for stage in STAGES) == pytest.approx(row["total_s"])
        assert -1 <= row["box_AP"] <= 1
        assert set(row["box_AP_by_size"]) == {"small", "medium", "large"}
        assert row["train_steps"] == report["settings"]["steps_per_model"] == 2  # --quick
        # --quick evaluates twice: after step 1 and at the end, in order of training time
        assert [point["step"] for point in row["curve"]] == [1, 2]
        assert 0 < row["curve"][0]["train_s"] < row["curve"][1]["train_s"] == row["train_s"]
    assert set(report["models"]["fast_rcnn"]["svd"]) >= {"ranks", "svd_heads_s", "box_AP"}
    scale = report["paper_scale"]
    assert scale["regions"] == 8 and min(scale["image_size"]) == 600
    assert scale["rcnn_features_s"] > 0 and scale["fast_rcnn_features_s"] > 0
    sources = [claim["source"] for claim in report["claims"]]
    assert sources == ["Fast R-CNN §4.4, Table 4", "Fast R-CNN §4.4",
                       "R-CNN, Fast R-CNN Table 1, Faster R-CNN Table 2",
                       "Fast R-CNN §3.1, §4.4, Fig. 2"]  # fmt: skip
    assert out.with_suffix(".md").read_text().startswith("| model |")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

    # --report: the saved measurements judged again, no training; the same claims here
    (tmp_path / "work").rename(tmp_path / "gone")  # nothing of the run is read again
    again = tmp_path / "again.json"
    assert main(["bench", "lineage", "--report", str(out), "--out", str(again)]) == 0
    assert capsys.readouterr().out == printed.replace(
        str(out.with_suffix("")), str(again.with_suffix(""))
    )
    assert json.loads(again.read_text()) == report
    assert again.with_suffix(".md").read_text() == out.with_suffix(".md").read_text()


def test_a_report_that_is_not_a_lineage_run_is_one_line(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text('{"models": {"rcnn": {"box_AP": 0.5}}}')
    assert main(["bench", "lineage", "--report", str(other)]) == 2
    error = capsys.readouterr().err
    assert error.splitlines() == [
        f"seglab bench: error: --report {other}: not a lineage report ('proposal_s')"
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "faster_rcnn,yolo"], "--models faster_rcnn,yolo: unknown"),
        (["--minutes", "1", "--steps", "5"], "give one"),
        (["--out", "report.txt"], "give a .json path"),
        (["--time-images", "9"], "--time-images 9: at most the 4 test images"),
        (["--data", "nowhere"], "--data nowhere: no train or val split there"),
        (["--evaluations", "0"], "--evaluations 0: must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    code = main(["bench", "lineage", "--quick", "--work", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("seglab bench: error: ")
    assert message in err
    assert list(tmp_path.iterdir()) == []  # refused before writing data


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("")
    for argv, message in (
        (["--work", str(a_file)], "--work is a file"),
        (["--work", str(tmp_path / "work"), "--out", str(a_file / "r.json")], "is a file"),
    ):
        assert main(["bench", "lineage", "--quick", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
