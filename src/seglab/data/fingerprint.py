"""The working scale of a semantic model, planned from a fingerprint of its training masks.

nnU-Net (Isensee et al., 2021) plans its patch size and spacing from a dataset fingerprint
(image shapes, spacings, intensities) instead of one setting for every dataset. The same
idea for `data.image_size: auto`: a semantic model sees each image resized so that its
shortest side is `data.image_size`, and a fixed size that suits large objects (96 px for
the shapes) erases small ones and, worse, the thin background lines between touching
objects that the U-Net paper's weight map exists for; the objects then merge.

The fingerprint (`measure_fingerprint`) is measured on up to `MAX_IMAGES` training images:
- the equivalent diameter `sqrt(4 * area / pi)` of every object that does not touch the
  image border (objects cut by the border look smaller than they are);
- the width of the background gap between each pair of neighbouring objects of one class,
  for pairs closer than half the smaller one's diameter: the gaps a resize must keep. Two
  background pixels side by side whose nearest objects differ lie on the line halfway
  between those objects; their two distances to them add up to the gap's width.

The plan (`plan_scale`) takes the smallest scale at which the small objects (5th percentile
of the diameters) stay at least `MIN_OBJECT_PX` across and the narrow gaps (10th percentile)
at least `MIN_GAP_PX` wide, never above 1 (upsampling adds pixels, not information).
Resized masks are sampled at pixel centres (`seglab.data.transforms`), one source pixel
every `1 / scale`: a gap at least that wide always keeps a pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from seglab.data.weight_map import instances_from_classes
from seglab.errors import UserError

MAX_IMAGES = 200
# The shapes recipe reaches val mIoU 0.916 with its 5th-percentile objects at 5 px (96 px
# images); 8 px planned 163 px images, where its 96 px crops hold parts of the large shapes
# (val mIoU 0.39 after 3 minutes in benchmarks/unet_vs_smp.py, seed 0).
MIN_OBJECT_PX = 5.0
MIN_GAP_PX = 1.0
_OBJECT_PERCENTILE = 5
_GAP_PERCENTILE = 10


@dataclass(frozen=True)
class Fingerprint:
    """Object statistics of a training split, in pixels of its images."""

    images: int
    short_side: float  # median shortest image side
    diameters: np.ndarray  # (N,) equivalent diameters of objects inside the image
    gaps: np.ndarray  # (M,) background widths between close neighbours of one class

    @property
    def small_object(self) -> float | None:
        if len(self.diameters) == 0:
            return None
        return float(np.percentile(self.diameters, _OBJECT_PERCENTILE))

    @property
    def narrow_gap(self) -> float | None:
        if len(self.gaps) == 0:
            return None
        return float(np.percentile(self.gaps, _GAP_PERCENTILE))


@dataclass(frozen=True)
class ScalePlan:
    """`image_size`: the shortest side images are resized to; `reason`: one line."""

    image_size: int
    scale: float
    reason: str


def object_diameters(instance_ids: np.ndarray) -> np.ndarray:
    """Equivalent diameters of the instances (ids > 0) that do not touch the image border."""
    border = np.concatenate(
        [instance_ids[0], instance_ids[-1], instance_ids[:, 0], instance_ids[:, -1]]
    )
    areas = np.bincount(instance_ids.ravel())
    inside = np.ones(len(areas), dtype=bool)
    inside[0] = False
    inside[np.unique(border)] = False
    inside &= areas > 0
    return np.sqrt(4 * areas[inside] / math.pi)


def neighbour_gaps(instance_ids: np.ndarray, class_map: np.ndarray) -> np.ndarray:
    """Background gap widths between neighbouring instances of one class (one per pair,
    its narrowest place), for pairs closer than half the smaller one's diameter."""
    background = instance_ids == 0
    if background.all() or not background.any():
        return np.zeros(0)
    distance, (rows, cols) = ndimage.distance_transform_edt(background, return_indices=True)
    nearest = instance_ids[rows, cols]  # (H, W) the instance nearest to each pixel
    class_of = np.zeros(int(instance_ids.max()) + 1, dtype=np.int64)
    class_of[instance_ids.ravel()] = class_map.ravel()
    pairs, widths = [], []
    for near, width, open_ in ((nearest, distance, background),
                               (nearest.T, distance.T, background.T)):  # fmt: skip
        first, second = near[:-1], near[1:]  # each pixel and the next one down the axis
        meet = open_[:-1] & open_[1:] & (first != second)
        meet &= class_of[first] == class_of[second]
        pairs.append(np.sort(np.stack([first[meet], second[meet]], axis=1), axis=1))
        widths.append((width[:-1] + width[1:])[meet])
    pairs, widths = np.concatenate(pairs), np.concatenate(widths)
    if len(widths) == 0:
        return np.zeros(0)
    keys = pairs[:, 0] * (len(class_of) + 1) + pairs[:, 1]
    order = np.lexsort((widths, keys))  # by pair, narrowest first
    first_of_pair = np.r_[True, keys[order][1:] != keys[order][:-1]]
    chosen = order[first_of_pair]
    diameters = np.sqrt(4 * np.bincount(instance_ids.ravel()) / math.pi)
    smaller = np.minimum(diameters[pairs[chosen, 0]], diameters[pairs[chosen, 1]])
    return widths[chosen][widths[chosen] < 0.5 * smaller]


def measure_fingerprint(dataset, max_images: int = MAX_IMAGES) -> Fingerprint:
    """The fingerprint of a semantic dataset (targets with `semantic_mask` and, from COCO
    data, `instance_ids`), on up to `max_images` images spread evenly over it (the same
    ones for the same files: a resume plans the same scale)."""
    if len(dataset) == 0:
        raise UserError("data.image_size auto: the train split has no images to plan from")
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), max_images)).round())
    # the masks alone where the dataset can give them (mask folders): no image decoded
    load_target = getattr(dataset, "load_target", None) or (lambda index: dataset.load(index)[1])
    diameters, gaps, sides = [], [], []
    for index in indices.astype(int):
        target = load_target(index)
        semantic_mask = target["semantic_mask"].numpy()
        if "instance_ids" in target:
            instance_ids = target["instance_ids"].numpy().astype(np.int64)
        else:
            instance_ids = instances_from_classes(semantic_mask).astype(np.int64)
        sides.append(min(semantic_mask.shape))
        diameters.append(object_diameters(instance_ids))
        gaps.append(neighbour_gaps(instance_ids, semantic_mask))
    return Fingerprint(len(indices), float(np.median(sides)), np.concatenate(diameters),
                       np.concatenate(gaps))  # fmt: skip


def plan_scale(fingerprint: Fingerprint) -> ScalePlan:
    """The working scale of `fingerprint`'s data: see the module doc."""
    small, gap = fingerprint.small_object, fingerprint.narrow_gap
    needs = []  # (scale, why)
    if small is not None:
        needs.append((MIN_OBJECT_PX / small, f"small objects ({_OBJECT_PERCENTILE}th percentile "
                      f"{small:.1f} px across) keep >= {MIN_OBJECT_PX:g} px"))  # fmt: skip
    if gap is not None:
        needs.append((MIN_GAP_PX / gap, f"narrow gaps between neighbours ({_GAP_PERCENTILE}th "
                      f"percentile {gap:.1f} px) keep >= {MIN_GAP_PX:g} px"))  # fmt: skip
    if not needs:
        scale, why = 1.0, "nothing is lost: no object inside an image to measure"
    else:
        scale, why = max(needs)
        if scale > 1:
            scale, why = 1.0, f"{why} as far as they can (never upsampled)"
    side = fingerprint.short_side
    image_size = max(round(scale * side), 16)
    return ScalePlan(
        image_size,
        image_size / side,
        f"data.image_size auto: {image_size} px (scale {image_size / side:.2f} of the {side:g} px "
        f"short side), so that {why}; planned from {fingerprint.images} training images, "
        f"{len(fingerprint.diameters)} objects",
    )
