"""The sub-windows, weights and sample points of figures 6 and 10 are those the RoI kernels
use: checked against the reference implementation's quantisation, against the kernels'
outputs on random maps, and against bilinear interpolation written out here."""

from __future__ import annotations

import math

import pytest
import torch

from seglab.explain.roi_grids import roi_align_samples, roi_align_weights, roi_pool_windows
from seglab.ops.roi_align import roi_align
from seglab.ops.roi_pool import _round_half_away, _sub_windows, roi_pool

BOXES = [(13.0, 21.0, 87.0, 70.0), (2.5, 3.5, 30.2, 61.7), (40.0, 8.0, 47.0, 13.0)]


@pytest.mark.parametrize("box", BOXES)
def test_roi_pool_windows_are_the_reference_quantisation(box):
    box_t = torch.tensor(box)
    windows = roi_pool_windows((24, 28), box_t, 7, 0.25)
    x0, y0, x1, y1 = (_round_half_away(v) for v in box_t * 0.25)
    rows = _sub_windows(y0, y1, 7, 24, torch.float32)
    columns = _sub_windows(x0, x1, 7, 28, torch.float32)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(columns):
            window = windows[i][j]
            if r1 > r0 and c1 > c0:
                assert (window.y0, window.y1, window.x0, window.x1) == (r0, r1, c0, c1)
            else:
                assert window.y0 == window.y1  # empty


@pytest.mark.parametrize("box", BOXES)
def test_max_over_each_window_is_roi_pool(box):
    features = torch.randn(1, 5, 24, 28, generator=torch.Generator().manual_seed(1))
    windows = roi_pool_windows((24, 28), torch.tensor(box), 7, 0.25)
    pooled = roi_pool(features, torch.tensor([[0.0, *box]]), 7, 0.25)[0]
    for i, row in enumerate(windows):
        for j, w in enumerate(row):
            expected = features[0, :, w.y0 : w.y1, w.x0 : w.x1].amax(dim=(1, 2))
            assert torch.equal(pooled[:, i, j], expected)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_roi_align_weights_reproduce_roi_align(aligned, sampling_ratio):
    features = torch.randn(1, 4, 20, 22, generator=torch.Generator().manual_seed(2))
    box = torch.tensor([9.0, 13.0, 61.0, 50.0])
    weights = roi_align_weights((20, 22), box, 7, 0.25, sampling_ratio, aligned)
    pooled = roi_align(features, torch.cat([torch.zeros(1), box])[None], 7, 0.25,
                       sampling_ratio, aligned)[0]  # fmt: skip
    # bin (i, j) = sum over cells of weight * value, for every channel
    expected = torch.einsum("ijhw,chw->cij", weights, features[0])
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)


def _bilinear(x: float, y: float, height: int, width: int) -> torch.Tensor:
    """Weights of the four cells around kernel coordinate (x, y) (cell centres at integers)."""
    weights = torch.zeros(height, width)
    x0, y0 = math.floor(x), math.floor(y)
    for cy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for cx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            weights[cy, cx] += wy * wx
    return weights


@pytest.mark.parametrize("sampling_ratio", [2, 3])
def test_sample_points_give_the_kernels_weights(sampling_ratio):
    box = torch.tensor([9.0, 13.0, 61.0, 50.0])
    samples = roi_align_samples((20, 22), box, 7, 0.25, sampling_ratio, True)
    weights = roi_align_weights((20, 22), box, 7, 0.25, sampling_ratio, True)
    g = sampling_ratio
    assert samples.shape == (7 * g, 7 * g, 2)
    for i, j in ((0, 0), (3, 4), (6, 6)):
        points = samples[i * g : (i + 1) * g, j * g : (j + 1) * g].reshape(-1, 2) - 0.5
        expected = sum(_bilinear(float(x), float(y), 20, 22) for x, y in points) / g**2
        torch.testing.assert_close(weights[i, j], expected, rtol=1e-5, atol=1e-6)
    # the samples span the box: first and last are half a sample step inside its edges
    step = (61.0 - 9.0) * 0.25 / (7 * g)
    assert abs(float(samples[0, 0, 0]) - (9.0 * 0.25 + step / 2)) < 1e-5
