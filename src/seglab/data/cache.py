"""Keeping decoded data in memory: an LRU bounded in bytes, and the datasets' common base.

A sample that is decoded (PNG -> tensor, COCO polygons -> masks) once and kept costs the
memory of its tensors; on small data, where the model step takes tens of milliseconds, the
decoding is otherwise a large part of a training step. `data.cache_mb` turns it on
(`build_dataset`); each data-loading process keeps its own cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors


def nbytes(value: Any) -> int:
    """Bytes held by the arrays and tensors in `value` (nested tuples, lists, dicts)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.nbytes
    if isinstance(value, dict):
        return sum(nbytes(item) for item in value.values())
    if isinstance(value, (tuple, list)):
        return sum(nbytes(item) for item in value)
    return 0


class MemoryCache:
    """In-memory LRU keyed by anything hashable, holding at most `max_bytes` of arrays."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self._bytes = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value for `key`, computing (and storing) it on the first request."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = compute()
        self._values[key], self._sizes[key] = value, nbytes(value)
        self._bytes += self._sizes[key]
        while self._bytes > self.max_bytes and len(self._values) > 1:
            evicted, _ = self._values.popitem(last=False)
            self._bytes -= self._sizes.pop(evicted)
        return value

    def __len__(self) -> int:
        return len(self._values)


class DecodedDataset(Dataset):
    """Base of seglab's datasets: `load(index)` decodes a sample to `(image, target)`;
    `__getitem__` keeps decoded samples in `cache` (when set) and applies `transforms`.

    Transforms build new tensors and a new target dict, so cached samples stay as decoded.
    """

    transforms: Callable | None = None
    cache: MemoryCache | None = None
    # (lo, hi) stored values read as 0..1 for every image (`data.intensity_range`); None:
    # each file's own scale (`seglab.data.images.load_image`)
    intensity: tuple[float, float] | None = None
    # image id -> (N, 4) xyxy selective-search proposals, for R-CNN and Fast R-CNN
    # (`build_dataset(..., proposals=...)`); given as `target["proposals"]`
    proposals: dict[int, np.ndarray] | None = None
    # False where no transform changes the target (a class label): the transforms then see
    # the image alone, and skip flattening and rebuilding the target for every sample
    transforms_target: bool = True

    def load(self, index: int) -> tuple[Any, dict]:
        raise NotImplementedError

    def __getitem__(self, index: int):
        if self.cache is None:
            image, target = self.load(index)
        else:
            image, target = self.cache.get(index, lambda: self.load(index))
            target = dict(target)
        if self.proposals is not None:  # boxes: the augmentation moves them with the image
            target["proposals"] = tv_tensors.BoundingBoxes(
                torch.from_numpy(self.proposals[target["image_id"]]),
                format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=image.shape[-2:],
            )  # fmt: skip
        if self.transforms is not None and self.transforms_target:
            image, target = self.transforms(image, target)
        elif self.transforms is not None:
            image = self.transforms(image)
        return image, target
