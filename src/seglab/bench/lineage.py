"""The lineage benchmark: R-CNN -> Fast R-CNN -> Faster R-CNN -> Mask R-CNN, each trained
with the same budget on the same shapes data and timed on the same test images.

What each paper changed shows in where the test time of an image goes (`stages.py`):
R-CNN runs selective search and then the CNN on every warped region; Fast R-CNN runs the
CNN once per image and pools the regions from its map (Fast R-CNN §2); Faster R-CNN
replaces selective search by the RPN on the same features (Faster R-CNN §3); Mask R-CNN
adds FPN, RoIAlign and the mask branch. What it bought shows in the box AP.

`run_lineage`:
1. writes the shapes data (`seglab data shapes`) into the work folder: the train split to
   learn from, the val split as the test images;
2. trains each model from its shipped shapes recipe (ResNet-18 backbones for all) with the
   same wall-clock budget: a few timed steps estimate its step time, its schedule
   (`train.max_steps`, cosine) is set to end within the budget, and `train.max_minutes`
   stops it there whatever happens; or, with `steps`, the same number of steps for each;
3. takes the box AP on the test images from the trainer's final evaluation;
4. times the trained model on the first `time_images` test images, one image per forward,
   on the CPU.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from seglab.bench.stages import PER_REGION_FEATURES, SHARED_FEATURES, StageParts, time_stages
from seglab.data import DataConfig, build_dataset, collate
from seglab.data.shapes import generate_shapes
from seglab.engine.config import Config, load_config, resolve_num_classes
from seglab.engine.logging import METRICS_NAME, MetricsLog
from seglab.engine.optim import build_optimizer
from seglab.engine.trainer import train
from seglab.errors import UserError
from seglab.models.zoo import build_model, load_model, model_task

# model -> its shipped shapes recipe (configs/), in the order of the lineage.
RECIPES = {
    "faster_rcnn": "faster_rcnn_r18_fpn_shapes",
    "mask_rcnn": "mask_rcnn_r18_fpn_shapes",
}
# model -> which of its parts make each stage of the test time.
STAGE_PARTS: dict[str, StageParts] = {
    "rcnn": PER_REGION_FEATURES,
    "fast_rcnn": SHARED_FEATURES,
    "faster_rcnn": SHARED_FEATURES,
    "mask_rcnn": SHARED_FEATURES,
}
SCHEDULE_FILL = 0.9  # the schedule is sized for 90% of the budget: steps vary a little
CALIBRATION_STEPS = 3  # timed after one warm-up step


@dataclass(frozen=True)
class LineageOptions:
    """What `run_lineage` trains and measures.

    Attributes:
        models: names in `RECIPES`, in the order they are reported.
        minutes: training budget of each model (wall-clock), unless `steps` is given.
        steps: train each model this many steps instead (no time budget; for quick runs).
        train_images, test_images, size: the shapes data (images of `size` px).
        time_images: test images timed one by one (the first ones of the test split).
        work_dir: where the data and the runs are written.
        progress: show the data and training progress.
    """

    models: tuple[str, ...] = tuple(RECIPES)
    minutes: float = 3.0
    steps: int | None = None
    train_images: int = 300
    test_images: int = 50
    size: int = 256
    time_images: int = 20
    work_dir: Path = Path("bench-lineage")
    progress: bool = True

    def __post_init__(self):
        unknown = [name for name in self.models if name not in RECIPES]
        if unknown or not self.models:
            raise UserError(
                f"--models {','.join(self.models)}: unknown or none; the lineage has "
                f"{', '.join(RECIPES)}"
            )
        for name in ("minutes", "steps", "train_images", "test_images", "time_images"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name.replace('_', '-')} {value}: must be positive")
        if self.time_images > self.test_images:
            raise UserError(
                f"--time-images {self.time_images}: at most the {self.test_images} test images"
            )


def run_lineage(options: LineageOptions) -> dict[str, Any]:
    """Train, evaluate and time each model; the report `--out` writes (see module docstring).

    Returns:
        {"models": {name: {"proposal_s", "features_s", "heads_s", "post_s", "total_s"
        (seconds per test image), "box_AP", ("mask_AP",) "train_steps", "train_s"}},
        "settings": what was run, on which machine}.
    """
    data = generate_shapes(
        options.work_dir / "shapes", train=options.train_images, val=options.test_images,
        size=options.size, seed=0,
    )  # fmt: skip
    runs = options.work_dir / time.strftime("runs-%Y%m%d-%H%M%S")
    results = {name: _benchmark(name, data, runs / name, options) for name in options.models}
    return {"models": results, "settings": _settings(options)}


def _benchmark(name: str, data: Path, run_dir: Path, options: LineageOptions) -> dict[str, Any]:
    config = _budgeted(load_config(RECIPES[name], [f"data.root={data}"]), options)
    metrics = train(config, run_dir, progress=options.progress)
    model = load_model(run_dir / "model.safetensors").eval()
    timing = time_stages(model, _test_images(data, options.time_images), STAGE_PARTS[name])
    result = {**timing, "box_AP": metrics["bbox"]["AP"]}
    if "segm" in metrics:
        result["mask_AP"] = metrics["segm"]["AP"]
    train_lines = [r for r in MetricsLog(run_dir / METRICS_NAME).read() if "elapsed_s" in r]
    return {**result, "train_steps": metrics["step"], "train_s": train_lines[-1]["elapsed_s"]}


def _budgeted(config: Config, options: LineageOptions) -> Config:
    """The recipe with the benchmark's budget, evaluated once at the end, on the CPU."""
    if options.steps is not None:
        steps, minutes = options.steps, None
    else:
        steps = max(1, int(SCHEDULE_FILL * 60 * options.minutes / _seconds_per_step(config)))
        minutes = options.minutes
    train_cfg = dataclasses.replace(
        config.train, max_steps=steps, max_minutes=minutes, device="cpu",
        warmup_steps=min(config.train.warmup_steps, steps // 4),  # a short run still decays
        eval_every=steps, checkpoint_every=steps,
    )  # fmt: skip
    return dataclasses.replace(config, train=train_cfg)


def _seconds_per_step(config: Config) -> float:
    """Wall-clock seconds of one training step of `config` (loading, forward, backward,
    update): the mean of `CALIBRATION_STEPS` steps after a warm-up step."""
    dataset = build_dataset(config.data, "train", task=model_task(config.model.name), train=True)
    config = resolve_num_classes(config, list(dataset.class_names))
    model_cfg = config.model
    model = build_model(model_cfg.name, num_classes=model_cfg.num_classes, **model_cfg.args)
    optimizer = build_optimizer(model.train(), config.train)
    sampler = RandomSampler(dataset, replacement=True, num_samples=10**9)  # never runs out
    loader = DataLoader(
        dataset, batch_size=config.train.batch_size, sampler=sampler, collate_fn=collate,
        num_workers=config.train.workers,
    )  # fmt: skip
    seconds, batches = [], iter(loader)
    for _ in range(CALIBRATION_STEPS + 1):
        started = time.perf_counter()
        images, targets = next(batches)
        _, losses = model.forward_with_losses(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    return statistics.mean(seconds[1:])


def _test_images(data: Path, count: int) -> list[torch.Tensor]:
    """The first `count` test images, float (C, H, W) in [0, 1], as evaluation loads them."""
    dataset = build_dataset(DataConfig(root=str(data)), "val", task="detection", train=False)
    return [dataset[index][0].as_subclass(torch.Tensor) for index in range(count)]


def _settings(options: LineageOptions) -> dict[str, Any]:
    return {
        "minutes_per_model": None if options.steps is not None else options.minutes,
        "steps_per_model": options.steps,
        "train_images": options.train_images,
        "test_images": options.test_images,
        "image_size": options.size,
        "timed_images": options.time_images,
        "recipes": {name: RECIPES[name] for name in options.models},
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
