"""What `seglab eval` reports: a saved model on a dataset folder, or a COCO results file.

- `evaluate_model`: a model file (`seglab.save_model`) on a split of its own data or of
  another folder (the layout inferred from the files), with its task's metrics; a semantic
  model on COCO instance data adds the mask AP of its instances (`instance_ap`);
- `evaluate_files`: COCO results against a COCO ground truth, through pycocotools.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seglab.data import build_dataset
from seglab.data.config import DataConfig
from seglab.data.splits import FILE_KEYS, data_name
from seglab.errors import SeglabWarning, UserError, read_json, require_file
from seglab.evaluation.coco import (
    IOU_TYPES,
    check_coco_gt,
    check_coco_results,
    evaluate_coco,
    has_masks,
)
from seglab.evaluation.evaluator import evaluate


def evaluate_files(
    gt_path: str, pred_path: str, iou_type: str | None, curves: dict | None = None
) -> dict[str, Any]:
    """COCO AP of the results in `pred_path` against `gt_path`: {"bbox": {...}, ...,
    "per_class_AP": {"bbox": {class: {"AP", "AP50"}}, ...}}; `curves` (when given) receives
    the precision-recall curves of each iou type. `iou_type` None: bbox, and segm too when
    the predictions have masks."""
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
        warnings.warn(
            f"{pred_path}: category ids {unknown} are not in the ground truth; pycocotools "
            "ignores those predictions",
            SeglabWarning,
            stacklevel=2,
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
    device: str | torch.device,
    curves: dict | None = None,
) -> dict[str, Any]:
    """The task metrics of the model at `model_path` on `split` of `data_dir` (None: of the
    data its training config names), on `device` (a resolved device: cpu, cuda, cuda:N)."""
    from seglab.models.zoo import data_proposals, load_model

    model = load_model(model_path)
    root = require_file(data_dir, "data folder") if data_dir is not None else None
    card = model.card
    data_config = model_data_config(card.config, root, split, model_path)
    proposals = data_proposals(card.arch, card.arch_args)  # R-CNN, Fast R-CNN: cached
    dataset = build_dataset(data_config, split, task=model.task, train=False, proposals=proposals)
    if card.class_names and list(dataset.class_names) != list(card.class_names):
        raise UserError(
            f"{data_name(data_config)}: classes {list(dataset.class_names)} differ from the "
            f"model's {list(card.class_names)}; evaluate on data with the model's classes"
        )
    metrics = evaluate(
        model, dataset, batch_size=batch_size, device=device, progress=True, curves=curves
    )
    if model.task == "semantic" and hasattr(dataset, "coco_gt"):  # COCO instance data
        metrics.update(instance_ap(model, dataset, curves))
    return metrics


def instance_ap(model: nn.Module, dataset, curves: dict | None = None) -> dict[str, Any]:
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


def model_data_config(
    run_config: dict, root: Path | None, split: str, model_path: str
) -> DataConfig:
    """The run's data section (its intensity range, channels, ...) reading `root` instead of
    the data it names; the layout is inferred when absent. `root` None: the run's own data."""
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
