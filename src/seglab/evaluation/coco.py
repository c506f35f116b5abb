"""COCO box and mask AP through pycocotools, from in-memory dicts.

pycocotools' `COCOeval` is the reference every paper reports, so we call it rather than
re-implement it: `evaluate_coco` gives the numbers `COCOeval.summarize()` prints (its
`stats[0:6]`), as fractions in [0, 1]. An AP that COCO leaves undefined (no ground truth of
that size, or no ground truth at all) is -1, as in `COCOeval.stats`; see docs/conventions.md.
Model outputs become COCO results in `seglab.data.coco_results`.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seglab.errors import UserError

IOU_TYPES = ("bbox", "segm")
# The first six numbers COCOeval.summarize() prints, in its order (stats[0:6]).
AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def evaluate_coco(
    gt: dict, results: list[dict], iou_type: str, *, details: dict | None = None
) -> dict[str, float]:
    """COCO AP of `results` against the ground truth `gt`, as pycocotools computes it.

    Args:
        gt: a COCO ground-truth dict (`images`, `annotations`, `categories`). Not modified.
        results: COCO results (`image_id`, `category_id`, `score`, `bbox` xywh and/or
            `segmentation` RLE). Not modified. An empty list gives AP 0 (or -1 where the
            ground truth has no object of that size).
        iou_type: "bbox" or "segm".
        details: when given, receives "per_class" ({category name: {"AP", "AP50"}},
            `per_class_ap`) and "curves" (`precision_recall_curves`).

    Returns:
        {"AP", "AP50", "AP75", "APs", "APm", "APl"}: floats in [0, 1], or -1 where undefined.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    # pycocotools prints progress and modifies annotations in place (segmentation -> RLE,
    # ids, areas): give it copies and swallow its prints.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco_from_dict(gt)
        coco_dt = _load_results(coco_gt, results)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if details is not None:
        details["per_class"] = per_class_ap(evaluator, coco_gt)
        details["curves"] = precision_recall_curves(evaluator, coco_gt)
    return {name: float(value) for name, value in zip(AP_NAMES, evaluator.stats[:6], strict=True)}


def per_class_ap(evaluator: COCOeval, coco_gt: COCO) -> dict[str, dict[str, float]]:
    """AP (IoU 0.50:0.95) and AP50 of each category, from `COCOeval.eval["precision"]`.

    The precision array is (IoU thresholds T, recall thresholds R, categories K, areas A,
    max detections M); a category's AP is the mean of its precisions over T and R at area
    "all" and 100 detections, leaving out the -1 entries (no ground truth), as
    `summarize()` does over all categories; -1 when the category has no ground truth.
    """
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K)
    iou_50 = list(evaluator.params.iouThrs).index(0.5)
    return {
        _category_name(coco_gt, category_id): {
            "AP": _mean_defined(precision[:, :, k]),
            "AP50": _mean_defined(precision[iou_50, :, k]),
        }
        for k, category_id in enumerate(evaluator.params.catIds)
    }


def precision_recall_curves(evaluator: COCOeval, coco_gt: COCO) -> dict[str, Any]:
    """Per category, the precision at each of COCO's 101 recall thresholds, at IoU 0.50 and
    0.75 (area "all", 100 detections); -1 where COCO has none (no ground truth).

    Returns:
        {"recall": [101 floats], "iou": [0.5, 0.75], "precision": {name: [[101], [101]]}}
    """
    thresholds = list(evaluator.params.iouThrs)
    rows = [thresholds.index(0.5), thresholds.index(0.75)]
    precision = evaluator.eval["precision"][rows][:, :, :, 0, -1]  # (2, R, K)
    return {
        "recall": [float(r) for r in evaluator.params.recThrs],
        "iou": [0.5, 0.75],
        "precision": {
            _category_name(coco_gt, category_id): precision[:, :, k].tolist()
            for k, category_id in enumerate(evaluator.params.catIds)
        },
    }


def _mean_defined(values) -> float:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else -1.0


def _category_name(coco_gt: COCO, category_id) -> str:
    return str(coco_gt.cats[category_id].get("name", category_id))


def _coco_from_dict(gt: dict) -> COCO:
    coco = COCO()
    coco.dataset = {
        **gt,
        "images": list(gt.get("images", [])),
        "annotations": [dict(annotation) for annotation in gt.get("annotations", [])],
        "categories": list(gt.get("categories", [])),
    }
    coco.createIndex()
    return coco


def _load_results(coco_gt: COCO, results: list[dict]) -> COCO:
    """`COCO.loadRes` on copies; an empty list (which loadRes cannot take) gives an empty set."""
    if results:
        return coco_gt.loadRes([dict(result) for result in results])
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": list(coco_gt.dataset["categories"]),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def check_coco_gt(gt: Any, source: str, *, need_masks: bool = False) -> None:
    """Raise UserError unless `gt` is a COCO ground truth COCOeval can use."""
    if not isinstance(gt, dict) or not isinstance(gt.get("images"), list):
        raise UserError(f"{source}: not a COCO ground truth (no 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise UserError(f"{source}: not a COCO ground truth (no {key!r} list)")
    image_keys = ["id", "height", "width"] if need_masks else ["id"]
    for image in gt["images"]:
        if not isinstance(image, dict) or any(key not in image for key in image_keys):
            raise UserError(f"{source}: every image needs {', '.join(image_keys)}")
    if not all(isinstance(category, dict) and "id" in category for category in gt["categories"]):
        raise UserError(f"{source}: every category needs an 'id'")
    required = ["id", "image_id", "category_id", "bbox", "area", "iscrowd"]
    required += ["segmentation"] if need_masks else []
    for annotation in gt["annotations"]:
        missing = [key for key in required if key not in annotation]
        if missing:
            raise UserError(
                f"{source}: annotation {annotation.get('id', '?')} lacks {', '.join(missing)}; "
                f"COCO annotations need {', '.join(required)}"
            )


def check_coco_results(results: Any, gt: dict, iou_type: str, source: str) -> list:
    """Raise UserError unless pycocotools can evaluate `results` against `gt` for `iou_type`.

    Returns:
        the category ids of results that are not in the ground truth (sorted): pycocotools
        evaluates only the ground truth's categories and ignores those results.
    """
    if not isinstance(results, list):
        raise UserError(f"{source}: predictions must be a JSON list of COCO results")
    image_sizes = {image["id"]: [image.get("height"), image.get("width")] for image in gt["images"]}
    for index, result in enumerate(results):
        _check_result(result, f"{source}: prediction {index}", image_sizes, iou_type)
    # COCO.loadRes reads the first result to decide whether boxes are given.
    if len({"bbox" in result for result in results}) > 1:
        raise UserError(f"{source}: some predictions have 'bbox' and some do not; give all or none")
    known = {category["id"] for category in gt["categories"]}
    return sorted({r["category_id"] for r in results if r["category_id"] not in known}, key=str)


def _check_result(result: Any, where: str, image_sizes: dict, iou_type: str) -> None:
    if not isinstance(result, dict):
        raise UserError(f"{where} is not an object")
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    missing = [key for key in ("image_id", "category_id", "score", geometry) if key not in result]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}")
    if result["image_id"] not in image_sizes:
        raise UserError(f"{where}: image_id {result['image_id']!r} is not in the ground truth")
    if not _is_number(result["score"]):
        raise UserError(f"{where}: score must be a number")
    if "bbox" in result and not _is_box(result["bbox"]):
        raise UserError(f"{where}: bbox must be [x, y, width, height]")
    size_hw = image_sizes[result["image_id"]]
    if iou_type == "segm" and not _is_segmentation(result["segmentation"], size_hw, result):
        raise UserError(
            f"{where}: segmentation must be a compressed RLE {{'size': [height, width], "
            f"'counts': str}} of the image's size {size_hw} (polygons and uncompressed RLE "
            "also need a 'bbox')"
        )


def _is_segmentation(segmentation: Any, size_hw: list, result: dict) -> bool:
    """A compressed RLE of the image's size; with a bbox, also an uncompressed RLE or polygons
    (COCO.loadRes takes those only on its box path)."""
    if isinstance(segmentation, dict):
        counts = segmentation.get("counts")
        if list(segmentation.get("size", [])) != size_hw:
            return False
        return isinstance(counts, str) or (isinstance(counts, list) and "bbox" in result)
    polygons = isinstance(segmentation, list) and len(segmentation) > 0
    polygons = polygons and all(
        isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(_is_number, p))
        for p in segmentation
    )
    return polygons and "bbox" in result


def has_masks(results: list[dict]) -> bool:
    """True when every result has a `segmentation` (and there is at least one result)."""
    return bool(results) and all("segmentation" in result for result in results)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(map(_is_number, value))
