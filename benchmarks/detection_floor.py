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

It also reads oneDNN's log of one seglab inference (verbose mode: every convolution's shape
and milliseconds) for the convolutions' GFLOP and rate, beside the rate of a float32 matrix
product of fc6's shape: how near the kernels run to what this CPU does on a large product.

The profiler's own cost inflates every time by a few percent; each ratio is taken between
profiled calls of the two libraries in the same repetition, so it falls out to first order,
and the median over repetitions (3) damps the load's moves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from functools import partial

import torch

from seglab.bench.peer import _infer, _median_ratio, machine, training_step
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
    floor = _median_ratio(
        [run["dense_s"] for run in runs["seglab"]],
        [run["profiled_s"] for run in runs["torchvision"]],
    )
    medians = {
        peer: {key: statistics.median(run[key] for run in rows) for key in rows[0]}
        for peer, rows in runs.items()
    }
    return {"runs": runs, "median": medians, "floor": floor}


def onednn_convolutions(call) -> dict:
    """GFLOP and seconds of the oneDNN convolutions that one call executes, from oneDNN's
    own log (verbose mode: each executed primitive's shape and milliseconds), which it
    writes to the process's standard output."""
    sys.stdout.flush()
    with tempfile.TemporaryFile(mode="w+") as log:
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                call()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = log.read().splitlines()
    flops = seconds = 0.0
    for line in lines:
        fields = line.split(",")
        if "exec" in fields and fields[fields.index("exec") + 2 :][:1] == ["convolution"]:
            flops += convolution_flops(fields[-2])
            seconds += float(fields[-1]) / 1e3
    return {"gflop": flops / 1e9, "seconds": seconds}


def convolution_flops(problem: str) -> float:
    """2 x multiply-adds of a oneDNN convolution problem such as
    `mb3_ic256oc256_ih200oh200kh3sh1dh0ph1_iw304ow304kw3sw1dw0pw1` (`g` groups, 3-D `d`)."""
    sizes = {
        key: int(value)
        for key, value in re.findall(r"(mb|g|ic|oc|od|oh|ow|kd|kh|kw)(\d+)", problem)
    }
    product = sizes["mb"] * sizes["ic"] // sizes.get("g", 1) * sizes["oc"]
    for key in ("od", "oh", "ow", "kd", "kh", "kw"):
        product *= sizes.get(key, 1)
    return 2.0 * product


def product_rate(repeats: int = 3) -> float:
    """GFLOP/s of a float32 matrix product of fc6's shape at min_size 800 (3 images x 1000
    RoIs, 256 x 7 x 7 -> 1024): what this CPU's BLAS reaches on a large product."""
    torch.manual_seed(0)
    x, weight = torch.randn(3000, 12544), torch.randn(12544, 1024)
    torch.mm(x, weight)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(x, weight)
        times.append(time.perf_counter() - start)
    return 2 * 3000 * 12544 * 1024 / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-size", type=int, default=800, help="inference short side")
    parser.add_argument("--train-size", type=int, default=512, help="training image side")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per peer")
    parser.add_argument("--out", help="write the report as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.min_size < 1 or args.train_size < 1:
        parser.error("--repeats, --min-size and --train-size: at least 1")
    images = photographs()
    sizes = {"detections": 100, "rois": 512, "images": images}
    report: dict = {"machine": machine(), "threads": torch.get_num_threads(), "phases": {}}
    models = model_pair(min_size=args.min_size, max_size=1333, **sizes)
    calls = {peer: partial(_infer, model, images) for peer, model in models.items()}
    report["phases"]["inference"] = measure(calls, args.repeats)
    report["convolutions"] = {
        **onednn_convolutions(calls["seglab"]),
        "product_gflop_s": product_rate(),
    }
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
    convolutions = report["convolutions"]
    rate = convolutions["gflop"] / convolutions["seconds"]
    at_product_rate = convolutions["gflop"] / convolutions["product_gflop_s"]
    theirs = report["phases"]["inference"]["median"]["torchvision"]["wall_s"]
    print(
        f"\nseglab's inference convolutions (oneDNN's log): {convolutions['gflop']:.0f} GFLOP in "
        f"{convolutions['seconds']:.2f} s, {rate:.0f} GFLOP/s; a product of fc6's shape: "
        f"{convolutions['product_gflop_s']:.0f} GFLOP/s, at which the convolutions alone take "
        f"{at_product_rate:.2f} s, {at_product_rate / theirs:.2f}x torchvision's inference"
    )
    if args.out:
        with open(args.out, "w") as file:
            json.dump(report, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
