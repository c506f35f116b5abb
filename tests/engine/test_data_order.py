"""The data order is a function of (seed, step): a resumed run reads the same batches."""

from __future__ import annotations

import itertools
import random

import numpy as np
import torch

from seglab.engine.data_order import ResumableBatchSampler, SeededItems, preserved_rng


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_each_epoch_visits_a_permutation_of_full_batches():
    sampler = ResumableBatchSampler(10, 3, seed=0)
    batches = take(sampler, 6)  # 3 full batches per epoch; the 10th item is dropped
    assert [step for step, _ in batches[4]] == [4, 4, 4]
    epoch0 = [index for batch in batches[:3] for _, index in batch]
    epoch1 = [index for batch in batches[3:] for _, index in batch]
    assert len(set(epoch0)) == 9 and len(set(epoch1)) == 9
    assert epoch0 != epoch1  # a new permutation each epoch


def test_resuming_at_a_step_continues_the_same_sequence():
    full = take(ResumableBatchSampler(10, 3, seed=5), 8)
    resumed = take(ResumableBatchSampler(10, 3, seed=5, start_step=4), 4)
    assert resumed == full[4:]


def test_another_seed_gives_another_order():
    assert take(ResumableBatchSampler(50, 5, seed=0), 3) != take(
        ResumableBatchSampler(50, 5, seed=1), 3
    )


def test_dataset_smaller_than_a_batch_gives_one_batch_per_epoch():
    batches = take(ResumableBatchSampler(2, 8, seed=0), 2)
    assert [len(batch) for batch in batches] == [2, 2]


class RandomItems(torch.utils.data.Dataset):
    def __getitem__(self, index):
        return torch.rand(1).item(), random.random(), np.random.rand()


def test_items_are_a_function_of_seed_step_index_and_leave_global_rng_alone():
    items = SeededItems(RandomItems(), seed=3)
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    first = items[(4, 7)]
    assert torch.rand(1) == expected_next  # the global generator did not move
    assert items[(4, 7)] == first
    assert items[(5, 7)] != first and items[(4, 8)] != first


def test_preserved_rng_restores_every_generator():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with preserved_rng():
        random.random(), np.random.rand(), torch.rand(3)
    after = random.random(), np.random.rand(), torch.rand(1).item()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    assert after == (random.random(), np.random.rand(), torch.rand(1).item())
