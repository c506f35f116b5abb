"""`RUN/checkpoint.pt`: everything a run needs to continue exactly where it stopped.

It holds the model, optimizer and scheduler states, the step, the wall-clock time spent,
the best metric so far, the last evaluation, where the convergence rule stands
(`train.patience`), the random generators (python, numpy, torch, CUDA) and the data order
(seed, epoch, position). It is written atomically, so a run killed while writing keeps its
previous checkpoint, and it is read with `weights_only=True` (no pickled code runs when a
checkpoint is loaded).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seglab.errors import UserError
from seglab.files import atomic_torch_save
from seglab.models.zoo import load_weights

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class RunState:
    """What the training loop carries from step to step besides the weights."""

    step: int = 0
    elapsed_s: float = 0.0  # wall-clock seconds spent training, over all sessions
    best_value: float | None = None  # best primary metric so far
    last_metrics: dict = field(default_factory=dict)  # the latest evaluation
    last_eval_step: int = -1
    planned_steps: int | None = None  # cosine_budget's plan, once made (engine/budget.py)
    # train.patience (engine/convergence.py): the primary metric that later evaluations must
    # beat by more than train.min_delta, its step, and the evaluations since that did not
    plateau_best: float | None = None
    plateau_step: int = -1
    plateau_evals: int = 0


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: RunState,
    data_order: dict[str, int],
    rng_per_rank: list[dict[str, Any]] | None = None,
) -> Path:
    """`rng_per_rank`: the generators of every training process (DDP), in rank order."""
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "run_state": vars(state).copy(),
        "rng": rng_states(),
        "data_order": data_order,
    }
    if rng_per_rank is not None:
        checkpoint["rng_per_rank"] = rng_per_rank
    return atomic_torch_save(path, checkpoint)


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int = 0,
    world_size: int = 1,
) -> RunState:
    """Restore model, optimizer, scheduler and generators in place; return the run state.

    Process `rank` of `world_size` takes its own generators when the checkpoint was saved
    by as many processes, else those of rank 0 (the resume is then no longer exact)."""
    return restore_checkpoint(
        read_checkpoint(path), path, model=model, optimizer=optimizer, scheduler=scheduler,
        rank=rank, world_size=world_size,
    )  # fmt: skip


def restore_checkpoint(
    checkpoint: dict[str, Any],
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int = 0,
    world_size: int = 1,
) -> RunState:
    """`load_checkpoint` of a checkpoint already read (`read_checkpoint(path)`), such as the
    one rank 0 read and sent to every process (`distributed.from_rank0`); `path` names it
    in messages."""
    remedy = "start a new RUN (--out) or delete the checkpoint to train this one from scratch"
    load_weights(model, checkpoint["model"], path, remedy=remedy)
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    per_rank = checkpoint.get("rng_per_rank") or [checkpoint["rng"]]
    set_rng_states(per_rank[rank] if len(per_rank) == world_size else checkpoint["rng"])
    return RunState(**checkpoint["run_state"])


def saved_world_size(checkpoint: dict[str, Any]) -> int:
    """How many processes trained the run up to `checkpoint` (1 before DDP existed)."""
    return int(checkpoint["data_order"].get("world_size", 1))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file raises one of many types
        raise UserError(
            f"{path}: not a readable seglab checkpoint ({type(error).__name__}); "
            f"delete it to start the run over"
        ) from None


def checkpoint_step(run_dir: str | Path) -> int | None:
    """The step saved in `RUN/checkpoint.pt`, or None when the run has no checkpoint."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    return int(read_checkpoint(path)["run_state"]["step"])


def rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": _python_state_to_tensor(random.getstate()),
        "python_gauss": random.getstate()[2],
        "numpy_key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
        "numpy_pos": int(numpy_state["state"]["pos"]),
        "numpy_gauss": [int(numpy_state["has_gauss"]), float(numpy_state["gauss"])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(_python_state_from_tensor(states["python"], states["python_gauss"]))
    has_gauss, gauss = states["numpy_gauss"]
    key = states["numpy_key"].numpy().astype(np.uint32)
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": key, "pos": states["numpy_pos"]},
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        }
    )
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _python_state_to_tensor(state: tuple) -> torch.Tensor:
    version, internal, _ = state  # internal: 624 words + position
    return torch.tensor([version, *internal], dtype=torch.int64)


def _python_state_from_tensor(tensor: torch.Tensor, gauss_next: float | None) -> tuple:
    values = tensor.tolist()
    return values[0], tuple(values[1:]), gauss_next
