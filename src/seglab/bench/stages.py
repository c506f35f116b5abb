"""Per-image test time of a two-stage detector, split into the stages of the lineage.

The stages are timed from outside the model, with forward hooks on its parts
(`models/detection/two_stage.py`: `transform`, `backbone`, `proposal_generator`,
`roi_heads`), so that the model code carries no timing code and the four detectors are
measured the same way. CPU time is synchronous, so the wall-clock time between a part's
pre-hook and its hook is its cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

STAGES = ("proposal_s", "features_s", "heads_s", "post_s")


@dataclass(frozen=True)
class StageParts:
    """Which parts' forward time makes each stage (dotted names of submodules).

    A stage is the time of `counted` minus that of `excluded` (parts inside a counted one
    that belong to another stage). `post_s` is what is left of the whole forward: resizing
    and normalising the input, mapping boxes back to the image, pasting masks.
    """

    proposal: tuple[str, ...] = ("proposal_generator",)
    features: tuple[str, ...] = ("backbone",)
    heads: tuple[str, ...] = ("roi_heads",)
    heads_excluded: tuple[str, ...] = ()

    def names(self) -> set[str]:
        return {*self.proposal, *self.features, *self.heads, *self.heads_excluded}


# Fast R-CNN, Faster R-CNN and Mask R-CNN: one CNN pass over the image (the backbone), RoI
# pooling and the fc / mask heads in `roi_heads`.
SHARED_FEATURES = StageParts()
# R-CNN: the backbone is the pixels themselves; the CNN runs on each warped region inside
# `roi_heads.box_roi_pool` (two_stage.py), which is therefore CNN features, not heads.
PER_REGION_FEATURES = StageParts(
    features=("backbone", "roi_heads.box_roi_pool"), heads_excluded=("roi_heads.box_roi_pool",)
)


class ForwardTimer:
    """Seconds spent in the forward of named submodules, summed over calls since `reset`."""

    def __init__(self, model: nn.Module, names: Iterable[str]):
        modules = dict(model.named_modules())
        missing = sorted(set(names) - set(modules))
        if missing:
            raise ValueError(f"{type(model).__name__} has no submodules {missing} to time")
        self.seconds = dict.fromkeys(names, 0.0)
        self._started: dict[str, float] = {}
        self._handles = []
        for name in self.seconds:
            module = modules[name]
            self._handles.append(module.register_forward_pre_hook(partial(self._start, name)))
            self._handles.append(module.register_forward_hook(partial(self._stop, name)))

    def _start(self, name: str, module: nn.Module, args) -> None:
        self._started[name] = time.perf_counter()

    def _stop(self, name: str, module: nn.Module, args, output) -> None:
        self.seconds[name] += time.perf_counter() - self._started.pop(name)

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def time_stages(model: nn.Module, images: Sequence[Tensor], parts: StageParts) -> dict[str, float]:
    """Mean seconds per image of each stage, one image per forward, in eval mode.

    Args:
        model: a detector built on `TwoStageDetector`, in eval mode.
        images: float (C, H, W) images in [0, 1]; the first is also run once before timing
            (first-call allocations and lazy initialisation are not a per-image cost).
        parts: which parts make which stage.

    Returns:
        {"proposal_s", "features_s", "heads_s", "post_s", "total_s"}: seconds per image;
        the four stages sum to `total_s`.
    """
    timer = ForwardTimer(model, parts.names())
    sums = dict.fromkeys((*STAGES, "total_s"), 0.0)
    try:
        with torch.no_grad():
            model([images[0]])
            for image in images:
                timer.reset()
                started = time.perf_counter()
                model([image])
                sums["total_s"] += time.perf_counter() - started
                for stage, seconds in _stage_seconds(timer.seconds, parts).items():
                    sums[stage] += seconds
    finally:
        timer.remove()
    per_image = {stage: total / len(images) for stage, total in sums.items()}
    per_image["post_s"] = per_image["total_s"] - sum(per_image[s] for s in STAGES[:3])
    return per_image


def _stage_seconds(seconds: dict[str, float], parts: StageParts) -> dict[str, float]:
    def total(names: tuple[str, ...]) -> float:
        return sum(seconds[name] for name in names)

    return {
        "proposal_s": total(parts.proposal),
        "features_s": total(parts.features),
        "heads_s": total(parts.heads) - total(parts.heads_excluded),
    }
