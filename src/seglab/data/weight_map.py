"""The U-Net paper's weight map (eq. 2), precomputed once per image.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

- w_c balances class frequencies: a pixel of class k weighs n / (K_present * n_k) (n labelled
  pixels, n_k of class k, K_present classes present), so w_c averages 1 over the image.
- d1(x), d2(x): Euclidean distances to the border of the nearest and second-nearest object
  (instance), from one `scipy.ndimage.distance_transform_edt` per instance, over the
  instance's box grown by 6 sigma (farther, the border term is below w0 * 1.5e-8).
- The border term is added on background pixels only: inside an object d1 = 0 and the term
  would only re-weight the object itself, while the paper's aim (§3, Fig. 3d) is to make the
  thin background gaps between touching objects count. Images with fewer than two objects
  have no second-nearest object and get no border term. Ignored pixels (255) weigh 0.
- Defaults w0 = 10, sigma = 5 px as in the paper.

Instances come from `instance_ids` (COCO data: one id per object, 0 none); for mask folders,
which only have class maps, each connected component of a class is taken as one object.

Caching: `AddWeightMap` (the `data.weight_map: true` step of the data pipeline) runs first,
on the un-augmented target, and keeps computed maps in a `seglab.data.cache.MemoryCache`
(in memory, LRU, keyed by image id and size, at most 512 MiB per data-loading worker; a
256 x 256 map takes 256 KiB), so each image's map is computed once per worker rather than
once per epoch; nothing is written to disk. The map then travels through crops, flips,
rotations and the elastic deformation as a float `tv_tensors.Mask`, so it stays aligned with
the image and the class map (paper §3).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torchvision import tv_tensors

from seglab.data.cache import MemoryCache
from seglab.structures.masks import IGNORE_INDEX


def class_frequency_weights(semantic_mask: np.ndarray) -> np.ndarray:
    """w_c(x): n / (K_present * n_k) for a pixel of class k, 0 for ignored pixels. (H, W)."""
    labelled = semantic_mask != IGNORE_INDEX
    classes, counts = np.unique(semantic_mask[labelled], return_counts=True)
    weights = np.zeros(semantic_mask.shape, dtype=np.float32)
    for class_index, count in zip(classes, counts, strict=True):
        weights[semantic_mask == class_index] = labelled.sum() / (len(classes) * count)
    return weights


def instances_from_classes(semantic_mask: np.ndarray) -> np.ndarray:
    """Instance ids (H, W) int32 from a class map: each connected component of a class is one."""
    instance_ids = np.zeros(semantic_mask.shape, dtype=np.int32)
    next_id = 1
    for class_index in np.unique(semantic_mask):
        if class_index in (0, IGNORE_INDEX):
            continue
        components, count = ndimage.label(semantic_mask == class_index)
        instance_ids[components > 0] = components[components > 0] + next_id - 1
        next_id += count
    return instance_ids


def nearest_two_distances(
    instance_ids: np.ndarray, reach: float = np.inf
) -> tuple[np.ndarray, np.ndarray] | None:
    """(d1, d2): per-pixel distances to the nearest and second-nearest instance, (H, W) each,
    exact below `reach` and `reach` beyond it (each instance's distance transform is taken
    only over its box grown by `reach`, which holds every pixel nearer than that).

    None when there are fewer than two instances.
    """
    ids = [i for i in np.unique(instance_ids) if i != 0]
    if len(ids) < 2:
        return None
    height, width = instance_ids.shape
    far = float(min(reach, np.hypot(height, width)))  # farther than any pixel can be
    nearest = np.full((height, width), far)
    second = np.full((height, width), far)
    for label, box in enumerate(ndimage.find_objects(instance_ids), 1):
        if box is None:  # no pixel has this id
            continue
        window = tuple(
            slice(max(int(side.start - far), 0), min(int(np.ceil(side.stop + far)), size))
            for side, size in zip(box, (height, width), strict=True)
        )
        # distance_transform_edt: each non-zero pixel's distance to the nearest zero, so
        # feed it "not this instance" to get every pixel's distance to the instance
        distance = np.minimum(ndimage.distance_transform_edt(instance_ids[window] != label), far)
        second[window] = np.minimum(second[window], np.maximum(nearest[window], distance))
        nearest[window] = np.minimum(nearest[window], distance)
    return nearest, second


def border_weight_map(
    semantic_mask: np.ndarray,
    instance_ids: np.ndarray | None = None,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
) -> np.ndarray:
    """The paper's eq. (2) weight map, float32 (H, W), for one image.

    Args:
        semantic_mask: (H, W) int class map, 0 background, 255 ignored.
        instance_ids: (H, W) int object ids (0 none); None derives them from `semantic_mask`.
        w0, sigma: border weight and width in pixels (paper: 10 and 5).
    """
    semantic_mask = np.asarray(semantic_mask)
    if instance_ids is None:
        instance_ids = instances_from_classes(semantic_mask)
    weights = class_frequency_weights(semantic_mask)
    # beyond 6 sigma the border term is below w0 * 1.5e-8: distances need no more reach
    nearest = nearest_two_distances(np.asarray(instance_ids), reach=6 * sigma)
    if nearest is not None:
        d1, d2 = nearest
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
        weights += np.where(semantic_mask == 0, border, 0).astype(np.float32)
    return weights


class AddWeightMap:
    """Data-pipeline step: `target["weight_map"]` (H, W) float32 from the paper's eq. (2).

    Reads `target["semantic_mask"]` and, when present, `target["instance_ids"]` (COCO data);
    must run before random transforms, since maps are cached by `target["image_id"]`.
    """

    def __init__(
        self, *, w0: float = 10.0, sigma: float = 5.0, cache_bytes: int = 512 * 2**20
    ) -> None:
        self.w0, self.sigma = w0, sigma
        self.cache = MemoryCache(cache_bytes)

    def __call__(self, image, target: dict):
        semantic_mask = target["semantic_mask"].numpy()
        instance_ids = target.get("instance_ids")
        instance_ids = None if instance_ids is None else instance_ids.numpy()
        key = (target.get("image_id"), semantic_mask.shape)
        weights = self.cache.get(
            key,
            lambda: border_weight_map(semantic_mask, instance_ids, w0=self.w0, sigma=self.sigma),
        )
        return image, {**target, "weight_map": tv_tensors.Mask(torch.from_numpy(weights))}
