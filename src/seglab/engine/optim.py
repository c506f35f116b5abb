"""Optimizer (SGD or AdamW) and learning-rate schedule (linear warmup, then cosine, cosine
over the planned steps of a time budget, or step).

The schedule is a `LambdaLR` over a plain function of the step, so its state (the step
count) checkpoints and a resumed run may change `max_steps` (the budget) without the old
value coming back from the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from seglab.engine.config import TrainConfig

WARMUP_START = 1e-3  # the warmup starts at lr * WARMUP_START


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW; no weight decay on biases and norm scales (1-d tensors).

    Both use PyTorch's fused kernels (one pass over all parameters, on CPU and CUDA), which
    update like the per-parameter loop in a fraction of its time on small models.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for _, p in trainable if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), fused=True)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    planned_steps: Callable[[], int | None] = lambda: None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """`planned_steps`: the `cosine_budget` run's plan, read when the cosine needs it (the
    run makes it at the end of the warmup, or loads it from its checkpoint)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, planned_steps))


def lr_factor(
    cfg: TrainConfig, planned_steps: Callable[[], int | None] = lambda: None
) -> Callable[[int], float]:
    """The multiplier of `lr` after `step` optimizer steps.

    `cosine_budget` is the cosine over the steps its plan gives (`engine/budget.py`), the
    config's `planned_steps` or the run's; without minutes (code that drops the budget, as
    the lineage benchmark's fixed-steps runs do) over `max_steps`. Past its last step the
    factor stays 0.
    """
    warmup = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return WARMUP_START + (1 - WARMUP_START) * step / warmup
        if cfg.schedule == "step":
            return cfg.gamma ** sum(step >= milestone for milestone in cfg.milestones)
        total = cfg.max_steps
        if cfg.schedule == "cosine_budget":
            total = cfg.planned_steps or planned_steps() or total
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
