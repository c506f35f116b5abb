"""The `data:` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass


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
        hflip, vflip: probabilities of a horizontal / vertical flip (training only).
        rot90: random multiples of 90 degrees (U-Net paper), training only.
        scale_jitter: `(lo, hi)` relative scale drawn uniformly per image, training only.
        photometric: brightness/contrast/saturation/hue jitter, training only.
        elastic: U-Net paper elastic deformation (`seglab.data.elastic`).
        weight_map: U-Net paper border weight map in `target["weight_map"]`.
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
    hflip: float = 0.5
    vflip: float = 0.0
    rot90: bool = False
    scale_jitter: tuple[float, float] | None = None
    photometric: bool = False
    elastic: bool = False
    weight_map: bool = False
    cache_mb: float = 0
    channels: int | None = None
    mask_values: tuple[int, ...] | None = None
    train_json: str | None = None
    train_images: str | None = None
    val_json: str | None = None
    val_images: str | None = None
    intensity_range: tuple[float, float] | None = None
    intensity_percentiles: tuple[float, float] | None = None
