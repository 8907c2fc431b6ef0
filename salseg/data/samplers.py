"""``EpochShuffleSampler``: a shuffling sampler whose order and augmentation streams are a pure
function of ``(seed, epoch)``.

Lightning calls ``set_epoch`` on the training sampler at the start of every epoch (also after a
resume).  The sampler then reseeds (1) its own permutation generator, which is also the
DataLoader's generator and therefore decides the base seed of every worker, and (2) the
in-process augmentation stream of the dataset (``num_workers=0``).  A run resumed from a
checkpoint taken at an epoch boundary therefore sees exactly the batches and augmentations that
the uninterrupted run saw.  The order depends on ``(seed, epoch)`` only; the augmentation and
worker seeds also on the process ``rank``, so DDP ranks draw different augmentations.  Under DDP
Lightning wraps this sampler in a ``DistributedSampler`` that shuffles by ``(seed, epoch)``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from ``(seed, epoch)`` (SplitMix64-style mixing)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF


class EpochShuffleSampler(Sampler[int]):
    def __init__(self, data_source: Sized, seed: int = 0, rank: int = 0) -> None:
        self.data_source = data_source
        self.seed = int(seed)
        self.rank = int(rank)  # decorrelates augmentation streams across DDP ranks (not the order)
        self.epoch = 0
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        s = epoch_seed(self.seed + 7919 * self.rank, self.epoch)
        self.generator.manual_seed(s)
        reseed = getattr(self.data_source, "reseed", None)
        if callable(reseed):
            reseed(s % 2**32)

    def __len__(self) -> int:
        return len(self.data_source)

    def __iter__(self) -> Iterator[int]:
        # A generator of its own: the DataLoader also draws worker base seeds from
        # ``self.generator``, and how often it does so must not change the order.
        order = torch.Generator().manual_seed(epoch_seed(self.seed + 1, self.epoch))
        yield from torch.randperm(len(self.data_source), generator=order).tolist()
