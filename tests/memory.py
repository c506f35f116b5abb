"""What a backward holds: the tests of the training step's memory (sparse RoIAlign, RPN head)."""

from __future__ import annotations

from collections.abc import Callable

import torch

MARKER_VALUES = 12345  # a float32 allocation of this size marks where the backward starts


def backward_peak_bytes(forward: Callable[[], torch.Tensor]) -> int:
    """The most bytes that the backward of `forward()`'s scalar holds above what it started
    with: torch.profiler's allocation and release events in time order, from a marker
    allocation made between the forward and the backward. The forward runs under the
    profiler too, which sees only the release of what it saw allocated."""
    with torch.profiler.profile(profile_memory=True) as profile:
        loss = forward()
        torch.empty(MARKER_VALUES)
        loss.backward()
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in profile.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    start = next(index for index, (_, size) in enumerate(events) if size == MARKER_VALUES * 4)
    total = peak = 0
    for _, size in events[start + 1 :]:
        total += size
        peak = max(peak, total)
    return peak
