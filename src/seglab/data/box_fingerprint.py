"""A detector's input scale, anchors and detection counts, planned from its training boxes.

The U-Net plans its working scale from the masks (`seglab.data.fingerprint`); a detector
has more to plan, and one fixed recipe (192 px, anchors 16..256, 100 detections) suits the
shapes it was written for and not small, crowded nuclei. The fingerprint
(`measure_box_fingerprint`) reads the annotations only (no image is decoded, so it takes
a moment on a COCO-sized file): each box's size `sqrt(w * h)` and aspect ratio `h / w`,
the sides of its image, and the objects per image. The plan (`plan_detector`) then sets,
for each option a recipe leaves `auto`:

1. the scale, `min_size` / `max_size`: the one at which the small objects (5th
   percentile) are `MIN_OBJECT_PX` across, 3 x 3 cells of the finest FPN level (stride 4),
   rounded to a multiple of 32 (the padded batch's), at least `MIN_SIDE`, and at most
   `MAX_PIXELS` per image (the CPU recipes' cost range) and `MAX_UPSAMPLE` times the
   images' own size; larger objects give smaller, cheaper images;
2. the anchors, at that scale: with FPN one size per level, an octave apart (the levels'
   strides double, FPN §4.1), starting at the small objects' size rounded to a power of
   two; without FPN the 5th, 50th and 95th percentile sizes so rounded. Aspect ratios: the
   powers of two from the boxes' 5th- to 95th-percentile `h / w`, at least 0.5, 1, 2 (the
   papers'), so that a data set with long boxes gets long anchors;
3. the counts, from the objects per image: `detections_per_img` at least 1.5 x the most
   objects an image holds (and at least COCO's 100, the detections its AP counts); the
   RoIs sampled per image (`box_batch_size_per_image`) enough for `FG_ROIS_PER_OBJECT`
   foreground RoIs per object of a crowded image (95th percentile), between `MIN_ROIS`
   and `MAX_ROIS`; the proposals kept after the RPN's NMS, half of those before it (the
   recipes' ratio), or more when needed: twice the sampled RoIs in training,
   `PROPOSALS_PER_OBJECT` per object of the most crowded image at test.

An option given a value keeps it, and the planned ones follow it (anchors are planned at a
given `min_size`). The constants are those of the shapes recipes, where the plan gives
back the recipe (192 px, anchors 16..256, 128 RoIs): docs/models/mask_rcnn.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from seglab.errors import UserError

AUTO = "auto"
# The options a recipe may leave to the data, in the order they are planned.
PLANNED_OPTIONS = (
    "min_size",
    "max_size",
    "anchor_sizes",
    "aspect_ratios",
    "detections_per_img",
    "box_batch_size_per_image",
    "rpn_post_nms_top_n_train",
    "rpn_post_nms_top_n_test",
)
# The shapes' small objects at the recipes' 192 px (mask AP 0.77 in 15 min,
# docs/benchmarks.md): 3 cells of stride 4 (FPN's P2), and the smallest anchor, 16 px, is
# the nearest power of two.
MIN_OBJECT_PX = 12.0
MIN_SIDE = 128
MAX_PIXELS = 256 * 256  # 1.8x the shapes recipes' 192 x 192 per image
MAX_UPSAMPLE = 2.0
FPN_LEVELS = 5  # P2..P6 (P6: the extra max-pooled level)
COCO_MAX_DETECTIONS = 100
FG_ROIS_PER_OBJECT = 4
# Test proposals per object of the most crowded image. Not more by default: Faster R-CNN's
# shapes model, box AP 0.636 with 150 test proposals, 0.626 with 300 (same weights).
PROPOSALS_PER_OBJECT = 4
MIN_ROIS, MAX_ROIS = 128, 256
_SMALL, _LARGE = 5, 95  # percentiles


@dataclass(frozen=True)
class BoxFingerprint:
    """The boxes of a training split, in pixels of their images.

    Attributes:
        sizes: (N,) `sqrt(w * h)` of each box.
        aspect_ratios: (N,) `h / w` of each box.
        image_sides: (N, 2) the short and long side of each box's image.
        objects_per_image: (I,) boxes of each image (0 for an image without objects).
    """

    sizes: np.ndarray
    aspect_ratios: np.ndarray
    image_sides: np.ndarray
    objects_per_image: np.ndarray

    @property
    def images(self) -> int:
        return len(self.objects_per_image)


@dataclass(frozen=True)
class DetectorPlan:
    """`values`: option name -> planned value (only the options planned); `reason`: one line."""

    values: dict[str, Any]
    reason: str


def box_fingerprint(coco: dict, images: list[dict]) -> BoxFingerprint:
    """The fingerprint of the boxes of `images` (COCO image entries with `width`, `height`)
    in the COCO dict `coco`: crowd regions and boxes without area left out."""
    if not images:
        raise UserError("model options auto: the train split has no images to plan from")
    images = list(images)
    if unsized := [info["id"] for info in images if not {"height", "width"} <= set(info)]:
        raise UserError(f"model options auto: image {unsized[0]} has no width and height in "
                        f"the annotations to plan from; give the options numbers")  # fmt: skip
    index_of = {info["id"]: index for index, info in enumerate(images)}
    sides = np.array([sorted((info["height"], info["width"])) for info in images], dtype=float)
    rows = [
        (index_of[a["image_id"]], *a["bbox"][2:4])
        for a in coco.get("annotations", [])
        if a.get("image_id") in index_of and not a.get("iscrowd", 0)
    ]
    table = np.array(rows, dtype=float).reshape(-1, 3)  # (N, 3) image index, w, h
    table = table[(table[:, 1] > 0) & (table[:, 2] > 0)]
    image_index = table[:, 0].astype(np.int64)
    return BoxFingerprint(
        sizes=np.sqrt(table[:, 1] * table[:, 2]),
        aspect_ratios=table[:, 2] / table[:, 1],
        image_sides=sides[image_index],
        objects_per_image=np.bincount(image_index, minlength=len(images)),
    )


def measure_box_fingerprint(dataset) -> BoxFingerprint:
    """The fingerprint of a COCO dataset (`seglab.data.CocoDataset`): its `coco_gt`
    annotations of the images it keeps (`images`)."""
    if not hasattr(dataset, "coco_gt"):
        raise UserError("model options auto: planned from COCO annotations; this data has "
                        "none (data.layout: coco), so give the options numbers")  # fmt: skip
    return box_fingerprint(dataset.coco_gt, dataset.images)


def plan_detector(
    fingerprint: BoxFingerprint, options: dict[str, Any], *, fpn: bool
) -> DetectorPlan:
    """The values of the `auto` entries of `options` (a detector's keyword arguments) for
    the data of `fingerprint`; see the module doc. Options given a value are kept and used.

    Raises:
        UserError: the split has no box to plan from.
    """
    if len(fingerprint.sizes) == 0:
        raise UserError("model options auto: the train split has no boxes to plan from; "
                        "give the options numbers")  # fmt: skip
    wanted = [name for name in PLANNED_OPTIONS if options.get(name) == AUTO]
    values, why = {}, []
    if "min_size" in wanted:
        values["min_size"], reason = plan_min_size(fingerprint)
        why.append(reason)
    min_size = values.get("min_size", options.get("min_size", 800))
    if "max_size" in wanted:
        values["max_size"] = plan_max_size(fingerprint, min_size)
    max_size = values.get("max_size", options.get("max_size", 1333))
    sizes = fingerprint.sizes * resize_factors(fingerprint, min_size, max_size)
    if "anchor_sizes" in wanted:
        values["anchor_sizes"] = plan_anchor_sizes(sizes, fpn=fpn)
    if "aspect_ratios" in wanted:
        values["aspect_ratios"] = plan_aspect_ratios(fingerprint.aspect_ratios)
    values |= plan_counts(fingerprint, options, wanted)
    shown = ", ".join(f"{name}={_shown(values[name])}" for name in wanted)
    crowded = int(fingerprint.objects_per_image.max())
    why.append(f"objects {np.percentile(sizes, _SMALL):.0f}-{np.percentile(sizes, _LARGE):.0f} "
               f"px (5th-95th percentile) at that scale, up to {crowded} per image")  # fmt: skip
    reason = (f"model options auto: {shown} ({'; '.join(why)}); planned from "
              f"{fingerprint.images} training images, {len(sizes)} boxes")  # fmt: skip
    return DetectorPlan(values, reason)


def plan_min_size(fingerprint: BoxFingerprint) -> tuple[int, str]:
    """The short side images are resized to, and why: see the module doc (1.)."""
    relative = fingerprint.sizes / fingerprint.image_sides[:, 0]  # object size / short side
    small = float(np.percentile(relative, _SMALL))
    short, ratio = _median_sides(fingerprint)
    needed = round(MIN_OBJECT_PX / small / 32) * 32
    cap = min(math.sqrt(MAX_PIXELS / ratio), MAX_UPSAMPLE * short)
    min_size = int(min(max(needed, MIN_SIDE), max(MIN_SIDE, cap // 32 * 32)))
    small_px = small * min_size
    capped = "" if needed <= min_size else f" (capped for cost: {MIN_OBJECT_PX:g} wanted)"
    reason = (f"small objects {small * short:.0f} px in {short:.0f} px images -> "
              f"{small_px:.0f} px{capped}")  # fmt: skip
    return min_size, reason


def plan_max_size(fingerprint: BoxFingerprint, min_size: int | tuple[int, ...]) -> int:
    """The long side's cap: `min_size` times the images' median long / short ratio."""
    _, ratio = _median_sides(fingerprint)
    return int(_round_up(max(_as_tuple(min_size)) * ratio, 32))


def resize_factors(fingerprint: BoxFingerprint, min_size, max_size: int) -> np.ndarray:
    """(N,) each box's resize factor: its image's short side to the smallest `min_size`,
    the long side at most `max_size` (`DetectionTransform`)."""
    short, long = fingerprint.image_sides[:, 0], fingerprint.image_sides[:, 1]
    return np.minimum(min(_as_tuple(min_size)) / short, max_size / long)


def plan_anchor_sizes(sizes: np.ndarray, *, fpn: bool) -> tuple[int, ...]:
    """Anchor sizes for boxes of `sizes` (px at the planned scale): see the module doc (2.)."""
    if fpn:
        smallest = _power_of_two(np.percentile(sizes, _SMALL))
        return tuple(smallest * 2**level for level in range(FPN_LEVELS))
    quantiles = np.percentile(sizes, [_SMALL, 50, _LARGE])
    return tuple(sorted({_power_of_two(size) for size in quantiles}))


def plan_aspect_ratios(aspect_ratios: np.ndarray) -> tuple[float, ...]:
    """Powers of two covering the 5th-95th percentile of `h / w`, at least 0.5, 1, 2."""
    low, high = np.log2(np.percentile(aspect_ratios, [_SMALL, _LARGE]))
    first, last = min(math.floor(low), -1), max(math.ceil(high), 1)
    return tuple(float(2.0**k) for k in range(max(first, -3), min(last, 3) + 1))


def plan_counts(fingerprint: BoxFingerprint, options: dict, wanted: list[str]) -> dict:
    """Detections per image and RoIs / proposals per image: see the module doc (3.)."""
    counts = fingerprint.objects_per_image
    planned = {}
    if "detections_per_img" in wanted:
        most = int(counts.max())
        planned["detections_per_img"] = max(COCO_MAX_DETECTIONS, int(_round_up(1.5 * most, 10)))
    if "box_batch_size_per_image" in wanted:
        fraction = options.get("box_positive_fraction", 0.25)
        crowded = float(np.percentile(counts, _LARGE))
        rois = _round_up(FG_ROIS_PER_OBJECT * crowded / fraction, 32)
        planned["box_batch_size_per_image"] = int(min(max(rois, MIN_ROIS), MAX_ROIS))
    rois = planned.get("box_batch_size_per_image", options.get("box_batch_size_per_image", 512))
    if "rpn_post_nms_top_n_train" in wanted:
        planned["rpn_post_nms_top_n_train"] = _proposals(
            options.get("rpn_pre_nms_top_n_train", 2000), 2 * rois
        )
    if "rpn_post_nms_top_n_test" in wanted:
        per_objects = int(_round_up(PROPOSALS_PER_OBJECT * counts.max(), 50))
        planned["rpn_post_nms_top_n_test"] = _proposals(
            options.get("rpn_pre_nms_top_n_test", 1000), per_objects
        )
    return planned


def _proposals(before_nms: int, needed: int) -> int:
    """Proposals kept after the RPN's NMS: half of those before it (the recipes' ratio), or
    `needed` when more, and at most all of them."""
    return min(before_nms, max(before_nms // 2, needed))


def _median_sides(fingerprint: BoxFingerprint) -> tuple[float, float]:
    """The median short side of the boxes' images and their median long / short ratio."""
    sides = fingerprint.image_sides
    return float(np.median(sides[:, 0])), float(np.median(sides[:, 1] / sides[:, 0]))


def _round_up(value: float, multiple: int) -> float:
    return math.ceil(value / multiple - 1e-9) * multiple


def _power_of_two(size: float) -> int:
    """The power of two nearest to `size` (on a log scale), at least 8 (2 x P2's stride)."""
    return int(max(8, 2 ** round(math.log2(max(size, 1.0)))))


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _shown(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return str(value)
