"""Evaluation: what a model scores on a dataset, and what COCO results score.

- `evaluate` (`evaluator.py`): one pass over a dataset gives the validation loss and the
  task's metrics; the trainer's validation and `seglab eval` both use it;
- `evaluate_model` / `evaluate_files` (`saved.py`): a saved model on a dataset folder, or a
  COCO results file against a ground truth, as `seglab eval` reports them;
- the metrics themselves: `coco.py`, `semantic.py`, `classification.py`, `confusion.py`.
"""

from seglab.evaluation.evaluator import (
    PRIMARY_METRICS,
    TILE_SIZE,
    evaluate,
    metric_value,
    primary_metric,
    seconds_per_pass,
)
from seglab.evaluation.saved import evaluate_files, evaluate_model, infer_layout, instance_ap

__all__ = [
    "PRIMARY_METRICS",
    "TILE_SIZE",
    "evaluate",
    "evaluate_files",
    "evaluate_model",
    "infer_layout",
    "instance_ap",
    "metric_value",
    "primary_metric",
    "seconds_per_pass",
]
