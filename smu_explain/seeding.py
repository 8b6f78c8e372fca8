"""Seeded random streams of training: per-sample generators, the epoch order, global seeding.

``sample_generator(seed, step, sample_index)`` gives every sample its own draws, whatever
rank or batch position it lands in (the masking strategies use it); ``epoch_permutation``
is the data order of an epoch. Pure functions of their arguments, so a resumed run repeats
them. Imports only numpy and torch.
"""

from __future__ import annotations

import random

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, step: int, sample_index: int) -> int:
    """A 63-bit seed that depends only on (seed, step, sample index).

    Objectives seed one ``torch.Generator`` per sample with it, so a sample gets the
    same random draws whichever rank and batch position it lands in.
    """
    h = _splitmix64(int(seed) & _MASK64)
    h = _splitmix64(h ^ (int(step) & _MASK64))
    h = _splitmix64(h ^ (int(sample_index) & _MASK64))
    return h & ((1 << 63) - 1)


def sample_generator(seed: int, step: int, sample_index: int, device: str | torch.device = "cpu") -> torch.Generator:
    """``torch.Generator`` on ``device`` seeded with ``sample_seed(seed, step, sample_index)``."""
    g = torch.Generator(device=device)
    g.manual_seed(sample_seed(seed, step, sample_index))
    return g


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The order in which epoch ``epoch`` visits the ``n`` training samples."""
    g = torch.Generator()
    g.manual_seed(sample_seed(seed, epoch, -1))
    return torch.randperm(n, generator=g).tolist()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
