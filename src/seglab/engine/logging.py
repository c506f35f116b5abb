"""`RUN/metrics.jsonl` (one JSON line per logging step and per evaluation) and `RUN/plots/`.

Training lines: `{"step", "split": "train", "loss", <each loss>, "lr", "images_per_s",
"elapsed_s"}`. Evaluation lines: `{"step", "split": "val", "primary": name, "elapsed_s" (the
run's seconds before the evaluation), "eval_s" (its own), <metrics>}` with the metrics of
`seglab.evaluation.evaluate` (validation `loss` plus the task's metrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from seglab.evaluation import metric_value
from seglab.files import atomic_write, atomic_write_text

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Appends records to `metrics.jsonl`, flushing each line so a killed run keeps them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
        return records

    def truncate_after(self, step: int) -> None:
        """Forget lines written after `step` (by a run that was interrupted and resumes)."""
        records = [record for record in self.read() if record.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in records))

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()


def write_plots(records: list[dict[str, Any]], plots_dir: str | Path) -> list[Path]:
    """`loss.png` (training and validation loss), `loss_components.png` (each training
    loss term), `lr.png` (the learning rate) and `metric.png` (the primary metric)."""
    plots_dir = Path(plots_dir)
    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    val = [r for r in records if r.get("split") == "val"]
    written = [_plot_losses(train, val, plots_dir / "loss.png")]
    written.append(_plot_components(train, plots_dir / "loss_components.png"))
    written.append(_plot_lr(train, plots_dir / "lr.png"))
    primary = next((r["primary"] for r in reversed(val) if "primary" in r), None)
    if primary is not None:
        written.append(_plot_metric(val, primary, plots_dir / "metric.png"))
    return written


def _plot_losses(train: list[dict], val: list[dict], path: Path) -> Path:
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    val = [r for r in val if "loss" in r]
    if val:
        axes.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="val loss")
    axes.set(xlabel="step", ylabel="loss", title="loss")
    axes.set_yscale("log" if all(r["loss"] > 0 for r in train + val) else "linear")
    axes.legend()
    axes.grid(alpha=0.3)
    return _save(figure, path)


def _plot_components(train: list[dict], path: Path) -> Path:
    """Each term of the training loss (`loss_*`), one curve per term."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    steps = [r["step"] for r in train]
    names = sorted({name for r in train for name in r if name.startswith("loss_")})
    for name in names:
        axes.plot(steps, [r.get(name, float("nan")) for r in train], label=name)
    axes.set(xlabel="step", ylabel="loss", title="training loss terms")
    if names and all(r.get(name, 1.0) > 0 for r in train for name in names):
        axes.set_yscale("log")
    if names:
        axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def _plot_lr(train: list[dict], path: Path) -> Path:
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    points = [(r["step"], r["lr"]) for r in train if "lr" in r]
    axes.plot([step for step, _ in points], [lr for _, lr in points])
    axes.set(xlabel="step", ylabel="learning rate", title="learning rate")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def _plot_metric(val: list[dict], primary: str, path: Path) -> Path:
    points = [(r["step"], metric_value(r, primary)) for r in val]
    points = [(step, value) for step, value in points if value is not None]
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.plot([step for step, _ in points], [value for _, value in points], "o-")
    axes.set(xlabel="step", ylabel=primary, title=f"validation {primary}")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    return atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
