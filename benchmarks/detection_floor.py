"""How far float32 speed can go against torchvision: the time in dense kernels (issue 23, part 2).

`seglab bench detection --peer torchvision` times Mask R-CNN R50-FPN inference and a
training step in both libraries on the same weights. Both run the same arithmetic: the
same convolutions and matrix products on the same shapes (seglab folds the frozen norms
into the convolutions and skips nothing else). This script profiles calls of each
(torch.profiler, after a warm-up call) and sums the operators' own CPU time that is spent
in convolutions (oneDNN's forward and backward) and matrix products (`mm`, `addmm`, `bmm`).

The floor is seglab's dense-kernel time over torchvision's whole call: the ratio seglab
would reach if everything else (RoI pooling, NMS, decoding, copies, Python) took no time
and the kernels ran as fast as they do now. A target below it needs fewer operations
(another algorithm for the convolutions, such as Winograd's, or another model), not
faster code around them.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/detection_floor.py [--out R.json]

The profiler's own cost inflates every time by a few percent; each ratio is taken between
profiled calls of the two libraries in the same repetition, so it falls out to first order,
and the median over repetitions (3) damps the load's moves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial

import torch

from seglab.bench.peer import _infer, machine, training_step
from seglab.bench.peer_models import model_pair, photographs, training_batch

# operator names holding these kernels (autograd's nodes, such as ConvolutionBackward0, only
# call them: their own time is bookkeeping)
DENSE = ("conv", "aten::mm", "aten::addmm", "aten::bmm")


def dense(name: str) -> bool:
    return any(part in name for part in DENSE) and not name.startswith("autograd::")


def profile(call) -> dict:
    """One profiled call: the operators' total own CPU time and that of the dense kernels."""
    with torch.profiler.profile() as prof:
        call()
    total = dense_s = 0.0
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        total += seconds
        dense_s += seconds if dense(event.key) else 0.0
    return {"profiled_s": total, "dense_s": dense_s}


def measure(calls: dict, repeats: int) -> dict:
    """Per repetition, both peers in turn (the order alternating, as `seglab bench`): the
    wall time of a plain call, then a profiled call; the medians, and the median over
    repetitions of the floor (seglab's dense time / torchvision's profiled time)."""
    for call in calls.values():  # warm-up: oneDNN's primitives, the allocator's pools
        call()
    runs: dict[str, list[dict]] = {peer: [] for peer in calls}
    for repeat in range(repeats):
        for peer in list(calls)[:: 1 if repeat % 2 == 0 else -1]:
            start = time.perf_counter()
            calls[peer]()
            runs[peer].append({"wall_s": time.perf_counter() - start, **profile(calls[peer])})
    pairs = zip(runs["seglab"], runs["torchvision"], strict=True)
    floors = [ours["dense_s"] / theirs["profiled_s"] for ours, theirs in pairs]
    medians = {
        peer: {key: statistics.median(run[key] for run in rows) for key in rows[0]}
        for peer, rows in runs.items()
    }
    return {"runs": runs, "median": medians, "floor": statistics.median(floors)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-size", type=int, default=800, help="inference short side")
    parser.add_argument("--train-size", type=int, default=512, help="training image side")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per peer")
    parser.add_argument("--out", help="write the report as JSON")
    args = parser.parse_args(argv)
    images = photographs()
    sizes = {"detections": 100, "rois": 512, "images": images}
    report: dict = {"machine": machine(), "threads": torch.get_num_threads(), "phases": {}}
    models = model_pair(min_size=args.min_size, max_size=1333, **sizes)
    calls = {peer: partial(_infer, model, images) for peer, model in models.items()}
    report["phases"]["inference"] = measure(calls, args.repeats)
    train_images, targets = training_batch(args.train_size)
    models = model_pair(min_size=args.train_size, max_size=args.train_size, **sizes)
    calls = {peer: training_step(model, train_images, targets) for peer, model in models.items()}
    report["phases"]["training step"] = measure(calls, args.repeats)
    print(
        "| phase | peer | wall s | profiled s | dense kernels s (share) | floor: seglab's "
        "dense / torchvision's profiled |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for phase, result in report["phases"].items():
        for peer, row in result["median"].items():
            floor = f"**{result['floor']:.2f}**" if peer == "seglab" else ""
            share = row["dense_s"] / row["profiled_s"]
            print(
                f"| {phase} | {peer} | {row['wall_s']:.2f} | {row['profiled_s']:.2f} | "
                f"{row['dense_s']:.2f} ({share:.0%}) | {floor} |"
            )
    if args.out:
        with open(args.out, "w") as file:
            json.dump(report, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
