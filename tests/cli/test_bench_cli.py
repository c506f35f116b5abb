"""`seglab bench lineage`: a quick run trains, evaluates and times a detector through the
real trainer and writes the report; bad input is one line and exit 2 before any work."""

import json

import pytest

from seglab.bench.stages import STAGES
from seglab.cli.main import main


def test_quick_lineage_run_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report" / "lineage.json"
    argv = ["bench", "lineage", "--quick", "--models", "faster_rcnn", "--out", str(out),
            "--work", str(tmp_path / "work")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Faster R-CNN |" in printed and printed.rstrip().endswith(f"wrote {out}, "
        f"{out.with_suffix('.md')}, {out.with_suffix('.png')}")  # fmt: skip
    report = json.loads(out.read_text())
    row = report["models"]["faster_rcnn"]
    assert {"proposal_s", "features_s", "heads_s", "total_s", "box_AP"} <= set(row)
    assert all(row[stage] > 0 for stage in STAGES)
    assert sum(row[stage] for stage in STAGES) == pytest.approx(row["total_s"])
    assert -1 <= row["box_AP"] <= 1
    assert report["settings"]["steps_per_model"] == row["train_steps"] == 2  # --quick
    assert out.with_suffix(".md").read_text().startswith("| model |")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "faster_rcnn,yolo"], "--models faster_rcnn,yolo: unknown"),
        (["--minutes", "1", "--steps", "5"], "give one"),
        (["--out", "report.txt"], "give a .json path"),
        (["--time-images", "9"], "--time-images 9: at most the 4 test images"),
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
