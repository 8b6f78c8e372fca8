"""One draw of one piece (the Explore page's "Draw a masking"): a uniform random draw and the
masker's pick of the same number of notes, what the model recovers under each (with a paired
interval over the piece's 4-bar spans, at least as wide as shuffling the two masks' notes within
them), and what the picked notes have in common within the passages they are in (classes named
only when random draws of as many notes within the same 4-bar spans give so unlikely a difference
in any class tested in at most 5% of cases). The measurement over pieces and folders, its
sentence and its table are ``picks.py``; this module uses its rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .harmony import ROLE_ORDER
from .picks import (
    BLOCK_BARS,
    MIN_BLOCKS,
    UNNAMED,
    and_list,
    boot_weights,
    class_order,
    excludes_zero,
    label_values,
    percentile_interval,
    phrase,
    safe_ratio,
)

# The Explore page's "Draw a masking": a uniform random draw and the masker's pick of the same
# number of notes, what the model recovers under each, and what the picked notes have in common.

#: the label columns a draw's profile reads (``role`` only where the piece has POP909 tracks)
DRAW_COLUMNS = ("chord_tone", "voice_position", "metric", "duration", "register", "repeated", "role")
#: a class is named when random draws within the picks' spans give a difference as unlikely, in any
#: class tested, rarely enough (:func:`pick_profile`), the picks hold (or would hold, drawn at random
#: in their spans) at least this many of its notes, and the difference from the expected share is
#: at least ``DRAW_MIN_DIFF`` (5 points of the picks' share)
DRAW_MIN_PICKED = 3
DRAW_MIN_DIFF = 0.05
#: random draws of as many notes that a draw's decisions are compared with: the recovery
#: difference's shuffles (:func:`recovery_difference`) and the profile's draws (:func:`pick_profile`)
DRAW_SHUFFLES = 1999


def random_like(picked, selectable=None, seed: int = 0) -> np.ndarray:
    """A uniform random mask of as many notes as ``picked`` holds, drawn among ``selectable``
    (default: every note; the app passes the notes that are not frozen), seeded by ``seed``."""
    picked = np.asarray(picked, dtype=bool)
    sel = np.ones(len(picked), dtype=bool) if selectable is None else np.asarray(selectable, dtype=bool)
    if len(sel) != len(picked):
        raise ValueError("picked and selectable must have one entry per note")
    idx = np.flatnonzero(sel)
    k = min(int(picked.sum()), idx.size)
    out = np.zeros(len(picked), dtype=bool)
    if k:
        out[np.random.default_rng(int(seed)).choice(idx, size=k, replace=False)] = True
    return out


def mask_recovery(model, tokenizer, piece, masks: Mapping[str, Any], *, batch_size: int = 16,
                  precision: str = "fp32") -> dict[str, dict[str, Any]]:
    """What ``model`` recovers when the notes of each mask are hidden all at once (replaced by
    MASK in every window of the piece that holds them; a note is read in its owner window, the
    one where it is farthest from an edge, as in ``explain.explain_piece``).

    ``masks``: {name: bool array over the piece's notes}. Returns {name: {"n": masked notes,
    "accuracy": {attribute: share of the masked notes whose value is the model's top guess},
    "mean": the mean over the attributes, "notes": the masked notes, "hits": each one's share of
    attributes guessed right}} (accuracies None when the mask is empty)."""
    import torch

    from .model import unwrap
    from .precision import autocast
    from .tokenizer import MASK_ID, N_SPECIAL
    from .windows import note_owners, pad_windows, piece_windows

    m = unwrap(model)
    attrs = list(m.config.attributes)
    N = len(piece)
    arrays = {k: np.asarray(v, dtype=bool) for k, v in masks.items()}
    for k, v in arrays.items():
        if len(v) != N:
            raise ValueError(f"mask {k!r} has {len(v)} entries for {N} notes")
    out: dict[str, dict[str, Any]] = {}
    empty = {"n": 0, "accuracy": {a: None for a in attrs}, "mean": None, "notes": [], "hits": []}
    if N == 0:
        return {k: dict(empty) for k in arrays}
    tokens = tokenizer.encode(piece)
    wins = piece_windows(tokenizer, piece, tokens, m.config.max_len)
    owner, _ = note_owners(wins, N)
    device = next(m.parameters()).device
    was = model.training
    model.eval()
    try:
        for name, mask in arrays.items():
            if not mask.any():
                out[name] = dict(empty)
                continue
            correct = np.zeros((N, len(attrs)), dtype=bool)
            jobs = [w for w, (_, ids) in enumerate(wins) if mask[ids].any() and (owner[ids[mask[ids]]] == w).any()]
            for i in range(0, len(jobs), batch_size):
                chunk = jobs[i:i + batch_size]
                tok, am = pad_windows([wins[w][0] for w in chunk], device)
                hide = torch.zeros_like(am)
                for r, w in enumerate(chunk):
                    hide[r, : len(wins[w][1])] = torch.from_numpy(mask[wins[w][1]])
                with torch.no_grad(), autocast(device, precision):
                    res = model(tok.masked_fill(hide[..., None], MASK_ID), am, heads_at=hide, only_heads_at=True)
                rows, cols = (x.cpu().numpy() for x in hide.nonzero(as_tuple=True))
                target = tok[hide].cpu().numpy()
                win = np.asarray(chunk)[rows]
                note = np.asarray([wins[w][1][c] for w, c in zip(win, cols, strict=False)], dtype=np.int64)
                mine = owner[note] == win  # read each note in its owner window
                for j, lg in enumerate(res["logits"]):
                    lg = lg.float()
                    lg[:, :N_SPECIAL] = -torch.inf  # guesses are regular values only
                    ok = lg.argmax(-1).cpu().numpy() == target[:, j]
                    correct[note[mine], j] = ok[mine]
            sel = np.flatnonzero(mask)
            acc = {a: float(correct[sel, j].mean()) for j, a in enumerate(attrs)}
            out[name] = {"n": int(sel.size), "accuracy": acc, "mean": float(np.mean(list(acc.values()))),
                         "notes": sel.tolist(), "hits": correct[sel].mean(1).tolist()}
    finally:
        model.train(was)
    return out


def recovery_difference(rec: Mapping[str, Mapping[str, Any]], labels: pd.DataFrame, *, random: str = "random",
                        masker: str = "masker", n_boot: int = 1000, n_shuffle: int = DRAW_SHUFFLES, seed: int = 0,
                        level: float = 0.95) -> dict[str, Any]:
    """The masker's pick minus the random draw in :func:`mask_recovery`'s ``rec`` (recovery, the
    mean over the attributes), with a ``level`` interval over the piece's ``BLOCK_BARS``-bar spans
    (``labels``' ``bar``), the wider of two, both centred on the difference:

    - a shuffle of the two masks' notes within each span (``n_shuffle`` times): half its width is
      the difference that at most ``1 - level`` of the shuffles exceed (counting the draw itself),
      so where a note's recovery does not depend on the mask that holds it (the notes of a span
      alike, spans may differ) it excludes 0 in at most ``1 - level`` of draws, however few and
      lumpy the notes;
    - a paired bootstrap of the spans (``n_boot`` resamples, both masks' notes of a span
      together; percentile interval, its half-width times sqrt(n / (n - 1)) for n spans, the
      bootstrap's variance bias): it allows for a mask's notes of a span that are hard or easy
      together, which the shuffle takes for independent.

    On simulated noise the bootstrap alone (with a t quantile, as before) said "harder" in about 6%
    of draws at 10-12 spans; the pair, in 3.5-4.3% at 10-50 spans, with about the same power.

    No interval when the spans that hold notes of both masks are fewer than ``MIN_BLOCKS``. Returns
    {"est", "lo", "hi", "n_blocks" (those spans), "level", "n_shuffle"} (None where it cannot be
    computed); the difference of one draw, not of the masker in general. Seeded by ``seed``."""
    block = _block_ids(labels)
    B = int(block.max()) + 1 if len(block) else 0
    out: dict[str, Any] = {"est": None, "lo": None, "hi": None, "n_blocks": B, "level": float(level),
                           "n_shuffle": int(n_shuffle)}
    a, b = rec.get(random) or {}, rec.get(masker) or {}
    if not a.get("hits") or not b.get("hits"):
        return out
    notes = [block[np.asarray(r["notes"], dtype=np.int64)] for r in (a, b)]
    hits = [np.asarray(r["hits"], dtype=float) for r in (a, b)]
    sums = [np.bincount(nb, weights=h, minlength=B) for nb, h in zip(notes, hits, strict=True)]
    counts = [np.bincount(nb, minlength=B).astype(float) for nb in notes]
    units = int(min((c > 0).sum() for c in counts))
    est = float(hits[1].mean() - hits[0].mean())
    out.update(est=est, n_blocks=units)
    if units < MIN_BLOCKS:
        return out
    w = boot_weights(B, n_boot, seed) if n_boot > 0 and B > 1 else np.zeros((0, B))
    boots = safe_ratio(w @ sums[1], w @ counts[1]) - safe_ratio(w @ sums[0], w @ counts[0])
    iv = percentile_interval(est, boots, level)
    halves = [] if iv["lo"] is None else [(iv["hi"] - iv["lo"]) / 2 * math.sqrt(units / (units - 1))]
    if n_shuffle > 0:
        halves.append(_shuffle_half(np.concatenate(hits), np.concatenate(notes), counts[1].astype(np.int64),
                                    n_shuffle, level, seed))
    if not halves:
        return out
    half = max(halves)
    return {**out, "lo": est - half, "hi": est + half}


def _shuffle_half(values: np.ndarray, groups: np.ndarray, n_take: np.ndarray, n_shuffle: int, level: float,
                  seed: int) -> float:
    """Half the width of the shuffle interval of :func:`recovery_difference`: ``values`` (both
    masks' notes' hits, random draw first), ``groups`` (their spans), ``n_take`` (per span, the
    masker's notes in it). Each shuffle gives the masker ``n_take`` of its span's values at random
    (a multivariate hypergeometric draw over the distinct values: exact, and fast however many
    notes); the difference of means is then compared with the real one. Returns the value that
    |difference| must exceed for the shuffles to reach one at least as large in at most
    ``1 - level`` of cases (rank rule with the draw itself: (1 + exceeding) / (n + 1) <= 1 - level)."""
    n1 = int(n_take.sum())
    n0 = len(values) - n1
    vals, code = np.unique(values, return_inverse=True)
    table = np.zeros((len(n_take), len(vals)), dtype=np.int64)
    np.add.at(table, (groups, code.ravel()), 1)
    rng = np.random.default_rng([int(seed), 1])
    taken = np.zeros(n_shuffle)
    for g in np.flatnonzero(n_take):
        if np.count_nonzero(table[g]) == 1:  # one value: every shuffle takes the same
            taken += vals[table[g] > 0][0] * n_take[g]
            continue
        taken += rng.multivariate_hypergeometric(table[g], int(n_take[g]), size=n_shuffle, method="count") @ vals
    diff = np.sort(np.abs(taken / n1 - (values.sum() - taken) / n0))
    return float(diff[_rank(level, n_shuffle)])


def _rank(level: float, n: int) -> int:
    """The index (0-based, ascending) of the shuffles' or draws' statistic that the real one must
    exceed: then at most (1 - level)(n + 1) - 1 of the n are as extreme, and chance, the real one
    counted among them, gets there in at most 1 - level of cases. ValueError when n is too few."""
    k = math.ceil(level * (n + 1) - 1e-9) - 1
    if not 0 <= k < n:
        raise ValueError(f"{n} random draws are too few for a {level:.0%} decision")
    return k


def shown_points(rec: Mapping[str, Mapping[str, Any]], *, random: str = "random",
                 masker: str = "masker") -> tuple[float, float, float]:
    """The two recoveries as shown (percent, one decimal) and their difference in points, the
    difference of the shown values (so the words never contradict the numbers)."""
    pa, pb = (round(100 * float(rec[k]["mean"]), 1) for k in (random, masker))
    return pa, pb, round(pb - pa, 1)


def recovery_sentence(rec: Mapping[str, Mapping[str, Any]], diff: Mapping[str, Any] | None = None, *,
                      random: str = "random", masker: str = "masker") -> str:
    """One sentence on a draw's outcome from :func:`mask_recovery`'s result: how much the model
    recovers under the random draw and under the masker's pick (:func:`shown_points`), and which
    was harder only when the interval of ``diff`` (:func:`recovery_difference`) excludes 0;
    else "no clear difference"."""
    a, b = rec.get(random), rec.get(masker)
    if not a or not b or a.get("mean") is None or b.get("mean") is None:
        return "No notes were hidden, so there is nothing to recover."
    n = int(b["n"])
    pa, pb, d = shown_points(rec, random=random, masker=masker)
    blocks = int((diff or {}).get("n_blocks", 0))
    span = f"over the piece's {blocks} spans of {BLOCK_BARS} bars"
    if not diff or diff.get("lo") is None:
        how = (f"{d:+.1f} points for the masker's pick, but one draw of a piece of {blocks} spans of {BLOCK_BARS} "
               f"bars is too little music to tell which was harder (at least {MIN_BLOCKS} are needed)"
               if diff else f"{d:+.1f} points for the masker's pick, from one draw with no interval: no verdict")
    else:
        iv = f"{d:+.1f} points, 95% interval [{100 * diff['lo']:+.1f}, {100 * diff['hi']:+.1f}] {span}"
        if not excludes_zero(diff) or abs(d) < 0.1 or (d < 0) != (diff["est"] < 0):
            how = f"no clear difference ({iv})"
        elif d < 0:
            how = f"the masker's pick was harder ({iv})"
        else:
            how = f"the random draw was harder ({iv}): this time the masker did not find harder notes"
    return (f"With {n} note{'s' if n != 1 else ''} hidden in one draw, the model put back {pa:.1f}% of their "
            f"attributes under the random draw and {pb:.1f}% under the masker's pick (mean over "
            f"{', '.join(a['accuracy'])}): {how}.")


def _block_ids(table: pd.DataFrame) -> np.ndarray:
    """4-bar spans (``BLOCK_BARS``) of the notes: the units a one-piece bootstrap resamples."""
    if "bar" not in table.columns or not len(table):
        return np.zeros(len(table), dtype=np.int64)
    _, inv = np.unique(table["bar"].to_numpy(dtype=np.int64) // BLOCK_BARS, return_inverse=True)
    return inv.ravel()


def pick_profile(labels: pd.DataFrame, picked, pool=None, *, columns: Sequence[str] = DRAW_COLUMNS,
                 n_boot: int = 1000, n_draws: int = DRAW_SHUFFLES, seed: int = 0,
                 level: float = 0.95) -> dict[str, Any]:
    """What the ``picked`` notes of one piece have in common, within the passages they are in:
    per class of each label column (``harmony.analyze``'s labels, plus ``bar`` for the piece's
    ``BLOCK_BARS``-bar spans), the share of the picked notes in the class against the share
    expected from their spans (in each span, as many notes as the masker picked there, drawn at
    random among the span's ``pool`` notes, the notes a random draw picks from; default every
    note) and against its share of the whole pool; the difference from the expected share with a
    percentile bootstrap interval over the spans (``n_boot`` resamples; a description, not the
    decision); and the decision: how often ``n_draws`` random draws of as many notes within the
    same spans give a difference as unlikely (:func:`_draw_test`). So a masker that only favours
    some passages, whose classes differ from the rest of the piece, names no class: what is named
    is a preference among the notes of the passages it picks from. ``role`` is read only when
    some note has a POP909 track role. Seeded by ``seed``; JSON-serialisable.

    Returns {"n_picked", "n_pool", "n_blocks", "n_blocks_picked", "level", "n_boot", "n_draws",
    "seed", "n_tested", "columns": {column: [{"class", "n_picked", "n_pool", "share_picked",
    "share_pool", "share_expected", "diff": {est, lo, hi}, "tested", "p", "p_family", "clear"}]}};
    ``share_expected``: the class's expected share of the picks drawn at random within their own
    spans (sum over the spans of n_s q_sc / Q_s, over the picks); ``diff``: ``share_picked`` minus
    ``share_expected``, its bootstrap interval not corrected; ``tested``: the class is one of the
    ``n_tested`` candidates (the picks hold, or are expected to hold, at least ``DRAW_MIN_PICKED``
    of its notes; of a two-class column one class); ``p``: the chance that a random draw within the
    spans holds a count of the class as far from the expected one (exact: a sum of hypergeometric
    counts, one per span); ``p_family``: the share of the draws in which some class that could be
    named is as unlikely (corrected for the classes tested); ``clear``: the piece has at least
    ``MIN_BLOCKS`` blocks, the class is tested, the difference is at least ``DRAW_MIN_DIFF`` and
    ``p_family`` is at most ``1 - level`` (of a two-class column both rows, as the tested one).
    Chance, picks unrelated to the classes within each span, however they spread over the spans,
    makes some class clear in at most ``1 - level`` of the pieces, however rare the classes."""
    picked = np.asarray(picked, dtype=bool)
    pool = np.ones(len(picked), dtype=bool) if pool is None else np.asarray(pool, dtype=bool)
    if len(labels) != len(picked) or len(pool) != len(picked):
        raise ValueError("labels, picked and pool must have one row per note")
    pool = pool | picked
    block = _block_ids(labels)
    B = int(block.max()) + 1 if len(block) else 0
    n_s = np.bincount(block[picked], minlength=B).astype(float)
    out: dict[str, Any] = {"n_picked": int(picked.sum()), "n_pool": int(pool.sum()), "n_blocks": B,
                           "n_blocks_picked": int((n_s > 0).sum()), "level": float(level), "n_boot": int(n_boot),
                           "n_draws": int(n_draws), "seed": int(seed), "n_tested": 0, "columns": {}}
    if not picked.any():
        return out
    n = out["n_picked"]
    Q_s = np.bincount(block[pool], minlength=B).astype(float)
    w = boot_weights(B, n_boot, seed) if n_boot > 0 and B > 1 else np.zeros((0, B))
    codes = {}
    for col in columns:
        if col not in labels.columns:
            continue
        lab = label_values(labels, col)
        if col == "role" and not any(v in ROLE_ORDER[:3] for v in lab):
            continue
        present = set(lab[pool])
        classes = [c for c in class_order(col) if c in present] + sorted(present - set(class_order(col)))
        code = {c: i for i, c in enumerate(classes)}
        C = len(classes)
        pc = np.zeros((B, C))
        qc = np.zeros((B, C))
        ci = np.asarray([code.get(v, -1) for v in lab])
        np.add.at(pc, (block[picked], ci[picked]), 1.0)
        np.add.at(qc, (block[pool], ci[pool]), 1.0)
        ec = safe_ratio(n_s[:, None] * qc, Q_s[:, None])  # per span, its picks' expected count of each class
        sp_full, se_full, sq_full = pc.sum(0) / n, ec.sum(0) / n, qc.sum(0) / qc.sum()
        if len(w):
            wn = (w @ n_s)[:, None]
            boots = safe_ratio(w @ pc, wn) - safe_ratio(w @ ec, wn)
        else:
            boots = np.zeros((0, C))
        rows = []
        for c_i, c in enumerate(classes):
            n_pick = int(pc[:, c_i].sum())
            rows.append({"class": c, "n_picked": n_pick, "n_pool": int(qc[:, c_i].sum()),
                         "share_picked": float(sp_full[c_i]), "share_pool": float(sq_full[c_i]),
                         "share_expected": float(se_full[c_i]),
                         "diff": percentile_interval(float(sp_full[c_i] - se_full[c_i]), boots[:, c_i], level),
                         "tested": bool(max(n_pick, se_full[c_i] * n) >= DRAW_MIN_PICKED
                                        and (col, c) not in UNNAMED),
                         "p": None, "p_family": None, "clear": False})
        if len(rows) == 2:  # two classes: one difference, the other's mirror; test it once
            rows[_mirror(rows)]["tested"] = False
        out["columns"][col] = rows
        codes[col] = ci[pool]
    out["n_tested"] = sum(r["tested"] for rs in out["columns"].values() for r in rs)
    if B >= MIN_BLOCKS and codes:
        _draw_test(out, codes, picked[pool], block[pool], n_draws, seed)
    return out


def _draw_test(profile: dict[str, Any], codes: Mapping[str, np.ndarray], picked: np.ndarray, block: np.ndarray,
               n_draws: int, seed: int) -> None:
    """The profile's decision: sets each row's ``p``, ``p_family`` and ``clear``
    (:func:`pick_profile`). ``codes``: per column, the class index of each pool note; ``picked``:
    which pool notes the masker picked; ``block``: each pool note's span. The null is a random
    draw within the picks' spans: ``n_draws`` draws that take, in each span, as many notes as the
    masker picked there, uniformly among the span's pool notes (multivariate hypergeometric over
    the span's combinations of classes, so the columns' counts come together; summed over the
    spans). In each draw, the smallest exact ``p`` among the classes that could be named (tested,
    at least ``DRAW_MIN_DIFF`` from the expected share); a class is clear when that smallest ``p``
    is as small as its own in at most ``1 - level`` of the draws, counting the masker's (min-p,
    Westfall and Young: family-wise, and exact for any number of notes and spans)."""
    level = profile["level"]
    limit = n_draws - 1 - _rank(level, n_draws)  # at most this many draws as extreme: clear
    n = int(picked.sum())
    cols = list(codes)
    combo, joint = np.unique(np.stack([codes[c] for c in cols], axis=1), axis=0, return_inverse=True)
    joint = joint.ravel()
    B = int(block.max()) + 1
    n_s = np.bincount(block[picked], minlength=B)
    Q_s = np.bincount(block, minlength=B)
    spans = np.flatnonzero(n_s)
    table = np.zeros((B, len(combo)), dtype=np.int64)  # per span, its pool notes of each combination
    np.add.at(table, (block, joint), 1)
    sizes = [len(profile["columns"][col]) for col in cols]
    starts = np.cumsum([0, *sizes])
    onehot = np.zeros((len(combo), starts[-1]), dtype=np.int64)  # each combination's class per column, side by side
    for j in range(len(cols)):
        onehot[np.arange(len(combo)), starts[j] + combo[:, j]] = 1
    # the draws: per span, its combinations' counts side by side (one column per combination present)
    present = [np.flatnonzero(table[s]) for s in spans]
    ends = np.cumsum([idx.size for idx in present])
    draws = np.empty((n_draws, int(ends[-1])), dtype=np.float32)  # counts < 2**24: exact in float32
    rng = np.random.default_rng([int(seed), 2])
    for s, idx, end in zip(spans, present, ends, strict=True):
        if idx.size == 1 or n_s[s] == Q_s[s]:  # every draw takes the same
            draws[:, end - idx.size:end] = table[s, idx] if n_s[s] == Q_s[s] else n_s[s]
        else:
            draws[:, end - idx.size:end] = rng.multivariate_hypergeometric(table[s, idx], int(n_s[s]), size=n_draws,
                                                                           method="count")
    counts_all = np.rint(draws @ onehot[np.concatenate(present)].astype(np.float32)).astype(np.int64)
    own_all = np.bincount(joint[picked], minlength=len(combo)) @ onehot
    q_all = table[spans] @ onehot  # per span with picks, its pool notes of each class
    candidates = [(j, c_i, starts[j] + c_i) for j, col in enumerate(cols)
                  for c_i, row in enumerate(profile["columns"][col])
                  if (col, row["class"]) not in UNNAMED
                  and not (sizes[j] == 2 and c_i == _mirror(profile["columns"][col]))]
    pmfs = _span_pmf(Q_s[spans], q_all[:, [k for *_, k in candidates]], n_s[spans], n)
    min_p = np.ones(n_draws)
    found = []
    for (j, c_i, k), pmf in zip(candidates, pmfs, strict=True):
        row = profile["columns"][cols[j]][c_i]
        expected = row["share_expected"] * n
        p_of = _tail_p(pmf, expected)
        x = counts_all[:, k]
        can = (np.maximum(x, expected) >= DRAW_MIN_PICKED) & (np.abs(x - expected) / n >= DRAW_MIN_DIFF)
        min_p = np.minimum(min_p, np.where(can, p_of[x], 1.0))
        if row["tested"]:
            row["p"] = float(p_of[own_all[k]])
            found.append((cols[j], c_i, row, bool(abs(own_all[k] - expected) / n >= DRAW_MIN_DIFF)))
    for col, c_i, row, big in found:
        as_small = int((min_p <= row["p"] * (1 + 1e-9)).sum())
        row["p_family"] = (1 + as_small) / (n_draws + 1)
        row["clear"] = big and as_small <= limit
        rows = profile["columns"][col]
        if len(rows) == 2:
            rows[1 - c_i]["clear"] = row["clear"]


def _mirror(rows: Sequence[Mapping[str, Any]]) -> int:
    """Of a two-class column, the class not tested (the larger; its difference mirrors the other's)."""
    return int(rows[0]["n_pool"] < rows[1]["n_pool"])


def _span_pmf(total: np.ndarray, in_class: np.ndarray, n_take: np.ndarray, n: int) -> np.ndarray:
    """The distribution (over 0..n) of a class's count among notes drawn without replacement span
    by span: in span s, ``n_take[s]`` of its ``total[s]`` notes, ``in_class[s, c]`` of them in class
    c (hypergeometric per span, exact; convolved over the spans, ``n`` the sum of ``n_take``).
    Returns one row per class (column of ``in_class``)."""
    from scipy.stats import hypergeom

    total, n_take = np.asarray(total, dtype=np.int64), np.asarray(n_take, dtype=np.int64)
    in_class = np.asarray(in_class, dtype=np.int64).reshape(len(total), -1).T  # classes x spans
    pmf = np.zeros((len(in_class), n + 1))
    pmf[:, 0] = 1.0
    top = 0
    for s in range(len(total)):  # convolve span by span (exact, never negative)
        Q, k, q = total[s], n_take[s], in_class[:, s:s + 1]
        part = hypergeom.pmf(np.arange(k + 1)[None, :], Q, q, k)  # (classes, k + 1); 0 where impossible
        acc = pmf[:, :top + 1].copy()
        pmf[:, :top + k + 1] = 0.0
        for x in range(k + 1):
            pmf[:, x:x + top + 1] += acc * part[:, x:x + 1]
        top += int(k)
    return pmf


def _tail_p(pmf: np.ndarray, mean: float) -> np.ndarray:
    """Per count 0..n with distribution ``pmf`` (mean ``mean``): the chance of a count at least as
    far from the mean (two-sided, exact)."""
    x = np.arange(len(pmf))
    dev = np.abs(x - mean)
    order = np.argsort(dev, kind="stable")
    tail = np.cumsum(pmf[order][::-1])[::-1]  # tail[i]: the chance of the i-th smallest deviation or more
    p = tail[np.searchsorted(dev[order], dev - 1e-9, side="left")]
    return np.minimum(p, 1.0)


def pick_sentence(profile: Mapping[str, Any], *, pool: str = "the notes a random draw picks from") -> str:
    """One sentence on what the picked notes have in common (:func:`pick_profile`): up to three
    classes over-represented among the picks and two under-represented, largest first, each
    with its share of the picks against the share expected from the passages (4-bar spans) they
    are in, random notes of the ``pool`` in each span, as many as picked there; only ``clear``
    classes (of a two-class column only the over-represented side); else it says no class stands
    out. It says how a class is named: against random draws of as many notes within the same
    spans, corrected for the classes tested."""
    n = int(profile.get("n_picked", 0))
    if n == 0:
        return "The masker picked no notes, so there is nothing to describe."
    found = []
    for col, rows in profile.get("columns", {}).items():
        for row in rows:
            if not row["clear"] or (len(rows) == 2 and row["diff"]["est"] < 0):
                continue
            found.append((col, row))
    found.sort(key=lambda cr: (-abs(cr[1]["diff"]["est"]), cr[0], cr[1]["class"]))
    seen: set[str] = set()
    up, down = [], []
    for col, row in found:
        ph = phrase(col, row["class"])
        if ph in seen:
            continue
        seen.add(ph)
        text = (f"{ph} ({row['share_picked']:.0%} of the picks vs "
                f"{row.get('share_expected', row['share_pool']):.0%} expected from the passages they are in)")
        (up if row["diff"]["est"] > 0 else down).append(text)
    up, down = up[:3], down[:2]
    blocks = int(profile.get("n_blocks", 0))
    if blocks < MIN_BLOCKS:
        return (f"The piece is too short to say what the {n} picked notes have in common: {blocks} "
                f"span{'s' if blocks != 1 else ''} of {BLOCK_BARS} bars, and at least {MIN_BLOCKS} are needed.")
    k, alpha = int(profile.get("n_tested", 0)), 1 - float(profile.get("level", 0.95))
    how = (f"{k} class{'es' if k != 1 else ''} tested against {int(profile.get('n_draws', DRAW_SHUFFLES)):,} "
           f"random draws of as many notes within the same {BLOCK_BARS}-bar spans, as many in each as the masker "
           f"picked there: a class is named when its share differs from the expected one by at least "
           f"{100 * DRAW_MIN_DIFF:.0f} points and a difference as unlikely, in any class tested, came up in at "
           f"most {alpha:.0%} of the draws, so chance, even a masker that only favours some passages, names a "
           f"class in at most {alpha:.0%} of pieces")
    if not up and not down:
        return (f"The {n} picked notes look like the rest of their passages: no class of note (chord or "
                f"non-chord tone, voice, beat, duration, register, repeats) is clearly more or less common "
                f"among them than among {pool} in the same passages ({how}).")
    parts = []
    if up:
        parts.append("more often " + and_list(up))
    if down:
        parts.append("less often " + and_list(down))
    return (f"Compared with {pool} in the same passages, the masker's {n} picks are "
            f"{', and '.join(parts)} ({how}).")


