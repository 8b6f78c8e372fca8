"""A piece cut into the windows a model reads, and the windows' numbers brought back to notes.

Owns the rules ``explain``, ``baselines``, ``picks`` and the attribution modules share: the
windows of a piece (the tokenizer's, or windows of the model's ``max_len`` when the model is
shorter), each note's owner window (where it is farthest from an edge), gathering per-window
arrays back to notes, padding windows into a batch, the seeded recovery groups of
``explain.explain_piece`` (each window's notes dealt into K = round(1 / ratio) groups), and the
loader of collated batches that the fixed-seed validation masks (``masks.validation_mask``)
are drawn for. May import numpy, torch and ``tokenizer`` (``datasets`` lazily, to collate samples).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from .tokenizer import N_SPECIAL, PAD_ID


def check_inputs(m, tokenizer, ratio: float, freeze_book, piece_id) -> None:
    """The tokenizer must be the model's (attributes and vocabularies), ``ratio`` in (0, 1], and a
    freeze book needs ``piece_id``: ``ValueError`` otherwise."""
    attrs = list(m.config.attributes)
    if list(tokenizer.attributes) != attrs or list(tokenizer.vocab_sizes) != list(m.config.vocab_sizes):
        raise ValueError(f"tokenizer ({tokenizer.attributes}, {tokenizer.vocab_sizes}) does not match the model "
                         f"({attrs}, {m.config.vocab_sizes}); load the tokenizer config saved with the model")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if freeze_book is not None and piece_id is None:
        raise ValueError("explain_piece needs piece_id to read frozen notes from a freeze book")


def piece_windows(tokenizer, piece, tokens: np.ndarray, max_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The tokenizer's windows, or windows of ``max_len`` when the model is shorter."""
    if tokenizer.config.max_len <= max_len:
        return tokenizer.encode_windows(piece, tokens)
    L, s = max_len, min(tokenizer.config.effective_stride, max_len)
    jb = tokenizer.attributes.index("bar")
    out, start, n = [], 0, len(tokens)
    while start < n:
        stop = min(start + L, n)
        w = tokens[start:stop].copy()
        w[0, jb] = N_SPECIAL  # the first note of a window counts from bar 0
        out.append((w, np.arange(start, stop, dtype=np.int64)))
        if stop >= n:
            break
        start += s
    return out


def pad_windows(seqs: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows (L_i, A) -> one batch on ``device``: tokens (B, L, A) padded with PAD, attention mask (B, L)."""
    L = max(len(s) for s in seqs)
    A = seqs[0].shape[1]
    tokens = torch.full((len(seqs), L, A), PAD_ID, dtype=torch.long)
    am = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.from_numpy(np.ascontiguousarray(s))
        am[i, : len(s)] = True
    return tokens.to(device), am.to(device)


def note_owners(wins: list[tuple[np.ndarray, np.ndarray]], N: int) -> tuple[np.ndarray, np.ndarray]:
    """For each note: the window where it is farthest from an edge (first on ties), and its position there."""
    owner = np.full(N, -1)
    owner_pos = np.zeros(N, dtype=np.int64)
    best = np.full(N, -1)
    for w, (_, ids) in enumerate(wins):
        pos = np.arange(len(ids))
        cent = np.minimum(pos, len(ids) - 1 - pos)
        better = cent > best[ids]
        owner[ids[better]], owner_pos[ids[better]], best[ids[better]] = w, pos[better], cent[better]
    return owner, owner_pos


def gather_notes(per_window: list[np.ndarray], owner: np.ndarray, owner_pos: np.ndarray) -> np.ndarray:
    """Per-window arrays (one row per position) -> one row per note, read in its owner window."""
    N = len(owner)
    out = np.empty((N,) + per_window[0].shape[1:], dtype=per_window[0].dtype)
    for w in range(len(per_window)):
        sel = owner == w
        out[sel] = per_window[w][owner_pos[sel]]
    return out


def recovery_group_count(ratio: float) -> int:
    """K = round(1 / ratio) (at least 1): the number of groups ``explain.explain_piece`` deals
    each window's notes into (one group masked per copy of the window)."""
    return max(1, int(round(1.0 / ratio)))


def recovery_groups(n: int, groups: int, seed: int, window: int) -> np.ndarray:
    """(n,) group of each note of window number ``window``: a permutation seeded by
    (``seed``, ``window``) dealt into ``groups`` groups (``explain.explain_piece``'s masks)."""
    group = np.empty(n, dtype=np.int64)
    group[np.random.default_rng([int(seed), window]).permutation(n)] = np.arange(n) % groups
    return group


def as_loader(data: Any, batch_size: int) -> Iterable[dict]:
    """A loader of collated batches from a loader, a list of batches, or a map-style dataset."""
    if isinstance(data, torch.utils.data.DataLoader):
        return data
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and len(data) > 0:
        first = data[0]
        if isinstance(first, dict) and np.ndim(first["tokens"]) == 2:  # samples: collate them
            from .datasets import collate
            return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)
    return data
