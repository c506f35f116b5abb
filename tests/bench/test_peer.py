"""`seglab bench detection --peer torchvision`: the memory probe, the report's table, bad
input refused in one line, and (slow) a whole --quick run writing the report."""

import json
import time

import pytest
import torch

from seglab.bench import peer
from seglab.bench.peer import compare_outputs, peak_rss_growth, peer_table
from seglab.bench.peer_models import model_pair, photographs
from seglab.cli.main import main


def test_peak_rss_growth_sees_a_temporary_allocation():
    def allocate() -> None:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB of float32, touched by the fill
        time.sleep(0.05)  # held long enough for the 1 ms sampler to see it whole under load
        del block

    growth = peak_rss_growth(allocate)
    assert growth is not None
    assert 60 <= growth <= 200  # the block, plus at most the allocator's and sampler's slack


def test_converted_pair_gives_the_same_detections():
    images = photographs(long_side=96)
    models = model_pair(min_size=64, max_size=96, images=images, detections=3, rois=16)
    with torch.no_grad():
        theirs, ours = (models[name](images) for name in ("torchvision", "seglab"))
    assert sum(len(o["labels"]) for o in theirs) > 0  # the scores were spread out
    for want, got in zip(theirs, ours, strict=True):
        assert torch.equal(want["labels"], got["labels"])
        torch.testing.assert_close(got["masks"], want["masks"], atol=1e-3, rtol=0)


def _report(inference_ratio: float) -> dict:
    def mode(ratio):
        seconds = {"torchvision": 2.0, "seglab": 2.0 * ratio}
        memory = {"torchvision": 100.0, "seglab": 90.0}
        return {"median_s": seconds, "ratio": ratio, "peak_rss_mib": memory, "memory_ratio": 0.9}

    stages = {"backbone": 1.0, "post-processing": 0.5, "total": 1.5}
    return {"inference": mode(inference_ratio), "training": mode(0.75),
            "stages": {"torchvision": stages, "seglab": stages},
            "outputs": {"equal": True, "detections": [5, 5, 5]}}  # fmt: skip


def test_table_prints_the_median_ratios_last():
    table = peer_table(_report(0.66))
    assert "| inference s (median) | 2.000 | 1.320 | 0.66 |" in table
    assert "| training step peak RSS growth MiB | 100 | 90 | 0.90 |" in table
    assert table.rstrip().splitlines()[-1] == (
        "median ratios seglab / torchvision: inference 0.66, training step 0.75"
    )


def test_bf16_table_gives_bf16_ratios_with_fp32_beside():
    report = _report(0.40)
    for mode in ("inference", "training"):
        report[mode]["median_s"]["seglab_fp32"] = 2.0 * 0.7
        report[mode]["ratio_fp32"] = 0.7
    report["options"] = {"precision": "bf16"}
    table = peer_table(report)
    assert "| inference s, seglab fp32 | 2.000 | 1.400 | 0.70 |" in table
    assert table.rstrip().splitlines()[-1] == (
        "median ratios seglab bf16 / torchvision fp32: inference 0.40, training step 0.75 "
        "(seglab fp32 in the same run: 0.70, 0.70)"
    )


def test_measure_times_seglab_fp32_beside_in_the_same_rounds(monkeypatch):
    """With --precision bf16 a third call (seglab in fp32) is timed in each repetition: its
    ratio to torchvision's is reported beside the bf16 one (a fake clock: exact figures)."""
    clock = [0.0]
    monkeypatch.setattr(peer.time, "perf_counter", lambda: clock[0])

    def takes(seconds):
        return lambda: clock.__setitem__(0, clock[0] + seconds)

    calls = {"torchvision": takes(2.0), "seglab": takes(0.8), "seglab_fp32": takes(1.2)}
    result = peer._measure(calls, repeats=3, log=lambda line: None)
    assert result["median_s"] == pytest.approx({"torchvision": 2.0, "seglab": 0.8,
                                                "seglab_fp32": 1.2})  # fmt: skip
    assert result["ratio"] == pytest.approx(0.4)
    assert result["ratio_fp32"] == pytest.approx(0.6)


@pytest.mark.slow
def test_quick_bf16_run_reports_both_precisions(tmp_path, capsys):
    out = tmp_path / "peer.json"
    argv = ["bench", "detection", "--peer", "torchvision", "--quick", "--precision", "bf16"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["options"]["precision"] == "bf16"
    for mode in ("inference", "training"):
        assert report[mode]["ratio"] > 0 and report[mode]["ratio_fp32"] > 0
        assert len(report[mode]["seconds"]["seglab_fp32"]) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "r.txt"], "--out r.txt: give a .json path"),
        (["--repeats", "0"], "--repeats 0: give a positive number"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main(["bench", "detection", "--peer", "torchvision", "--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.slow
def test_quick_run_writes_the_report(tmp_path, capsys):
    out = tmp_path / "peer.json"
    assert main(["bench", "detection", "--peer", "torchvision", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().splitlines()[-1].startswith("median ratios seglab / torchvision")
    report = json.loads(out.read_text())
    assert report["outputs"]["equal"]
    for mode in ("inference", "training"):
        assert len(report[mode]["seconds"]["seglab"]) == 1 and report[mode]["ratio"] > 0
    assert set(report["stages"]["seglab"]) >= {"backbone", "FPN", "RPN", "mask head"}
    assert out.with_suffix(".md").read_text() == printed


def test_outputs_pair_detections_whose_scores_tie():
    """Two detections of one label whose scores tie within rounding may come in either
    order (another summation order decides); a box moved by a pixel is a difference."""
    boxes = torch.tensor([[10.0, 10, 50, 50], [200, 200, 260, 250]])
    masks = torch.zeros(2, 1, 300, 300)
    masks[0, :, 10:50, 10:50], masks[1, :, 200:250, 200:260] = 1, 1
    theirs = {"boxes": boxes, "scores": torch.tensor([0.5, 0.5]), "labels": torch.tensor([3, 3]),
              "masks": masks}  # fmt: skip
    swapped = {key: value.flip(0) for key, value in theirs.items()}
    swapped["scores"] = torch.tensor([0.5, 0.5 - 1e-6])
    image = torch.zeros(3, 300, 300)

    def peers(ours):
        return {"torchvision": lambda images: [theirs], "seglab": lambda images: [ours]}

    assert compare_outputs(peers(swapped), [image])["equal"]
    moved = {**theirs, "boxes": boxes + torch.tensor([1.0, 0, 1, 0])}
    assert not compare_outputs(peers(moved), [image])["equal"]
