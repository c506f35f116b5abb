"""The `data:` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and how it is augmented.

    Attributes:
        root: folder holding the `train` and `val` splits.
        layout: `coco` (train.json + train/), `masks` (train/images, train/masks) or
            `folders` (train/<class>/*).
        image_size: classification: every image is resized to `S x S`; semantic: training
            images are resized (shortest side) and cropped to `S x S`, validation images are
            resized so their shortest side is `S`; detection/instance: unused (the model
            resizes).
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
    """

    root: str
    layout: str = "coco"
    image_size: int = 256
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
