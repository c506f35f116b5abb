"""Decoded samples kept in memory: same samples, decoded once, never altered by transforms."""

import numpy as np
import pytest
import torch

from seglab.data import DataConfig, build_dataset
from seglab.data.cache import MemoryCache, nbytes
from seglab.errors import UserError


def test_cache_computes_once_per_key_and_evicts_least_recent():
    cache = MemoryCache(max_bytes=32)  # two 2x2 float32 arrays
    calls: list[int] = []

    def compute(key: int):
        return lambda: calls.append(key) or np.full((2, 2), key, dtype=np.float32)

    for key in (1, 2, 1, 3, 1, 2):
        assert cache.get(key, compute(key))[0, 0] == key
    assert calls == [1, 2, 3, 2]  # 2 was evicted by 3 (1 was used more recently)
    assert len(cache) == 2


def test_nbytes_counts_nested_arrays_and_tensors():
    sample = (torch.zeros(3, 4, 4, dtype=torch.uint8), {"mask": np.zeros((4, 4)), "id": 7})
    assert nbytes(sample) == 48 + 128


@pytest.mark.parametrize(
    "layout, task, fixture",
    [("masks", "semantic", "shapes_semantic"), ("coco", "instance", "shapes_coco"),
     ("coco", "semantic", "shapes_coco"), ("folders", "classification", "shapes_classify")],
)  # fmt: skip
def test_cached_dataset_gives_the_same_samples_and_decodes_each_once(
    layout, task, fixture, request, monkeypatch
):
    root = str(request.getfixturevalue(fixture))
    options = {"root": root, "layout": layout, "hflip": 1.0, "rot90": True, "image_size": 48}
    plain = build_dataset(DataConfig(**options), "train", task=task, train=True)
    cached = build_dataset(DataConfig(**options, cache_mb=64), "train", task=task, train=True)
    loads: list[int] = []
    decode = type(cached).load
    monkeypatch.setattr(cached, "load", lambda i: loads.append(i) or decode(cached, i))
    for epoch in range(2):
        for index in range(4):
            torch.manual_seed(10 * epoch + index)  # the same augmentation for both
            expected_image, expected = plain[index]
            torch.manual_seed(10 * epoch + index)
            image, target = cached[index]
            torch.testing.assert_close(image, expected_image, rtol=0, atol=0)
            assert target.keys() == expected.keys()
            for key, value in expected.items():
                if isinstance(value, torch.Tensor):
                    torch.testing.assert_close(target[key], value, rtol=0, atol=0)
                else:
                    assert target[key] == value
    assert loads == [0, 1, 2, 3]  # decoded in the first epoch only


def test_negative_cache_size_is_a_user_error(shapes_semantic):
    cfg = DataConfig(root=str(shapes_semantic), layout="masks", cache_mb=-1)
    with pytest.raises(UserError, match="data.cache_mb must be >= 0"):
        build_dataset(cfg, "train", task="semantic", train=True)
