"""A batch's tensors in one block per dtype while it crosses from a DataLoader worker.

Each tensor that a worker process hands to the main process crosses on its own: its
storage is moved to shared memory and a file descriptor is passed through a socket, about
0.1 ms per tensor whatever its size. seglab's batches are lists (models stack images
themselves, detection targets differ in size), so a batch of 32 classification items is 64
tensors (image, label) and a detection batch four per image, where PyTorch's default
collate, which stacks, sends two. `pack` copies every tensor of a collated batch into one
flat block per dtype, in shared memory from the start (the one copy that the crossing
makes anyway), and `unpack` gives the same batch back in the main process: each a view of its
block with the shape, strides, class (`tv_tensors.Image`, `BoundingBoxes`, ...) and
metadata (`format`, `canvas_size`) it had, so the batch is equal to the unpacked one to
the bit and the model cannot tell the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class _Slot:
    """Where one tensor of a packed batch lies in its dtype's block, and what it was."""

    dtype: torch.dtype
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    cls: type
    metadata: dict


@dataclass
class PackedBatch:
    """A batch (lists, tuples and dicts of tensors and plain values) with its tensors moved
    into `blocks` (one flat tensor per dtype) and replaced by `_Slot`s in `structure`."""

    structure: Any
    blocks: dict[torch.dtype, Tensor]

    def pin_memory(self) -> PackedBatch:
        """What the DataLoader's pinning thread calls for a CUDA run."""
        return PackedBatch(self.structure, {k: v.pin_memory() for k, v in self.blocks.items()})


def pack(batch: Any) -> PackedBatch:
    """Copy the CPU tensors of `batch` into one block per dtype, keeping their layout."""
    placed: list[tuple[Tensor, _Slot]] = []
    sizes: dict[torch.dtype, int] = {}

    def slot_of(tensor: Tensor) -> _Slot:
        offset = sizes.get(tensor.dtype, 0)
        sizes[tensor.dtype] = offset + tensor.numel()
        slot = _Slot(tensor.dtype, offset, tuple(tensor.shape), _dense_stride(tensor),
                     type(tensor), dict(vars(tensor)))  # fmt: skip
        placed.append((tensor, slot))
        return slot

    structure = _replace(batch, Tensor, slot_of)
    blocks = {dtype: _shared_block(size, dtype) for dtype, size in sizes.items()}
    for tensor, slot in placed:
        _view(blocks, slot).copy_(tensor)
    return PackedBatch(structure, blocks)


def unpack(batch: Any) -> Any:
    """The batch that `pack` packed (any other batch as it is)."""
    if not isinstance(batch, PackedBatch):
        return batch
    return _replace(batch.structure, _Slot, lambda slot: _rebuild(batch.blocks, slot))


def _shared_block(size: int, dtype: torch.dtype) -> Tensor:
    """(size,) `dtype`, uninitialised, in shared memory from the start: what the crossing
    would otherwise copy it into (as PyTorch's default collate does in a worker)."""
    storage = torch.UntypedStorage._new_shared(size * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, (size,), (1,))


def _dense_stride(tensor: Tensor) -> tuple[int, ...]:
    """The strides of a dense tensor with `tensor`'s memory order (channels-last stays
    channels-last; a permuted image keeps its order): what `empty_like` would give it."""
    return torch.empty_like(tensor, device="meta").stride()


def _view(blocks: dict[torch.dtype, Tensor], slot: _Slot) -> Tensor:
    return blocks[slot.dtype].as_strided(slot.shape, slot.stride, slot.offset)


def _rebuild(blocks: dict[torch.dtype, Tensor], slot: _Slot) -> Tensor:
    tensor = _view(blocks, slot)
    if slot.cls is not Tensor:
        tensor = tensor.as_subclass(slot.cls)  # tv_tensors: their metadata are attributes
        vars(tensor).update(slot.metadata)
    return tensor


def _replace(value: Any, kind: type, function) -> Any:
    """`value` (dicts, lists and tuples of anything) with each `kind` leaf replaced by
    `function(leaf)`, in order; other leaves as they are."""
    if isinstance(value, kind):
        return function(value)
    if isinstance(value, dict):
        return {key: _replace(item, kind, function) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_replace(item, kind, function) for item in value)
    return value
