"""Selective search's hierarchical grouping (Uijlings et al. 2013, §3.1), step by step.

`seglab.ops.selective_search` runs OpenCV's implementation, which returns only the final
boxes. To show the grouping, this module runs the same loop OpenCV's
`SelectiveSearchSegmentationImpl::hierarchicalGrouping` runs, with OpenCV's own parts: its
graph segmentation for the initial regions and its similarity strategy objects (colour,
fill, texture, size) for the merge order; neighbours are OpenCV's (8-connected, from the
second row and column on). Its boxes are exactly the proposals of
`selective_search(image, mode="single")` (tested), whose settings it copies: one HSV
image, one segmentation (k = 200, sigma = 0.8), one strategy combining the four.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SEGMENTATION = cv2.ximgproc.segmentation
SINGLE_K, SINGLE_SIGMA = 200.0, 0.8


@dataclass(frozen=True)
class Grouping:
    """The initial regions and every merge.

    Attributes:
        labels: (H, W) int32 initial region of each pixel (0..R-1).
        merges: per merge, the two merged regions (indices into `boxes`), in merge order;
            merge m creates region R + m.
        boxes: (R + len(merges), 4) xyxy box of every region, initial then merged.
    """

    labels: np.ndarray
    merges: list[tuple[int, int]]
    boxes: np.ndarray

    def regions_after(self, steps: int) -> np.ndarray:
        """(H, W) region id of each pixel after the first `steps` merges (ids of the merged
        regions: those still standing)."""
        owner = np.arange(len(self.boxes))
        for step, (first, second) in enumerate(self.merges[:steps]):
            owner[first] = owner[second] = len(owner) - len(self.merges) + step
        for index in range(len(owner)):  # follow each region up to the one it merged into
            while owner[owner[index]] != owner[index]:
                owner[index] = owner[owner[index]]
        return owner[self.labels]


def hierarchical_grouping(rgb: np.ndarray) -> Grouping:
    """Run selective search's "single" strategy on a uint8 (H, W, 3) RGB image, keeping
    each step."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[:, :, ::-1]), cv2.COLOR_BGR2HSV)
    segmentation = _SEGMENTATION.createGraphSegmentation()
    segmentation.setK(SINGLE_K)
    segmentation.setSigma(SINGLE_SIGMA)
    labels = segmentation.processImage(hsv)
    count = int(labels.max()) + 1
    # the strategies read these sizes as they change (OpenCV shares the buffer, int32 (R, 1))
    sizes = np.bincount(labels.ravel(), minlength=count).astype(np.int32).reshape(count, 1)
    strategy = _SEGMENTATION.createSelectiveSearchSegmentationStrategyMultiple(
        _SEGMENTATION.createSelectiveSearchSegmentationStrategyColor(),
        _SEGMENTATION.createSelectiveSearchSegmentationStrategyFill(),
        _SEGMENTATION.createSelectiveSearchSegmentationStrategyTexture(),
        _SEGMENTATION.createSelectiveSearchSegmentationStrategySize(),
    )
    strategy.setImage(hsv, labels, sizes, 0)
    boxes = [_box(labels == region) for region in range(count)]
    working_id = list(range(count))  # the id the strategies know each region by
    similarities = [(strategy.get(i, j), i, j) for i, j in _neighbour_pairs(labels, count)]
    merges = []
    while similarities:
        similarities.sort(key=lambda item: item[0])
        _, first, second = similarities.pop()  # the most similar pair
        a, b = working_id[first], working_id[second]
        strategy.merge(a, b)
        sizes[a, 0] += sizes[b, 0]
        sizes[b, 0] = sizes[a, 0]
        new = len(boxes)
        boxes.append(
            np.concatenate(
                [
                    np.minimum(boxes[first][:2], boxes[second][:2]),
                    np.maximum(boxes[first][2:], boxes[second][2:]),
                ]
            )
        )
        working_id.append(min(a, b))
        merges.append((first, second))
        neighbours, kept = [], []
        for item in similarities:
            _, i, j = item
            if {i, j} & {first, second}:
                other = j if i in (first, second) else i
                if other not in neighbours:
                    neighbours.append(other)
            else:
                kept.append(item)
        similarities = kept + [
            (strategy.get(working_id[new], working_id[other]), new, other) for other in neighbours
        ]
    return Grouping(labels, merges, np.stack(boxes).astype(np.float32))


def _neighbour_pairs(labels: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Pairs (i < j) of regions that touch, as OpenCV finds them: each pixel from the second
    row and column on against its left, top and top-left neighbours."""
    here = labels[1:, 1:].ravel()
    touching = np.zeros((count, count), dtype=bool)
    for other in (labels[1:, :-1], labels[:-1, 1:], labels[:-1, :-1]):
        touching[here, other.ravel()] = True
        touching[other.ravel(), here] = True
    return [(i, j) for i in range(count) for j in range(i + 1, count) if touching[i, j]]


def _box(mask: np.ndarray) -> np.ndarray:
    """xyxy (pixel edges) of a region's pixels."""
    rows, columns = np.nonzero(mask)
    return np.array([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1])
