"""The `data:` section of a recipe, and the checks of its values that read no file.

Nothing here imports torch: `seglab train` checks a config before PyTorch is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from seglab.errors import UserError

TASKS = ("classification", "detection", "instance", "semantic")
# layout -> tasks it can serve
LAYOUT_TASKS = {
    "coco": ("detection", "instance", "semantic"),
    "masks": ("semantic",),
    "folders": ("classification",),
}
AUTO = "auto"  # data.image_size planned from the data (seglab.data.fingerprint)


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and how it is augmented.

    Attributes:
        root: folder holding the `train` and (optional) `val` splits.
        layout: `coco` (train.json + train/), `masks` (train/images, train/masks) or
            `folders` (train/<class>/*).
        train_json, train_images, val_json, val_images: coco layout: a split's COCO file
            and the folder its `file_name`s are relative to, anywhere; a split given so
            replaces ROOT's (`seglab.data.splits`). Without `root`, `train_*` are required
            and the val split is the one given, if any.
        image_size: classification: every image is resized to `S x S`; semantic: images
            are resized so that their shortest side is `S` (training images then cropped
            to `crop_size`); `auto` (semantic): planned from the training masks so that
            small objects and the gaps between touching ones keep enough pixels
            (`seglab.data.fingerprint`), and recorded in the run; detection/instance:
            unused (the model resizes).
        crop_size: semantic: side of the random square crop each training image gives,
            after the resize; null: `image_size`.
        mirror_margin: semantic, training: pixels of context around each training crop,
            read from the image around it and mirrored beyond its border (U-Net paper §2,
            Fig. 2: overlap-tile in training too); the mask there is ignored (255). A
            `valid` U-Net with this margin (`valid_margin(depth)`) outputs the crop exactly,
            so every pixel of an image can be supervised; 0: none.
        hflip, vflip: probabilities of a horizontal / vertical flip (training only).
        rot90: random multiples of 90 degrees (U-Net paper), training only.
        scale_jitter: `(lo, hi)` relative scale drawn uniformly per image, training only.
        photometric: brightness/contrast/saturation/hue jitter, training only.
        elastic: U-Net paper elastic deformation (`seglab.data.elastic`).
        weight_map: U-Net paper border weight map in `target["weight_map"]`.
        weight_map_w0, weight_map_sigma: its border term's weight and width in pixels of
            the files (eq. 2; the paper's w0 = 10, sigma = 5 px).
        cache_mb: MiB of decoded samples (images, masks) kept in memory by each
            data-loading process, least recently used dropped first; 0 decodes every time.
        channels: channels images are loaded with (1 or 3); null: 1 when every image is
            grayscale, else 3 (`seglab.data.images` says how images are converted).
        mask_values: masks layout: the stored value of the background and of each class
            1..K, e.g. `[0, 255]` for binary masks; null: the values are class indices
            (`seglab.data.mask_values`).
        intensity_range: `[lo, hi]` in the files' stored values (0..255 for 8-bit images,
            0..65535 for 16-bit, as stored for float): lo..hi becomes 0..1, clipped, for
            every image alike; null: each file's own scale (`seglab.data.images`).
        intensity_percentiles: `[p_lo, p_hi]` percent: `intensity_range` measured once on
            the train split's pixels (`seglab.data.intensity`); the run records the range.
    """

    root: str | None = None
    layout: str = "coco"
    image_size: int | str = 256
    crop_size: int | None = None
    mirror_margin: int = 0
    hflip: float = 0.5
    vflip: float = 0.0
    rot90: bool = False
    scale_jitter: tuple[float, float] | None = None
    photometric: bool = False
    elastic: bool = False
    weight_map: bool = False
    weight_map_w0: float = 10.0
    weight_map_sigma: float = 5.0
    cache_mb: float = 0
    channels: int | None = None
    mask_values: tuple[int, ...] | None = None
    train_json: str | None = None
    train_images: str | None = None
    val_json: str | None = None
    val_images: str | None = None
    intensity_range: tuple[float, float] | None = None
    intensity_percentiles: tuple[float, float] | None = None


def check_transform_options(cfg: DataConfig, *, task: str) -> None:
    """Raise a UserError for a `data:` option `build_transforms` would refuse."""
    if cfg.image_size == AUTO:
        if task == "classification":  # detection and instance models resize themselves
            raise UserError("data.image_size auto: for semantic segmentation, not classification")
    elif isinstance(cfg.image_size, str) or cfg.image_size < 1:
        raise UserError(
            f"data.image_size must be a positive number of pixels or auto, not {cfg.image_size}"
        )
    if cfg.crop_size is not None and (task != "semantic" or cfg.crop_size < 1):
        raise UserError(
            f"data.crop_size: a positive number of pixels, for semantic segmentation only "
            f"(not {cfg.crop_size} for {task!r})"
        )
    for name in ("hflip", "vflip"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise UserError(f"data.{name} is a probability in [0, 1], not {getattr(cfg, name)}")
    jitter = cfg.scale_jitter
    if jitter is not None and not (len(jitter) == 2 and 0 < jitter[0] <= jitter[1]):
        raise UserError(f"data.scale_jitter must be [lo, hi] with 0 < lo <= hi, not {jitter}")
    for name in ("elastic", "weight_map", "mirror_margin"):
        if getattr(cfg, name) and task != "semantic":
            raise UserError(f"data.{name}: only for semantic segmentation, not task {task!r}")
    if cfg.mirror_margin < 0:
        raise UserError(f"data.mirror_margin: pixels of context, >= 0, not {cfg.mirror_margin}")
    if cfg.weight_map_w0 < 0 or cfg.weight_map_sigma <= 0:
        raise UserError(f"data.weight_map_w0 >= 0 and data.weight_map_sigma > 0 (pixels), not "
                        f"{cfg.weight_map_w0} and {cfg.weight_map_sigma}")  # fmt: skip


def check_intensity(cfg: DataConfig) -> None:
    """The intensity keys are valid numbers (read before any file is)."""
    if cfg.intensity_range is not None:
        low, high = cfg.intensity_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise UserError(f"data.intensity_range {list(cfg.intensity_range)}: give [lo, hi] "
                            "with lo < hi, in the files' stored values")  # fmt: skip
    if cfg.intensity_percentiles is not None:
        low, high = cfg.intensity_percentiles
        if not 0 <= low < high <= 100:
            raise UserError(
                f"data.intensity_percentiles {list(cfg.intensity_percentiles)}: give "
                "[p_lo, p_hi] with 0 <= p_lo < p_hi <= 100, e.g. [0.5, 99.5]"
            )
