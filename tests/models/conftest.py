"""Comparison of float32 results that compute the same arithmetic in another order."""

from __future__ import annotations

import math

import pytest
import torch


def assert_float32_close(result: torch.Tensor, expected: torch.Tensor, *, convs: int, fan_in: int):
    """`result` equals `expected` up to the rounding of `convs` float32 layers of `fan_in`
    products each, computed in another order (a norm folded into its convolution, a sum or
    ReLU applied inside it, another memory layout).

    One such layer's sums differ by about sqrt(fan_in) roundings of 2^-24 of the largest
    value (rounding errors add like a random walk: that is one element's typical error),
    and they compound over the layers. The largest of N such errors, which is what the
    comparison sees, is about sqrt(2 ln N) typical ones (the maximum of N Gaussians); both
    sides round, so their difference is sqrt(2) times one side's. Without these two factors
    the bound was one element's typical error, and one run in three found an element past it
    (1.9e-6 against 1.8e-6). A wrong fold (eps, scale, shift, a missed residual or ReLU) is
    off by percents, thousands of times this bound.
    """
    typical = convs * fan_in**0.5 * 2**-24 * float(expected.abs().max())
    tolerance = typical * math.sqrt(2) * math.sqrt(2 * math.log(max(2, expected.numel())))
    torch.testing.assert_close(result, expected, atol=tolerance, rtol=0)


@pytest.fixture
def float32_close():
    return assert_float32_close
