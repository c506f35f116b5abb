"""COCO annotations held in a few flat arrays instead of one Python dict per object.

At COCO's scale (118k images, 860k objects, 450 MB of JSON) the parsed file is some
gigabytes of Python objects: a float in a polygon costs 32 bytes instead of 8, every
annotation a dict. Kept in a Dataset, they also grow the memory of every DataLoader worker
over an epoch: the workers are forked, and reading a Python object writes its reference
count (and a garbage collection its header), so each worker slowly copies the pages it
reads. Here the kept annotations are columns (NumPy arrays, one row per annotation, in the
file's order) plus CSR offsets (`indptr`, as in `scipy.sparse`) from each image to its rows
and from each annotation to its polygons' coordinates. A polygon is rasterised only when
its image is loaded, from a float64 view of the coordinates as the file gives them, so the
masks are pycocotools' own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

BOX_ONLY, POLYGONS, OTHER = 0, 1, 2  # how an annotation's mask is made (`kinds`)


def _compact_ids(ids: list) -> np.ndarray:
    """int64 when every id is an int (as in COCO), else an object array."""
    if all(type(value) is int for value in ids):
        return np.array(ids, dtype=np.int64)
    compact = np.empty(len(ids), dtype=object)
    compact[:] = ids
    return compact


class KeptAnnotations(Mapping):
    """The annotations kept for training, by image id (`Mapping[id, list[dict]]`).

    Rows (annotations, M of them) are in the file's order. Attributes:
        boxes: (M, 4) float64 `[x, y, w, h]` after clipping to the image.
        labels: (M,) int64, 1..K. crowd: (M,) bool, `iscrowd`.
        kinds: (M,) int8: BOX_ONLY (the box is the mask), POLYGONS, OTHER (an RLE, kept as
            read, as JSON text, in `others`: row -> text).
    `rows_of(slot)` gives an image's rows; `segmentation(row)` the polygons as float64
    arrays. Indexing by image id (the Mapping) builds dicts, for tests and reports only.
    """

    def __init__(self, *, image_ids: list, category_ids: list, **columns):
        self.image_ids = _compact_ids(image_ids)  # slot -> image id
        self.category_ids = list(category_ids)  # label k -> category_ids[k - 1]
        slots = columns["slots"]
        self.ids = _compact_ids(columns["ids"])
        self.boxes, self.labels, self.crowd = columns["boxes"], columns["labels"], columns["crowd"]
        self.kinds, self.others = columns["kinds"], columns["others"]
        self.coordinates = columns["coordinates"]
        self._order = np.argsort(slots, kind="stable")  # rows grouped by image, file order kept
        self._image_indptr = _indptr(np.bincount(slots, minlength=len(image_ids)))
        self._polygon_indptr = _indptr(columns["polygon_counts"])
        self._coordinate_indptr = _indptr(columns["polygon_lengths"])
        self._slot_of: dict | None = None

    def rows_of(self, slot: int) -> np.ndarray:
        """The rows of the image in `slot` (position in the `image_ids` given), file order."""
        return self._order[self._image_indptr[slot] : self._image_indptr[slot + 1]]

    def segmentation(self, row: int) -> list[np.ndarray] | Any:
        """Row `row`'s polygons (float64 arrays `[x0, y0, x1, y1, ...]`), its RLE as read,
        or `[]` when its box is its mask."""
        kind = self.kinds[row]
        if kind == OTHER:
            return json.loads(self.others[row])
        if kind == BOX_ONLY:
            return []
        first, last = self._polygon_indptr[row], self._polygon_indptr[row + 1]
        bounds = self._coordinate_indptr[first : last + 1]
        return [self.coordinates[bounds[k] : bounds[k + 1]] for k in range(last - first)]

    def annotation(self, row: int) -> dict:
        """Row `row` as a COCO annotation dict (the fields training reads)."""
        segmentation = self.segmentation(row)
        if self.kinds[row] == POLYGONS:
            segmentation = [polygon.tolist() for polygon in segmentation]
        return {
            "id": _plain(self.ids[row]),
            "category_id": self.category_ids[self.labels[row] - 1],
            "iscrowd": int(self.crowd[row]),
            "bbox": self.boxes[row].tolist(),
            "segmentation": segmentation,
        }

    def __getitem__(self, image_id) -> list[dict]:
        if self._slot_of is None:
            self._slot_of = {_plain(image_id): s for s, image_id in enumerate(self.image_ids)}
        slot = self._slot_of[image_id]
        rows = self.rows_of(slot)
        return [{**self.annotation(row), "image_id": image_id} for row in rows]

    def __iter__(self) -> Iterator:
        return (_plain(image_id) for image_id in self.image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)


def _plain(value):
    """A NumPy scalar as the Python value the JSON held."""
    return value.item() if isinstance(value, np.generic) else value


def _indptr(counts: np.ndarray) -> np.ndarray:
    """CSR offsets: entries `indptr[i]:indptr[i + 1]` belong to item i."""
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr


@dataclass
class KeptRows:
    """What is kept of each annotation of a file (row i: annotation i), being decided."""

    plain: np.ndarray  # (M,) bool: needs no repair (the common case, decided together)
    kept: np.ndarray  # (M,) bool
    slots: np.ndarray  # (M,) int64: the image's position in the readable images
    labels: np.ndarray  # (M,) int64, 1..K
    boxes: np.ndarray  # (M, 4) float64 [x, y, w, h], clipped to the image
    segmentations: list  # polygons (lists), an RLE dict, or [] (the box is the mask)

    @classmethod
    def empty(cls, count: int) -> KeptRows:
        zeros = np.zeros(count, dtype=np.int64)
        return cls(np.zeros(count, bool), np.zeros(count, bool), zeros, zeros.copy(),
                   np.zeros((count, 4)), [None] * count)  # fmt: skip


def pack_annotations(
    annotations: list, rows: KeptRows, image_ids: list, category_ids: list
) -> KeptAnnotations:
    """The kept rows of `annotations` as `KeptAnnotations`: polygons copied into one float64
    array (8 bytes a value; as a Python list, 32)."""
    kept = np.flatnonzero(rows.kept).tolist()
    segmentations = [rows.segmentations[row] for row in kept]
    kinds = np.fromiter((BOX_ONLY if not s else POLYGONS if type(s) is list else OTHER
                         for s in segmentations), np.int8, len(kept))  # fmt: skip
    coordinates, lengths = _coordinates(segmentations, kinds)
    counts = np.zeros(len(kept), dtype=np.int64)
    polygon_rows = np.flatnonzero(kinds == POLYGONS)
    counts[polygon_rows] = [len(segmentations[row]) for row in polygon_rows.tolist()]
    # as JSON text: a dict kept from the parsed file would keep alive the memory around it
    others = {
        row: json.dumps(segmentations[row]) for row in np.flatnonzero(kinds == OTHER).tolist()
    }
    crowd = (bool(annotations[row].get("iscrowd", 0)) for row in kept)
    return KeptAnnotations(
        image_ids=image_ids, category_ids=category_ids,
        slots=rows.slots[kept], ids=[annotations[row].get("id") for row in kept],
        boxes=rows.boxes[kept], labels=rows.labels[kept],
        crowd=np.fromiter(crowd, bool, len(kept)), kinds=kinds, others=others,
        coordinates=coordinates, polygon_counts=counts, polygon_lengths=lengths,
    )  # fmt: skip


def _coordinates(segmentations: list, kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(all polygon values as float64, the number of values of each polygon). A polygon
    row with a value that is no number becomes OTHER (in place): kept as read, it fails
    with its annotation's id when its image is loaded."""
    polygon_rows = np.flatnonzero(kinds == POLYGONS).tolist()
    polygons = list(chain.from_iterable(segmentations[row] for row in polygon_rows))
    lengths = np.fromiter(map(len, polygons), np.int64, len(polygons))
    try:
        values = np.fromiter(chain.from_iterable(polygons), np.float64, int(lengths.sum()))
    except (TypeError, ValueError):  # rare: found row by row
        for row in polygon_rows:
            try:
                np.fromiter(chain.from_iterable(segmentations[row]), np.float64)
            except (TypeError, ValueError):
                kinds[row] = OTHER
        return _coordinates(segmentations, kinds)
    return values, lengths


class ImageTable(Sequence):
    """A COCO file's image entries as columns; `table[i]` is entry i as a dict with the
    fields training reads (`id`, `file_name`, and `height`, `width` when the file gives
    them). 100k entries take some MB here instead of a dict each."""

    def __init__(self, entries: list[dict]):
        self.ids = _compact_ids([info["id"] for info in entries])
        self.file_names = np.array([os.fsencode(info["file_name"]) for info in entries])
        self.heights = np.array([info.get("height", -1) for info in entries], dtype=np.int64)
        self.widths = np.array([info.get("width", -1) for info in entries], dtype=np.int64)

    def __getitem__(self, index: int) -> dict:
        entry = {"id": _plain(self.ids[index]), "file_name": os.fsdecode(self.file_names[index])}
        if self.heights[index] >= 0:
            entry["height"] = int(self.heights[index])
        if self.widths[index] >= 0:
            entry["width"] = int(self.widths[index])
        return entry

    def __len__(self) -> int:
        return len(self.ids)
