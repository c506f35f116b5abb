"""A batch packed into one block per dtype in a DataLoader worker comes back equal to the
bit, with its tensors' classes, metadata, shapes and strides (seglab.data.packing)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from seglab.data import collate, packed_collate
from seglab.data.packing import PackedBatch, pack, unpack


def _item(index: int):
    """A detection item as seglab's datasets give it: a (C, H, W) view of an (H, W, C)
    image, boxes with their metadata, masks, labels, and plain values."""
    generator = torch.Generator().manual_seed(index)
    hwc = torch.randint(0, 256, (6 + index, 5, 3), dtype=torch.uint8, generator=generator)
    image = tv_tensors.Image(hwc.permute(2, 0, 1))  # not contiguous, as load_image's
    boxes = tv_tensors.BoundingBoxes(
        torch.rand(index + 1, 4, generator=generator), format="XYXY", canvas_size=(6 + index, 5)
    )
    masks = tv_tensors.Mask(torch.rand(index + 1, 6 + index, 5, generator=generator) > 0.5)
    labels = torch.arange(index + 1, dtype=torch.int64)
    return image, {"boxes": boxes, "masks": masks, "labels": labels, "image_id": index}


class _Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int):
        return _item(index)


def _assert_same(got, want) -> None:
    """Equal to the bit, with the same class, metadata, shape and strides."""
    if isinstance(want, torch.Tensor):
        assert type(got) is type(want) and got.dtype == want.dtype
        assert got.shape == want.shape and got.stride() == want.stride()
        assert torch.equal(got.as_subclass(torch.Tensor), want.as_subclass(torch.Tensor))
        assert vars(got) == vars(want)
    elif isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            _assert_same(got[key], want[key])
    elif isinstance(want, list | tuple):
        assert type(got) is type(want) and len(got) == len(want)
        for got_item, want_item in zip(got, want, strict=True):
            _assert_same(got_item, want_item)
    else:
        assert got == want


def test_a_packed_batch_unpacks_to_the_same_batch_in_one_block_per_dtype():
    batch = collate([_item(index) for index in range(3)])
    packed = pack(batch)
    assert sorted(map(str, packed.blocks)) == ["torch.bool", "torch.float32", "torch.int64",
                                                "torch.uint8"]  # fmt: skip
    assert all(block.is_shared() for block in packed.blocks.values())  # no copy to cross
    _assert_same(unpack(packed), batch)
    assert unpack(batch) is batch  # a batch from the main process is left as it is


def test_workers_hand_over_packed_batches_equal_to_the_main_process_ones():
    """With workers the loader yields PackedBatch (one crossing per dtype, not one per
    tensor), which unpack to what the loader without workers gives."""
    loaders = [
        DataLoader(_Items(), batch_size=3, collate_fn=packed_collate, num_workers=workers)
        for workers in (0, 2)
    ]
    for plain, packed in zip(*loaders, strict=True):
        assert isinstance(packed, PackedBatch) and not isinstance(plain, PackedBatch)
        _assert_same(unpack(packed), plain)
