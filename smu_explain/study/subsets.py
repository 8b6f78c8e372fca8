"""Subsets of the study's data: nested fractions of a training set (``subset_dataset``), the
class-balanced validation pieces of early stopping (``validation_subset``) and the pieces of
the masker analysis spread over their groups (``spread_refs``).

Imports numpy (``datasets`` lazily).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def subset_dataset(ds, fraction: float, seed: int):
    """A ``TokenDataset`` with ``fraction`` of ``ds``'s pieces (at least 1).

    Pieces are ordered by a permutation from ``default_rng(seed)``, so smaller fractions
    are prefixes of larger ones (nested subsets). Sequence tasks are stratified: each
    class keeps round(fraction * its pieces) pieces, at least 1. ``fraction`` = 1 returns ``ds``.
    """
    from ..datasets import TokenDataset

    if fraction >= 1.0:
        return ds
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(ds.pieces)
    order = np.random.default_rng([int(seed), 7]).permutation(n)
    if ds.level == "sequence":
        keep: list[int] = []
        labels = np.asarray([-1 if p.label is None else p.label for p in ds.pieces])
        for c in sorted(set(labels.tolist())):
            idx = [i for i in order if labels[i] == c]
            keep += idx[: max(1, int(round(fraction * len(idx))))]
        keep = sorted(keep, key=lambda i: int(np.flatnonzero(order == i)[0]))
    else:
        keep = list(order[: max(1, int(round(fraction * n)))])
    return TokenDataset([ds.pieces[i] for i in keep], ds.level, ds.classes, ds.tokenizer, ds.augment, ds.seed)


def validation_subset(ds, max_windows: int | None, seed: int = 0):
    """The validation pieces used for early stopping: all of ``ds`` when it has at most
    ``max_windows`` windows (or ``max_windows`` is None), else whole pieces taken in a
    seeded random order, round-robin over the classes for sequence tasks (so every class
    is represented), while they fit in ``max_windows`` windows (at least one piece).
    A plain prefix of the (name-sorted) split would hold only the first composers."""
    from ..datasets import TokenDataset

    if max_windows is None or len(ds) <= max_windows:
        return ds
    order = list(np.random.default_rng([int(seed), 11]).permutation(len(ds.pieces)))
    if ds.level == "sequence":
        by_label: dict[int, list[int]] = {}
        for i in order:
            by_label.setdefault(-1 if ds.pieces[i].label is None else int(ds.pieces[i].label), []).append(i)
        lists = [by_label[k] for k in sorted(by_label)]
        order = [lst[d] for d in range(max(len(x) for x in lists)) for lst in lists if d < len(lst)]
    keep, total = [], 0
    for i in order:
        w = ds.pieces[i].n_windows
        if keep and total + w > max_windows:
            continue
        keep.append(i)
        total += w
    return TokenDataset([ds.pieces[i] for i in sorted(keep)], ds.level, ds.classes, ds.tokenizer, False, ds.seed)


def spread_refs(refs: Sequence[Any], n: int) -> list[Any]:
    """Up to ``n`` refs taken round-robin over their groups (groups and refs in name order):
    one piece per song / work first, so a few analysed pieces cover as many groups as possible."""
    by_group: dict[str, list[Any]] = {}
    for r in sorted(refs, key=lambda r: r.name):
        by_group.setdefault(r.group, []).append(r)
    lists = [by_group[g] for g in sorted(by_group)]
    out: list[Any] = []
    depth = 0
    while len(out) < n and any(depth < len(lst) for lst in lists):
        out += [lst[depth] for lst in lists if depth < len(lst)][: n - len(out)]
        depth += 1
    return out
