"""`make demo` scores the val split once (issue 22, part 2): `seglab eval --reuse` takes the
run's own final evaluation of the same model file, and `seglab predict --limit N` draws a
handful of overlays."""

from __future__ import annotations

import json

import pytest
import yaml
from tests.cli.test_train_cli import TINY

from seglab.cli.main import main
from seglab.data.shapes import generate_shapes


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny classifier run whose last evaluation is at its final step."""
    folder = tmp_path_factory.mktemp("demo")
    root = generate_shapes(folder / "data", task="classify", train=8, val=4, size=32, seed=0)
    run = folder / "run"
    assert main(["train", "cnn_shapes", "--out", str(run), "--set", f"data.root={root}",
                 *TINY]) == 0  # fmt: skip
    return run


def evaluations(run) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if record["split"] == "val"]


def test_eval_reuse_takes_the_runs_final_evaluation(run, tmp_path, capsys, monkeypatch):
    def no_pass(*args, **kwargs):
        raise AssertionError("the val split was scored again")

    monkeypatch.setattr("seglab.evaluation.evaluate_model", no_pass)
    out = tmp_path / "metrics.json"
    capsys.readouterr()
    assert main(["eval", str(run / "model.safetensors"), "--reuse", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    last = evaluations(run)[-1]
    assert printed.startswith(
        f"reused the run's evaluation of this model at step {last['step']} "
        f"({run / 'metrics.jsonl'}): the same weights and val split, not scored again"
    )
    expected = {key: value for key, value in last.items() if key not in ("step", "split",
                                                                         "primary")}  # fmt: skip
    assert json.loads(out.read_text()) == expected


def test_eval_reuse_scores_again_what_the_run_did_not_score(run, tmp_path, capsys):
    model = str(run / "model.safetensors")
    # another split, or best.safetensors: the run's numbers are not of that; scored again
    assert main(["eval", model, "--reuse", "--split", "train", "--out",
                 str(tmp_path / "t.json")]) == 0  # fmt: skip
    assert "reused" not in capsys.readouterr().out
    assert main(["eval", str(run / "best.safetensors"), "--reuse", "--out",
                 str(tmp_path / "b.json")]) == 0  # fmt: skip
    assert "reused" not in capsys.readouterr().out
    # a model saved after the last evaluation (here: the log says an older step)
    log = run / "metrics.jsonl"
    saved = log.read_text()
    lines = saved.splitlines()
    last = json.loads(lines[-1])
    lines[-1] = json.dumps({**last, "step": last["step"] - 1})
    log.write_text("\n".join(lines) + "\n")
    try:
        assert main(["eval", model, "--reuse", "--out", str(tmp_path / "m.json")]) == 0
        assert "reused" not in capsys.readouterr().out
    finally:
        log.write_text(saved)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["precision"] == "fp32"  # at bf16 its numbers are not fp32's
    assert main(["eval", model, "--reuse", "--precision", "bf16", "--out",
                 str(tmp_path / "bf16.json")]) == 0  # fmt: skip
    assert "reused" not in capsys.readouterr().out


def test_predict_limit_draws_a_handful(run, tmp_path, capsys):
    val = yaml.safe_load((run / "config.yaml").read_text())["data"]["root"] + "/val"
    out = tmp_path / "predictions"
    assert main(["predict", str(run / "model.safetensors"), val, "--limit", "2", "--out",
                 str(out)]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "predicting the first 2 of 4 images (--limit)" in captured.err
    assert len(json.loads((out / "predictions.json").read_text())) == 2
    assert main(["predict", str(run / "model.safetensors"), val, "--limit", "0", "--out",
                 str(out)]) == 2  # fmt: skip
    assert "--limit 0: must be at least 1" in capsys.readouterr().err
