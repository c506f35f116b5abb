"""What the seglab trainer costs over a bare PyTorch loop, same model, data and batch size.

Rerun: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trainer_overhead.py [--steps 60]`.
The trainer adds the resumable data order (per-item seeded generators), bookkeeping and
the loss window; evaluation and checkpoints are pushed past the last step so both sides
do the same work: `--steps` optimizer steps of the `cnn_shapes` recipe, workers=0. The
two are run alternately `--repeats` times; the medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from seglab import data as seglab_data
from seglab.data.shapes import generate_shapes
from seglab.engine.config import load_config
from seglab.engine.optim import build_optimizer, build_scheduler
from seglab.engine.trainer import train
from seglab.models.zoo import build_model


def bare_loop(config, steps: int) -> float:
    """Seconds for `steps` steps of a plain DataLoader + forward_with_losses + AdamW loop."""
    dataset = seglab_data.build_dataset(config.data, "train", task="classification", train=True)
    torch.manual_seed(config.seed)
    model = build_model("cnn", num_classes=3, **config.model.args).train()
    optimizer = build_optimizer(model, config.train)
    scheduler = build_scheduler(optimizer, config.train)
    loader = DataLoader(dataset, batch_size=config.train.batch_size, shuffle=True,
                        drop_last=True, collate_fn=seglab_data.collate)  # fmt: skip
    started, done = time.perf_counter(), 0
    while done < steps:
        for images, targets in loader:
            _, losses = model.forward_with_losses(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            scheduler.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - started


def seglab_trainer(config, steps: int) -> float:
    """Seconds of the training loop (`elapsed_s` of the last step in metrics.jsonl): the
    setup and the final evaluation, which the bare loop does not do, are left out."""
    with tempfile.TemporaryDirectory() as run_dir:
        train(config, Path(run_dir), progress=False)
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["split"] == "train"][-1]["elapsed_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default="runs/bench-cnn-shapes/data")
    args = parser.parse_args()
    if not (Path(args.data) / "val").is_dir():
        generate_shapes(args.data, task="classify", train=1000, val=200, size=64, seed=0)
    overrides = [f"data.root={args.data}", f"train.max_steps={args.steps}", "train.workers=0",
                 f"train.eval_every={10 * args.steps}", f"train.checkpoint_every={10 * args.steps}",
                 "train.max_minutes=null"]  # fmt: skip
    config = load_config("cnn_shapes", overrides)
    bare, ours = [], []
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        bare.append(bare_loop(config, args.steps))
        ours.append(seglab_trainer(config, args.steps))
    images = args.steps * config.train.batch_size
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"{'loop':<16} {'median s':>9} {'images/s':>9}")
    for name, times in (("bare PyTorch", bare), ("seglab train", ours)):
        median = statistics.median(times)
        print(f"{name:<16} {median:>9.2f} {images / median:>9.1f}")
    print(f"seglab / bare time ratio: {statistics.median(ours) / statistics.median(bare):.3f}")


if __name__ == "__main__":
    main()
