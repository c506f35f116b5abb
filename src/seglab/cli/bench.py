"""`seglab bench`: benchmarks that print a table, ratio last.

seglab bench lineage [--out R.json] [--models rcnn,fast_rcnn,...] [--minutes M | --steps N]
                     [--data DIR | --train N --test N --size PX] [--time-images N]
                     [--evaluations N] [--paper-regions N] [--work DIR] [--quick]
seglab bench lineage --report R.json --out R2.json   # judge a saved run's claims again
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from seglab.cli import bench_detection
from seglab.errors import UserError

# --quick: a run of seconds that goes through every step (for tests and a first look).
QUICK = {"train": 8, "test": 4, "size": 96, "steps": 2, "time_images": 2, "evaluations": 2,
         "paper_regions": 8}  # fmt: skip
FULL = {"train": 300, "test": 50, "size": 256, "minutes": 10.0, "time_images": 20,
        "evaluations": 5, "paper_regions": 2000}  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmarks: the detector lineage; Mask R-CNN against torchvision's",
        description="Run a benchmark and print its table (ratio last).",
    )
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    _add_lineage(benchmarks)
    bench_detection.add_parser(benchmarks)


def _add_lineage(benchmarks: argparse._SubParsersAction) -> None:
    lineage = benchmarks.add_parser(
        "lineage",
        help="R-CNN -> Fast R-CNN -> Faster R-CNN -> Mask R-CNN: test time per stage, box AP",
        description="Write the shapes data (or take --data), train each detector of the "
        "lineage from its shapes recipe with the same wall-clock budget, evaluating it along "
        "the way, then report its box AP on the test images against training time, its CPU "
        "test time per image split into proposals, CNN features, heads and resizing + "
        "post-processing, R-CNN's and Fast R-CNN's CNN stage at the papers' scale, and each "
        "paper's claim beside the measurements. The default run takes about 50 minutes "
        "(10 minutes of training per model).",
    )
    lineage.add_argument("--out", metavar="R.json", help="write R.json, R.md (table), R.png")
    lineage.add_argument(
        "--models", metavar="A,B", help="comma-separated (default: all, in lineage order)"
    )
    lineage.add_argument(
        "--minutes",
        type=float,
        metavar="M",
        help=f"training budget per model ({FULL['minutes']:g})",
    )
    lineage.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="train each model this many steps instead of --minutes",
    )
    lineage.add_argument(
        "--data", metavar="DIR", help="a COCO dataset (train/val splits) instead of the shapes"
    )
    lineage.add_argument(
        "--train", type=int, metavar="N", help=f"training images ({FULL['train']})"
    )
    lineage.add_argument("--test", type=int, metavar="N", help=f"test images ({FULL['test']})")
    lineage.add_argument("--size", type=int, metavar="PX", help=f"image side ({FULL['size']})")
    lineage.add_argument(
        "--time-images", type=int, metavar="N", help=f"test images timed ({FULL['time_images']})"
    )
    lineage.add_argument(
        "--evaluations",
        type=int,
        metavar="N",
        help=f"evaluations along each run: the AP curves' points ({FULL['evaluations']})",
    )
    lineage.add_argument(
        "--paper-regions",
        type=int,
        metavar="N",
        help=f"R-CNN's regions in the papers' scale timing, 0 to skip it ({FULL['paper_regions']})",
    )
    lineage.add_argument(
        "--work", metavar="DIR", help="keep the data and runs here (default: a temporary folder)"
    )
    lineage.add_argument(
        "--quick",
        action="store_true",
        help=f"seconds instead of minutes: {QUICK['train']} training and {QUICK['test']} "
        f"test images of {QUICK['size']} px, {QUICK['steps']} steps per model",
    )
    lineage.add_argument(
        "--report", metavar="R.json",
        help="no training: the table, claims and chart of a saved run's measurements, "
        "judged by this version's claims",
    )  # fmt: skip
    lineage.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="each model's training (train.precision) and timing: bf16 is bfloat16 autocast",
    )  # fmt: skip
    lineage.set_defaults(func=run_lineage_command)


def run_lineage_command(args: argparse.Namespace) -> int:
    from seglab.bench.lineage import RECIPES
    from seglab.files import check_output_folder

    if args.minutes is not None and args.steps is not None:
        raise UserError("--minutes and --steps are two budgets; give one")
    if args.report is not None:
        return _rejudge(args)
    models = tuple(args.models.split(",")) if args.models else tuple(RECIPES)
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="seglab-bench-") as work:
            return _lineage(args, models, Path(work))
    return _lineage(args, models, check_output_folder(args.work, "--work"))


def _lineage(args: argparse.Namespace, models: tuple[str, ...], work: Path) -> int:
    from seglab.bench.lineage import LineageOptions, run_lineage
    from seglab.ops.precision import bf16_note

    defaults = QUICK if args.quick else FULL
    steps = args.steps
    if steps is None and args.minutes is None and args.quick:
        steps = QUICK["steps"]
    options = LineageOptions(
        models=models,
        minutes=_given(args.minutes, FULL["minutes"]),
        steps=steps,
        train_images=_given(args.train, defaults["train"]),
        test_images=_given(args.test, defaults["test"]),
        size=_given(args.size, defaults["size"]),
        time_images=_given(args.time_images, defaults["time_images"]),
        evaluations=_given(args.evaluations, defaults["evaluations"]),
        paper_regions=_given(args.paper_regions, defaults["paper_regions"]),
        data=_data(args.data),
        work_dir=work,
        precision=args.precision,
    )
    _check_out(args.out)
    note = bf16_note(args.precision, "cpu")
    if note is not None:
        print(note, file=sys.stderr)
    report = run_lineage(options)
    return _print_and_write(report, _tables(report), args.out)


def _rejudge(args: argparse.Namespace) -> int:
    """--report: a saved run's measurements with the claims judged again (the claims'
    rules change more often than a run of an hour can be repeated)."""
    from seglab.bench.claims import lineage_claims
    from seglab.errors import read_json

    _check_out(args.out)
    report = read_json(args.report, "--report")
    try:
        report["claims"] = lineage_claims(report)
        table = _tables(report)
    except (KeyError, TypeError, AttributeError) as error:
        raise UserError(f"--report {args.report}: not a lineage report ({error})") from None
    return _print_and_write(report, table, args.out)


def _data(data: str | None) -> Path | None:
    """--data: a folder with the train and val splits (checked before any training)."""
    from seglab.data.config import DataConfig
    from seglab.data.splits import split_exists

    if data is None:
        return None
    missing = [
        split for split in ("train", "val") if not split_exists(DataConfig(root=data), split)
    ]
    if missing:
        raise UserError(
            f"--data {data}: no {' or '.join(missing)} split there; give a COCO dataset with "
            f"train and val splits (train.json + train/, val.json + val/)"
        )
    return Path(data)


def _given(value, default):
    return default if value is None else value


def _check_out(out: str | None) -> None:
    """Fail before minutes of work, not after, when --out cannot be written."""
    from seglab.files import check_output_file

    if out is None:
        return
    if Path(out).suffix != ".json":
        raise UserError(f"--out {out}: give a .json path (R.md and R.png are written beside)")
    check_output_file(out, "--out")


def _tables(report: dict) -> str:
    """The report's stage table, then its claims table (markdown)."""
    from seglab.bench.claims import claims_table
    from seglab.bench.report import markdown_table

    return markdown_table(report) + "\n" + claims_table(report["claims"])


def _print_and_write(report: dict, table: str, out: str | None) -> int:
    """Print the tables; with --out, write R.json, R.md and R.png."""
    print(table, end="")
    if out:
        _write_report(report, table, Path(out))
    return 0


def _write_report(report: dict, table: str, out: Path) -> None:
    from seglab.bench.report import bar_chart
    from seglab.files import atomic_write_json, atomic_write_text

    atomic_write_json(out, report)
    atomic_write_text(out.with_suffix(".md"), table)
    bar_chart(report, out.with_suffix(".png"))
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
