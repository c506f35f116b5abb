"""`seglab eval`: metrics of a trained model on a dataset, or of COCO predictions.

seglab eval RUN/model.safetensors [--data DIR] [--split val] [--out M.json]
seglab eval --gt GT.json --pred PRED.json [--iou-type bbox|segm] [--out M.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from seglab.errors import UserError, read_json, require_file
from seglab.evaluation.coco import (
    AP_NAMES,
    IOU_TYPES,
    check_coco_gt,
    check_coco_results,
    evaluate_coco,
    has_masks,
)


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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from seglab.engine.device import resolve_device
    from seglab.files import atomic_write_json, check_output_file

    files = bool(args.gt or args.pred)
    _check_arguments(args, files)
    if not files:
        resolve_device(args.device, option="--device")  # before the model is read
    out = args.out if files else args.out or default_metrics_path(args.model, args.data, args.split)
    for path, option in ((out, "--out"), (args.plot, "--plot")):
        if path:
            check_output_file(path, option)
    curves: dict[str, Any] = {}  # COCO iou type -> precision-recall curves
    if files:
        metrics = evaluate_files(args.gt, args.pred, args.iou_type, curves)
    else:
        metrics = evaluate_model(args.model, args.data, args.split, args.batch_size,
                                 args.device, curves)  # fmt: skip
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


def evaluate_files(
    gt_path: str, pred_path: str, iou_type: str | None, curves: dict | None = None
) -> dict[str, Any]:
    """COCO AP of the results in `pred_path` against `gt_path`: {"bbox": {...}, ...,
    "per_class_AP": {"bbox": {class: {"AP", "AP50"}}, ...}}; `curves` (when given) receives
    the precision-recall curves of each iou type."""
    if iou_type is not None and iou_type not in IOU_TYPES:
        raise UserError(f"--iou-type {iou_type!r}: unknown; use bbox or segm")
    gt = read_json(gt_path, "ground-truth file")
    predictions = read_json(pred_path, "predictions file")
    check_coco_gt(gt, gt_path)
    if not isinstance(predictions, list):
        raise UserError(f"{pred_path}: predictions must be a JSON list of COCO results")
    if iou_type is None:
        iou_types = ["bbox", "segm"] if has_masks(predictions) else ["bbox"]
    else:
        iou_types = [iou_type]
    if "segm" in iou_types and predictions and not has_masks(predictions):
        raise UserError(f"{pred_path}: --iou-type segm needs a 'segmentation' in every prediction")
    for iou in iou_types:
        unknown = check_coco_results(predictions, gt, iou, pred_path)
        if iou == "segm":
            check_coco_gt(gt, gt_path, need_masks=True)
    if unknown:
        print(
            f"seglab eval: warning: {pred_path}: category ids {unknown} are not in the ground "
            "truth; pycocotools ignores those predictions",
            file=sys.stderr,
        )
    metrics: dict[str, Any] = {}
    per_class: dict[str, Any] = {}
    for iou in iou_types:
        details: dict[str, Any] = {}
        metrics[iou] = evaluate_coco(gt, predictions, iou, details=details)
        per_class[iou] = details["per_class"]
        if curves is not None:
            curves[iou] = details["curves"]
    return {**metrics, "per_class_AP": per_class}


def evaluate_model(
    model_path: str,
    data_dir: str | None,
    split: str,
    batch_size: int,
    device: str,
    curves: dict | None = None,
) -> dict[str, Any]:
    """The task metrics of the model at `model_path` on `split` of `data_dir` (None: of the
    data its training config names)."""
    import seglab
    from seglab.data import build_dataset
    from seglab.data.splits import data_name
    from seglab.engine.device import resolve_device
    from seglab.evaluation import evaluate
    from seglab.models.detection.builders import data_proposals

    device = resolve_device(device, option="--device")
    model = seglab.load_model(model_path)
    root = require_file(data_dir, "data folder") if data_dir is not None else None
    card = model.card
    data_config = _data_config(card.config, root, split, model_path)
    proposals = data_proposals(card.arch, card.arch_args)  # R-CNN, Fast R-CNN: cached
    dataset = build_dataset(data_config, split, task=model.task, train=False, proposals=proposals)
    if card.class_names and list(dataset.class_names) != list(card.class_names):
        raise UserError(
            f"{data_name(data_config)}: classes {list(dataset.class_names)} differ from the "
            f"model's "
            f"{list(card.class_names)}; evaluate on data with the model's classes"
        )
    metrics = evaluate(
        model, dataset, batch_size=batch_size, device=device, progress=True, curves=curves
    )
    if model.task == "semantic" and hasattr(dataset, "coco_gt"):  # COCO instance data
        metrics.update(instance_ap(model, dataset, curves))
    return metrics


def instance_ap(model, dataset, curves: dict | None = None) -> dict[str, Any]:
    """A semantic model's COCO mask AP on a COCO dataset: its instances (connected
    components, `seglab.inference.instances`), as `seglab predict --instances components`
    writes them, scored as `seglab eval --gt --pred` scores them."""
    from seglab.inference.instances import coco_instance_results

    results = coco_instance_results(model, dataset, method="components")
    details: dict[str, Any] = {}
    segm = evaluate_coco(dataset.coco_gt, results, "segm", details=details)
    if curves is not None:
        curves["segm"] = details["curves"]
    return {"segm": segm, "per_class_AP": {"segm": details["per_class"]}}


def _data_config(run_config: dict, root: Path | None, split: str, model_path: str):
    """The run's data section (its intensity range, channels, ...) reading `root` instead of
    the data it names; the layout is inferred when absent. `root` None: the run's own data."""
    from seglab.data.config import DataConfig
    from seglab.data.splits import FILE_KEYS

    known = {field.name for field in dataclasses.fields(DataConfig)}
    saved = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in dict(run_config.get("data") or {}).items()
        if key in known
    }
    if root is None:
        if not (saved.get("root") or saved.get("train_json")):
            raise UserError(f"{model_path}: no training data recorded in the model (converted "
                            "weights?); give --data DIR")  # fmt: skip
        return DataConfig(**saved)
    for key in (key for keys in FILE_KEYS.values() for key in keys):
        saved.pop(key, None)  # DIR replaces every split
    saved["root"] = str(root)
    saved.setdefault("layout", infer_layout(root, split))
    return DataConfig(**saved)


def infer_layout(root: Path, split: str) -> str:
    """coco (SPLIT.json), masks (SPLIT/images/) or folders (SPLIT/<class>/)."""
    if (root / f"{split}.json").is_file():
        return "coco"
    if (root / split / "images").is_dir():
        return "masks"
    if (root / split).is_dir() and any(path.is_dir() for path in (root / split).iterdir()):
        return "folders"
    raise UserError(
        f"{root}: no {split}.json, {split}/images/ or {split}/<class>/ found; "
        "give the dataset root that holds the split"
    )


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of evaluation metrics (COCO AP, segmentation or classification)."""
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
    # COCO reports -1 where a metric is undefined (no ground truth of that size); semantic
    # and classification metrics use None for a class with no pixels / images.
    if value is None or value == -1:
        return f"{'n/a':>10}"
    return f"{value:>10.4f}"
