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
   same wall-clock budget (`train.max_minutes`) and a cosine schedule that ends with it
   (`cosine_budget`), its step cap set a quarter above what a throwaway run of a few steps
   says the budget allows, so that the clock ends the run; or, with `steps`, the same
   number of steps for each (plain cosine);
3. takes the box AP on the test images from the trainer's final evaluation;
4. times the trained model on the first `time_images` test images, one image per forward,
   on the CPU.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seglab.bench.stages import PER_REGION_FEATURES, SHARED_FEATURES, StageParts, time_stages
from seglab.data import DataConfig, build_dataset
from seglab.data.shapes import generate_shapes
from seglab.engine.config import Config, load_config
from seglab.engine.logging import METRICS_NAME, MetricsLog
from seglab.engine.trainer import train
from seglab.errors import SeglabWarning, UserError
from seglab.models.zoo import load_model

# model -> its shipped shapes recipe (configs/), in the order of the lineage.
RECIPES = {
    "rcnn": "rcnn_r18_c4_shapes",
    "fast_rcnn": "fast_rcnn_r18_c4_shapes",
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
STEP_CAP_HEADROOM = 1.25  # steps vary: the cap stays above what the budget allows
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
    recipe = load_config(RECIPES[name], [f"data.root={data}"])
    config = _budgeted(recipe, options, run_dir.with_name(f"{name}-step-time"))
    metrics = train(config, run_dir, progress=options.progress)
    model = load_model(run_dir / "model.safetensors").eval()
    timing = time_stages(model, _test_images(data, options.time_images), STAGE_PARTS[name])
    result = {**timing, "box_AP": metrics["bbox"]["AP"]}
    if "segm" in metrics:
        result["mask_AP"] = metrics["segm"]["AP"]
    return {**result, "train_steps": metrics["step"], "train_s": _elapsed(run_dir)[-1]}


def _budgeted(config: Config, options: LineageOptions, probe_dir: Path) -> Config:
    """The recipe with the benchmark's budget, evaluated once at the end, on the CPU.

    A time budget first measures the recipe's step time in a throwaway run in `probe_dir`.
    """
    if options.steps is not None:
        steps, minutes, schedule = options.steps, None, "cosine"
    else:
        step_s = _seconds_per_step(config, probe_dir)
        steps = max(1, int(STEP_CAP_HEADROOM * 60 * options.minutes / step_s))
        minutes, schedule = options.minutes, "cosine_budget"
    train_cfg = dataclasses.replace(
        config.train, max_steps=steps, max_minutes=minutes, schedule=schedule, device="cpu",
        warmup_steps=min(config.train.warmup_steps, steps // 4),  # a short run still decays
        eval_every=steps, checkpoint_every=steps,
    )  # fmt: skip
    return dataclasses.replace(config, train=train_cfg)


def _seconds_per_step(config: Config, probe_dir: Path) -> float:
    """Wall-clock seconds of one of the trainer's steps for `config` (loading, forward,
    backward, update): `CALIBRATION_STEPS` steps timed after a warm-up step, in a throwaway
    run on the training split alone, so that it ends without an evaluation."""
    steps = CALIBRATION_STEPS + 1
    probe = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, root=str(_train_split_only(config, probe_dir))),
        train=dataclasses.replace(
            config.train, max_steps=steps, max_minutes=None, device="cpu", log_every=1,
            eval_every=steps, checkpoint_every=steps,
        ),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeglabWarning)  # no val split, a short warmup: meant
        train(probe, probe_dir / "run", progress=False)
    elapsed = _elapsed(probe_dir / "run")  # after each step
    return (elapsed[-1] - elapsed[0]) / CALIBRATION_STEPS


def _train_split_only(config: Config, folder: Path) -> Path:
    """A data root in `folder` with the train split of `config.data.root` and nothing else:
    links to its files, and to its proposal cache, which the probe run reads and fills."""
    root = Path(config.data.root).resolve()
    (root / "proposals").mkdir(exist_ok=True)
    folder.mkdir(parents=True)
    for name in ("train.json", "train", "proposals"):
        (folder / name).symlink_to(root / name)
    return folder


def _elapsed(run_dir: Path) -> list[float]:
    """The training seconds logged by a run, line after line (`metrics.jsonl`)."""
    return [r["elapsed_s"] for r in MetricsLog(run_dir / METRICS_NAME).read() if "elapsed_s" in r]


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
