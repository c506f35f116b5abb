"""metrics.jsonl survives a kill and a resume; plots are drawn from its records."""

from __future__ import annotations

import json

import pytest

from seglab.engine import logging as run_logging
from seglab.engine.logging import MetricsLog, write_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def train_record(step: int, loss: float) -> dict:
    return {"step": step, "split": "train", "loss": loss, "lr": 0.1, "images_per_s": 5.0}


def val_record(step: int, loss: float, ap: float) -> dict:
    return {"step": step, "split": "val", "primary": "segm.AP", "loss": loss, "segm": {"AP": ap}}


def test_each_appended_line_is_on_disk_at_once(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append(train_record(1, 2.0))
    # another reader (a second open of the file) sees the line before the log is closed
    assert json.loads(log.path.read_text()) == train_record(1, 2.0)
    log.append(val_record(1, 1.5, 0.25))
    assert MetricsLog(log.path).read() == [train_record(1, 2.0), val_record(1, 1.5, 0.25)]


def test_a_line_cut_by_a_kill_is_skipped_and_resume_drops_it_and_later_steps(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.append(train_record(step, 1.0 / step))
    log.append(val_record(2, 0.9, 0.5))
    with log.path.open("a") as handle:
        handle.write('{"step": 4, "split": "tr')  # killed mid-write: no closing brace, no newline
    assert [record["step"] for record in log.read()] == [1, 2, 3, 2]

    log.truncate_after(2)  # the checkpoint was at step 2: lines of steps 3 and 4 go
    assert log.read() == [train_record(1, 1.0), train_record(2, 0.5), val_record(2, 0.9, 0.5)]
    log.append(train_record(3, 0.25))  # the resumed run's line starts on a line of its own
    assert log.read()[-1] == train_record(3, 0.25)


def test_a_missing_log_reads_as_no_records(tmp_path):
    assert MetricsLog(tmp_path / "metrics.jsonl").read() == []


@pytest.fixture
def figures(monkeypatch) -> dict:
    """The figures `write_plots` saves, by file name (they are saved all the same)."""
    drawn = {}
    save = run_logging._save

    def keep(figure, path):
        drawn[path.name] = figure
        return save(figure, path)

    monkeypatch.setattr(run_logging, "_save", keep)
    return drawn


def test_plots_of_losses_and_of_the_primary_metric(tmp_path, figures):
    records = [train_record(1, 2.0), train_record(2, 1.0), val_record(2, 1.2, 0.3)]
    records += [train_record(3, 0.5), val_record(3, 0.8, 0.4)]
    written = write_plots(records, tmp_path / "plots")

    assert [path.name for path in written] == [
        "loss.png", "loss_components.png", "lr.png", "metric.png"
    ]  # fmt: skip
    assert all(path.read_bytes().startswith(PNG_SIGNATURE) for path in written)
    loss_axes, metric_axes = figures["loss.png"].axes[0], figures["metric.png"].axes[0]
    train_line, val_line = loss_axes.get_lines()
    assert list(train_line.get_xdata()) == [1, 2, 3] and list(val_line.get_ydata()) == [1.2, 0.8]
    assert loss_axes.get_yscale() == "log"  # every loss is positive
    assert list(metric_axes.get_lines()[0].get_ydata()) == [0.3, 0.4]
    assert metric_axes.get_ylabel() == "segm.AP"


def test_no_evaluation_yet_gives_the_loss_plot_only_and_a_linear_scale_for_a_zero_loss(
    tmp_path, figures
):
    written = write_plots([train_record(1, 0.5), train_record(2, 0.0)], tmp_path)
    assert [path.name for path in written] == ["loss.png", "loss_components.png", "lr.png"]
    assert figures["loss.png"].axes[0].get_yscale() == "linear"  # log(0) cannot be drawn


def test_every_loss_term_and_the_learning_rate_are_drawn(tmp_path, figures):
    records = [
        {**train_record(step, 1.0 / step), "loss_box_reg": 0.4 / step, "loss_mask": 0.6 / step,
         "lr": 0.1 * step}
        for step in (1, 2, 3)
    ]  # fmt: skip
    write_plots(records, tmp_path)
    terms = figures["loss_components.png"].axes[0]
    assert [line.get_label() for line in terms.get_lines()] == ["loss_box_reg", "loss_mask"]
    assert list(terms.get_lines()[1].get_ydata()) == pytest.approx([0.6, 0.3, 0.2])
    lr_line = figures["lr.png"].axes[0].get_lines()[0]
    assert list(lr_line.get_ydata()) == pytest.approx([0.1, 0.2, 0.3])
