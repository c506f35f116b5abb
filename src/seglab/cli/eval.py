"""`seglab eval`: metrics of a trained model on a dataset, or of COCO predictions.

seglab eval RUN/model.safetensors [--data DIR] [--split val] [--out M.json]
seglab eval --gt GT.json --pred PRED.json [--iou-type bbox|segm] [--out M.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from seglab.errors import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on a dataset split, or COCO predictions against a ground truth",
        description="Evaluate RUN/model.safetensors on DIR's split with its task's metrics "
        "(COCO AP, mIoU/Dice, accuracy), or a COCO results file against a COCO ground truth "
        "with pycocotools. Prints a table and writes the metrics JSON.",
    )
    parser.add_argument("model", nargs="?", help="a model written by seglab (model.safetensors)")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="dataset root (default: the data the model was trained with, as its config "
        "names it, e.g. data.val_json)",
    )
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--gt", metavar="GT.json", help="COCO ground truth, with --pred")
    parser.add_argument("--pred", metavar="PRED.json", help="COCO results (a JSON list)")
    parser.add_argument(
        "--iou-type",
        metavar="bbox|segm",
        help="with --gt: bbox or segm (default: bbox, and segm too when the predictions "
        "have masks)",
    )
    parser.add_argument(
        "--out",
        metavar="M.json",
        help="metrics JSON to write (default, beside the model: metrics.json for the val "
        "split of the data it was trained on, metrics-<DIR's name>-<split>.json for other "
        "data or splits; with --gt: written only when given)",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="classifier: confusion-matrix figure (default: plots/confusion_matrix.png "
        "beside the metrics JSON)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images per batch (4)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="fp32, or bf16: bfloat16 autocast (fast where the CPU has bfloat16 units: "
        "AVX-512 BF16, AMX; boxes, scores and masks decoded in float32)",
    )  # fmt: skip
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="RUN/model.safetensors on the val split of its own data: use the evaluation the "
        "run made of this very model (its last, at its final step, same precision; "
        "RUN/metrics.jsonl) instead of scoring the images again; otherwise evaluate",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seglab.engine.device import resolve_device
    from seglab.engine.logging import METRICS_NAME
    from seglab.engine.run_dir import run_evaluation
    from seglab.evaluation import evaluate_files, evaluate_model
    from seglab.files import atomic_write_json, check_output_file
    from seglab.ops.precision import announced_autocast

    files = bool(args.gt or args.pred)
    _check_arguments(args, files)
    # the device is checked before the model is read
    device = None if files else resolve_device(args.device, option="--device")
    out = args.out if files else args.out or default_metrics_path(args.model, args.data, args.split)
    for path, option in ((out, "--out"), (args.plot, "--plot")):
        if path:
            check_output_file(path, option)
    curves: dict[str, Any] = {}  # COCO iou type -> precision-recall curves
    reused = None
    if args.reuse and not files:
        reused = run_evaluation(args.model, args.data, args.split, args.precision)
    if files:
        metrics = evaluate_files(args.gt, args.pred, args.iou_type, curves)
    elif reused is not None:
        print(f"reused the run's evaluation of this model at step {reused['step']} "
              f"({Path(args.model).parent / METRICS_NAME}): the same weights and val split, "
              "not scored again")  # fmt: skip
        metrics = {key: value for key, value in reused.items()
                   if key not in ("step", "split", "primary")}  # fmt: skip
    else:
        with announced_autocast(args.precision, device, say=_stderr):
            metrics = evaluate_model(args.model, args.data, args.split, args.batch_size, device,
                                     curves)  # fmt: skip
    print(format_metrics(metrics))
    if out:
        atomic_write_json(out, metrics)
        print(f"wrote {out}")
    for iou, iou_curves in curves.items() if out else ():
        from seglab.inference.visualize import plot_precision_recall

        plot = Path(out).parent / "plots" / f"precision_recall_{iou}.png"
        plot_precision_recall(iou_curves, plot, title=f"{iou} precision-recall")
        print(f"wrote {plot}")
    if "confusion_matrix" in metrics and (out or args.plot):
        from seglab.inference.visualize import plot_confusion_matrix

        plot = args.plot or Path(out).parent / "plots" / "confusion_matrix.png"
        plot_confusion_matrix(metrics["confusion_matrix"], list(metrics["per_class_recall"]), plot)
        print(f"wrote {plot}")
    return 0


def _check_arguments(args: argparse.Namespace, files: bool) -> None:
    """One of the two forms: MODEL --data DIR, or --gt GT.json --pred PRED.json."""
    if files:
        if args.model or args.data:
            raise UserError("give either MODEL --data DIR, or --gt and --pred; not both")
        if not (args.gt and args.pred):
            raise UserError("--gt and --pred go together; give both files")
        if args.precision != "fp32":
            raise UserError("--precision applies to a model; --gt/--pred files are scored as given")
        return
    if not args.model:
        raise UserError("give MODEL [--data DIR], or --gt GT.json --pred PRED.json")
    if args.iou_type:
        raise UserError(
            "--iou-type applies to --gt/--pred; a model is evaluated with its task's metrics"
        )
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")


def default_metrics_path(model_path: str, data_dir: str | None, split: str) -> Path:
    """Where `seglab eval MODEL [--data DIR]` writes without --out, beside the model.

    `metrics.json` for the val split of the data the model was trained on (the run's own
    evaluation); `metrics-<DIR's name>-<split>.json` for other data or another split, so
    that evaluating a run elsewhere never replaces its own numbers (detectron2 likewise
    keeps one output folder per dataset).
    """
    from seglab.models.zoo import read_card

    if data_dir is None:  # the data the model was trained with
        return Path(model_path).parent / ("metrics.json" if split == "val" else
                                          f"metrics-{split}.json")  # fmt: skip
    trained_on = read_card(model_path).data.get("root")
    data = Path(data_dir).resolve()
    own = split == "val" and trained_on is not None and Path(trained_on).resolve() == data
    return Path(model_path).parent / (
        "metrics.json" if own else f"metrics-{data.name}-{split}.json"
    )


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of evaluation metrics (COCO AP, segmentation or classification)."""
    from seglab.evaluation.coco import AP_NAMES, IOU_TYPES

    lines = []
    if "loss" in metrics:
        lines.append(f"{'loss':<16}{metrics['loss']:>10.4f}")
    iou_types = [iou for iou in IOU_TYPES if iou in metrics]
    if iou_types:
        lines.append(f"{'metric':<16}" + "".join(f"{iou:>10}" for iou in iou_types))
        for name in AP_NAMES:
            lines.append(f"{name:<16}" + "".join(_cell(metrics[iou][name]) for iou in iou_types))
    for name in ("accuracy", "mIoU", "dice", "pixel_accuracy"):
        if name in metrics:
            lines.append(f"{name:<16}{_cell(metrics[name])}")
    for iou, classes in metrics.get("per_class_AP", {}).items():
        lines.append(f"{'class':<16}{iou + ' AP':>10}{iou + ' AP50':>12}")
        for name, values in classes.items():
            lines.append(f"{name:<16}{_cell(values['AP'])}  {_cell(values['AP50'])}")
    if "per_class" in metrics:
        lines.append(f"{'class':<16}{'IoU':>10}{'Dice':>10}")
        for name, values in metrics["per_class"].items():
            lines.append(f"{name:<16}{_cell(values['iou'])}{_cell(values['dice'])}")
    if "per_class_recall" in metrics:
        lines.append(f"{'class':<16}{'recall':>10}")
        for name, recall in metrics["per_class_recall"].items():
            lines.append(f"{name:<16}{_cell(recall)}")
    if "confusion_matrix" in metrics:
        lines.append("confusion matrix (rows: true class, columns: predicted class)")
        lines += [
            "  " + " ".join(f"{count:>6d}" for count in row) for row in metrics["confusion_matrix"]
        ]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{metric_text(value):>10}"


def metric_text(value: float | None) -> str:
    """A metric as every summary prints it: `0.4123`, or `n/a` where it is undefined.

    COCO reports -1 where a metric is undefined (no ground truth of that size); semantic
    and classification metrics use None for a class with no pixels / images.
    """
    if value is None or value == -1:
        return "n/a"
    return f"{value:.4f}"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
