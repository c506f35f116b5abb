"""Comparison of float32 results that compute the same arithmetic in another order."""

from __future__ import annotations

import pytest
import torch


def assert_float32_close(result: torch.Tensor, expected: torch.Tensor, *, convs: int, fan_in: int):
    """`result` equals `expected` up to the rounding of `convs` float32 layers of `fan_in`
    products each, computed in another order (a norm folded into its convolution, a sum or
    ReLU applied inside it, another memory layout).

    One such layer's sums differ by about sqrt(fan_in) roundings of 2^-24 of the largest
    value (rounding errors add like a random walk), and they compound over the layers. A
    wrong fold (eps, scale, shift, a missed residual or ReLU) is off by percents.
    """
    tolerance = convs * fan_in**0.5 * 2**-24 * float(expected.abs().max())
    torch.testing.assert_close(result, expected, atol=tolerance, rtol=0)


@pytest.fixture
def float32_close():
    return assert_float32_close
