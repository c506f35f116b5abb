"""Reading image and mask files: one rule for the datasets and for `seglab predict`.

The rule (docs/conventions.md, "Image files"):

- Orientation: the EXIF orientation tag is applied (as detectron2's `read_image` does), so
  an image has the size and pixels a viewer shows; `read_header` reports that size.
- Values: 8-bit images are uint8 0..255. 16-bit integer images (PNG/TIFF modes `I;16*`,
  and mode `I` holding 0..65535) map the full range 0..65535 to float32 [0, 1], the same
  scale for every image (torchvision's `decode_png` + `to_dtype(scale=True)`; no per-image
  stretch, no precision lost). Float images (mode `F`) must hold values in [0, 1]; any
  other range is an error naming the file.
- One range for a dataset (`data.intensity_range: [lo, hi]`, in stored values): every
  image of the dataset, whatever its type, maps lo..hi to [0, 1], clipped; microscopy and
  medical images whose useful values fill a small part of 0..65535, or float images in
  physical units. Never a per-image min-max stretch, which would give the same tissue
  another value in each image.
- Channels: grayscale modes (`1`, `L`, `LA`, `I;16*`, `I`, `F`) have 1 channel; every other
  mode becomes RGB through Pillow (alpha dropped, palette looked up, CMYK/YCbCr converted).
  Asked for another number of channels, a grayscale image is copied into 3 equal channels
  and a colour one becomes its luma (Pillow's `L`: 0.299 R + 0.587 G + 0.114 B).
- A dataset is loaded with `data.channels` channels; by default 1 when every image is
  grayscale, else 3 (COCO mixes grayscale and colour images: they load as RGB).

Masks (`load_index_mask`) are one value per pixel: modes `1`, `L`, `P` (the palette index,
not its colour), `I;16*`, `I`, or an RGB image whose three channels are equal everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors

from seglab.errors import UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "F"}) | _SIXTEEN_BIT_MODES
_MASK_MODES = frozenset({"1", "L", "P"}) | _SIXTEEN_BIT_MODES
_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = frozenset({5, 6, 7, 8})  # orientations that turn the image by 90 degrees
_TRANSPOSES = {  # EXIF orientation -> the transpose that shows the image upright
    2: PIL.Image.Transpose.FLIP_LEFT_RIGHT,
    3: PIL.Image.Transpose.ROTATE_180,
    4: PIL.Image.Transpose.FLIP_TOP_BOTTOM,
    5: PIL.Image.Transpose.TRANSPOSE,
    6: PIL.Image.Transpose.ROTATE_270,
    7: PIL.Image.Transpose.TRANSVERSE,
    8: PIL.Image.Transpose.ROTATE_90,
}


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder` (by suffix), sorted by name."""
    with os.scandir(folder) as entries:  # the entries' types come with the listing: no stat
        names = [
            entry.name
            for entry in entries
            if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file()
        ]
    return [folder / name for name in sorted(names)]


def _unreadable(path: Path, error: Exception, what: str = "image") -> UserError:
    return UserError(f"{path}: not a readable {what} ({error}); remove or replace it")


def read_header(path: Path) -> tuple[str, tuple[int, int]]:
    """Return `(PIL mode, (height, width))` as oriented by EXIF, reading only the header."""
    try:
        with PIL.Image.open(path) as image:
            height, width = image.height, image.width
            if _orientation(image) in _SWAPS_SIDES:
                height, width = width, height
            return image.mode, (height, width)
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as error:
        raise _unreadable(path, error) from None


def header_or_problem(path: Path) -> tuple[str, tuple[int, int]] | str:
    """`read_header(path)`, or the one-line problem when it cannot be read (for
    `seglab.data.parallel.map_files`, where one bad file must not stop the others)."""
    try:
        return read_header(path)
    except UserError as error:
        return str(error)


def is_grayscale(mode: str) -> bool:
    return mode in _GRAYSCALE_MODES


def describe_mode(mode: str) -> str:
    """'gray 16-bit', 'RGB 8-bit', 'palette 8-bit', ... for a PIL mode."""
    if mode in _SIXTEEN_BIT_MODES:
        return "gray 16-bit" if mode != "I" else "gray 32-bit int"
    names = {"1": "gray 1-bit", "L": "gray 8-bit", "LA": "gray+alpha 8-bit", "F": "gray float"}
    names |= {"P": "palette 8-bit", "PA": "palette+alpha 8-bit"}
    return names.get(mode, f"{mode} 8-bit")


def channels_for_modes(modes: Iterable[str]) -> int:
    """1 when every PIL mode is a grayscale one, else 3."""
    modes = set(modes)
    return 1 if modes and all(is_grayscale(mode) for mode in modes) else 3


def _orientation(image: PIL.Image.Image) -> int:
    """The EXIF orientation (1: as stored) of an opened, not yet decoded image."""
    if image.format == "PNG" and "exif" not in image.info:
        # Pillow would decode every pixel to look for an eXIf chunk after them: header
        # scans stay cheap, and such files (rare) are read as stored, by every reader alike
        return 1
    return image.getexif().get(_EXIF_ORIENTATION, 1)


def _decoded(image: PIL.Image.Image) -> PIL.Image.Image:
    """Decode an opened image and turn it as its EXIF orientation says."""
    orientation = _orientation(image)
    image.load()
    method = _TRANSPOSES.get(orientation)
    return image if method is None else image.transpose(method)


def _stored_gray(path: Path, image: PIL.Image.Image) -> np.ndarray:
    """(H, W) values as stored: uint8 for 8-bit modes, float32 for 16-bit, 32-bit integer
    and float images (a float image's values must be finite)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(image).astype(np.float32)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise UserError(f"{path}: float image with NaN or infinite values; replace them")
        return values
    return np.asarray(image.convert("L"))


def _file_scale(path: Path, mode: str, values: np.ndarray) -> np.ndarray:
    """Stored values on the file's own scale: 16-bit 0..65535 -> [0, 1]; float values
    must already be in [0, 1]; 8-bit values stay uint8."""
    if mode in _SIXTEEN_BIT_MODES:
        low, high = float(values.min(initial=0)), float(values.max(initial=0))
        if low < 0 or high > 65535:
            raise UserError(
                f"{path}: {mode} image with values {low:g}..{high:g}; seglab reads integer "
                "images as 16-bit (0..65535): save it as a 16-bit or 8-bit image, or set "
                "data.intensity_range"
            )
        return values / 65535.0
    if mode == "F":
        low, high = float(values.min(initial=0)), float(values.max(initial=0))
        if not 0 <= low <= high <= 1:
            raise UserError(
                f"{path}: float image with values {low:g}..{high:g}; seglab reads float "
                "images as intensities in [0, 1]: set data.intensity_range (or "
                "data.intensity_percentiles) for the dataset, or rescale it to [0, 1]"
            )
    return values


def _stored_pixels(path: Path, image: PIL.Image.Image, channels: int) -> np.ndarray:
    """(H, W, channels) values as stored (see `_stored_gray`), converted to `channels`."""
    if is_grayscale(image.mode):
        values = _stored_gray(path, image)[:, :, None]
        return values if channels == 1 else np.repeat(values, 3, axis=2)
    if image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")  # what Pillow asks for palette transparency
    rgb = image.convert("RGB")
    return np.asarray(rgb if channels == 3 else rgb.convert("L")).reshape(
        image.height, image.width, channels
    )


def rescale_intensity(values: np.ndarray, intensity: tuple[float, float]) -> np.ndarray:
    """Stored values `lo..hi` -> float32 `0..1`, clipped (one range for a whole dataset)."""
    low, high = intensity
    scaled = (values.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0)


def _decode(path: Path, what) -> np.ndarray:
    """Open, orient and decode `path`; `what(path, image)` -> (H, W, C) array."""
    try:
        with PIL.Image.open(path) as image:
            return what(path, _decoded(image))
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise _unreadable(path, error) from None


def stored_pixels(path: Path, channels: int = 3) -> np.ndarray:
    """(H, W, channels) values of `path` as stored (uint8, or float32 for 16-bit, 32-bit
    integer and float files), before any scaling: what `data.intensity_range` is in."""
    return _decode(path, lambda p, image: _stored_pixels(p, image, channels))


def load_image(
    path: Path, channels: int = 3, intensity: tuple[float, float] | None = None
) -> tv_tensors.Image:
    """Decode `path` into a `tv_tensors.Image` of shape (channels, H, W).

    Without `intensity`: uint8 for 8-bit files, float32 in [0, 1] for 16-bit and float
    ones (the module's rule). With `intensity = (lo, hi)`, in stored values: float32
    `(value - lo) / (hi - lo)` clipped to [0, 1], whatever the file's type.
    """

    def pixels(path: Path, image: PIL.Image.Image) -> np.ndarray:
        values = _stored_pixels(path, image, channels)
        if intensity is not None:
            return rescale_intensity(values, intensity)
        return _file_scale(path, image.mode, values)

    array = _decode(path, pixels)
    array = np.require(array, requirements=("C_CONTIGUOUS", "WRITEABLE"))  # torch needs both
    return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1))  # (H, W, C) -> (C, H, W)


def _mask_values(path: Path, image: PIL.Image.Image) -> np.ndarray:
    if image.mode in _MASK_MODES:
        return np.asarray(image).astype(np.int64)
    if image.mode == "RGB":
        rgb = np.asarray(image)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0].astype(np.int64)  # a one-value mask saved as RGB
    raise UserError(
        f"{path}: mask has mode {image.mode} with distinct colour channels; save "
        "one class index per pixel (8-bit grayscale or palette PNG)"
    )


def load_index_mask(path: Path) -> np.ndarray:
    """Decode a one-value-per-pixel mask into an (H, W) int64 array of its stored values."""
    try:
        with PIL.Image.open(path) as image:
            return _mask_values(path, _decoded(image))
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as error:
        raise _unreadable(path, error, "mask image") from None
