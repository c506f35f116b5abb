"""The paper's weight map (eq. 2) on hand-made images, checked against the formula by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from seglab.data import DataConfig, build_dataset
from seglab.data.shapes import generate_shapes
from seglab.data.weight_map import (
    AddWeightMap,
    border_weight_map,
    class_frequency_weights,
    instances_from_classes,
    nearest_two_distances,
)


def two_rectangles() -> np.ndarray:
    """20 x 30 background with two class-1 rectangles, 4 columns apart (cols 10..13 free)."""
    mask = np.zeros((20, 30), dtype=np.int64)
    mask[5:15, 2:10] = 1  # object A: rows 5..14, columns 2..9
    mask[5:15, 14:22] = 1  # object B: rows 5..14, columns 14..21
    return mask


def test_two_object_image_values_match_the_formula():
    mask = two_rectangles()
    weights = border_weight_map(mask, w0=10.0, sigma=5.0)
    foreground = 2 * 10 * 8
    background = 20 * 30 - foreground
    w_background = 600 / (2 * background)  # n / (K_present * n_k)
    w_foreground = 600 / (2 * foreground)

    def expected_background(d1: float, d2: float) -> float:
        return w_background + 10 * math.exp(-((d1 + d2) ** 2) / (2 * 5**2))

    # (10, 12), in the gap: 3 px to A's column 9, 2 px to B's column 14
    assert weights[10, 12] == pytest.approx(expected_background(2, 3), rel=1e-5)
    # (2, 11), above the gap: to A's corner (5, 9) sqrt(9 + 4), to B's corner (5, 14) sqrt(18)
    assert weights[2, 11] == pytest.approx(
        expected_background(math.sqrt(13), math.sqrt(18)), rel=1e-5
    )
    # (10, 28), right of B: 7 px to B (column 21), 19 px to A (column 9)
    assert weights[10, 28] == pytest.approx(expected_background(7, 19), rel=1e-5)
    # inside an object: class weight only
    assert weights[10, 5] == pytest.approx(w_foreground)
    assert weights[10, 12] > 6 * weights[10, 28]  # the gap between objects counts most


def test_touching_objects_are_separated_by_instance_ids():
    mask = np.zeros((10, 12), dtype=np.int64)
    mask[2:8, 1:6] = 1
    mask[2:8, 6:11] = 1  # touches the first: one connected component
    instance_ids = np.zeros_like(mask, dtype=np.int32)
    instance_ids[2:8, 1:6], instance_ids[2:8, 6:11] = 1, 2
    from_classes = border_weight_map(mask)  # one object: no border term
    from_instances = border_weight_map(mask, instance_ids)
    np.testing.assert_allclose(from_classes, class_frequency_weights(mask))
    # background pixel (0, 5): 2 px to object 1 at (2, 5), sqrt(4 + 1) to object 2 at (2, 6)
    expected = class_frequency_weights(mask)[0, 5] + 10 * math.exp(-((2 + math.sqrt(5)) ** 2) / 50)
    assert from_instances[0, 5] == pytest.approx(expected, rel=1e-5)


def test_empty_mask_gets_uniform_weights_and_ignored_pixels_weigh_nothing():
    empty = np.zeros((16, 16), dtype=np.int64)
    np.testing.assert_allclose(border_weight_map(empty), np.ones((16, 16)))
    partly_ignored = empty.copy()
    partly_ignored[:4] = 255
    weights = border_weight_map(partly_ignored)
    assert (weights[:4] == 0).all() and np.allclose(weights[4:], 1.0)


def test_class_weights_balance_frequencies():
    mask = two_rectangles()
    weights = class_frequency_weights(mask)
    assert weights[mask == 1].sum() == pytest.approx(weights[mask == 0].sum())
    assert weights.mean() == pytest.approx(1.0)


def test_instances_from_classes_numbers_each_component():
    mask = two_rectangles()
    mask[0:2, 0:2] = 2
    instance_ids = instances_from_classes(mask)
    assert sorted(np.unique(instance_ids)) == [0, 1, 2, 3]
    assert len(np.unique(instance_ids[5:15, 2:10])) == 1


def test_add_weight_map_step_caches_by_image_id():
    step = AddWeightMap()
    mask = two_rectangles()
    target = {"semantic_mask": tv_tensors.Mask(torch.from_numpy(mask)), "image_id": 4}
    _, first = step(None, target)
    _, second = step(None, target)
    assert isinstance(first["weight_map"], tv_tensors.Mask)
    assert first["weight_map"].dtype == torch.float32
    np.testing.assert_allclose(first["weight_map"].numpy(), border_weight_map(mask))
    assert (
        len(step.cache) == 1 and first["weight_map"].data_ptr() == second["weight_map"].data_ptr()
    )


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_data_pipeline_adds_an_aligned_weight_map(tmp_path, task):
    """`data.weight_map` + `data.elastic` on shapes data: the map follows every augmentation."""
    root = generate_shapes(tmp_path / task, task=task, train=2, val=1, size=64, seed=0)
    layout = "masks" if task == "semantic" else "coco"
    cfg = DataConfig(
        root=str(root), layout=layout, image_size=48, rot90=True, elastic=True, weight_map=True
    )
    dataset = build_dataset(cfg, "train", task="semantic", train=True)
    torch.manual_seed(0)
    checked = 0
    for index in range(len(dataset)):
        image, target = dataset[index]
        weights, mask = target["weight_map"], target["semantic_mask"]
        assert image.shape[-2:] == weights.shape == mask.shape == (48, 48)
        assert (weights > 0).float().mean() > 0.5
        # aligned: an object's pixels carry its class weight (constant), not border terms
        foreground = (mask != 0) & (mask != 255)
        for class_index in mask[foreground].unique().tolist():
            values = weights[mask == class_index]
            assert values.max() - values.min() < 1e-6, (index, class_index)
        checked += int(foreground.any())
    assert checked > 0


def test_distances_within_reach_equal_the_whole_image_transforms():
    """Each instance's transform over its box grown by `reach` gives the exact distances
    below `reach` (the reference: one transform per instance over the whole image)."""
    from scipy import ndimage

    from seglab.data.cells import render_cells

    _, nuclei = render_cells(128, np.random.default_rng(3))
    instance_ids = np.zeros((128, 128), dtype=np.int32)
    for index, nucleus in enumerate(nuclei, 1):
        instance_ids[nucleus.visible_mask] = index
    every = np.stack(
        [ndimage.distance_transform_edt(instance_ids != i) for i in range(1, len(nuclei) + 1)]
    )
    first, second = np.sort(every, axis=0)[:2]
    for reach in (7.5, 30):
        nearest, next_nearest = nearest_two_distances(instance_ids, reach=reach)
        np.testing.assert_array_equal(nearest, np.minimum(first, reach))
        np.testing.assert_array_equal(next_nearest, np.minimum(second, reach))
