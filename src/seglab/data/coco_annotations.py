"""What the COCO dataset keeps of each annotation, decided once when it is built.

Training targets take annotations as detectron2's `load_coco_json` and torchvision's
reference transforms would leave them, and every change is counted (`Findings`, one note
line per split), never silent:

- a box with zero or negative width or height is dropped (torchvision and detectron2 drop
  degenerate boxes too);
- a box partly outside its image is clipped to it; one entirely outside is dropped; one
  inside is kept as the file gives it;
- a polygon with fewer than 3 points, or an odd number of coordinates, is dropped; an
  annotation left without a polygon is dropped by mask-using tasks (as detectron2 does,
  "instances without valid segmentation") and kept as a box for detection.

A missing or malformed `bbox`, `image_id` or `category_id`, an unknown image or category,
a segmentation that is neither polygons nor RLE, or an RLE whose `size` is not its image's
stop training. `coco_gt` (for COCO evaluation) keeps the annotations as read.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np

from seglab.data.coco_arrays import KeptAnnotations, KeptRows, pack_annotations
from seglab.data.findings import Findings

_CLIPPED, _DROPPED = "clipped", "dropped"
_DROPPED_BY_MASKS = "dropped (mask models)"  # detection keeps the annotation's box


def clean_annotations(
    json_path: Path,
    annotations: list,
    image_sizes: dict,
    known_image_ids: set,
    label_of: dict,
    *,
    task: str,
    findings: Findings,
) -> KeptAnnotations:
    """Annotations to train on, by image id (every id of `image_sizes`, possibly none),
    in the flat arrays of `seglab.data.coco_arrays` (the dicts are not copied).

    The annotations that need no repair are recognised together (`_plain_rows`); every
    other one is checked on its own, in the file's order, so the findings are those of
    checking each annotation in turn.

    Args:
        image_sizes: image id -> (height, width) of each readable image.
        known_image_ids: every image id of the JSON (readable or not).
        label_of: COCO category id -> label 1..K.
    """
    slot_of = {image_id: slot for slot, image_id in enumerate(image_sizes)}
    rows = _plain_rows(annotations, slot_of, list(image_sizes.values()), label_of)
    known = (known_image_ids, image_sizes, label_of)
    for row in np.flatnonzero(~rows.plain).tolist():  # file order: findings as found
        annotation = annotations[row]
        annotation_id = annotation.get("id") if isinstance(annotation, dict) else None
        where = f"{json_path} annotation {annotation_id}"
        kept = _clean_one(json_path, annotation, known, task=task, findings=findings, where=where)
        if kept is not None:
            image_id, rows.boxes[row], rows.segmentations[row] = kept
            rows.slots[row] = slot_of[image_id]
            rows.labels[row] = label_of[annotation["category_id"]]
            rows.kept[row] = True
    category_ids = sorted(label_of, key=label_of.get)
    return pack_annotations(annotations, rows, list(image_sizes), category_ids)


def _clean_one(json_path, annotation, known: tuple, *, task, findings, where):
    """(image id, [x, y, w, h], segmentation) of one annotation as kept, or None when it
    is not (each problem a finding). `known`: (every image id of the JSON, readable image
    id -> (height, width), category id -> label)."""
    known_image_ids, image_sizes, label_of = known
    fields = _fields(json_path, annotation, known_image_ids, label_of, findings, where)
    if fields is None or fields[0] not in image_sizes:  # unreadable images are findings
        return None
    image_id, box = fields
    height, width = image_sizes[image_id]
    box = _clip_box(box, height, width, findings, where)
    segmentation = _clean_segmentation(
        annotation.get("segmentation"), height, width, task=task, findings=findings, where=where
    )
    if box is None or segmentation is None:
        return None
    return image_id, box, segmentation


def _plain_rows(annotations: list, slot_of: dict, sizes: list, label_of: dict) -> KeptRows:
    """The rows (annotations) that need no repair, recognised together: a dict with a bbox
    of 4 numbers inside its readable image, with a positive width and height, a known
    category, and no segmentation or polygons of an even number (>= 6) of coordinates."""
    count = len(annotations)
    try:
        slots = np.fromiter((slot_of.get(a["image_id"], -1) for a in annotations), np.int64, count)
        labels = np.fromiter((label_of.get(a["category_id"], 0) for a in annotations), np.int64,
                             count)  # fmt: skip
        boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64)
    except (KeyError, TypeError, ValueError):  # some annotation is malformed: all checked alone
        return KeptRows.empty(count)
    if boxes.shape != (count, 4) or not sizes:
        return KeptRows.empty(count)
    image_hw = np.array(sizes, dtype=np.float64).reshape(-1, 2)[np.maximum(slots, 0)]
    x, y, w, h = boxes.T
    with np.errstate(invalid="ignore"):  # NaN compares False: not plain
        inside = (w > 0) & (h > 0) & (x >= 0) & (y >= 0)
        inside &= (x + w <= image_hw[:, 1]) & (y + h <= image_hw[:, 0])
    segmentations = [a.get("segmentation") for a in annotations]
    plain = inside & (slots >= 0) & (labels > 0) & _plain_segmentations(segmentations)
    segmentations = [s if s else [] for s in segmentations]
    return KeptRows(plain, plain.copy(), slots, labels, boxes, segmentations)


def _plain_segmentations(segmentations: list) -> np.ndarray:
    """(N,) bool: no segmentation, or a list of lists of an even number (>= 6) of values."""
    count = len(segmentations)
    empty = np.fromiter((not s for s in segmentations), bool, count)
    lists = np.fromiter((type(s) is list for s in segmentations), bool, count)
    rows = np.flatnonzero(lists & ~empty).tolist()
    polygons = list(chain.from_iterable(segmentations[row] for row in rows))
    if not all(type(polygon) is list for polygon in polygons):  # rare: found row by row
        rows = [row for row in rows if all(type(p) is list for p in segmentations[row])]
        polygons = list(chain.from_iterable(segmentations[row] for row in rows))
    lengths = np.fromiter(map(len, polygons), np.int64, len(polygons))
    counts = np.fromiter((len(segmentations[row]) for row in rows), np.int64, len(rows))
    bad = (lengths < 6) | (lengths % 2 == 1)
    plain = empty.copy()
    if rows:
        bad_rows = np.add.reduceat(bad, np.cumsum(counts) - counts) > 0  # any per row
        plain[np.array(rows)[~bad_rows]] = True
    return plain


def _fields(json_path, annotation, known_image_ids, label_of, findings, where):
    """(image_id, [x, y, w, h]) of a well-formed annotation, else None (a finding)."""
    try:
        box = [float(v) for v in annotation["bbox"]]
        image_id, category_id = annotation["image_id"], annotation["category_id"]
        if len(box) != 4:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        findings.add(
            "annotation without a valid bbox/image_id/category_id",
            where,
            f"{where} lacks a valid bbox [x, y, w, h], image_id or category_id; fix or remove it",
        )
        return None
    if image_id not in known_image_ids:
        findings.add(
            "annotation of an unknown image", where, f"{where} refers to unknown image {image_id}"
        )
        return None
    if category_id not in label_of:
        findings.add(
            "annotation of an unknown category",
            where,
            f"{where} has unknown category_id {category_id}",
        )
        return None
    return image_id, box


def _clip_box(box, height, width, findings, where) -> list[float] | None:
    """[x, y, w, h] clipped to the image, or None when nothing of it is left (a note)."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        findings.add("zero-area box", where, "", action=_DROPPED)
        return None
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        findings.add("box entirely outside its image", where, "", action=_DROPPED)
        return None
    if (x0, y0, x1, y1) == (x, y, x + w, y + h):
        return [x, y, w, h]  # as the file gives it: (x + w) - x may differ from w in the last bit
    findings.add("box partly outside its image", where, "", action=_CLIPPED)
    return [x0, y0, x1 - x0, y1 - y0]


def _clean_segmentation(segmentation, height, width, *, task, findings, where):
    """The segmentation to rasterise, `[]` for a box-only annotation, None to drop it."""
    if not segmentation:
        return []
    if isinstance(segmentation, dict):
        return _checked_rle(segmentation, height, width, findings, where)
    if not isinstance(segmentation, list) or not all(isinstance(p, list) for p in segmentation):
        findings.add(
            "malformed segmentation",
            where,
            f"{where} has a segmentation that is neither a list of polygons nor "
            "an RLE dict; fix or remove it",
        )
        return None
    polygons = []
    for polygon in segmentation:
        if len(polygon) % 2:
            findings.add("polygon with an odd number of coordinates", where, "", action=_DROPPED)
        elif len(polygon) < 6:
            findings.add("polygon with fewer than 3 points", where, "", action=_DROPPED)
        else:
            polygons.append(polygon)
    if polygons or task == "detection":
        return polygons  # detection: an annotation left without polygons keeps its box
    findings.add("annotation left without a valid polygon", where, "", action=_DROPPED_BY_MASKS)
    return None


def _checked_rle(rle: dict, height: int, width: int, findings, where) -> dict | None:
    size, counts = rle.get("size"), rle.get("counts")
    if not isinstance(counts, str | list) or not isinstance(size, list) or len(size) != 2:
        findings.add(
            "malformed segmentation",
            where,
            f"{where} has an RLE without 'size' [h, w] and 'counts'; fix it",
        )
        return None
    if list(size) != [height, width]:
        findings.add(
            "RLE of another size than its image",
            where,
            f"{where} has an RLE of size {size} on a {height}x{width} (h x w) image; "
            "fix the annotation or the image",
        )
        return None
    return rle
