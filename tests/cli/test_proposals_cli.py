"""`seglab proposals`: computes then reuses the cache, reports recall; bad input is one line."""

import re

import pytest

from seglab.cli.main import main
from seglab.data.proposals import cache_path
from seglab.data.shapes import generate_shapes
from seglab.ops.selective_search import ProposalSettings


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("data"), train=4, val=2, size=64, seed=2)


def run(capsys, *argv):
    code = main(["proposals", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_precomputes_then_reads_the_cache_and_reports_recall(shapes, capsys):
    argv = (shapes, "--split", "val", "--mode", "single", "--max", "30", "--workers", "0")
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "val: 2 images, 2 computed, 0 from the cache" in out
    assert cache_path(shapes, "val", ProposalSettings("single", None, 0, 30)).is_file()
    mean = float(re.search(r"proposals per image: ([\d.]+) mean", out).group(1))
    assert 0 < mean <= 30
    found = re.search(r"boxes: ([\d.]+) at IoU 0.5, ([\d.]+) at IoU 0.7", out)
    assert found, out
    recall_50, recall_70 = map(float, found.groups())
    assert 0 <= recall_70 <= recall_50 <= 1
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "2 computed" not in out and "0 computed, 2 from the cache" in out


def test_scale_and_max_zero_name_the_cache_file(shapes, capsys):
    code, out, _ = run(capsys, shapes, "--split", "val", "--mode", "single", "--scale",
                       "48", "--max", "0", "--workers", "0")  # fmt: skip
    assert code == 0 and "val-single-48px-min0-maxall.npz" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{missing}"], "dataset folder not found"),
        (["{root}", "--split", "test"], "test.json: not found: no split 'test'"),
        (["{root}", "--scale", "0"], "proposal scale 0"),
        (["{root}", "--workers", "-1"], "--workers -1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(shapes, tmp_path, capsys, argv, message):
    argv = [a.format(missing=tmp_path / "nowhere", root=shapes) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("seglab proposals: error: ")
    assert message in err


def test_a_file_where_the_cache_folder_goes_is_one_line(tmp_path, capsys):
    root = generate_shapes(tmp_path / "data", train=1, val=0, size=64)
    (root / "proposals").write_text("")
    code, _, err = run(capsys, root)
    assert code == 2 and err.count("\n") == 1 and "proposals: DATA is a file" in err
