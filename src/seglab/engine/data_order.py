"""A data order that is a pure function of (seed, step), so a resumed run sees the same data.

Step `s` reads batch `s mod E` of epoch `s div E` (E = batches per epoch), and epoch `e`
visits the dataset in the permutation drawn from `(seed, e)`. Each item is augmented under
random generators seeded from `(seed, step, index)`, so the augmentation does not depend on
the DataLoader workers or on where the run was interrupted either.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, forever from `start_step` on, the batch of each step as `(step, index)` pairs.

    Every epoch has `len(dataset) // batch_size` full batches (the remainder of the
    permutation is dropped, as BatchNorm dislikes a batch of one); a dataset smaller than a
    batch gives one batch per epoch.
    """

    def __init__(self, dataset_size: int, batch_size: int, *, seed: int, start_step: int = 0):
        self.dataset_size = dataset_size
        self.batch_size = min(batch_size, dataset_size)
        self.seed = seed
        self.start_step = start_step
        self.batches_per_epoch = dataset_size // self.batch_size

    def epoch_and_position(self, step: int) -> tuple[int, int]:
        return divmod(step, self.batches_per_epoch)

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(_mix(self.seed, epoch))
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        epoch, position = self.epoch_and_position(step)
        order = self.permutation(epoch)
        while True:
            start = position * self.batch_size
            yield [(step, int(index)) for index in order[start : start + self.batch_size]]
            step += 1
            position += 1
            if position == self.batches_per_epoch:
                epoch, position = epoch + 1, 0
                order = self.permutation(epoch)


class SeededItems(Dataset):
    """`dataset[index]` computed under generators seeded from `(seed, step, index)`."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __getitem__(self, key: tuple[int, int]):
        step, index = key
        with seeded_rng(_mix(self.seed, step, index)):
            return self.dataset[index]


def _mix(*numbers: int) -> int:
    """A well-spread 63-bit seed from a few integers."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(2, np.uint64)[0] >> 1)


@contextmanager
def seeded_rng(seed: int):
    """Seed python, numpy and torch (CPU) generators; put back their states afterwards."""
    with preserved_rng():
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)  # CPU only: leave CUDA's generator alone
        yield


@contextmanager
def preserved_rng(cuda: bool = False):
    """Run a block without disturbing the global generators (python, numpy, torch[, cuda])."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
