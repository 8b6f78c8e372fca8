"""One draw of one piece (the Explore page's "Draw a masking"): a uniform random draw and the
masker's pick of the same number of notes, what the model recovers under each (with a paired
interval over the piece's 4-bar spans), and what the picked notes have in common (classes named
only when their interval, corrected for the classes tested, excludes 0). The measurement over
pieces and folders, its sentence and its table are ``picks.py``; this module uses its rules.
"""

from __future__ import annotations

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
    correction_text,
    excludes_zero,
    label_values,
    named_interval,
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
                        masker: str = "masker", n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict[str, Any]:
    """The masker's pick minus the random draw in :func:`mask_recovery`'s ``rec`` (recovery, the
    mean over the attributes), with an interval: a paired bootstrap of the piece's ``BLOCK_BARS``-bar
    spans (``labels``' ``bar``; ``n_boot`` resamples, seeded), both masks' notes of a span together,
    widened for few spans as the class sentences' (:func:`named_interval` with one test, over the
    spans that hold notes of the mask found in fewer). No interval when those are fewer than
    ``MIN_BLOCKS``. Returns {"est", "lo", "hi", "n_blocks" (those spans), "level"} (None where it
    cannot be computed); the difference of one draw, not of the masker in general."""
    block = _block_ids(labels)
    B = int(block.max()) + 1 if len(block) else 0
    out: dict[str, Any] = {"est": None, "lo": None, "hi": None, "n_blocks": B, "level": float(level)}
    a, b = rec.get(random) or {}, rec.get(masker) or {}
    if not a.get("hits") or not b.get("hits"):
        return out
    sums = [np.bincount(block[np.asarray(r["notes"])], weights=r["hits"], minlength=B) for r in (a, b)]
    counts = [np.bincount(block[np.asarray(r["notes"])], minlength=B).astype(float) for r in (a, b)]
    units = int(min((c > 0).sum() for c in counts))
    est = float(np.mean(b["hits"]) - np.mean(a["hits"]))
    w = boot_weights(B, n_boot, seed) if n_boot > 0 and B > 1 else np.zeros((0, B))
    boots = safe_ratio(w @ sums[1], w @ counts[1]) - safe_ratio(w @ sums[0], w @ counts[0])
    wide = named_interval(percentile_interval(est, boots, level), units, 1, level=level) if units >= MIN_BLOCKS else None
    return {**out, "est": est, "n_blocks": units, **({"lo": wide["lo"], "hi": wide["hi"]} if wide else {})}


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
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """What the ``picked`` notes of one piece have in common: per class of each label column
    (``harmony.analyze``'s labels, plus ``bar`` for the resampling), the share of the picked
    notes in the class against its share of the ``pool`` (the notes a random draw picks from;
    default every note), and the difference with a percentile bootstrap interval over the
    piece's ``BLOCK_BARS``-bar spans (``n_boot`` resamples, ``numpy.random.default_rng(seed)``).
    ``role`` is read only when some note has a POP909 track role. JSON-serialisable.

    Returns {"n_picked", "n_pool", "n_blocks", "level", "n_tested", "columns": {column: [{"class",
    "n_picked", "n_pool", "share_picked", "share_pool", "diff": {est, lo, hi}, "tested", "named",
    "clear"}]}}; ``diff``: the uncorrected interval; ``tested``: the class is one of the
    ``n_tested`` candidates (the picks hold, or a random draw of as many notes would hold, at least
    ``DRAW_MIN_PICKED`` of its notes; of a two-class column one class); ``named``: its interval
    corrected for them (:func:`named_interval`); ``clear``: the piece has at least ``MIN_BLOCKS``
    blocks, ``named`` excludes 0 and the difference is at least ``DRAW_MIN_DIFF``."""
    picked = np.asarray(picked, dtype=bool)
    pool = np.ones(len(picked), dtype=bool) if pool is None else np.asarray(pool, dtype=bool)
    if len(labels) != len(picked) or len(pool) != len(picked):
        raise ValueError("labels, picked and pool must have one row per note")
    pool = pool | picked
    block = _block_ids(labels)
    B = int(block.max()) + 1 if len(block) else 0
    out: dict[str, Any] = {"n_picked": int(picked.sum()), "n_pool": int(pool.sum()), "n_blocks": B,
                           "level": float(level), "n_boot": int(n_boot), "seed": int(seed), "columns": {}}
    if not picked.any():
        return out
    w = boot_weights(B, n_boot, seed) if n_boot > 0 and B > 1 else np.zeros((0, B))
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
                         "tested": bool(max(n_pick, expected) >= DRAW_MIN_PICKED and (col, c) not in UNNAMED)})
        if len(rows) == 2:  # two classes: one difference, the other's mirror; test it once
            rows[int(rows[0]["n_pool"] < rows[1]["n_pool"])]["tested"] = False
        out["columns"][col] = rows
    _mark_clear(out)
    return out


def _mark_clear(profile: dict[str, Any]) -> None:
    """Sets ``n_tested`` (the classes tested: ``tested`` rows) and each row's ``named`` (its
    difference's interval corrected for them, :func:`named_interval`) and ``clear`` (tested, at
    least ``MIN_BLOCKS`` blocks, the corrected interval excludes 0 and the difference is at least
    ``DRAW_MIN_DIFF``; of a two-class column both rows, as the tested one)."""
    k = profile["n_tested"] = sum(r["tested"] for rs in profile["columns"].values() for r in rs)
    blocks = profile["n_blocks"]
    for rows in profile["columns"].values():
        for r in rows:
            r["named"] = named_interval(r["diff"], blocks, k, level=profile["level"]) if r["tested"] else None
            r["clear"] = bool(blocks >= MIN_BLOCKS and excludes_zero(r["named"])
                              and abs(r["diff"]["est"]) >= DRAW_MIN_DIFF)
        if len(rows) == 2:
            rows[0]["clear"] = rows[1]["clear"] = rows[0]["clear"] or rows[1]["clear"]


def pick_sentence(profile: Mapping[str, Any], *, pool: str = "the notes a random draw picks from") -> str:
    """One sentence on what the picked notes have in common (:func:`pick_profile`): up to three
    classes over-represented among the picks and two under-represented, largest first, each
    with its share of the picks against its share of the ``pool``; only ``clear`` classes
    (of a two-class column only the over-represented side); else it says no class stands out."""
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
    how = correction_text(int(profile.get("n_tested", 0)), blocks, f"spans of {BLOCK_BARS} bars of the piece")
    if up or down:
        how = f"differences of at least {100 * DRAW_MIN_DIFF:.0f} points whose intervals exclude zero; " + how
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


