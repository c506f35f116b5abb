"""The CNN classifier end to end through the command line: data -> train -> eval -> predict.

Small and fast (32 px, a few dozen steps): it checks that the four commands fit together
and agree with each other, not the accuracy the recipe reaches (docs/benchmarks.md).
"""

from __future__ import annotations

import json

import pytest

from seglab.cli.main import main

SETTINGS = {
    "model.widths": "[8, 16]",
    "model.hidden": "16",
    "data.image_size": "32",
    "data.rot90": "false",
    "data.vflip": "0",
    "train.batch_size": "8",
    "train.max_steps": "40",
    "train.warmup_steps": "5",
    "train.lr": "0.01",
    "train.eval_every": "20",
    "train.checkpoint_every": "20",
    "train.log_every": "10",
    "train.workers": "0",
    "train.device": "cpu",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data, run = root / "shapes", root / "run"
    assert main(["data", "shapes", str(data), "--task", "classify", "--train", "60",
                 "--val", "30", "--size", "32"]) == 0  # fmt: skip
    overrides = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]
    assert main(["train", "cnn_shapes", "--out", str(run), "--set", f"data.root={data}",
                 *overrides, "--no-progress"]) == 0  # fmt: skip
    return data, run


def test_training_learns_and_logs(trained):
    _, run = trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(train_losses) == 4
    assert train_losses[-1] < train_losses[0]  # the loss goes down
    assert (run / "plots" / "loss.png").stat().st_size > 0


def test_eval_agrees_with_the_trainer_and_predict(trained, tmp_path, capsys):
    data, run = trained
    capsys.readouterr()
    assert main(["eval", str(run / "model.safetensors"), "--data", str(data), "--split", "val",
                 "--out", str(tmp_path / "metrics.json")]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_val = [r for r in records if r["split"] == "val"][-1]
    assert last_val["step"] == 40
    assert metrics["accuracy"] == pytest.approx(last_val["accuracy"])

    assert main(["predict", str(run / "model.safetensors"), str(data / "val"),
                 "--out", str(tmp_path / "predictions")]) == 0  # fmt: skip
    predictions = json.loads((tmp_path / "predictions" / "predictions.json").read_text())
    assert len(predictions) == 30
    correct = [p["top_k"][0]["class"] == p["file_name"].split("/")[-2] for p in predictions]
    assert sum(correct) / len(correct) == pytest.approx(metrics["accuracy"])
