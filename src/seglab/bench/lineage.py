"""The lineage benchmark: R-CNN -> Fast R-CNN -> Faster R-CNN -> Mask R-CNN, each trained
with the same budget on the same data (the shapes, or any COCO dataset) and timed on the
same test images; each paper's claim set beside what was measured (`claims.py`).

What each paper changed shows in where the test time of an image goes (`stages.py`):
R-CNN runs selective search and then the CNN on every warped region; Fast R-CNN runs the
CNN once per image and pools the regions from its map (Fast R-CNN §2); Faster R-CNN
replaces selective search by the RPN on the same features (Faster R-CNN §3); Mask R-CNN
adds FPN, RoIAlign and the mask branch. What it bought shows in the box AP.

`run_lineage`:
1. writes the shapes data (`seglab data shapes`) into the work folder, or takes `data` (a
   COCO dataset with train and val splits): the train split to learn from, the val split
   as the test images;
2. trains each model from its shipped shapes recipe (ResNet-18 backbones for all) with the
   same wall-clock budget (`train.max_minutes`, the recipes' `cosine_budget` schedule
   planning its steps for it), its step cap far above what a throwaway run of a few steps
   says the budget allows; or, with `steps`, the same number of steps for each
   (plain cosine); evaluating on the test images `evaluations` times along the way, so
   that each model has a curve of box AP against training time (evaluations left out);
3. takes the box AP on the test images from the trainer's final evaluation;
4. times the trained model on the first `time_images` test images, one image per forward,
   on the CPU; Fast R-CNN also with its fc layers' truncated SVD (§3.1: time and AP);
5. times R-CNN's and Fast R-CNN's CNN stage at the papers' scale (`paper_scale.py`);
6. sets each paper's claim beside the measurements (`claims.py`).
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

from seglab import evaluation
from seglab.bench.claims import lineage_claims
from seglab.bench.paper_scale import PAPER_REGIONS, paper_scale_features
from seglab.bench.stages import (
    PER_REGION_FEATURES,
    SHARED_FEATURES,
    ForwardTimer,
    StageParts,
    time_stages,
)
from seglab.data import DataConfig, build_dataset, build_training_datasets
from seglab.data.shapes import generate_shapes
from seglab.engine.config import Config, load_config
from seglab.engine.logging import METRICS_NAME, MetricsLog
from seglab.engine.trainer import train
from seglab.errors import SeglabWarning, UserError
from seglab.models.zoo import data_proposals, load_model
from seglab.ops.precision import autocast

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
# The trainer's budget plan ends the run; the step cap stays far above what the probe says
# the budget allows (its first steps are slower than a run's: a cap 25% above them ended
# R-CNN's run before its minutes were spent).
STEP_CAP_HEADROOM = 4.0
CALIBRATION_STEPS = 3  # timed after one warm-up step


@dataclass(frozen=True)
class LineageOptions:
    """What `run_lineage` trains and measures.

    Attributes:
        models: names in `RECIPES`, in the order they are reported.
        minutes: training budget of each model (wall-clock), unless `steps` is given.
        steps: train each model this many steps instead (no time budget; for quick runs).
        data: a COCO dataset (train / val splits, as `data.root` reads them) instead of the
            generated shapes.
        train_images, test_images, size: the shapes data (images of `size` px).
        time_images: test images timed one by one (the first ones of the test split).
        evaluations: evaluations on the test split along each run (the last at its end).
        paper_regions: R-CNN's regions in the papers' scale timing (0: not timed).
        work_dir: where the data and the runs are written.
        progress: show the data and training progress.
        precision: each model's training and timing (`train.precision`: fp32 | bf16).
    """

    models: tuple[str, ...] = tuple(RECIPES)
    minutes: float = 10.0
    steps: int | None = None
    data: Path | None = None
    train_images: int = 300
    test_images: int = 50
    size: int = 256
    time_images: int = 20
    evaluations: int = 5
    paper_regions: int = PAPER_REGIONS
    work_dir: Path = Path("bench-lineage")
    progress: bool = True
    precision: str = "fp32"

    def __post_init__(self):
        unknown = [name for name in self.models if name not in RECIPES]
        if unknown or not self.models:
            raise UserError(
                f"--models {','.join(self.models)}: unknown or none; the lineage has "
                f"{', '.join(RECIPES)}"
            )
        for name in ("minutes", "steps", "train_images", "test_images", "time_images",
                     "evaluations"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name.replace('_', '-')} {value}: must be positive")
        if self.paper_regions < 0:
            raise UserError(f"--paper-regions {self.paper_regions}: must be 0 or more")
        if self.data is None and self.time_images > self.test_images:
            raise UserError(
                f"--time-images {self.time_images}: at most the {self.test_images} test images"
            )


def run_lineage(options: LineageOptions) -> dict[str, Any]:
    """Train, evaluate and time each model; the report `--out` writes (see module docstring).

    Returns:
        {"models": {name: {"proposal_s", "features_s", "heads_s", "post_s", "total_s"
        (seconds per test image), "box_AP", ("mask_AP",) "train_steps", "train_s", "curve":
        [{"step", "train_s", "box_AP"}] (Fast R-CNN also "svd")}}, "paper_scale":
        {"rcnn_features_s", "fast_rcnn_features_s", ...} or None, "claims": [...],
        "settings": what was run, on which machine}.
    """
    data = options.data
    if data is None:
        data = generate_shapes(
            options.work_dir / "shapes", train=options.train_images, val=options.test_images,
            size=options.size, seed=0,
        )  # fmt: skip
    images = _test_images(data, options.time_images)
    runs = options.work_dir / time.strftime("runs-%Y%m%d-%H%M%S")
    results = {name: _benchmark(name, data, runs / name, images, options)
               for name in options.models}  # fmt: skip
    report = {"models": results, "paper_scale": _paper_scale(runs, images[0], options)}
    report["claims"] = lineage_claims(report)
    return {**report, "settings": _settings(options, data)}


def _benchmark(
    name: str, data: Path, run_dir: Path, images: list[torch.Tensor], options: LineageOptions
) -> dict[str, Any]:
    recipe = load_config(
        RECIPES[name], [f"data.root={data}", f"train.precision={options.precision}"]
    )
    config = _budgeted(recipe, options, run_dir.with_name(f"{name}-step-time"))
    metrics = train(config, run_dir, progress=options.progress)
    model = load_model(run_dir / "model.safetensors").eval()
    with autocast(options.precision, "cpu"):
        timing = time_stages(model, images, STAGE_PARTS[name])
    result = {**timing, "box_AP": metrics["bbox"]["AP"]}
    # COCO's small (< 32^2 px), medium and large objects: where a model loses its AP
    result["box_AP_by_size"] = {size: metrics["bbox"][f"AP{size[0]}"]
                                for size in ("small", "medium", "large")}  # fmt: skip
    if "segm" in metrics:
        result["mask_AP"] = metrics["segm"]["AP"]
    curve = _curve(run_dir)
    result.update(train_steps=metrics["step"], train_s=curve[-1]["train_s"], curve=curve)
    if name == "fast_rcnn":
        result["svd"] = _svd(model, config, images, dense_heads_s=timing["heads_s"])
    return result


def _curve(run_dir: Path) -> list[dict[str, float]]:
    """Box AP at each evaluation of a run against its training seconds: the run's seconds
    before the evaluation less those of the evaluations before it."""
    curve, evaluating_s = [], 0.0
    for record in MetricsLog(run_dir / METRICS_NAME).read():
        if record["split"] == "val":
            train_s = record["elapsed_s"] - evaluating_s
            curve.append({"step": record["step"], "train_s": round(train_s, 3),
                          "box_AP": record["bbox"]["AP"]})  # fmt: skip
            evaluating_s += record["eval_s"]
    return curve


def _svd(model, config: Config, images: list[torch.Tensor], *, dense_heads_s: float) -> dict:
    """Fast R-CNN's heads with fc6 and fc7 replaced by their truncated SVD (§3.1): ranks in
    the paper's proportions (1024 of fc6's 4096 outputs, 256 of fc7's), the heads' time on
    the timed images and the box AP on the test split."""
    head = model.roi_heads.box_head
    width = head.fc7.out_features
    timer = ForwardTimer(model, ["roi_heads", "roi_heads.box_head"])
    with torch.no_grad():
        for image in images:
            model([image])
    timer.remove()
    fc_share = timer.seconds["roi_heads.box_head"] / timer.seconds["roi_heads"]
    head.svd_ranks = (max(1, width // 4), max(1, width // 16))
    try:
        svd_heads_s = time_stages(model, images, STAGE_PARTS["fast_rcnn"])["heads_s"]
        test_set = _test_set(config)
        metrics = evaluation.evaluate(model, test_set, batch_size=config.train.batch_size)
    finally:
        ranks, head.svd_ranks = head.svd_ranks, None
    return {"ranks": list(ranks), "dense_heads_s": dense_heads_s, "svd_heads_s": svd_heads_s,
            "box_AP": metrics["bbox"]["AP"], "fc_share": fc_share,
            "fc6_inputs": head.fc6.in_features}  # fmt: skip


def _test_set(config: Config):
    """The val split as the trainer evaluates it (with the model's cached proposals)."""
    _, test_set = build_training_datasets(
        config.data, task="detection", in_channels=3,
        proposals=data_proposals(config.model.name, config.model.args),
    )  # fmt: skip
    return test_set


def _paper_scale(runs: Path, image: torch.Tensor, options: LineageOptions) -> dict | None:
    """R-CNN's and Fast R-CNN's CNN stage at the papers' scale, when both were trained."""
    if options.paper_regions == 0 or not {"rcnn", "fast_rcnn"} <= set(options.models):
        return None
    rcnn, fast_rcnn = (load_model(runs / name / "model.safetensors").eval()
                       for name in ("rcnn", "fast_rcnn"))  # fmt: skip
    return paper_scale_features(rcnn, fast_rcnn, image, regions=options.paper_regions)


def _budgeted(config: Config, options: LineageOptions, probe_dir: Path) -> Config:
    """The recipe with the benchmark's budget, evaluated `evaluations` times, on the CPU.

    A time budget first measures the recipe's step time and its evaluation time in a
    throwaway run in `probe_dir`; the evaluations' time is added to `max_minutes`, so that
    every model trains for `minutes`, whatever its evaluations cost (R-CNN's are slow).
    """
    if options.steps is not None:
        steps, minutes, schedule = options.steps, None, "cosine"
        eval_every = max(1, steps // options.evaluations)
    else:
        step_s, eval_s = _probe_seconds(config, probe_dir)
        expected_steps = 60 * options.minutes / step_s
        steps = max(1, int(STEP_CAP_HEADROOM * expected_steps))
        eval_every = max(1, int(expected_steps / options.evaluations))
        minutes = options.minutes + (options.evaluations + 1) * eval_s / 60
        schedule = "cosine_budget"
    train_cfg = dataclasses.replace(
        config.train, max_steps=steps, max_minutes=minutes, schedule=schedule, device="cpu",
        warmup_steps=min(config.train.warmup_steps, steps // 4),  # a short run still decays
        eval_every=eval_every, checkpoint_every=steps,
    )  # fmt: skip
    return dataclasses.replace(config, train=train_cfg)


def _probe_seconds(config: Config, probe_dir: Path) -> tuple[float, float]:
    """(seconds per training step, seconds per evaluation pass over the test split) of
    `config`, measured on a throwaway run of a few steps."""
    step_s = _seconds_per_step(config, probe_dir)
    model = load_model(probe_dir / "run" / "model.safetensors")
    return step_s, evaluation.seconds_per_pass(
        model, _test_set(config), batch_size=config.train.batch_size
    )


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
    if count > len(dataset):
        raise UserError(f"--time-images {count}: {data} has {len(dataset)} test (val) images")
    return [dataset[index][0].as_subclass(torch.Tensor) for index in range(count)]


def _settings(options: LineageOptions, data: Path) -> dict[str, Any]:
    shapes = options.data is None
    return {
        "minutes_per_model": None if options.steps is not None else options.minutes,
        "steps_per_model": options.steps,
        "data": "shapes" if shapes else str(data),
        "train_images": options.train_images if shapes else None,
        "test_images": options.test_images if shapes else None,
        "image_size": options.size if shapes else None,
        "timed_images": options.time_images,
        "evaluations": options.evaluations,
        "paper_regions": options.paper_regions,
        "precision": options.precision,
        "recipes": {name: RECIPES[name] for name in options.models},
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
