"""Selective search region proposals (Uijlings et al. 2013), as used by R-CNN §2.1.

The image is over-segmented (Felzenszwalb graph segmentation at several scales and in
several colour spaces) and neighbouring regions are merged greedily by colour, texture,
size and fill similarity; every region formed along the way is a proposal. R-CNN and
Fast R-CNN take about 2000 of them per image ("fast" mode).

This wraps OpenCV's implementation (`cv2.ximgproc.segmentation`, the standard one), which
removes duplicate rectangles itself. Its cost grows with the number of pixels, so the image
can first be resized to a set short side (`scale`); the boxes are mapped back to the
original image's pixels. OpenCV orders the proposals by a randomised rank drawn with the C
library's `rand()`; we seed it before each call so that the same image always gives the
same proposals in the same order.

`ProposalSettings` is the one record of how proposals are computed: R-CNN's and Fast
R-CNN's proposal generator searches with it, and the proposal cache beside the data
(`seglab.data.proposals`) keeps one file per value of it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from seglab.errors import UserError

MODES = ("fast", "quality", "single")


@dataclass(frozen=True)
class ProposalSettings:
    """How proposals are computed; each distinct value has its own cache file.

    Attributes:
        mode: selective search mode: `fast` (R-CNN's), `quality` or `single`.
        scale: short side, in pixels, the image is resized to before the search (None:
            searched as it is).
        min_size: proposals narrower or shorter than this many pixels of the original
            image are dropped.
        max_proposals: the first this many in selective search's rank order are kept
            (None: all); R-CNN §2.1 uses about 2000.
    """

    mode: str = "fast"
    scale: int | None = None
    min_size: float = 0.0
    max_proposals: int | None = 2000

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"proposal mode {self.mode!r}: unknown; use one of {', '.join(MODES)}")
        if self.scale is not None and (not isinstance(self.scale, int) or self.scale < 1):
            raise UserError(f"proposal scale {self.scale!r}: must be a positive number of pixels")
        if self.min_size < 0:
            raise UserError(f"proposal min_size {self.min_size}: must be >= 0")
        if self.max_proposals is not None and self.max_proposals < 1:
            raise UserError(f"max_proposals {self.max_proposals}: must be >= 1 (or None for all)")

    @property
    def key(self) -> str:
        """A short stable name for file names, e.g. `fast-500px-min16-max2000`."""
        scale = "fullres" if self.scale is None else f"{self.scale}px"
        count = "all" if self.max_proposals is None else self.max_proposals
        return f"{self.mode}-{scale}-min{self.min_size:g}-max{count}"

    def describe(self) -> str:
        """The settings in words, for people."""
        scale = "as it is" if self.scale is None else f"short side {self.scale} px"
        count = "all" if self.max_proposals is None else f"at most {self.max_proposals}"
        return f"{self.mode} mode, {scale}, min size {self.min_size:g} px, {count}"

    def search_arguments(self) -> dict:
        """The keyword arguments of `selective_search` and `selective_search_array`."""
        return {"mode": self.mode, "scale": self.scale, "min_size": self.min_size,
                "max_proposals": self.max_proposals}  # fmt: skip


def selective_search(
    image: Tensor | np.ndarray,
    *,
    mode: str = "fast",
    scale: int | None = None,
    max_proposals: int | None = 2000,
    min_size: float = 0.0,
    seed: int = 0,
) -> Tensor:
    """Propose object regions.

    Args:
        image: float (C, H, W) tensor in [0, 1], RGB or 1 channel (the model input), or a
            uint8 (H, W, 3) RGB / (H, W) grey numpy array.
        mode: "fast" (2 colour spaces x 3 scales x 2 strategies, R-CNN's setting),
            "quality" (5 colour spaces x 5 scales x 4 strategies: more, slower) or "single"
            (one segmentation, one strategy: quickest).
        scale: resize the image so that its short side is this many pixels before the
            search (None: search the image as it is).
        max_proposals: keep the first this many in rank order (None keeps all).
        min_size: drop proposals narrower or shorter than this many pixels of `image`.
        seed: seeds the rank order; the same seed gives the same proposals.

    Returns:
        (K, 4) float32 xyxy boxes in pixels of `image`, K <= max_proposals, distinct, in
        OpenCV's rank order (coarse-to-fine mixed, the hierarchy levels being randomly
        interleaved).
    """
    boxes = selective_search_array(
        _to_rgb_uint8(image), mode=mode, scale=scale, max_proposals=max_proposals,
        min_size=min_size, seed=seed,
    )  # fmt: skip
    return torch.from_numpy(boxes)


def selective_search_array(
    rgb: np.ndarray,
    *,
    mode: str = "fast",
    scale: int | None = None,
    max_proposals: int | None = 2000,
    min_size: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """`selective_search` on a uint8 (H, W, 3) RGB or (H, W) grey array, without torch
    (what the proposal cache's worker processes call); returns (K, 4) float32 xyxy."""
    if mode not in MODES:
        raise UserError(f"selective search mode {mode!r}: unknown; use one of {', '.join(MODES)}")
    height, width = rgb.shape[:2]
    searched = _resize_short_side(_to_bgr(rgb), scale)
    boxes = _opencv_boxes(searched, mode, seed)
    # Back to the original frame: each axis by its own factor (sizes are rounded).
    boxes[:, 0::2] *= width / searched.shape[1]
    boxes[:, 1::2] *= height / searched.shape[0]
    if min_size > 0:
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = boxes[(widths >= min_size) & (heights >= min_size)]
    return boxes if max_proposals is None else boxes[:max_proposals]


def _opencv_boxes(bgr: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """(K, 4) float32 xyxy boxes in pixels of `bgr`, in OpenCV's rank order."""
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(bgr)
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    elif mode == "quality":
        search.switchToSelectiveSearchQuality()
    else:
        search.switchToSingleStrategy()
    _seed_c_rand(seed)
    rects = search.process()  # (K, 4) int32 [x, y, width, height], duplicates removed
    boxes = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    return boxes


def _resize_short_side(image: np.ndarray, scale: int | None) -> np.ndarray:
    """(H, W, 3) -> (h, w, 3) with min(h, w) == scale, aspect kept (rounded); as is if None."""
    if scale is None:
        return image
    height, width = image.shape[:2]
    factor = scale / min(height, width)
    size_wh = (max(1, round(width * factor)), max(1, round(height * factor)))
    # Area averaging when shrinking (no aliasing), bilinear when enlarging.
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size_wh, interpolation=interpolation)


def _to_rgb_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """Model input (C, H, W) float [0, 1] RGB or grey -> (H, W, C) uint8; arrays as they are."""
    if not isinstance(image, Tensor):
        return np.asarray(image)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a (1 or 3, H, W) image tensor, got {tuple(image.shape)}")
    array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    return array.cpu().numpy()  # (C, H, W) -> (H, W, C)


def _to_bgr(array: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB, (H, W, 1) or (H, W) grey -> (H, W, 3) BGR, OpenCV's order."""
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy image, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, ::-1])


def _seed_c_rand(seed: int) -> None:
    """Seed the C library's rand(), which OpenCV's selective search ranks with."""
    libc = ctypes.CDLL(None)
    libc.srand(ctypes.c_uint(seed))
