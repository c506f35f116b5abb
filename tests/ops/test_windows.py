"""Centre crops and mirror padding, checked against numpy's reflect padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.ops.windows import center_crop, mirror_indices, mirror_pad


def test_center_crop_takes_the_central_window_and_refuses_a_larger_one():
    tensor = torch.arange(6 * 7).reshape(1, 6, 7)
    # margins (6 - 3) // 2 = 1 row and (7 - 4) // 2 = 1 column: odd margins floor at the top
    assert torch.equal(center_crop(tensor, (3, 4)), tensor[:, 1:4, 1:5])
    assert torch.equal(center_crop(tensor, (6, 7)), tensor)
    with pytest.raises(ValueError, match="cannot crop"):
        center_crop(tensor, (7, 7))


def test_mirror_pad_matches_numpy_reflect_for_any_width():
    image = torch.arange(12.0).view(1, 3, 4)
    padded = mirror_pad(image, top=7, bottom=5, left=9, right=2)
    expected = np.pad(image.numpy(), ((0, 0), (7, 5), (9, 2)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)


def test_mirror_indices_of_a_window_that_starts_inside():
    """A negative `before` starts the window inside the row: a training crop's context."""
    np.testing.assert_array_equal(mirror_indices(5, -2, 2).numpy(), [2, 3, 4, 3, 2])
    np.testing.assert_array_equal(mirror_indices(1, 2, 1).numpy(), [0, 0, 0, 0])
