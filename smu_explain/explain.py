"""Per-note explanations of a pre-trained model: masker scores, what would be
picked and frozen, and how well each note is recovered when it is masked.

``explain_piece(model, tokenizer, piece, ...)`` returns one DataFrame row per note
of the piece (docs/ARCHITECTURE.md "Explain table"). The rules:

- The piece is encoded and cut into windows of the tokenizer's ``max_len``
  (or the model's, if smaller). A note that lies in several overlapping windows
  takes every number from the window where it is farthest from an edge (most context).
- ``score``: the masker score of the note, read from the clean (unmasked) window.
- ``frozen``: from ``freeze_book`` (needs ``piece_id``) when given; otherwise the
  top-a rule applied once: the top ``freeze_top`` (30%) of the piece's notes by score.
- ``picked``: the top ``ratio`` of the piece's not-frozen notes by score
  (round(ratio * n), at least 1), i.e. what the adversarial masker would mask.
- Recovery: each note is masked exactly once. The notes of a window are split
  into K = round(1 / ratio) disjoint random groups (seeded by ``seed`` and the
  window index); copy g of the window has group g replaced by MASK (all
  attributes, no 80/10/10), so each pass masks about ``ratio`` of the window,
  like validation. The K copies of all windows are batched (never one pass per note).
  Per attribute ``a``: ``loss_a`` (cross-entropy of the true token),
  ``correct_a`` (top-1 among regular ids == true), ``pred_a`` (top-1 decoded),
  ``topk_a`` (list of ``(value, probability)``, best first) and ``true_a``
  (the true token decoded, i.e. after the tokenizer's quantisation).
- Decoded values: pitch = MIDI number, duration = quarters, position = quarters
  after the start of the note's (token) bar, bar = bars advanced since the
  previous note, velocity = the bin's middle velocity, program = GM program.

``masker_view(...)`` gives the ``score`` / ``picked`` / ``frozen`` columns alone from
one clean pass per window (same rules and numbers).

``recovery_accuracy(model, dataset_or_loader, ratio, seed)`` is the fixed-seed
validation of ``masks.validate`` reduced to ``{attribute: accuracy}``.

The windows, owners and recovery groups come from ``windows``; the passes' precision from
``precision``. Storing the masker's view beside a model: ``stored_scores``; why a note is
scored or predicted as it is: ``attribution``, ``attention``, ``masker_note``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .limits import MAX_NOTES, is_whole  # noqa: F401  (MAX_NOTES: the note cap of smu explain and the app)
from .masks import validate
from .model import unwrap
from .picking import picks_at, top_fraction
from .precision import PRECISIONS, autocast
from .tokenizer import MASK_ID, N_SPECIAL
from .windows import (
    as_loader,
    check_inputs,
    gather_notes,
    note_owners,
    pad_windows,
    piece_windows,
    recovery_group_count,
    recovery_groups,
)


def decode_values(tokenizer, attribute: str, ids) -> np.ndarray:
    """Token ids of one attribute -> musical values (see module docstring); specials -> NaN/-1."""
    ids = np.asarray(ids, dtype=np.int64)
    v = tokenizer.decode_values(attribute, ids)
    c = tokenizer.config
    if attribute == "duration":
        return np.where(ids < N_SPECIAL, np.nan, v / c.dur_per_quarter)
    if attribute == "position":
        return np.where(ids < N_SPECIAL, np.nan, v / c.pos_per_quarter)
    return v


def _window_scores(model, wins, device: torch.device, batch_size: int, precision: str = "fp32"
                   ) -> list[np.ndarray]:
    """Masker scores of each clean window (batched)."""
    out: list[np.ndarray] = []
    for i in range(0, len(wins), batch_size):
        chunk = [wt for wt, _ in wins[i:i + batch_size]]
        tok, am = pad_windows(chunk, device)
        with autocast(device, precision):
            logits = model(tok, am, masker=True)["masker_logits"]
        s = torch.sigmoid(logits.float()).cpu().numpy()
        out += [s[j, : len(c)] for j, c in enumerate(chunk)]
    return out


def _frozen_picked(score: np.ndarray, ratio: float, freeze_book, piece_id, freeze_top: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    N = len(score)
    if freeze_book is not None:
        fb = freeze_book.frozen_notes(piece_id)
        frozen = np.zeros(N, dtype=bool)
        frozen[: min(N, len(fb))] = fb[:N]
    else:
        frozen = top_fraction(score, np.ones(N, dtype=bool), freeze_top, at_least_one=False)
    return frozen, picks_at(score, frozen, ratio)


@torch.no_grad()
def masker_view(model, tokenizer, piece, ratio: float = 0.15, freeze_book=None, *, piece_id: int | None = None,
                freeze_top: float = 0.3, batch_size: int = 32, precision: str = "fp32") -> pd.DataFrame:
    """The ``score`` / ``picked`` / ``frozen`` columns of ``explain_piece`` (same rules, same
    numbers) from one clean pass per window: the cheap view (no recovery passes).
    ``precision="bf16"``: the passes under bf16 autocast (:func:`precision.fast_precision` says where it is fast)."""
    m = unwrap(model)
    check_inputs(m, tokenizer, ratio, freeze_book, piece_id)
    df = piece.notes_table()
    N = len(df)
    if N == 0:
        return df.assign(score=pd.Series(dtype=float), picked=pd.Series(dtype=bool),
                         frozen=pd.Series(dtype=bool))
    wins = piece_windows(tokenizer, piece, tokenizer.encode(piece), m.config.max_len)
    owner, owner_pos = note_owners(wins, N)
    was_training = model.training
    model.eval()
    try:
        score = gather_notes(_window_scores(model, wins, next(m.parameters()).device, batch_size, precision),
                             owner, owner_pos)
    finally:
        model.train(was_training)
    frozen, picked = _frozen_picked(score, ratio, freeze_book, piece_id, freeze_top)
    df["score"] = score.astype(np.float64)
    df["picked"] = picked
    df["frozen"] = frozen
    return df


def _check_options(*, top_k, seed, freeze_top, batch_size, precision) -> None:
    """explain_piece's options, range-checked like the CLI's flags (``ValueError`` naming the
    option): a value out of range would give a table whose columns mean nothing."""
    if not (is_whole(top_k) and top_k >= 1):
        raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}")
    if not (is_whole(batch_size) and batch_size >= 1):
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if not (is_whole(seed) and 0 <= seed < 2 ** 32):
        raise ValueError(f"seed must be a whole number in 0..2**32 - 1, got {seed!r}")
    if isinstance(freeze_top, bool) or not isinstance(freeze_top, (int, float)) or not 0 <= freeze_top < 1:
        raise ValueError(f"freeze_top (the share of notes frozen) must be in [0, 1), got {freeze_top!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


@torch.no_grad()
def explain_piece(model, tokenizer, piece, ratio: float = 0.15, freeze_book=None, top_k: int = 3,
                  seed: int = 0, *, piece_id: int | None = None, freeze_top: float = 0.3,
                  batch_size: int = 32, precision: str = "fp32") -> pd.DataFrame:
    """One row per note of ``piece``: note fields, ``score``, ``picked``, ``frozen`` and, per
    attribute ``a``, ``loss_a``, ``correct_a``, ``pred_a``, ``topk_a``, ``true_a`` (rules above).
    ``precision="bf16"`` runs the model passes under bf16 autocast (probabilities in fp32)."""
    m = unwrap(model)
    attrs = list(m.config.attributes)
    check_inputs(m, tokenizer, ratio, freeze_book, piece_id)
    _check_options(top_k=top_k, seed=seed, freeze_top=freeze_top, batch_size=batch_size, precision=precision)
    top_k = min(int(top_k), min(v - N_SPECIAL for v in m.config.vocab_sizes))
    device = next(m.parameters()).device
    A = len(attrs)

    df = piece.notes_table()
    N = len(df)
    if N == 0:
        for col, dt in [("score", float), ("picked", bool), ("frozen", bool)]:
            df[col] = pd.Series(dtype=dt)
        for a in attrs:
            for col, dt in [("loss", float), ("correct", bool), ("pred", float), ("topk", object),
                            ("true", float)]:
                df[f"{col}_{a}"] = pd.Series(dtype=dt)
        return df

    tokens = tokenizer.encode(piece)
    wins = piece_windows(tokenizer, piece, tokens, m.config.max_len)
    owner, owner_pos = note_owners(wins, N)

    was_training = model.training
    model.eval()
    try:
        # 1) masker scores on the clean windows
        win_scores = _window_scores(model, wins, device, batch_size, precision)

        # 2) recovery: K masked copies per window, batched
        K = recovery_group_count(ratio)
        loss = [np.zeros((len(ids), A), dtype=np.float32) for _, ids in wins]
        pred = [np.zeros((len(ids), A), dtype=np.int64) for _, ids in wins]
        tk_id = [np.zeros((len(ids), A, top_k), dtype=np.int64) for _, ids in wins]
        tk_p = [np.zeros((len(ids), A, top_k), dtype=np.float32) for _, ids in wins]
        jobs = []  # (window, masked positions)
        for w, (wt, _) in enumerate(wins):
            L = len(wt)
            group = recovery_groups(L, K, seed, w)
            jobs += [(w, group == g) for g in range(min(K, L))]
        for i in range(0, len(jobs), batch_size):
            chunk = jobs[i:i + batch_size]
            tok, am = pad_windows([wins[w][0] for w, _ in chunk], device)
            masked = torch.zeros_like(am)
            for r, (_, sel) in enumerate(chunk):
                masked[r, : len(sel)] = torch.from_numpy(sel)
            target = tok[masked]  # (n, A)
            with autocast(device, precision):
                out = model(tok.masked_fill(masked[..., None], MASK_ID), am, heads_at=masked, only_heads_at=True)
            rows, cols = (x.cpu().numpy() for x in masked.nonzero(as_tuple=True))
            per_attr = []
            for j, lg in enumerate(out["logits"]):
                lg = lg.float()
                ce = F.cross_entropy(lg, target[:, j], reduction="none")
                p = torch.softmax(lg, dim=-1)
                p[:, :N_SPECIAL] = -1.0  # predictions are regular values only
                tp, ti = p.topk(top_k, dim=-1)
                per_attr.append((ce.cpu().numpy(), ti.cpu().numpy(), tp.cpu().numpy()))
            win_of_row = np.array([chunk[r][0] for r in rows])
            for w in np.unique(win_of_row):
                sel = win_of_row == w
                pos = cols[sel]
                for j, (ce, ti, tp) in enumerate(per_attr):
                    loss[w][pos, j] = ce[sel]
                    tk_id[w][pos, j] = ti[sel]
                    tk_p[w][pos, j] = tp[sel]
                    pred[w][pos, j] = ti[sel, 0]
    finally:
        model.train(was_training)

    def gather(per_window: list[np.ndarray]) -> np.ndarray:
        return gather_notes(per_window, owner, owner_pos)

    score = gather(win_scores)
    frozen, picked = _frozen_picked(score, ratio, freeze_book, piece_id, freeze_top)
    df["score"] = score.astype(np.float64)
    df["picked"] = picked
    df["frozen"] = frozen

    L_all, P_all, TI, TP = gather(loss), gather(pred), gather(tk_id), gather(tk_p)
    true_ids = gather([wt for wt, _ in wins])  # the tokens the model saw (bar re-based per window)
    for j, a in enumerate(attrs):
        df[f"loss_{a}"] = L_all[:, j].astype(np.float64)
        df[f"correct_{a}"] = P_all[:, j] == true_ids[:, j]
        df[f"pred_{a}"] = decode_values(tokenizer, a, P_all[:, j])
        vals = decode_values(tokenizer, a, TI[:, j, :].reshape(-1)).reshape(N, top_k).tolist()
        probs = TP[:, j, :].astype(np.float64).tolist()
        df[f"topk_{a}"] = [list(zip(v, p, strict=False)) for v, p in zip(vals, probs, strict=False)]
        df[f"true_{a}"] = decode_values(tokenizer, a, true_ids[:, j])
    return df


def recovery_accuracy(model, dataset, ratio: float = 0.15, seed: int = 0, batch_size: int = 16,
                      max_batches: int | None = None) -> dict[str, float]:
    """{attribute: accuracy} of recovering a fixed-seed random ``ratio`` of the real tokens
    (replaced by MASK), exactly as ``masks.validate`` (same masks for the same batches).
    ``dataset``: a DataLoader / iterable of collated batches, or a map-style dataset of
    samples (collated with ``datasets.collate`` in order, ``batch_size`` per batch)."""
    return recovery_with_tokens(model, dataset, ratio, seed, batch_size, max_batches, keep_tokens=False)[0]


def recovery_with_tokens(model, dataset, ratio: float = 0.15, seed: int = 0, batch_size: int = 16,
                         max_batches: int | None = None, *, keep_tokens: bool = True
                         ) -> tuple[dict[str, float], dict[str, Any] | None]:
    """``recovery_accuracy`` and, per scored note, whether each attribute was put back with the
    note's piece and window (``masks.validate(keep_tokens=True)["tokens"]``; None without
    ``keep_tokens``): what ``baselines.corpus_leads`` draws its interval from."""
    stats = validate(model, as_loader(dataset, batch_size), ratio=ratio, seed=seed, max_batches=max_batches,
                     keep_tokens=keep_tokens)
    attrs = unwrap(model).config.attributes
    if stats.get("n_tokens", 0) == 0:
        raise ValueError("recovery_accuracy: the dataset has no tokens")
    return {a: stats[f"acc_{a}"] for a in attrs}, stats.get("tokens")
