"""Reading image files: a cheap header scan at construction, a full decode on load.

Channels: a dataset whose images are all single-channel (PIL modes `L`, `1`, `I;16`, ...)
is loaded with 1 channel (train with `model.in_channels=1`); any other dataset, including
one that mixes grayscale and colour images (COCO does), is loaded as 3-channel RGB.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors

from seglab.errors import UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
_GRAYSCALE_MODES = frozenset({"1", "L", "I", "I;16", "I;16B", "I;16L", "F"})


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder` (by suffix), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_header(path: Path) -> tuple[str, tuple[int, int]]:
    """Return `(PIL mode, (height, width))` reading only the file header."""
    try:
        with PIL.Image.open(path) as image:
            return image.mode, (image.height, image.width)
    except (PIL.UnidentifiedImageError, OSError) as error:
        raise UserError(f"{path}: not a readable image ({error}); remove or replace it") from None


def channels_for_modes(modes: Iterable[str]) -> int:
    """1 when every PIL mode is a grayscale one, else 3."""
    modes = set(modes)
    return 1 if modes and modes <= _GRAYSCALE_MODES else 3


def scan_channels(paths: Iterable[Path]) -> int:
    """Check every header and return 1 when all images are grayscale, else 3."""
    return channels_for_modes(read_header(path)[0] for path in paths)


def _to_uint8_array(image: PIL.Image.Image, channels: int) -> np.ndarray:
    if channels == 3:
        return np.array(image.convert("RGB"))
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grayscale: rescale the value range to 8 bits.
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        return ((values - low) * scale).round().astype(np.uint8)
    return np.array(image.convert("L"))


def load_image(path: Path, channels: int = 3) -> tv_tensors.Image:
    """Decode `path` into a `tv_tensors.Image` of dtype uint8, shape (channels, H, W)."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            array = _to_uint8_array(image, channels)
    except (PIL.UnidentifiedImageError, OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable image ({error}); remove or replace it") from None
    if array.ndim == 2:
        array = array[:, :, None]
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1))


def load_index_mask(path: Path) -> np.ndarray:
    """Decode a class-index PNG (mode `L`, `P` or 16-bit) into an (H, W) int64 array."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise UserError(
                    f"{path}: mask has mode {image.mode}; save one class index per pixel "
                    "(8-bit grayscale or palette PNG)"
                )
            return np.asarray(image).astype(np.int64)
    except (PIL.UnidentifiedImageError, OSError) as error:
        raise UserError(f"{path}: not a readable mask image ({error})") from None
