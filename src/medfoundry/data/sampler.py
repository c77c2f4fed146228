"""Weighted case sampling that is split across processes (DistributedSampler over the pool's weights)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class WeightedDistributedSampler(Sampler[int]):
    """Draw ``samples_per_rank * world_size`` case indices with replacement, proportionally to ``weights``,
    from a generator seeded by ``seed + epoch`` (identical on every rank), and give rank r every
    ``world_size``-th draw starting at r. Call :meth:`set_epoch` each epoch, as with DistributedSampler.
    """

    def __init__(
        self,
        weights: Sequence[float],
        samples_per_rank: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ):
        self.weights = torch.as_tensor(list(weights), dtype=torch.double)
        if self.weights.numel() == 0 or bool((self.weights < 0).any()) or float(self.weights.sum()) <= 0:
            raise ValueError("sampling weights must be non-negative with a positive sum")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.samples_per_rank = int(samples_per_rank)
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the draw for the next epoch (same on every rank)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(self.weights, self.samples_per_rank * self.world_size, True, generator=g)
        return iter(draws[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.samples_per_rank
