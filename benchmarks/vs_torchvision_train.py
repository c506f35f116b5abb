"""Mask R-CNN from scratch in the same wall-clock budget: seglab's recipe vs torchvision's defaults.

Rerun (2 cores, nothing else running; `--lock FILE` holds an exclusive lock on FILE during
each phase, for a machine shared with other measurements):
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/vs_torchvision_train.py --out R.json

Data: `seglab data shapes DIR --train 300 --val 60 --size 256` (generated under --work),
or `--data ROOT`, any COCO root with train and val splits (`--set data.channels=3` for
grayscale images: torchvision's model takes three channels, so both get the same input).

The two phases run one after the other in this process, each trained for `--minutes` of
training time (data loading included, evaluation not) on `--clock`: `wall` (the default,
what `train.max_minutes` counts) or `cpu`, this process's CPU time, which other processes on
a shared machine do not eat into (seglab's trainer then reads that clock; with
OMP_NUM_THREADS=1 it is the time one core computes):
- seglab: the recipe `mask_rcnn_r18_fpn_shapes` as `seglab train` runs it, with
  `train.max_minutes=--minutes` (and any `--set key=value`);
- torchvision: `MaskRCNN` on `resnet_fpn_backbone("resnet18", weights=None,
  norm_layer=BatchNorm2d, trainable_layers=5)`, which is what `maskrcnn_resnet50_fpn(weights=None,
  weights_backbone=None)` builds around a ResNet-50: without pretrained weights BatchNorm
  trains and every stage is trainable. Every other setting is MaskRCNN's default (images
  resized to 800 px, 2000/1000 proposals, 512 RoIs per image at 25 % foreground). Trained as
  torchvision's references/detection/train.py trains it: batches of 2, SGD with lr
  0.02 x 2 / 16 (the reference's 0.02 is for 8 processes x 2 images), momentum 0.9, weight
  decay 1e-4, linear warm-up from 0.001x over the first epoch (min(1000, iterations - 1)
  steps), lr x 0.1 after epochs 16 and 22, random horizontal flips. The step under way when
  the budget runs out finishes, as in seglab's trainer.

Both are scored the same way: eval-mode predictions on every val image, one at a time ->
COCO results -> pycocotools' COCOeval, box and mask AP. The table ends with the ratios
seglab / torchvision.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import time
import types
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

import seglab
from seglab.data import DataConfig, build_dataset, collate
from seglab.data.coco_results import to_coco_results
from seglab.data.shapes import generate_shapes
from seglab.engine import trainer
from seglab.engine.config import load_config
from seglab.evaluation.coco import evaluate_coco
from seglab.files import atomic_write_json

RECIPE = "mask_rcnn_r18_fpn_shapes"
# torchvision's references/detection/train.py: lr 0.02 for 8 processes x 2 images per step
REFERENCE_LR, REFERENCE_IMAGES, REFERENCE_MILESTONES = 0.02, 16, (16, 22)
TV_BATCH = 2
CLOCKS = {"wall": time.monotonic, "cpu": time.process_time}


def torchvision_model(num_classes: int, **mask_rcnn_args) -> MaskRCNN:
    """torchvision's Mask R-CNN with a ResNet-18 FPN, as its builders make it without any
    pretrained weights (nothing downloaded). `num_classes` counts the background."""
    backbone = resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
    )
    return MaskRCNN(backbone, num_classes=num_classes, **mask_rcnn_args)


def reference_lr_factor(step: int, iterations_per_epoch: int) -> float:
    """The lr multiplier of torchvision's detection reference after `step` steps: linear
    warm-up from 0.001 during the first epoch, then x 0.1 at each milestone epoch."""
    warmup = min(1000, iterations_per_epoch - 1)
    if step < warmup:
        return 0.001 + (1 - 0.001) * step / warmup
    epoch = step // iterations_per_epoch
    return 0.1 ** sum(epoch >= milestone for milestone in REFERENCE_MILESTONES)


def plain_target(target: dict) -> dict[str, Tensor]:
    """A seglab instance target as torchvision's detectors take it: plain tensors, uint8
    masks (N, H, W)."""
    return {
        "boxes": target["boxes"].as_subclass(Tensor).float(),
        "labels": target["labels"].as_subclass(Tensor),
        "masks": target["masks"].as_subclass(Tensor).to(torch.uint8),
    }


def train_torchvision(
    model: MaskRCNN, train_set, *, minutes: float, seed: int, clock=time.monotonic
) -> dict:
    """Train for `minutes` on `clock` as torchvision's reference trains; returns steps,
    images and training seconds."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=TV_BATCH, shuffle=True, drop_last=True,
                        collate_fn=collate, generator=generator)  # fmt: skip
    lr = REFERENCE_LR * TV_BATCH / REFERENCE_IMAGES
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: reference_lr_factor(step, len(loader))
    )
    if len(loader) == 0:
        raise ValueError(f"torchvision's batches of {TV_BATCH} need {TV_BATCH} training images")
    model.train()
    steps, started = 0, clock()
    while True:  # the budget is checked after each step, as seglab's trainer does
        for images, targets in loader:
            images = [image.as_subclass(Tensor) for image in images]
            losses = model(images, [plain_target(target) for target in targets])
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            schedule.step()
            steps += 1
            seconds = clock() - started
            if seconds >= 60 * minutes:
                return {"steps": steps, "images": steps * TV_BATCH, "train_s": seconds}


def evaluate_detector(model: nn.Module, val_set) -> dict[str, dict[str, float]]:
    """Box and mask AP of `model` (seglab's or torchvision's: both return boxes, labels,
    scores and (N, 1, H, W) masks in eval mode) on `val_set`, one image per forward pass,
    scored by pycocotools."""
    model.eval()
    outputs, image_ids = [], []
    with torch.inference_mode():
        for index in range(len(val_set)):
            image, target = val_set[index]
            outputs.append(model([image.as_subclass(Tensor)])[0])
            image_ids.append(target["image_id"])
    results = to_coco_results(outputs, image_ids, val_set.category_ids)
    return {kind: evaluate_coco(val_set.coco_gt, results, kind) for kind in ("bbox", "segm")}


@contextlib.contextmanager
def trainer_clock(clock):
    """seglab's trainer measuring its time (`max_minutes`, the schedule) on `clock`."""
    wall_clock_module = trainer.time
    trainer.time = types.SimpleNamespace(monotonic=clock)
    try:
        yield
    finally:
        trainer.time = wall_clock_module


@contextlib.contextmanager
def machine_lock(path: str | None):
    """Hold an exclusive flock on `path` (none when None) for the duration."""
    if path is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_seglab(args, root: Path) -> dict:
    overrides = [f"data.root={root}", f"train.max_minutes={args.minutes}", *args.overrides]
    run_dir = Path(args.work) / f"seglab-{int(time.time())}"
    print(f"seglab: seglab train {args.recipe} --out {run_dir} "
          + " ".join(f"--set {o}" for o in overrides), flush=True)  # fmt: skip
    config = load_config(args.recipe, overrides)
    with trainer_clock(CLOCKS[args.clock]):
        trainer_metrics = trainer.train(config, run_dir, progress=False, report=print)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_s = max(r["elapsed_s"] for r in records if r.get("split") == "train")
    model = seglab.load_model(run_dir / "model.safetensors")
    val_set = build_dataset(config.data, "val", task="instance", train=False)
    steps = trainer_metrics["step"]
    return {
        "model": f"seglab {args.recipe}",
        "steps": steps,
        "images": steps * config.train.batch_size,
        "train_s": train_s,
        "trainer_segm_AP": trainer_metrics.get("segm", {}).get("AP"),
        **evaluate_detector(model, val_set),
    }


def run_torchvision(args, root: Path) -> dict:
    channels = 3  # torchvision's transform normalises three channels
    data = DataConfig(root=str(root), layout="coco", hflip=0.5, channels=channels)
    train_set = build_dataset(data, "train", task="instance", train=True)
    val_set = build_dataset(data, "val", task="instance", train=False)
    torch.manual_seed(args.seed)
    model = torchvision_model(len(train_set.class_names) + 1)
    print(f"torchvision: MaskRCNN R18-FPN defaults, {args.minutes} minutes", flush=True)
    trained = train_torchvision(
        model, train_set, minutes=args.minutes, seed=args.seed, clock=CLOCKS[args.clock]
    )
    return {"model": "torchvision MaskRCNN R18-FPN", **trained,
            **evaluate_detector(model, val_set)}  # fmt: skip


def phase(name: str, function, args, root: Path) -> dict:
    with machine_lock(args.lock):
        started_utc = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        load_before, wall_started = os.getloadavg()[0], time.monotonic()
        row = function(args, root)
        load_after, wall_s = os.getloadavg()[0], time.monotonic() - wall_started
    row.update(started=started_utc, load_before=load_before, load_after=load_after,
               clock=args.clock, phase_wall_s=wall_s)  # fmt: skip
    print(f"{name}: {row['steps']} steps in {row['train_s']:.0f} s, mask AP "
          f"{row['segm']['AP']:.3f}, box AP {row['bbox']['AP']:.3f}", flush=True)  # fmt: skip
    return row


def data_root(args) -> Path:
    if args.data:
        return Path(args.data)
    root = Path(args.work) / f"shapes-{args.train}-{args.val}-{args.size}"
    if not (root / "val.json").is_file():
        generate_shapes(root, task="instance", train=args.train, val=args.val, size=args.size)
    return root


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.1f}x" if theirs > 0 else "inf"


def print_table(rows: list[dict]) -> None:
    print("| model | steps | images | train s (clock) | phase wall s | load (1 min) | val mask AP "
          "| mask AP50 | val box AP | box AP50 |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['steps']} | {row['images']} | {row['train_s']:.0f} "
            f"({row['clock']}) | {row['phase_wall_s']:.0f} | "
            f"{row['load_before']:.1f} -> {row['load_after']:.1f} | {row['segm']['AP']:.3f} | "
            f"{row['segm']['AP50']:.3f} | {row['bbox']['AP']:.3f} | {row['bbox']['AP50']:.3f} |"
        )
    if len(rows) == 2:
        ours, theirs = rows
        print(f"seglab / torchvision: mask AP {ratio(ours['segm']['AP'], theirs['segm']['AP'])}, "
              f"box AP {ratio(ours['bbox']['AP'], theirs['bbox']['AP'])}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each")
    parser.add_argument("--data", help="COCO root with train and val splits; default: shapes")
    parser.add_argument("--train", type=int, default=300, help="generated training images")
    parser.add_argument("--val", type=int, default=60, help="generated validation images")
    parser.add_argument("--size", type=int, default=256, help="generated image side")
    parser.add_argument("--recipe", default=RECIPE, help="seglab's recipe")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override of seglab's recipe")  # fmt: skip
    parser.add_argument("--only", choices=("seglab", "torchvision"), help="run one phase")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall", help="budget clock")
    parser.add_argument("--seed", type=int, default=0, help="torchvision's init and order")
    parser.add_argument("--work", default="runs/vs-torchvision-train", help="work folder")
    parser.add_argument("--lock", help="file to flock during each phase (shared machines)")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    root = data_root(args)
    print(f"data {root}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, torch {torch.__version__}",
          flush=True)  # fmt: skip
    phases = {"seglab": run_seglab, "torchvision": run_torchvision}
    rows = [phase(name, function, args, root) for name, function in phases.items()
            if args.only in (None, name)]  # fmt: skip
    print_table(rows)
    if args.out:
        settings = {"data": str(root), "minutes": args.minutes, "clock": args.clock,
                    "threads": torch.get_num_threads()}  # fmt: skip
        atomic_write_json(Path(args.out), {**settings, "rows": rows})


if __name__ == "__main__":
    main()
