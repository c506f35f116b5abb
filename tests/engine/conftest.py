"""Fixtures of the engine tests."""

from __future__ import annotations

import pytest

from seglab.data.shapes import generate_shapes


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    """A tiny shapes classification dataset (16 train, 6 val images of 32 px)."""
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes(root / "classify", task="classify", train=16, val=6, size=32, seed=0)
