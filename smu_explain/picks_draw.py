"""One draw of one piece (the Explore page's "Draw a masking"): a uniform random draw and the
masker's pick of the same number of notes, what the model recovers under each (with a paired
interval over the piece's 4-bar spans, at least as wide as shuffling the two masks' notes within
them), and what the picked notes have in common (classes named only when random draws of as many
notes, the null the page compares with, give so unlikely a difference in any class tested in at
most 5% of cases). The measurement over pieces and folders, its sentence and its table are
``picks.py``; this module uses its rules.
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
#: a class is named when its difference's interval, corrected for the classes tested, excludes 0,
#: the picks hold (or would hold, drawn at random) at least this many of its notes, and the
#: difference is at least ``DRAW_MIN_DIFF`` (5 points of the picks' share)
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
                    res = model(tok.masked_fill(hide[..., None], MASK_ID), am, heads_at=hide)
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
    """What the ``picked`` notes of one piece have in common: per class of each label column
    (``harmony.analyze``'s labels, plus ``bar`` for the resampling), the share of the picked
    notes in the class against its share of the ``pool`` (the notes a random draw picks from;
    default every note), the difference with a percentile bootstrap interval over the piece's
    ``BLOCK_BARS``-bar spans (``n_boot`` resamples; a description, not the decision), and the
    decision: how often a uniform random draw of as many notes from the pool (what the masker's
    picks are compared with) gives a difference as unlikely (:func:`_draw_test`, ``n_draws``
    draws). ``role`` is read only when some note has a POP909 track role. Seeded by ``seed``;
    JSON-serialisable.

    Returns {"n_picked", "n_pool", "n_blocks", "level", "n_boot", "n_draws", "seed", "n_tested",
    "columns": {column: [{"class", "n_picked", "n_pool", "share_picked", "share_pool", "diff":
    {est, lo, hi}, "tested", "p", "p_family", "clear"}]}}; ``diff``: the bootstrap interval, not
    corrected; ``tested``: the class is one of the ``n_tested`` candidates (the picks hold, or a
    random draw of as many notes would hold, at least ``DRAW_MIN_PICKED`` of its notes; of a
    two-class column one class); ``p``: the chance that a random draw's share of the class is as
    far from the pool's (exact, hypergeometric); ``p_family``: the share of the random draws in
    which some class that could be named is as unlikely (corrected for the classes tested);
    ``clear``: the piece has at least ``MIN_BLOCKS`` blocks, the class is tested, the difference
    is at least ``DRAW_MIN_DIFF`` and ``p_family`` is at most ``1 - level`` (of a two-class column
    both rows, as the tested one). Chance, picks unrelated to the classes, makes some class clear
    in at most ``1 - level`` of the pieces, however rare the classes."""
    picked = np.asarray(picked, dtype=bool)
    pool = np.ones(len(picked), dtype=bool) if pool is None else np.asarray(pool, dtype=bool)
    if len(labels) != len(picked) or len(pool) != len(picked):
        raise ValueError("labels, picked and pool must have one row per note")
    pool = pool | picked
    block = _block_ids(labels)
    B = int(block.max()) + 1 if len(block) else 0
    out: dict[str, Any] = {"n_picked": int(picked.sum()), "n_pool": int(pool.sum()), "n_blocks": B,
                           "level": float(level), "n_boot": int(n_boot), "n_draws": int(n_draws), "seed": int(seed),
                           "n_tested": 0, "columns": {}}
    if not picked.any():
        return out
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
        sp_full = pc.sum(0) / pc.sum()
        sq_full = qc.sum(0) / qc.sum()
        if len(w):
            wp, wq = w @ pc, w @ qc
            sp = safe_ratio(wp, wp.sum(1, keepdims=True))
            sq = safe_ratio(wq, wq.sum(1, keepdims=True))
            boots = sp - sq
        else:
            boots = np.zeros((0, C))
        rows = []
        for c_i, c in enumerate(classes):
            n_pick = int(pc[:, c_i].sum())
            expected = float(sq_full[c_i]) * out["n_picked"]  # its notes among the picks if picked at random
            rows.append({"class": c, "n_picked": n_pick, "n_pool": int(qc[:, c_i].sum()),
                         "share_picked": float(sp_full[c_i]), "share_pool": float(sq_full[c_i]),
                         "diff": percentile_interval(float(sp_full[c_i] - sq_full[c_i]), boots[:, c_i], level),
                         "tested": bool(max(n_pick, expected) >= DRAW_MIN_PICKED and (col, c) not in UNNAMED),
                         "p": None, "p_family": None, "clear": False})
        if len(rows) == 2:  # two classes: one difference, the other's mirror; test it once
            rows[_mirror(rows)]["tested"] = False
        out["columns"][col] = rows
        codes[col] = ci[pool]
    out["n_tested"] = sum(r["tested"] for rs in out["columns"].values() for r in rs)
    if B >= MIN_BLOCKS and codes:
        _draw_test(out, codes, picked[pool], n_draws, seed)
    return out


def _draw_test(profile: dict[str, Any], codes: Mapping[str, np.ndarray], picked: np.ndarray, n_draws: int,
               seed: int) -> None:
    """The profile's decision: sets each row's ``p``, ``p_family`` and ``clear``
    (:func:`pick_profile`). ``codes``: per column, the class index of each pool note; ``picked``:
    which pool notes the masker picked. The null is the random draw itself: ``n_draws`` uniform
    draws of as many notes from the pool (multivariate hypergeometric over the notes' combinations
    of classes, so the columns' counts come together), in each the smallest exact ``p`` among the
    classes that could be named (tested, at least ``DRAW_MIN_DIFF``); a class is clear when
    that smallest ``p`` is as small as its own in at most ``1 - level`` of the draws, counting the
    masker's (min-p, Westfall and Young: family-wise, and exact for any number of notes)."""
    level = profile["level"]
    limit = n_draws - 1 - _rank(level, n_draws)  # at most this many draws as extreme: clear
    n, Q = int(picked.sum()), len(picked)
    cols = list(codes)
    combo, joint = np.unique(np.stack([codes[c] for c in cols], axis=1), axis=0, return_inverse=True)
    joint = joint.ravel()
    rng = np.random.default_rng([int(seed), 2])
    draws = rng.multivariate_hypergeometric(np.bincount(joint, minlength=len(combo)), n, size=n_draws, method="count")
    own_joint = np.bincount(joint[picked], minlength=len(combo))
    min_p = np.ones(n_draws)
    found = []
    for j, col in enumerate(cols):
        onehot = np.eye(len(profile["columns"][col]), dtype=np.int64)[combo[:, j]]
        counts, own = draws @ onehot, own_joint @ onehot
        for c_i, row in enumerate(profile["columns"][col]):
            if (col, row["class"]) in UNNAMED or (len(profile["columns"][col]) == 2
                                                  and c_i == _mirror(profile["columns"][col])):
                continue
            q = row["n_pool"]
            share = q / Q
            table = _two_sided_p(Q, q, n)
            x = counts[:, c_i]
            can = (np.maximum(x, share * n) >= DRAW_MIN_PICKED) & (np.abs(x / n - share) >= DRAW_MIN_DIFF)
            min_p = np.minimum(min_p, np.where(can, table[x], 1.0))
            if row["tested"]:
                row["p"] = float(table[own[c_i]])
                found.append((col, c_i, row, bool(abs(own[c_i] / n - share) >= DRAW_MIN_DIFF)))
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


def _two_sided_p(total: int, in_class: int, n: int) -> np.ndarray:
    """Per count 0..n of a class (``in_class`` of ``total`` notes) among ``n`` notes drawn without
    replacement: the chance of a count at least as far from the mean (hypergeometric, exact)."""
    from scipy.special import gammaln

    x = np.arange(n + 1)
    ok = (x <= in_class) & (n - x <= total - in_class)
    xs = x[ok]
    log_pmf = (gammaln(in_class + 1) - gammaln(xs + 1) - gammaln(in_class - xs + 1)
               + gammaln(total - in_class + 1) - gammaln(n - xs + 1) - gammaln(total - in_class - n + xs + 1)
               - gammaln(total + 1) + gammaln(n + 1) + gammaln(total - n + 1))
    pmf = np.zeros(n + 1)
    pmf[ok] = np.exp(log_pmf)
    dev = np.abs(x - n * in_class / total)
    order = np.argsort(dev, kind="stable")
    tail = np.cumsum(pmf[order][::-1])[::-1]  # tail[i]: the chance of the i-th smallest deviation or more
    p = tail[np.searchsorted(dev[order], dev - 1e-9, side="left")]
    return np.minimum(p, 1.0)


def pick_sentence(profile: Mapping[str, Any], *, pool: str = "the notes a random draw picks from") -> str:
    """One sentence on what the picked notes have in common (:func:`pick_profile`): up to three
    classes over-represented among the picks and two under-represented, largest first, each
    with its share of the picks against its share of the ``pool``; only ``clear`` classes
    (of a two-class column only the over-represented side); else it says no class stands out.
    It says how a class is named: against random draws of as many notes, corrected for the
    classes tested."""
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
        text = f"{ph} ({row['share_picked']:.0%} of the picks vs {row['share_pool']:.0%})"
        (up if row["diff"]["est"] > 0 else down).append(text)
    up, down = up[:3], down[:2]
    blocks = int(profile.get("n_blocks", 0))
    if blocks < MIN_BLOCKS:
        return (f"The piece is too short to say what the {n} picked notes have in common: {blocks} "
                f"span{'s' if blocks != 1 else ''} of {BLOCK_BARS} bars, and at least {MIN_BLOCKS} are needed.")
    k, alpha = int(profile.get("n_tested", 0)), 1 - float(profile.get("level", 0.95))
    how = (f"{k} class{'es' if k != 1 else ''} tested against {int(profile.get('n_draws', DRAW_SHUFFLES)):,} "
           f"random draws of as many notes: a class is named when its share differs by at least "
           f"{100 * DRAW_MIN_DIFF:.0f} points and a difference as unlikely, in any class tested, came up in at "
           f"most {alpha:.0%} of the draws, so chance names a class in at most {alpha:.0%} of pieces")
    if not up and not down:
        return (f"The {n} picked notes look like the rest: no class of note (chord or non-chord tone, "
                f"voice, beat, duration, register, repeats) is clearly more or less common among them "
                f"than among {pool} ({how}).")
    parts = []
    if up:
        parts.append("more often " + and_list(up))
    if down:
        parts.append("less often " + and_list(down))
    return f"Compared with {pool}, the masker's {n} picks are {', and '.join(parts)} ({how})."


