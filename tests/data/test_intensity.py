"""One intensity range per dataset (data.intensity_range, data.intensity_percentiles)."""

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.data import DataConfig, build_training_datasets
from seglab.data.config import check_intensity
from seglab.data.images import load_image, stored_pixels
from seglab.data.intensity import PIXELS_PER_IMAGE, measure_intensity_range
from seglab.errors import UserError

# float32 results in [0, 1] against a float64 reference: a few ulps at 1 (2**-24 each)
ATOL = 4 * 2.0**-24


def _save(path, values):
    Image.fromarray(values).save(path)
    return path


def test_a_sixteen_bit_range_maps_lo_hi_to_unit_range_clipped(tmp_path):
    values = np.array([[500, 1000, 1500], [2000, 3000, 60000]], dtype=np.uint16)
    path = _save(tmp_path / "cells.tif", values)
    assert Image.open(path).mode == "I;16"
    loaded = load_image(path, 1, (1000, 3000))
    expected = np.clip((values.astype(np.float64) - 1000) / 2000, 0, 1)
    assert loaded.dtype == torch.float32 and loaded.shape == (1, 2, 3)
    np.testing.assert_allclose(loaded[0].numpy(), expected, rtol=0, atol=ATOL)
    assert loaded[0, 0, 0] == 0 and loaded[0, 1, 2] == 1  # clipped, not stretched


def test_float_images_in_physical_units_need_a_range(tmp_path):
    hounsfield = np.array([[-1000.0, -160.0], [240.0, 2000.0]], dtype=np.float32)
    path = _save(tmp_path / "ct.tif", hounsfield)
    with pytest.raises(UserError, match=r"ct.tif: float image with values -1000..2000; .*"
                                        r"data.intensity_range"):  # fmt: skip
        load_image(path, 1)
    window = load_image(path, 1, (-160.0, 240.0))[0].numpy()  # a soft-tissue window
    np.testing.assert_allclose(window, [[0, 0], [1, 1]], rtol=0, atol=ATOL)
    np.testing.assert_allclose(load_image(path, 1, (-1000.0, 2000.0))[0].numpy(),
                               [[0, 840 / 3000], [1240 / 3000, 1]], rtol=0, atol=ATOL)  # fmt: skip


def test_eight_bit_and_rgb_images_take_the_same_range(tmp_path):
    gray = _save(tmp_path / "g.png", np.array([[40, 100, 200]], dtype=np.uint8))
    np.testing.assert_allclose(load_image(gray, 1, (50, 150))[0].numpy(), [[0, 0.5, 1]], atol=ATOL)
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 1] = (100, 150, 50)
    loaded = load_image(_save(tmp_path / "c.png", rgb), 3, (50, 150))
    np.testing.assert_allclose(loaded[:, 0, 1].numpy(), [0.5, 1, 0], atol=ATOL)


def test_non_finite_float_values_are_refused_with_or_without_a_range(tmp_path):
    path = _save(tmp_path / "nan.tif", np.array([[0.5, np.nan]], dtype=np.float32))
    for intensity in (None, (0.0, 1.0)):
        with pytest.raises(UserError, match="nan.tif: float image with NaN or infinite"):
            load_image(path, 1, intensity)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("intensity_range", (3.0, 3.0), "lo < hi"),
        ("intensity_range", (float("nan"), 3.0), "lo < hi"),
        ("intensity_percentiles", (1.0, 101.0), "0 <= p_lo < p_hi <= 100"),
        ("intensity_percentiles", (50.0, 50.0), "0 <= p_lo < p_hi <= 100"),
    ],
)
def test_bad_settings_are_one_line(key, value, message):
    with pytest.raises(UserError, match=message):
        check_intensity(DataConfig(root="x", **{key: value}))


class _Files:
    """The two things `measure_intensity_range` reads of a dataset."""

    def __init__(self, paths, in_channels=1):
        self.paths, self.in_channels = paths, in_channels

    def __len__(self):
        return len(self.paths)

    def image_path(self, index):
        return self.paths[index]


def test_percentiles_of_small_images_are_over_every_pixel(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(100, 4000, (20, 30)).astype(np.uint16) for _ in range(3)]
    paths = [_save(tmp_path / f"{i}.tif", image) for i, image in enumerate(images)]
    measured = measure_intensity_range(_Files(paths), (1.0, 99.0))
    exact = np.percentile(np.concatenate([image.ravel() for image in images]), [1.0, 99.0])
    assert measured == pytest.approx(tuple(exact), abs=0)


def test_percentiles_of_large_images_are_sampled_and_reproducible(tmp_path):
    rng = np.random.default_rng(1)
    side = 400  # 160,000 pixels: more than PIXELS_PER_IMAGE, so sampled
    assert side * side > PIXELS_PER_IMAGE
    image = rng.integers(0, 65536, (side, side)).astype(np.uint16)
    files = _Files([_save(tmp_path / "big.tif", image)])
    first = measure_intensity_range(files, (1.0, 99.0))
    assert first == measure_intensity_range(files, (1.0, 99.0))
    # sample quantile of n draws: standard error sqrt(p (1 - p) / n) of the range (uniform
    # values), about 0.0004 at p = 0.01 and n = 65536; 6 of them
    tolerance = 6 * np.sqrt(0.01 * 0.99 / PIXELS_PER_IMAGE) * 65535
    exact = np.percentile(image, [1.0, 99.0])
    assert abs(first[0] - exact[0]) < tolerance and abs(first[1] - exact[1]) < tolerance


def test_a_flat_train_split_has_no_percentile_range(tmp_path):
    files = _Files([_save(tmp_path / "flat.tif", np.full((8, 8), 700, dtype=np.uint16))])
    with pytest.raises(UserError, match="both are 700 on the train images"):
        measure_intensity_range(files, (1.0, 99.0))


def _sixteen_bit_folders(root, rng):
    """A folders dataset of 16-bit images whose values fill 1000..3000 of 0..65535."""
    for split, count in (("train", 4), ("val", 2)):
        for name in ("dim", "bright"):
            (root / split / name).mkdir(parents=True)
            low = 1000 if name == "dim" else 2000
            for index in range(count):
                values = rng.integers(low, low + 1000, (16, 16)).astype(np.uint16)
                _save(root / split / name / f"{index}.tif", values)
    return root


def test_the_train_split_sets_the_range_of_both_splits(tmp_path):
    root = _sixteen_bit_folders(tmp_path / "data", np.random.default_rng(2))
    cfg = DataConfig(root=str(root), layout="folders", image_size=16, hflip=0.0,
                     intensity_percentiles=(0.0, 100.0))  # fmt: skip
    train_set, val_set = build_training_datasets(cfg, task="classification", in_channels=1)
    train_pixels = [stored_pixels(path, 1) for path, _ in train_set.samples]
    exact = (float(np.min(train_pixels)), float(np.max(train_pixels)))
    assert train_set.intensity == val_set.intensity == exact
    image, _ = val_set[0]
    expected = (stored_pixels(val_set.samples[0][0], 1)[..., 0] - exact[0]) / (exact[1] - exact[0])
    np.testing.assert_allclose(image[0].numpy(), np.clip(expected, 0, 1), atol=ATOL)
