"""Selective search region proposals (Uijlings et al. 2013), as used by R-CNN §2.1.

The image is over-segmented (Felzenszwalb graph segmentation at several scales and in
several colour spaces) and neighbouring regions are merged greedily by colour, texture,
size and fill similarity; every region formed along the way is a proposal. R-CNN and
Fast R-CNN take about 2000 of them per image ("fast" mode).

This wraps OpenCV's implementation (`cv2.ximgproc.segmentation`, the standard one).
OpenCV orders the proposals by a randomised rank drawn with the C library's `rand()`; we
seed it before each call so that the same image always gives the same proposals in the
same order.
"""

from __future__ import annotations

import ctypes

import cv2
import numpy as np
import torch
from torch import Tensor

from seglab.errors import UserError

MODES = ("fast", "quality", "single")


def selective_search(
    image: Tensor | np.ndarray,
    *,
    mode: str = "fast",
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
        max_proposals: keep the first this many in rank order (None keeps all).
        min_size: drop proposals narrower or shorter than this many pixels.
        seed: seeds the rank order; the same seed gives the same proposals.

    Returns:
        (K, 4) float32 xyxy boxes in pixels of `image`, K <= max_proposals, in OpenCV's
        rank order (coarse-to-fine mixed, the hierarchy levels being randomly interleaved).
    """
    if mode not in MODES:
        raise UserError(f"selective search mode {mode!r}: unknown; use one of {', '.join(MODES)}")
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(_to_bgr_uint8(image))
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    elif mode == "quality":
        search.switchToSelectiveSearchQuality()
    else:
        search.switchToSingleStrategy()
    _seed_c_rand(seed)
    rects = search.process()  # (K, 4) int32 [x, y, width, height], duplicates removed
    boxes = torch.from_numpy(np.asarray(rects, dtype=np.float32).reshape(-1, 4))
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    if min_size > 0:
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = boxes[(widths >= min_size) & (heights >= min_size)]
    return boxes if max_proposals is None else boxes[:max_proposals]


def _to_bgr_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    """Model input (C, H, W) float [0, 1] RGB, or numpy uint8 RGB / grey -> (H, W, 3) BGR uint8."""
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected a (1 or 3, H, W) image tensor, got {tuple(image.shape)}")
        array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
        array = array.cpu().numpy()  # (H, W, C)
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise ValueError(f"expected a uint8 numpy image, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, ::-1])  # RGB -> BGR, OpenCV's order


def _seed_c_rand(seed: int) -> None:
    """Seed the C library's rand(), which OpenCV's selective search ranks with."""
    libc = ctypes.CDLL(None)
    libc.srand(ctypes.c_uint(seed))
