"""`train.patience` / `train.min_delta`: a run stops early once it has converged.

The rule is Keras' `EarlyStopping` (and Lightning's), counted in the evaluations the run
already makes every `train.eval_every` steps: the primary validation metric (the one that
picks `best.safetensors`: mask AP, mIoU, accuracy; higher is better) is converged when
`patience` evaluations in a row have not raised it by more than `min_delta` above the best
value before them. The first evaluation sets that best value; an evaluation that beats it
by more than `min_delta` becomes the new best and starts the count again. The run then
stops at that evaluation's step, saves it (`model.safetensors`; `best.safetensors` holds
the best step's weights) and says so in its last line: `ended: converged (...)`.

The rule reads only the metrics of the evaluations, which are the same for the same
weights, at steps fixed by `eval_every`: two equal runs stop at the same step. Its state
(the best value, its step and the count) lives in `RunState` and so in the checkpoint: a
run killed and resumed counts on from where its checkpoint stood and stops at the same
step, with the same weights, as the uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from seglab.engine.config import TrainConfig

if TYPE_CHECKING:  # the rule itself needs no torch (engine/budget.py imports it)
    from seglab.engine.checkpoint import RunState


@dataclass(frozen=True)
class Plateau:
    """Where a converged run's metric stood: what its last line reports."""

    metric: str  # the primary metric's name, e.g. "mIoU" or "segm.AP"
    best: float  # the value that later evaluations did not beat by more than min_delta
    best_step: int
    evaluations: int  # evaluations since best_step that did not (>= train.patience)


def observe(state: RunState, cfg: TrainConfig, value: float) -> None:
    """Count the evaluation of `value` (the primary metric at `state.step`) into `state`."""
    if state.plateau_best is None or value > state.plateau_best + cfg.min_delta:
        state.plateau_best, state.plateau_step, state.plateau_evals = value, state.step, 0
    else:
        state.plateau_evals += 1


def converged(cfg: TrainConfig, state: RunState) -> bool:
    """`train.patience` evaluations in a row without a gain of more than `train.min_delta`."""
    return cfg.patience is not None and state.plateau_evals >= cfg.patience


def plateau(state: RunState, metric: str) -> Plateau:
    """The figures of the rule as they stand in `state` (after at least one evaluation)."""
    return Plateau(
        metric=metric, best=state.plateau_best, best_step=state.plateau_step,
        evaluations=state.plateau_evals,
    )  # fmt: skip


def describe(cfg: TrainConfig, found: Plateau) -> str:
    """`val mIoU 0.8312 at step 1500, not bettered by more than 0.001 in the 3 evaluations
    since (train.patience=3)`."""
    evaluations = (
        "the evaluation" if found.evaluations == 1 else f"the {found.evaluations} evaluations"
    )
    return (
        f"val {found.metric} {found.best:.4f} at step {found.best_step}, not bettered by more "
        f"than {cfg.min_delta:g} in {evaluations} since (train.patience={cfg.patience})"
    )
