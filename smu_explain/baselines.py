"""No-model baselines for masked-note recovery (docs/METHOD.md section 9).

A pre-trained encoder is judged by its recovery accuracy: a seeded random 15% of
the real notes of each window are replaced by MASK (every attribute) and the
model guesses each attribute of each masked note. That number only means
something next to rules that use no model. This module computes three such
rules on EXACTLY the masked notes the model is scored on:

- on a dataset / loader: the masks of ``masks.validation_mask`` for the same
  batches (batch ``i`` of the loader, ``seed``), i.e. the masks of
  ``masks.validate`` and ``explain.recovery_accuracy`` (``rule_accuracy``);
- on one piece (the app): the masks of ``explain.explain_piece``: the piece's
  windows (``windows.piece_windows``), each window's notes split into
  K = round(1 / ratio) seeded random groups (``windows.recovery_groups``), group g
  masked in copy g, every note scored in the window where it is farthest from an
  edge (``piece_rules``, comparable to ``appstate.accuracy_of`` of the explain table).

The rules, per attribute, on the token ids as they are (the ``bar`` attribute is
the number of token bars advanced since the previous note, mostly 0 and 1, and
the first note of every window is re-based to 0; position = onset step in its
bar; pitch; duration steps):

``most_frequent``
    Always guess the most frequent regular id (>= N_SPECIAL) of the attribute.
    Counted over every real token of the evaluated windows themselves
    (masked or not; padding never counts) unless ``train_counts`` is given
    (per-attribute id counts, e.g. ``token_counts`` of a training split).
    Ties: the smallest id. The published POP909 numbers use the evaluated
    windows.
``copy_neighbour``
    Copy the attribute of the nearest unmasked note BEFORE the masked note in
    the same window; when no note before it is unmasked (the first note of a
    window, or all notes before it masked), the nearest unmasked note after it.
    Masked notes and padding are never copied. A window with no unmasked note
    gives no guess (counted wrong).
``window_mode``
    The most frequent id among the unmasked notes within ``window`` (8) places
    either side in the same window (positions i-8 .. i+8, so at most 16 notes;
    masked notes and padding are not counted). Ties: the smallest id. No
    unmasked note in that range gives no guess (counted wrong).

Accuracy = correct guesses / masked notes, per attribute. A model "beats the
rules" on an attribute when its accuracy is strictly above the best of the three
(``beats_rules``).

Second check (``context_destroyed_accuracy``): the same masks, but every
unmasked real note of the window is replaced by random tokens (uniform over each
attribute's regular ids, or ``mode="shuffle"``: the unmasked tokens of the batch
permuted per attribute, which keeps the value frequencies). A model that uses the
context loses accuracy; one at the unigram stage does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .readable import RULE_LABELS
from .tokenizer import BASE_ATTRIBUTES, MASK_ID, N_SPECIAL, PAD_ID

RULES = ("most_frequent", "copy_neighbour", "window_mode")
WINDOW = 8
NO_GUESS = -1


# ----------------------------------------------------------------------------- the rules on arrays

def copy_neighbour_source(known: np.ndarray) -> np.ndarray:
    """(B, L) index of the note each position copies: the nearest ``known`` position before it,
    else the nearest after it; -1 when the row has no known position (see module docstring)."""
    known = np.asarray(known, dtype=bool)
    B, L = known.shape
    idx = np.broadcast_to(np.arange(L), (B, L))
    prev = np.maximum.accumulate(np.where(known, idx, -1), axis=1)
    # prev at i includes i itself; a masked i is not known, so prev < i there
    nxt = np.minimum.accumulate(np.where(known, idx, L)[:, ::-1], axis=1)[:, ::-1]
    src = np.where(prev >= 0, prev, nxt)
    return np.where(src < L, src, -1)


def window_mode_ids(values: np.ndarray, known: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """(B, L) most frequent id among the known positions within ``window`` places either side
    (ties: smallest id); ``NO_GUESS`` where none is known. ``values``: (B, L) ids >= 0."""
    values = np.asarray(values, dtype=np.int64)
    known = np.asarray(known, dtype=bool)
    B, L = values.shape
    V = int(values.max()) + 1 if values.size else 1
    onehot = np.zeros((B, L + 1, V), dtype=np.int32)
    b, i = np.nonzero(known)
    onehot[b, i + 1, values[b, i]] = 1
    cum = np.cumsum(onehot, axis=1)  # cum[:, k] = counts over positions < k
    pos = np.arange(L)
    hi = np.minimum(pos + window + 1, L)
    lo = np.maximum(pos - window, 0)
    counts = cum[:, hi] - cum[:, lo]  # (B, L, V)
    best = counts.argmax(-1)  # first maximum = smallest id
    return np.where(counts.max(-1) > 0, best, NO_GUESS)


def rule_predictions(tokens: np.ndarray, picked: np.ndarray, attention_mask: np.ndarray | None = None,
                     most_frequent_ids: np.ndarray | None = None, window: int = WINDOW) -> dict[str, np.ndarray]:
    """{rule: (B, L, A) guessed ids} for every position (read them at the picked ones).

    ``tokens`` (B, L, A) or (L, A); ``picked`` the masked notes; ``attention_mask``
    the real notes (default: pitch id != PAD). ``most_frequent`` is included only
    when ``most_frequent_ids`` (A,) is given. ``NO_GUESS`` (-1) = no guess.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    squeeze = tokens.ndim == 2
    if squeeze:
        tokens, picked = tokens[None], np.asarray(picked)[None]
        attention_mask = None if attention_mask is None else np.asarray(attention_mask)[None]
    am = (tokens[..., 0] != PAD_ID) if attention_mask is None else np.asarray(attention_mask, dtype=bool)
    known = am & ~np.asarray(picked, dtype=bool)
    B, L, A = tokens.shape
    out: dict[str, np.ndarray] = {}
    if most_frequent_ids is not None:
        out["most_frequent"] = np.broadcast_to(np.asarray(most_frequent_ids, dtype=np.int64), (B, L, A)).copy()
    src = copy_neighbour_source(known)
    copied = np.take_along_axis(tokens, np.maximum(src, 0)[..., None], axis=1)
    out["copy_neighbour"] = np.where((src >= 0)[..., None], copied, NO_GUESS)
    out["window_mode"] = np.stack([window_mode_ids(tokens[..., j], known, window) for j in range(A)], axis=-1)
    if squeeze:
        out = {k: v[0] for k, v in out.items()}
    return out


def _add_counts(h: np.ndarray | None, ids: np.ndarray) -> np.ndarray:
    c = np.bincount(np.asarray(ids, dtype=np.int64).ravel())
    if h is None:
        return c
    n = max(len(h), len(c))
    return np.pad(h, (0, n - len(h))) + np.pad(c, (0, n - len(c)))


def mode_of_counts(counts: np.ndarray) -> int:
    """The most frequent regular id (>= N_SPECIAL) of an id-count vector (ties: smallest id)."""
    c = np.asarray(counts, dtype=np.float64).copy()
    if len(c) <= N_SPECIAL or c[N_SPECIAL:].sum() == 0:
        return NO_GUESS
    c[:N_SPECIAL] = -1
    return int(np.argmax(c))


# ----------------------------------------------------------------------------- datasets / loaders

def _attributes(data: Any, n: int, attributes: Iterable[str] | None) -> list[str]:
    if attributes is not None:
        return list(attributes)
    for obj in (data, getattr(data, "dataset", None)):
        tok = getattr(obj, "tokenizer", None)
        if tok is not None and len(getattr(tok, "attributes", ())) == n:
            return list(tok.attributes)
    return list(BASE_ATTRIBUTES) if n == len(BASE_ATTRIBUTES) else [f"attr{j}" for j in range(n)]


def _batches(data: Any, batch_size: int, max_batches: int | None):
    from .windows import as_loader  # the loader recovery_accuracy uses (same batches, same masks)

    for i, batch in enumerate(as_loader(data, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        yield i, batch


def token_counts(data: Any, batch_size: int = 16, attributes: Iterable[str] | None = None,
                 max_batches: int | None = None) -> dict[str, np.ndarray]:
    """{attribute: counts per id} over every real token of a dataset / loader (e.g. a
    training split, for ``rule_accuracy(..., train_counts=...)``)."""
    from .masks import attention_mask_of

    hist: list[np.ndarray | None] = []
    A = 0
    for _, batch in _batches(data, batch_size, max_batches):
        tok = batch["tokens"].cpu().numpy()
        am = attention_mask_of(batch).cpu().numpy()
        A = tok.shape[-1]
        hist = hist or [None] * A
        for j in range(A):
            hist[j] = _add_counts(hist[j], tok[..., j][am])
    names = _attributes(data, A, attributes)
    return {a: (h if h is not None else np.zeros(0, np.int64)) for a, h in zip(names, hist, strict=False)}


def rule_stats(data: Any, ratio: float = 0.15, seed: int = 0, batch_size: int = 16,
               max_batches: int | None = None, train_counts: Mapping[str, Any] | Any = None,
               attributes: Iterable[str] | None = None, window: int = WINDOW,
               keep_tokens: bool = False) -> dict[str, Any]:
    """``rule_accuracy`` with its working: ``rules`` {rule: {attr: acc}}, ``n_tokens`` (masked
    notes scored), ``most_frequent_ids`` {attr: id}, ``counts_from`` ('evaluated windows'
    or 'train_counts'); with ``keep_tokens`` also ``tokens``: {"correct": {rule: (n, A) bool},
    "piece": (n,), "window": (n,)} per masked note, in the order of ``masks.validate``'s."""
    from .masks import attention_mask_of, token_units, validation_mask

    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    n = 0
    correct: dict[str, np.ndarray] = {}
    all_hist: list[np.ndarray | None] = []
    target_hist: list[np.ndarray | None] = []
    A = 0
    kept: dict[str, list[np.ndarray]] = {"targets": [], "piece": [], "window": []}
    for i, batch in _batches(data, batch_size, max_batches):
        am_t = attention_mask_of(batch)
        picked_t = validation_mask(am_t.cpu(), i, ratio, seed)
        picked = picked_t.numpy()
        tok = batch["tokens"].cpu().numpy().astype(np.int64)
        am = am_t.cpu().numpy()
        A = tok.shape[-1]
        if not all_hist:
            all_hist, target_hist = [None] * A, [None] * A
        targets = tok[picked]  # (n, A)
        n += len(targets)
        for rule, pred in rule_predictions(tok, picked, am, None, window).items():
            hit = pred[picked] == targets
            correct[rule] = correct.get(rule, np.zeros(A, np.int64)) + hit.sum(0)
            if keep_tokens:
                kept.setdefault(rule, []).append(hit)
        if keep_tokens:
            piece, start = token_units(batch, picked_t)
            kept["targets"].append(targets)
            kept["piece"].append(piece)
            kept["window"].append(start)
        for j in range(A):
            all_hist[j] = _add_counts(all_hist[j], tok[..., j][am])
            target_hist[j] = _add_counts(target_hist[j], targets[:, j])
    if n == 0:
        raise ValueError("rule_accuracy: the dataset has no tokens")
    names = _attributes(data, A, attributes)
    if train_counts is not None and not isinstance(train_counts, Mapping):
        train_counts = token_counts(train_counts, batch_size, names)
    counts = [np.asarray(train_counts[a]) for a in names] if train_counts is not None else all_hist
    mf = [mode_of_counts(c) for c in counts]
    mf_correct = np.array([target_hist[j][m] if 0 <= m < len(target_hist[j]) else 0 for j, m in enumerate(mf)])
    correct = {"most_frequent": mf_correct, **correct}
    rules = {r: {a: float(correct[r][j] / n) for j, a in enumerate(names)} for r in RULES}
    out = {"rules": rules, "n_tokens": int(n), "most_frequent_ids": dict(zip(names, mf, strict=False)),
           "counts_from": "train_counts" if train_counts is not None else "evaluated windows",
           "ratio": float(ratio), "seed": int(seed), "window": int(window)}
    if keep_tokens:
        targets = np.concatenate(kept["targets"])
        hits = {"most_frequent": targets == np.asarray(mf, dtype=np.int64)[None, :]}
        hits.update({r: np.concatenate(kept[r]) for r in RULES if r != "most_frequent"})
        out["tokens"] = {"correct": hits, "piece": np.concatenate(kept["piece"]),
                         "window": np.concatenate(kept["window"])}
    return out


def rule_accuracy(data: Any, ratio: float = 0.15, seed: int = 0, batch_size: int = 16,
                  max_batches: int | None = None, train_counts: Mapping[str, Any] | Any = None,
                  attributes: Iterable[str] | None = None, window: int = WINDOW) -> dict[str, dict[str, float]]:
    """{rule: {attribute: accuracy}} of the three no-model rules (module docstring) on the
    notes that ``explain.recovery_accuracy(model, data, ratio, seed, batch_size)`` masks.

    ``data``: a DataLoader / iterable of collated batches, or a map-style dataset of
    samples (collated in order, ``batch_size`` per batch), as ``recovery_accuracy``.
    ``train_counts``: {attribute: id counts} or a dataset / loader to count on, for the
    most-frequent rule (default: the evaluated windows themselves).
    ``attributes``: names (default: the dataset's tokenizer's, else bar/position/pitch/duration).
    """
    return rule_stats(data, ratio, seed, batch_size, max_batches, train_counts, attributes, window)["rules"]


# ----------------------------------------------------------------------------- one piece (the app)

def piece_rule_table(tokenizer, pieces, ratio: float = 0.15, seed: int = 0, *, max_len: int | None = None,
                     train_counts: Mapping[str, Any] | None = None, window: int = WINDOW
                     ) -> dict[str, np.ndarray]:
    """{rule: (N, A) bool} correct per note and attribute, for one piece or a list of pieces
    (notes concatenated in order), under ``explain.explain_piece``'s masks (module docstring).

    ``max_len``: the model's (windows as ``explain_piece`` cuts them; default the
    tokenizer's). The most-frequent rule counts over every window of all the pieces
    (or ``train_counts``).
    """
    from .windows import gather_notes, note_owners, piece_windows, recovery_group_count, recovery_groups

    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if not isinstance(pieces, (list, tuple)):
        pieces = [pieces]
    attrs = list(tokenizer.attributes)
    A = len(attrs)
    max_len = int(max_len or tokenizer.config.max_len)
    K = recovery_group_count(ratio)
    hist: list[np.ndarray | None] = [None] * A
    per_piece = []  # (true ids (N, A), {rule: (N, A) bool})
    for piece in pieces:
        N = len(piece)
        if N == 0:
            continue
        wins = piece_windows(tokenizer, piece, tokenizer.encode(piece), max_len)
        owner, owner_pos = note_owners(wins, N)
        ok: dict[str, list[np.ndarray]] = {"copy_neighbour": [], "window_mode": []}
        for w, (wt, _) in enumerate(wins):
            wt = np.asarray(wt, dtype=np.int64)
            L = len(wt)
            for j in range(A):
                hist[j] = _add_counts(hist[j], wt[:, j])
            # explain_piece's groups: a seeded permutation of the window, group g masked in copy g
            group = recovery_groups(L, K, seed, w)
            G = min(K, L)
            picked = group[None, :] == np.arange(G)[:, None]  # (G, L)
            preds = rule_predictions(np.broadcast_to(wt, (G, L, A)), picked, np.ones((G, L), bool), None, window)
            for rule, pred in preds.items():
                # each position is masked in exactly one copy: read it there
                ok[rule].append(pred[group, np.arange(L)] == wt)
        true_ids = gather_notes([np.asarray(wt, dtype=np.int64) for wt, _ in wins], owner, owner_pos)
        per_piece.append((true_ids, {r: gather_notes(v, owner, owner_pos) for r, v in ok.items()}))
    if not per_piece:
        return {r: np.zeros((0, A), dtype=bool) for r in RULES}
    counts = [np.asarray(train_counts[a]) for a in attrs] if train_counts is not None else hist
    mf = np.array([mode_of_counts(c) for c in counts])
    true_all = np.concatenate([t for t, _ in per_piece])
    out = {"most_frequent": true_all == mf[None, :]}
    for rule in ("copy_neighbour", "window_mode"):
        out[rule] = np.concatenate([o[rule] for _, o in per_piece])
    return out


def piece_rules(tokenizer, piece, ratio: float = 0.15, seed: int = 0, *, max_len: int | None = None,
                train_counts: Mapping[str, Any] | None = None, window: int = WINDOW) -> dict[str, dict[str, float]]:
    """{rule: {attribute: accuracy}} on a piece (or a list of pieces, pooled) under the masks of
    ``explain.explain_piece(model, tokenizer, piece, ratio, seed=seed)`` with a model of
    ``max_len``: the reference marks for ``appstate.accuracy_of`` of that explain table."""
    return rule_means(piece_rule_table(tokenizer, piece, ratio, seed, max_len=max_len, train_counts=train_counts,
                                       window=window), tokenizer.attributes)


def rule_means(table: Mapping[str, np.ndarray], attributes: Sequence[str]) -> dict[str, dict[str, float]]:
    """{rule: {attribute: accuracy}} of a :func:`piece_rule_table` (NaN for no notes)."""
    return {r: {a: (float(ok[:, j].mean()) if len(ok) else float("nan")) for j, a in enumerate(attributes)}
            for r, ok in table.items()}


# ----------------------------------------------------------------------------- verdicts

def best_rule(rules: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[str, float]]:
    """{attribute: (rule, accuracy)} of the best rule per attribute (ties: the first in RULES order)."""
    attrs = list(next(iter(rules.values())).keys()) if rules else []
    out = {}
    for a in attrs:
        cand = [(r, float(rules[r][a])) for r in rules if a in rules[r] and np.isfinite(rules[r][a])]
        if cand:
            out[a] = max(cand, key=lambda x: x[1])
    return out


def beats_rules(model_acc: Mapping[str, float], rules: Mapping[str, Mapping[str, float]]) -> dict[str, bool]:
    """{attribute: model accuracy strictly above every rule} for the attributes in both."""
    best = best_rule(rules)
    return {a: bool(float(model_acc[a]) > best[a][1]) for a in model_acc if a in best}


def rule_leads(model_correct: Mapping[str, np.ndarray], rule_tables: Mapping[str, np.ndarray],
               attributes: Sequence[str], units: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
               level: float = 0.95) -> dict[str, tuple[float, float]]:
    """{attribute: (lo, hi)}: the ``level`` interval of the model's lead over the best rule (by
    accuracy) on the same masked notes, from a paired bootstrap over ``units`` (a piece's 4-bar
    spans, or pieces). ``model_correct[a]``: (N,) per note (NaN: not scored); ``rule_tables``:
    :func:`piece_rule_table`'s (N, A) per rule, the notes in the same order."""
    from .verdict import paired_bootstrap

    units = np.asarray(units)
    _, unit_ids = np.unique(units, return_inverse=True)
    out = {}
    for j, a in enumerate(attributes):
        m = np.asarray(model_correct.get(a, []), dtype=float)
        if m.shape != units.shape or not rule_tables:
            continue
        ok = np.isfinite(m)
        best = max(rule_tables, key=lambda r: float(rule_tables[r][ok, j].mean()) if ok.any() else -1.0)
        d = np.where(ok, m - rule_tables[best][:, j], 0.0)
        sums = np.bincount(unit_ids, weights=d)
        counts = np.bincount(unit_ids, weights=ok.astype(float))
        boot = paired_bootstrap(sums, counts, n_boot=n_boot, seed=seed, level=level)
        out[a] = (float(boot["lo"][0]), float(boot["hi"][0]))
    return out


def corpus_leads(model_tokens: Mapping[str, Any], rule_tokens: Mapping[str, Any], attributes: Sequence[str], *,
                 n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The model's lead over the best rule per attribute on a dataset's masked notes, with a
    paired bootstrap interval (:func:`rule_leads`) over pieces when there are at least
    ``verdict.MIN_UNITS['piece']`` of them, else over windows (contiguous, non-overlapping at
    the default stride) when there are that many, else none. ``model_tokens``:
    ``masks.validate(..., keep_tokens=True)["tokens"]``; ``rule_tokens``: ``rule_stats(...,
    keep_tokens=True)["tokens"]`` on the same batches. Returns ``unit`` ('piece' | 'window' |
    None), ``n_units`` and ``leads`` {attribute: (lo, hi)} (empty when ``unit`` is None)."""
    from .verdict import MIN_UNITS

    piece = np.asarray(model_tokens["piece"])
    window = np.asarray(model_tokens["window"])
    if not (np.array_equal(piece, rule_tokens["piece"]) and np.array_equal(window, rule_tokens["window"])):
        raise ValueError("the model's and the rules' masked notes differ (not the same batches and masks)")
    def windows() -> np.ndarray:  # one id per (piece, window start)
        return np.unique(np.stack([piece, window], axis=1), axis=0, return_inverse=True)[1].ravel()

    n = 0
    for unit, ids_of in (("piece", lambda: piece), ("window", windows)):
        ids = ids_of() if len(piece) else piece
        n = len(np.unique(ids))
        if n >= MIN_UNITS["piece"]:
            correct = np.asarray(model_tokens["correct"], dtype=float)
            model = {a: correct[:, j] for j, a in enumerate(attributes)}
            leads = rule_leads(model, rule_tokens["correct"], attributes, ids, n_boot=n_boot, seed=seed)
            return {"unit": unit, "n_units": n, "leads": leads}
    return {"unit": None, "n_units": int(n), "leads": {}}


def lead_word(above: bool, interval: Sequence[float] | None) -> str:
    """The verdict on one attribute from a lead over the best rule: 'learned' (above every rule,
    the lead's interval above 0), 'ahead, within chance' (above, the interval includes 0), 'ahead,
    not tested' (above, no interval) or 'NOT above the rules'."""
    if not above:
        return "NOT above the rules"
    if interval is None:
        return "ahead, not tested"
    return "learned" if interval[0] > 0 else "ahead, within chance"


def lead_record(lead: Mapping[str, Any], level: float = 0.95) -> dict[str, Any]:
    """:func:`corpus_leads`' result as JSON keeps it (``lead_interval`` of ``smu evaluate --json``
    and of the study's pre-training results)."""
    return {"unit": lead["unit"], "n_units": lead["n_units"], "level": level,
            "leads": {a: list(iv) for a, iv in lead["leads"].items()}}


def verdict(model_acc: Mapping[str, float], rules: Mapping[str, Mapping[str, float]],
            fmt: Callable[[float], str] = "{:.3f}".format,
            leads: Mapping[str, tuple[float, float]] | None = None) -> tuple[list[str], str]:
    """Plain sentences: one per attribute ('pitch: 0.09 vs copy the neighbour 0.05 - learned')
    and a summary line. A lead that the numbers as shown by ``fmt`` do not show is a tie, never
    'learned' (0.1004 vs 0.1001 as '10.0% vs 10.0%'); with ``leads`` (:func:`rule_leads`) a lead
    whose interval includes 0 is 'ahead, within chance', not 'learned'."""
    best = best_rule(rules)
    strict = beats_rules(model_acc, rules)
    shown = {a: (fmt(float(model_acc[a])), fmt(best[a][1])) for a in strict}
    beats = {a: ok and shown[a][0] != shown[a][1] for a, ok in strict.items()}
    chance = {a for a, ok in beats.items() if ok and leads and a in leads and not leads[a][0] > 0}
    beats = {a: ok and a not in chance for a, ok in beats.items()}

    def said(a: str, m: str, r: str) -> str:
        if a in chance:
            lo, hi = leads[a]
            return f"ahead, within chance (95% interval of the lead {100 * lo:+.1f} to {100 * hi:+.1f} points)"
        return "learned" if beats[a] else "tied with the rule as shown" if m == r else "not above the rule"

    lines = [f"{a}: {m} vs {RULE_LABELS.get(best[a][0], best[a][0])} {r} - {said(a, m, r)}"
             for a, (m, r) in shown.items()]
    if beats and all(beats.values()):
        summary = "Above every no-model rule on every attribute: the model uses the context."
    elif beats and not any(beats.values()):
        summary = ("Not clearly above the no-model rules on any attribute: what this model shows "
                   "(masker scores, guesses, attributions) is close to noise.")
    elif beats:
        weak = ", ".join(a for a, ok in beats.items() if not ok)
        summary = (f"Not clearly above the no-model rules on {weak}: what this model shows about "
                   f"{'that attribute' if ',' not in weak else 'those attributes'} is close to noise.")
    else:
        summary = "No attribute to compare."
    return lines, summary


# ----------------------------------------------------------------------------- context destroyed

def context_destroyed_accuracy(model, data: Any, ratio: float = 0.15, seed: int = 0, batch_size: int = 16,
                               max_batches: int | None = None, mode: str = "uniform") -> dict[str, float]:
    """{attribute: accuracy} of ``model`` on the masks of ``recovery_accuracy`` (same batches,
    ``seed``) when every unmasked real note is replaced by random tokens: ``mode='uniform'``
    (each attribute uniform over its regular ids) or ``'shuffle'`` (the unmasked tokens of
    the batch permuted, per attribute). Random draws: a CPU generator seeded by
    (seed, batch index, 1). Compare with ``recovery_accuracy``: a model that uses the
    context loses accuracy; one at the unigram stage does not."""
    import torch

    from .masks import attention_mask_of, per_token_correct, validation_mask
    from .model import unwrap

    if mode not in ("uniform", "shuffle"):
        raise ValueError(f"mode must be 'uniform' or 'shuffle', not {mode!r}")
    m = unwrap(model)
    attrs = list(m.config.attributes)
    vocab = list(m.config.vocab_sizes)
    device = next(m.parameters()).device
    was_training = model.training
    model.eval()
    n, correct = 0, np.zeros(len(attrs), np.int64)
    try:
        with torch.no_grad():
            for i, batch in _batches(data, batch_size, max_batches):
                tokens = batch["tokens"].cpu().long()
                am = attention_mask_of(batch).cpu()
                picked = validation_mask(am, i, ratio, seed)
                ctx = am & ~picked
                g = torch.Generator().manual_seed(
                    int(np.random.SeedSequence([int(seed), int(i), 1]).generate_state(1)[0]))
                noisy = tokens.clone()
                if mode == "uniform":
                    span = torch.tensor([v - N_SPECIAL for v in vocab], dtype=torch.float64)
                    rnd = (torch.rand(tokens.shape, generator=g, dtype=torch.float64) * span).long()
                    rnd = torch.minimum(rnd, span.long() - 1) + N_SPECIAL
                    noisy[ctx] = rnd[ctx]
                else:
                    vals = tokens[ctx]  # (n_ctx, A)
                    noisy[ctx] = torch.stack([vals[torch.randperm(len(vals), generator=g), j]
                                              for j in range(len(attrs))], dim=1)
                noisy[picked] = MASK_ID
                out = model(noisy.to(device), am.to(device), heads_at=picked.to(device), only_heads_at=True)
                targets = tokens[picked].to(device)
                correct += per_token_correct(out["logits"], targets).sum(0).cpu().numpy()
                n += int(targets.shape[0])
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("context_destroyed_accuracy: the dataset has no tokens")
    return {a: float(correct[j] / n) for j, a in enumerate(attrs)}
