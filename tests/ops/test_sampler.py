"""Balanced sampler: counts and fractions, and the same draws as torchvision's."""

import torch
from torchvision.models.detection._utils import (
    BalancedPositiveNegativeSampler as TorchvisionSampler,
)

from seglab.ops.sampler import BalancedPositiveNegativeSampler


def labels(num_positive: int, num_negative: int, num_ignored: int, seed: int) -> torch.Tensor:
    values = torch.cat(
        (
            torch.randint(1, 4, (num_positive,)),
            torch.zeros(num_negative, dtype=torch.int64),
            torch.full((num_ignored,), -1),
        )
    )
    return values[torch.randperm(len(values), generator=torch.Generator().manual_seed(seed))]


def test_counts_and_fractions():
    sampler = BalancedPositiveNegativeSampler(batch_size_per_image=64, positive_fraction=0.25)
    many = labels(100, 300, 50, seed=0)  # enough of both: 16 positives + 48 negatives
    few_positives = labels(5, 300, 0, seed=1)  # negatives fill up: 5 + 59
    few_of_both = labels(5, 10, 20, seed=2)  # everything usable: 5 + 10
    positive, negative = sampler([many, few_positives, few_of_both])
    counts = [(int(p.sum()), int(n.sum())) for p, n in zip(positive, negative, strict=True)]
    assert counts == [(16, 48), (5, 59), (5, 10)]
    for image_labels, p, n in zip(
        [many, few_positives, few_of_both], positive, negative, strict=True
    ):
        assert p.dtype == torch.bool and n.dtype == torch.bool
        assert torch.all(image_labels[p] >= 1) and torch.all(image_labels[n] == 0)
        assert not torch.any(p & n)


def test_same_draws_as_torchvision_under_the_same_seed():
    batch = [labels(40, 200, 30, seed=3), labels(3, 50, 0, seed=4)]
    torch.manual_seed(123)
    ours_positive, ours_negative = BalancedPositiveNegativeSampler(32, 0.5)(batch)
    torch.manual_seed(123)
    theirs_positive, theirs_negative = TorchvisionSampler(32, 0.5)(batch)
    for mine, reference in zip(
        ours_positive + ours_negative, theirs_positive + theirs_negative, strict=True
    ):
        assert torch.equal(mine, reference.bool())
    torch.manual_seed(124)
    other_positive, _ = BalancedPositiveNegativeSampler(32, 0.5)(batch)
    assert not torch.equal(other_positive[0], ours_positive[0])  # the draw is really random
