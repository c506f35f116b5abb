"""How accurate is the CNN classifier after the `cnn_shapes` recipe's two-minute budget?

Rerun: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cnn_shapes_budget.py [--out DIR]`.
It generates the classify shapes data as `make demo` does (1000 train / 200 val, 64 px)
unless DIR/data exists, trains the shipped recipe into a fresh DIR/run-<time>, and prints
validation accuracy against wall-clock time, with the load average before and after (a
load above the number of cores means the measurement shared the CPU with other work).
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
    parser.add_argument("--out", default="runs/bench-cnn-shapes", help="work folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out)
    data = out / "data"
    if not (data / "val").is_dir():
        generate_shapes(data, task="classify", train=1000, val=200, size=64, seed=0)
    config = load_config("cnn_shapes", [f"data.root={data}", *args.overrides])
    run_dir = out / f"run-{int(time.time())}"
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    final = train(config, run_dir, progress=False)
    seconds = time.monotonic() - started
    load_after = os.getloadavg()[0]
    print(f"cpu cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}")
    print(f"{'step':>6} {'elapsed_s':>10} {'val_accuracy':>13}")
    for record in _val_records(run_dir, config):
        print(f"{record['step']:>6} {record['elapsed_s']:>10.1f} {record['accuracy']:>13.4f}")
    print(f"final: step {final['step']}, accuracy {final['accuracy']:.4f}, {seconds:.0f} s wall")


def _val_records(run_dir: Path, config) -> list[dict]:
    """Validation lines with the elapsed time of the training line of the same step."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    elapsed = {r["step"]: r["elapsed_s"] for r in records if r["split"] == "train"}
    return [
        {**r, "elapsed_s": elapsed.get(r["step"], float("nan"))}
        for r in records
        if r["split"] == "val"
    ]


if __name__ == "__main__":
    main()
