"""The lineage benchmark's report: a markdown table and a bar chart of the stage times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from seglab.files import atomic_write

NAMES = {
    "rcnn": "R-CNN",
    "fast_rcnn": "Fast R-CNN",
    "faster_rcnn": "Faster R-CNN",
    "mask_rcnn": "Mask R-CNN",
}
# stage key -> column / legend label
STAGE_LABELS = {
    "proposal_s": "proposals",
    "features_s": "CNN features",
    "heads_s": "heads",
    "post_s": "resize + post-processing",
}


def markdown_table(report: dict[str, Any]) -> str:
    """One row per model: seconds per test image of each stage, box AP, training steps and,
    last, how many times faster than the first model of the table the whole test is."""
    models = report["models"]
    first_name, first = next(iter(models.items()))
    header = ["model", *(f"{label} s" for label in STAGE_LABELS.values()), "total s", "box AP"]
    header += ["train steps", f"speed vs {NAMES.get(first_name, first_name)}"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, row in models.items():
        cells = [NAMES.get(name, name), *(f"{row[key]:.4f}" for key in STAGE_LABELS)]
        cells += [f"{row['total_s']:.4f}", _ap(row["box_AP"]), str(row["train_steps"])]
        cells.append(f"{first['total_s'] / row['total_s']:.1f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ap(value: float) -> str:
    return "n/a" if value < 0 else f"{value:.3f}"


def bar_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Seconds per test image of each stage, per model (log scale: the stages differ by
    orders of magnitude along the lineage), beside each model's box AP against its training
    minutes (one point per evaluation); written to `path` (PNG)."""
    models = report["models"]
    labels = [NAMES.get(name, name) for name in models]
    positions = np.arange(len(models))
    width = 0.8 / len(STAGE_LABELS)
    figure = Figure(figsize=(11, 4))
    times, accuracy = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for index, (key, label) in enumerate(STAGE_LABELS.items()):
        seconds = [row[key] for row in models.values()]
        offset = (index - (len(STAGE_LABELS) - 1) / 2) * width  # bars side by side
        times.bar(positions + offset, seconds, width, label=label)
    times.set_yscale("log")
    times.set(xticks=positions, xticklabels=labels, ylabel="seconds per image",
              title="test time per stage")  # fmt: skip
    times.legend(fontsize=8)
    times.grid(axis="y", alpha=0.3)
    for label, row in zip(labels, models.values(), strict=True):
        minutes = [point["train_s"] / 60 for point in row["curve"]]
        accuracy.plot(minutes, [max(0.0, point["box_AP"]) for point in row["curve"]],
                      marker="o", label=label)  # fmt: skip
    accuracy.set(xlabel="training minutes", ylabel="box AP (test images)", ylim=(0, 1),
                 title="box AP during training")  # fmt: skip
    accuracy.legend(fontsize=8)
    accuracy.grid(alpha=0.3)
    figure.tight_layout()
    return atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
