"""A small random COCO ground truth, random prediction sets on it, and pycocotools' numbers.

The ground truth has non-contiguous image and category ids, images without objects, crowd
regions, polygon and RLE segmentations, and objects of the three COCO sizes (small, medium,
large) unless `image_size` is too small for large ones.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"}, {"id": 7, "name": "tri"}]


def random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A filled ellipse or rectangle of random size (4 px .. the whole image) and place."""
    box_h = int(rng.integers(4, height))
    box_w = int(rng.integers(4, width))
    top = int(rng.integers(0, height - box_h + 1))
    left = int(rng.integers(0, width - box_w + 1))
    mask = np.zeros((height, width), np.uint8)
    if rng.random() < 0.5:
        mask[top : top + box_h, left : left + box_w] = 1
    else:
        yy, xx = np.mgrid[:height, :width]
        cy, cx = top + box_h / 2, left + box_w / 2
        mask[((yy + 0.5 - cy) / (box_h / 2)) ** 2 + ((xx + 0.5 - cx) / (box_w / 2)) ** 2 <= 1] = 1
    return mask


def encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def make_gt(seed: int, *, num_images: int = 8, image_size: tuple[int, int] = (120, 140)) -> dict:
    rng = np.random.default_rng(seed)
    height, width = image_size
    images, annotations = [], []
    for index in range(num_images):
        image_id = 5 + 3 * index
        image = {"id": image_id, "height": height, "width": width, "file_name": f"{index}.png"}
        images.append(image)
        for _ in range(0 if index == 0 else int(rng.integers(0, 6))):
            mask = random_mask(rng, height, width)
            rle = mask_utils.encode(np.asfortranarray(mask))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            segmentation = encode(mask)
            if rng.random() < 0.3:  # a polygon: the mask's bounding rectangle
                segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice([c["id"] for c in CATEGORIES])),
                    "bbox": [x, y, w, h],
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": int(rng.random() < 0.08),
                    "segmentation": segmentation,
                }
            )
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def make_predictions(gt: dict, seed: int, *, masks: bool) -> list[dict]:
    """Jittered copies of most objects, plus false positives, with random scores."""
    rng = np.random.default_rng(1000 + seed)
    predictions = []
    sizes = {image["id"]: (image["height"], image["width"]) for image in gt["images"]}
    for annotation in gt["annotations"]:
        if rng.random() < 0.2:
            continue
        height, width = sizes[annotation["image_id"]]
        x, y, w, h = annotation["bbox"]
        shift_x, shift_y = rng.integers(-4, 5, size=2)
        mask = np.zeros((height, width), np.uint8)
        x0, y0 = int(max(0, x + shift_x)), int(max(0, y + shift_y))
        mask[y0 : int(y + h + shift_y), x0 : int(x + w + shift_x)] = 1
        category = annotation["category_id"]
        if rng.random() < 0.15:
            category = int(rng.choice([c["id"] for c in CATEGORIES]))
        predictions.append(_prediction(annotation["image_id"], category, mask, rng, masks))
    for image_id, (height, width) in sizes.items():
        for _ in range(int(rng.integers(0, 4))):
            category = int(rng.choice([c["id"] for c in CATEGORIES]))
            mask = random_mask(rng, height, width)
            predictions.append(_prediction(image_id, category, mask, rng, masks))
    return predictions


def _prediction(image_id, category, mask, rng, with_mask: bool) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    jitter = rng.normal(0, 1.5, size=4)
    prediction = {
        "image_id": image_id,
        "category_id": category,
        "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
        "score": float(rng.random()),
    }
    if with_mask:
        prediction["segmentation"] = encode(mask)
    return prediction


def pycocotools_stats(
    gt_path: Path, pred_path: Path, iou_type: str, category_ids: list | None = None
) -> list[float]:
    """The reference: COCOeval run the standard way on files, `stats[0:6]` (of the given
    categories only, with `category_ids`)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(pred_path)), iou_type)
        if category_ids is not None:
            coco_eval.params.catIds = category_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [float(value) for value in coco_eval.stats[:6]]


def write_json(folder: Path, gt: dict, predictions: list) -> tuple[Path, Path]:
    """`folder/gt.json` and `folder/pred.json`."""
    gt_path, pred_path = folder / "gt.json", folder / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(predictions))
    return gt_path, pred_path
