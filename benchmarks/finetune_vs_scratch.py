"""Does fine-tuning from a trained seglab model beat training from scratch, N steps each?

Rerun: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/finetune_vs_scratch.py [--out DIR]
[--source-steps 300] [--steps 100]`. Three runs of the shipped recipes, as the command line
runs them:

1. source: `faster_rcnn_r18_fpn_shapes` from scratch on shapes (200 train images, seed 0)
   for --source-steps steps;
2. scratch: the same recipe on a small other task, --steps steps: 32 train images of
   another seed with two classes (circles and squares labelled; triangles left in the
   images, unlabelled), scored on 100 val images of that task;
3. finetune: `faster_rcnn_r18_fpn_shapes_finetune` with `train.init` = the source model,
   on the same data, for the same number of steps (its class predictors start anew: the
   source has three classes).

It prints one row per run (steps, seconds, val box AP, AP50) and the load average before
and after: a load above the number of cores means the CPU was shared with other work.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from seglab.data.shapes import generate_shapes
from seglab.engine.config import load_config
from seglab.engine.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-finetune", help="work folder")
    parser.add_argument("--source-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=100, help="steps of each target run")
    args = parser.parse_args()
    out = Path(args.out)
    source_data, target_data = _datasets(out)
    print(f"load average before: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    rows = []
    source = _run("source", "faster_rcnn_r18_fpn_shapes", source_data, out, args.source_steps)
    rows.append(source)
    rows.append(_run("scratch", "faster_rcnn_r18_fpn_shapes", target_data, out, args.steps))
    init = [f"train.init={out / 'source' / 'model.safetensors'}"]
    rows.append(
        _run("finetune", "faster_rcnn_r18_fpn_shapes_finetune", target_data, out, args.steps, init)
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("| run | data | steps | train+eval s | val box AP | AP50 |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['name']} | {row['data']} | {row['step']} | {row['seconds']:.0f} | "
            f"{row['bbox']['AP']:.3f} | {row['bbox']['AP50']:.3f} |"
        )


def _datasets(out: Path) -> tuple[Path, Path]:
    """The source task (3 classes, 200 images) and the small target task (2 classes)."""
    source, target = out / "data-source", out / "data-target"
    if not (source / "val.json").is_file():
        generate_shapes(source, task="instance", train=200, val=50, seed=0)
    if not (target / "val.json").is_file():
        generate_shapes(target, task="instance", train=32, val=100, seed=1)
        for split in ("train", "val"):
            _drop_class(target / f"{split}.json", "triangle")
    return source, target


def _drop_class(path: Path, name: str) -> None:
    coco = json.loads(path.read_text())
    dropped = {c["id"] for c in coco["categories"] if c["name"] == name}
    coco["categories"] = [c for c in coco["categories"] if c["id"] not in dropped]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] not in dropped]
    path.write_text(json.dumps(coco))


def _run(name: str, recipe: str, data: Path, out: Path, steps: int, extra=()) -> dict:
    overrides = [
        f"data.root={data}",
        f"train.max_steps={steps}",
        "train.max_minutes=null",
        f"train.checkpoint_every={steps}",
        *extra,
    ]
    print(
        f"{name}: seglab train {recipe} --out {out / name} "
        + " ".join(f"--set {o}" for o in overrides),
        flush=True,
    )
    started = time.monotonic()
    metrics = train(load_config(recipe, overrides), out / name, progress=False, report=print)
    seconds = time.monotonic() - started
    return {"name": name, "data": data.name, "seconds": seconds, **metrics}


if __name__ == "__main__":
    main()
