"""Necks: the Feature Pyramid Network."""

from seglab.models.necks.fpn import FPN

__all__ = ["FPN"]
