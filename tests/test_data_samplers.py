"""EpochShuffleSampler: order from (seed, epoch) only; augmentation seeds also from the rank."""
from __future__ import annotations

import torch

from salseg.data.samplers import EpochShuffleSampler


class _Data:
    def __init__(self) -> None:
        self.seeds: list[int] = []

    def __len__(self) -> int:
        return 20

    def reseed(self, seed: int) -> None:
        self.seeds.append(seed)


def test_order_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffleSampler(_Data(), seed=3), EpochShuffleSampler(_Data(), seed=3)
    a.set_epoch(1)
    torch.randint(0, 10, (5,), generator=a.generator)  # the DataLoader drawing worker seeds
    b.set_epoch(0)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert sorted(a) == list(range(20))
    b.set_epoch(2)
    assert list(a) != list(b)


def test_ranks_share_the_order_but_not_the_augmentation_seeds():
    d0, d1 = _Data(), _Data()
    r0, r1 = EpochShuffleSampler(d0, seed=0, rank=0), EpochShuffleSampler(d1, seed=0, rank=1)
    r0.set_epoch(4)
    r1.set_epoch(4)
    assert list(r0) == list(r1)
    assert d0.seeds[-1] != d1.seeds[-1]
    assert r0.generator.initial_seed() != r1.generator.initial_seed()
