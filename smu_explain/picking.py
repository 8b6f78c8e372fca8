"""Which notes a masker's scores pick and freeze, given the scores: the rules of ``explain_piece``
(the ``picked`` and ``frozen`` columns), numpy only, so that the app re-derives the picks of a new
ratio from stored or cached scores without importing torch.

- ``picks_at(score, frozen, ratio)``: the round(ratio * n) (at least 1) highest scores among the n
  notes that are not frozen, ties to the lower note index.
- ``top_fraction(scores, candidates, frac, at_least_one)``: the round(frac * #candidates) highest
  scoring candidates (ties: lower index); ``at_least_one`` as ``masks.n_to_pick`` (at least one
  where there is a candidate). Rounding: half to even, as ``torch.round`` in ``masks.n_to_pick``.
"""

from __future__ import annotations

import numpy as np


def top_fraction(scores: np.ndarray, candidates: np.ndarray, frac: float, at_least_one: bool) -> np.ndarray:
    """Bool mask of the round(frac * #candidates) highest-scoring candidates (ties: lower index)."""
    out = np.zeros(len(scores), dtype=bool)
    idx = np.flatnonzero(candidates)
    k = int(np.round(idx.size * float(frac)))  # half to even, like torch.round
    if at_least_one and idx.size:
        k = min(max(k, 1), idx.size)
    if k > 0:
        out[idx[np.argsort(-scores[idx], kind="stable")[:k]]] = True
    return out


def picks_at(score, frozen, ratio: float) -> np.ndarray:
    """The ``picked`` rule: the round(ratio * n) (at least 1) highest scores among the n notes
    that are not ``frozen``, ties to the lower note index (a new ratio costs a sort, no model pass)."""
    return top_fraction(np.asarray(score, dtype=float), ~np.asarray(frozen, dtype=bool), ratio, at_least_one=True)
