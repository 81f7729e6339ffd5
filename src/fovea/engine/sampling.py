"""Data order and batch sizes for `fovea.engine.train.fit`, shared by the Lightning glue.

`EpochSampler` gives every process the same per-epoch permutation (seeded by seed + epoch) and
process r takes positions r, r+N, ... of it; `resolve_batch_size` turns the user's global batch
(1 = stochastic, 0 = full batch) into a number; `batch_len` counts the samples of a collated batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import Sampler

from fovea.errors import ConfigError


class EpochSampler(Sampler[int]):
    """Per-epoch sample order shared by all processes; process `rank` takes positions rank::world.

    The global order is a permutation seeded by (seed + epoch), the identity when shuffle=False,
    or the draw of `base` (e.g. WeightedRandomSampler) under torch seed (seed + epoch). It is
    padded by wrapping around to a multiple of `world` so every process runs the same number of steps.
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world: int = 1,
                 base: Sampler | None = None):
        self.n, self.shuffle, self.seed, self.rank, self.world, self.base = n, shuffle, seed, rank, world, base
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_order(self) -> list[int]:
        if self.base is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + self.epoch)
                order = [int(i) for i in self.base]
        elif self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        pad = (-len(order)) % self.world
        return order + order[:pad]

    def __iter__(self):
        return iter(self.global_order()[self.rank::self.world])

    def __len__(self) -> int:
        total = len(self.base) if self.base is not None else self.n
        return math.ceil(total / self.world)


def resolve_batch_size(batch_size: int, n_train: int) -> int:
    """Global batch size: 0 or >= n_train means the whole set (batch gradient descent)."""
    if batch_size < 0:
        raise ConfigError(f"batch_size={batch_size} is negative. Fix: 1 (stochastic), 0 (full batch) or more.")
    return n_train if batch_size == 0 or batch_size >= n_train else batch_size


def batch_len(batch: Any) -> int:
    """Number of samples in a collated batch (first tensor's leading size)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        for v in batch.values():
            n = batch_len(v)
            if n:
                return n
    if isinstance(batch, (list, tuple)):
        for v in batch:
            n = batch_len(v)
            if n:
                return n
    return 0
