"""`seglab bench detection --peer torchvision`: our Mask R-CNN against torchvision's on the
same converted weights (inference time, training-step time, peak memory, stages).

seglab bench detection --peer torchvision [--out R.json] [--repeats N] [--min-size PX]
                       [--train-size PX] [--precision fp32|bf16] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seglab.errors import UserError

PEERS = ("torchvision",)
# --quick: one repetition at a few hundred pixels, for a test of the command
QUICK = {"min_size": 128, "max_size": 128, "train_size": 128, "repeats": 1, "detections": 5,
         "rois": 32}  # fmt: skip


def add_parser(benchmarks: argparse._SubParsersAction) -> None:
    detection = benchmarks.add_parser(
        "detection",
        help="Mask R-CNN vs a peer library's on the same weights: time, memory, stages",
        description="Build torchvision's Mask R-CNN R50-FPN (random weights, fixed seed), "
        "convert it with seglab convert, and time eval-mode inference on scikit-image "
        "photographs and a training step (batch 2), the two models interleaved in one "
        "process; print the peak memory of a call, seconds per stage, and the median "
        "ratios seglab / torchvision last (below 1: seglab is faster).",
    )
    detection.add_argument("--peer", choices=PEERS, required=True, help="the library to compare")
    detection.add_argument("--out", metavar="R.json", help="write the report (R.md beside)")
    detection.add_argument("--repeats", type=int, metavar="N", help="interleaved pairs (5)")
    detection.add_argument("--min-size", type=int, metavar="PX", help="inference short side (800)")
    detection.add_argument("--train-size", type=int, metavar="PX", help="training image side (512)")
    detection.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="seglab's (torchvision runs in fp32): bf16 times seglab in bfloat16 autocast "
        "for the ratios and in fp32 beside them, in the same run",
    )  # fmt: skip
    detection.add_argument(
        "--quick",
        action="store_true",
        help=f"seconds: {QUICK['min_size']} px, {QUICK['detections']} detections and "
        f"{QUICK['rois']} training RoIs per image, 1 repetition",
    )
    detection.set_defaults(func=run_detection_command)


def run_detection_command(args: argparse.Namespace) -> int:
    from seglab.bench.peer import peer_table, run_peer_benchmark
    from seglab.files import atomic_write_json, atomic_write_text, check_output_file
    from seglab.ops.precision import bf16_note

    options = _options(args)
    if args.out is not None:
        if Path(args.out).suffix != ".json":
            raise UserError(f"--out {args.out}: give a .json path (R.md is written beside)")
        check_output_file(args.out, "--out")
    note = bf16_note(options.precision, "cpu")
    if note is not None:
        print(note, file=sys.stderr)
    report = run_peer_benchmark(options, log=lambda line: print(line, file=sys.stderr))
    table = peer_table(report)
    if args.out:
        out = Path(args.out)
        atomic_write_json(out, report)
        atomic_write_text(out.with_suffix(".md"), table)
        print(f"wrote {out}, {out.with_suffix('.md')}", file=sys.stderr)
    print(table, end="")
    return 0


def _options(args: argparse.Namespace):
    from seglab.bench.peer import PeerOptions

    defaults = QUICK if args.quick else {}
    values = {**defaults, "precision": args.precision}
    for name in ("repeats", "min_size", "train_size"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise UserError(f"--{name.replace('_', '-')} {value}: give a positive number")
            values[name] = value
    if args.min_size is not None:
        values["max_size"] = max(args.min_size, round(args.min_size * 1333 / 800))
    return PeerOptions(**values)
