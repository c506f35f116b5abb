"""The plan of `train.schedule: cosine_budget`: the minutes of the budget turned into steps, once.

A schedule that read the clock at every step would make two runs of one recipe end with
different weights, and a resumed run differ from an uninterrupted one. So the run measures
its step time over the second half of the learning-rate warmup (the first half warms the
caches and the data loader) and the time of one validation batch, and fixes then how many
steps fit in the minutes left, the evaluations they need included (the periodic ones and the
final one, which the budget covers: a 2-minute run lasts 2 minutes). From there it follows
steps only: the cosine runs to 0 at the planned step, exactly as `schedule: cosine` with
`max_steps` set to the plan, and the plan is the first of the two that ends the run.

The plan is recorded in `RUN/config.yaml` (`train.planned_steps`) and in the checkpoint; a
resume continues it, and `--set train.planned_steps=N` (or `--set train.max_steps=N --set
train.schedule=cosine`) reruns it bit for bit. `max_minutes` stays a hard stop for a machine
that slows down after the plan. A run with `train.patience` may end before its plan, at the
evaluation that finds it converged (`seglab.engine.convergence`); its last line says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seglab.engine import convergence
from seglab.engine.config import TrainConfig

# Of the minutes left at the plan, the share kept back for steps slower than the measured
# ones (a detector's proposals change as it learns, checkpoints are written, the machine is
# shared): the plan then ends the run rather than the hard stop, whose cosine is cut short.
PLAN_MARGIN = 0.05


@dataclass(frozen=True)
class BudgetPlan:
    """The planned number of steps and the measurements it comes from."""

    steps: int
    step_s: float  # seconds per training step, measured
    eval_s: float  # seconds per evaluation pass, estimated from one batch
    evaluations: int  # evaluation passes the plan leaves time for, the final one included

    def describe(self, cfg: TrainConfig) -> str:
        """One line for the user: the plan, its grounds and how to rerun it."""
        if self.steps >= cfg.max_steps:
            bound = f"train.max_steps={cfg.max_steps} fits the budget"
        else:
            bound = f"what fits the budget of {cfg.max_minutes:g} min"
        evaluations = f", {self.evaluations} evaluation(s) of ~{self.eval_s:.1f} s"
        return (
            f"budget plan: {self.steps} steps ({bound}; {self.step_s:.3f} s/step measured"
            f"{evaluations if self.eval_s > 0 else ''}); recorded as train.planned_steps, "
            f"rerun it with --set train.planned_steps={self.steps}"
        )


def plan_steps(
    cfg: TrainConfig, *, step: int, elapsed_s: float, step_s: float, eval_s: float
) -> BudgetPlan:
    """The last step of a `cosine_budget` run planned at `step`, `elapsed_s` into its budget.

    N steps cost `(N - step) * step_s` plus one evaluation every `eval_every` steps and the
    final one; N is the largest that fits in `(1 - PLAN_MARGIN)` of the minutes left, at
    least `step` (the budget is already spent) and at most `max_steps`.
    """
    left_s = 60 * cfg.max_minutes * (1 - PLAN_MARGIN) - elapsed_s - eval_s  # the final pass
    per_step_s = step_s + eval_s / cfg.eval_every
    steps = step + max(0, math.floor(left_s / per_step_s))
    steps = min(steps, cfg.max_steps)
    evaluations = (steps - 1) // cfg.eval_every - (step - 1) // cfg.eval_every + 1
    return BudgetPlan(steps=steps, step_s=step_s, eval_s=eval_s, evaluations=evaluations)


class StepClock:
    """The mean step time over the second half of the warmup, ending where the cosine begins,
    so that the plan is fixed before any step needs it.

    A session resumed inside that window measures from its own first step on (that step
    loads the first batch: it is not counted); one with no step left to measure, or a warmup
    of one step or none, uses the run's mean so far: a rough plan (the recipes warm up for 20
    steps or more). Without warmup the plan is made after step 1, whose lr is the cosine's
    peak whatever the plan.
    """

    def __init__(self, cfg: TrainConfig, start_step: int):
        self.last = max(cfg.warmup_steps, start_step + 1)
        self.first = min(max(cfg.warmup_steps // 2, start_step + 1), self.last)
        self._mark: tuple[int, float] | None = None

    def observe(self, step: int, elapsed_s: float) -> float | None:
        """Seconds per step once `step` (just taken, `elapsed_s` into the run) ends the
        measurement; None before it."""
        if step == self.first:
            self._mark = (step, elapsed_s)
        if step != self.last:
            return None
        first_step, first_s = self._mark
        if first_step == step:
            return elapsed_s / step
        return (elapsed_s - first_s) / (step - first_step)


def needs_plan(cfg: TrainConfig) -> bool:
    """A budgeted schedule whose plan is not given in the config."""
    return (
        cfg.schedule == "cosine_budget" and cfg.max_minutes is not None
        and cfg.planned_steps is None
    )  # fmt: skip


def end_reason(
    cfg: TrainConfig, *, step: int, elapsed_s: float, planned: int | None,
    plateau: convergence.Plateau | None = None,
) -> str:  # fmt: skip
    """Which bound ended a run at `step`, `elapsed_s` into it, as the run's last line says:
    its budget (the minutes, or the steps planned to fill them), `train.max_steps` (with
    the minutes it left unused: a cap for fast machines that binds here should be raised),
    or convergence before them (`train.patience`, engine/convergence.py). `planned`: the
    `cosine_budget` plan, None without one; `plateau`: the convergence rule's figures, given
    when the rule is met."""
    minutes = cfg.max_minutes
    if minutes is not None and elapsed_s >= 60 * minutes:
        return f"ended: budget used ({minutes:g} min, step {step})"
    if cfg.schedule == "cosine_budget" and planned is not None and step >= planned:
        if planned < cfg.max_steps:
            return (f"ended: budget used (the {planned} steps planned for {minutes:g} min, "
                    f"done in {elapsed_s / 60:.1f})")  # fmt: skip
    if step >= cfg.max_steps:
        if minutes is None:
            return f"ended: train.max_steps={cfg.max_steps} reached"
        return (f"ended: train.max_steps={cfg.max_steps} reached after {elapsed_s / 60:.1f} of "
                f"{minutes:g} min; raise it to use the budget")  # fmt: skip
    if plateau is not None:
        left = _left(cfg, step, elapsed_s, planned)
        return f"ended: converged ({convergence.describe(cfg, plateau)}; {left})"
    return f"ended: step {step}"


def _left(cfg: TrainConfig, step: int, elapsed_s: float, planned: int | None) -> str:
    """What a converged run left of its bounds: `stopped at step 3000 of the 4400 planned
    for 5 min, after 2.9`."""
    minutes = cfg.max_minutes
    if cfg.schedule == "cosine_budget" and planned is not None and planned < cfg.max_steps:
        return (f"stopped at step {step} of the {planned} planned for {minutes:g} min, after "
                f"{elapsed_s / 60:.1f}")  # fmt: skip
    left = f"stopped at step {step} of train.max_steps={cfg.max_steps}"
    if minutes is not None:
        left += f", after {elapsed_s / 60:.1f} of {minutes:g} min"
    return left
