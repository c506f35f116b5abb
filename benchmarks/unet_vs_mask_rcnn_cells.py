"""U-Net instances vs Mask R-CNN on touching nuclei (`seglab data cells`), same budget.

Both shipped recipes as a user runs them on this data, one after the other in one process,
each for `--minutes` of training on the same train split, then scored as `seglab eval`
scores them on the same val split (COCO mask AP with pycocotools):
- U-Net: `unet_shapes` with `data.layout=coco`, `data.weight_map=true` (the paper's border
  weight map), `model.in_channels=1`, `data.image_size: auto` (the recipe's default: the
  working scale planned from the training masks, `seglab.data.fingerprint`); its instances
  are the connected components of its foreground (`seglab predict --instances components`);
- Mask R-CNN: `mask_rcnn_r18_fpn_shapes` with `model.in_channels=1` and
  `model.detections_per_img=100` (COCO's maxDets; the recipe's 30 is below the ~50 nuclei
  of an image).

Rerun (2 cores, nothing else running):
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/unet_vs_mask_rcnn_cells.py \
        --out runs/unet_vs_mask_rcnn_cells
It writes the cells data (`--train`, `--val`, 256 px) to OUT/data unless it is there, the two
runs to OUT/unet-<time> and OUT/mask_rcnn-<time>, and OUT/result-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from seglab.data.cells import generate_cells
from seglab.engine.config import load_config
from seglab.engine.trainer import train
from seglab.evaluation import evaluate_model
from seglab.files import atomic_write_json

RECIPES = {
    "unet": ("unet_shapes", ["data.layout=coco", "data.weight_map=true", "model.in_channels=1"]),
    "mask_rcnn": (
        "mask_rcnn_r18_fpn_shapes",
        ["model.in_channels=1", "model.detections_per_img=100"],
    ),
}


def run_recipe(name: str, data: Path, out: Path, minutes: float, stamp: str) -> dict:
    recipe, settings = RECIPES[name]
    overrides = [f"data.root={data}", *settings, f"train.max_minutes={minutes}",
                 "train.max_steps=1000000", "train.eval_every=1000000"]  # fmt: skip
    config = load_config(recipe, overrides)
    run_dir = out / f"{name}-{stamp}"
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    final = train(config, run_dir, progress=False, report=print)
    seconds = time.monotonic() - started
    load_after = os.getloadavg()[0]
    metrics = evaluate_model(str(run_dir / "model.safetensors"), str(data), "val", 4, "cpu")
    return {
        "recipe": recipe,
        "overrides": overrides,
        "steps": final["step"],
        "train_seconds": seconds,
        "load_before": load_before,
        "load_after": load_after,
        "segm": metrics["segm"],
        "mIoU": metrics.get("mIoU"),
        "run": str(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/unet_vs_mask_rcnn_cells", help="work folder")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    parser.add_argument("--train", type=int, default=500, help="generated training images")
    parser.add_argument("--val", type=int, default=100, help="generated validation images")
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not (data / "val.json").is_file():
        generate_cells(data, task="instance", train=args.train, val=args.val, size=256, seed=0)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    results = {name: run_recipe(name, data, out, args.minutes, stamp) for name in RECIPES}
    print(f"cpu cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(
        f"{'model':<10}{'steps':>7}{'train s':>9}{'load':>12}{'mask AP':>9}{'AP50':>7}{'AP75':>7}"
    )
    for name, result in results.items():
        segm, load = result["segm"], f"{result['load_before']:.1f}-{result['load_after']:.1f}"
        print(f"{name:<10}{result['steps']:>7}{result['train_seconds']:>9.0f}{load:>12}"
              f"{segm['AP']:>9.3f}{segm['AP50']:>7.3f}{segm['AP75']:>7.3f}")  # fmt: skip
    ratio = results["unet"]["segm"]["AP"] / max(results["mask_rcnn"]["segm"]["AP"], 1e-9)
    print(f"U-Net mask AP / Mask R-CNN mask AP: {ratio:.2f}")
    results["ratio"] = ratio
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    atomic_write_json(out / f"result-{stamp}.json", results)


if __name__ == "__main__":
    main()
