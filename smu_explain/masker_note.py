"""Why the masker scores one note as it does (a pre-trained model's masker, in the note's window).

For the note, read in its owner window (``encoder_inputs.note_window``): its clean ``score``;
occlusion on the masker (``masker_occlusion``): for every other note j of the window, the
note's score with j masked minus the clean score (batched copies); and the recoverer's loss on
the note under ``n_masks`` seeded random masks of round(ratio * L) notes that all include the
note (``masker_recovery_losses``, mean over masks). ``explain_masker_note`` joins them
(``masker_note_summary`` from the two parts). May import torch, ``encoder_inputs``,
``tokenizer`` and ``errors``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .encoder_inputs import encoder_of, note_window
from .errors import SMUInputError
from .tokenizer import MASK_ID


@torch.no_grad()
def masker_occlusion(model, tokenizer, piece, note: int, *, batch_size: int = 32) -> pd.DataFrame:
    """Which notes drive the masker score of ``note``: for each other note j of its window,
    ``change`` = score(note | j masked) - score(note) (0 and ``in_window`` False outside the
    window; 0 for the note itself). ``df.attrs["score"]`` = the clean score."""
    enc = encoder_of(model)
    wt, ids, p = note_window(model, tokenizer, piece, note)
    device = next(enc.parameters()).device
    tok = torch.from_numpy(wt).to(device)
    L = len(wt)
    was = enc.training
    enc.eval()
    at = torch.tensor([p], device=device)  # only the note's hidden state is read (encode's ``rows``)
    try:
        clean = float(enc.masker(enc.encode(tok[None], rows=at))[0, 0])
        change = np.zeros(L)
        for i in range(0, L, batch_size):
            idx = torch.arange(i, min(i + batch_size, L), device=device)
            t = tok[None].repeat(len(idx), 1, 1)
            t[torch.arange(len(idx)), idx] = MASK_ID
            change[i:i + len(idx)] = enc.masker(enc.encode(t, rows=at))[:, 0].double().cpu().numpy() - clean
    finally:
        enc.train(was)
    change[p] = 0.0
    df = piece.notes_table()
    full = np.zeros(len(piece))
    full[ids] = change
    inw = np.zeros(len(piece), dtype=bool)
    inw[ids] = True
    df["change"] = full
    df["in_window"] = inw
    df.attrs.update({"score": clean, "note": int(note)})
    return df


@torch.no_grad()
def masker_recovery_losses(model, tokenizer, piece, note: int, *, n_masks: int = 8, ratio: float = 0.15,
                           seed: int = 0) -> pd.DataFrame:
    """The recoverer's cross-entropy on ``note`` under ``n_masks`` seeded random masks of
    round(ratio * L) (>= 1) notes of its window that all include the note: one row per mask
    (``mask``, ``n_masked``, ``loss_<attr>``, ``loss`` = sum over attributes)."""
    if int(n_masks) < 1 or not 0.0 < ratio <= 1.0:
        raise SMUInputError("masks", "n_masks must be >= 1 and ratio in (0, 1]")
    enc = encoder_of(model)
    wt, ids, p = note_window(model, tokenizer, piece, note)
    device = next(enc.parameters()).device
    L = len(wt)
    k = min(L, max(1, int(round(ratio * L))))
    others = np.array([i for i in range(L) if i != p], dtype=np.int64)
    masks = np.zeros((int(n_masks), L), dtype=bool)
    for m in range(int(n_masks)):
        rng = np.random.default_rng([int(seed), int(note), m])
        masks[m, p] = True
        if k > 1 and others.size:
            masks[m, rng.choice(others, size=min(k - 1, others.size), replace=False)] = True
    tok = torch.from_numpy(wt).to(device)[None].repeat(int(n_masks), 1, 1)
    mk = torch.from_numpy(masks).to(device)
    was = enc.training
    enc.eval()
    try:
        hidden = enc.encode(tok.masked_fill(mk[..., None], MASK_ID), rows=torch.tensor([p], device=device))
        logits = enc.heads(hidden[:, 0])
    finally:
        enc.train(was)
    rows = {"mask": np.arange(int(n_masks)), "n_masked": masks.sum(1)}
    total = np.zeros(int(n_masks))
    for j, a in enumerate(enc.config.attributes):
        ce = F.cross_entropy(logits[j].double(), tok[:, p, j], reduction="none").cpu().numpy()
        rows[f"loss_{a}"] = ce
        total += ce
    rows["loss"] = total
    return pd.DataFrame(rows)


def explain_masker_note(model, tokenizer, piece, note: int, *, n_masks: int = 8, ratio: float = 0.15,
                        seed: int = 0, top: int = 10) -> dict[str, Any]:
    """Why the masker scores ``note`` as it does: ``{"score", "occlusion" (table), "top" (the ``top``
    notes by |change|), "losses" (per mask), "mean_loss", "mean_loss_<attr>"}``."""
    occ = masker_occlusion(model, tokenizer, piece, note)
    losses = masker_recovery_losses(model, tokenizer, piece, note, n_masks=n_masks, ratio=ratio, seed=seed)
    return masker_note_summary(occ, losses, note, top=top)


def masker_note_summary(occ: pd.DataFrame, losses: pd.DataFrame, note: int, *, top: int = 10) -> dict[str, Any]:
    """:func:`explain_masker_note` from its two parts: the ``masker_occlusion`` table of ``note``
    (one pass per note of its window; it does not depend on the masks) and its
    ``masker_recovery_losses`` (one pass per mask), so a caller can keep the first while the
    masks change."""
    cand = occ[occ["in_window"] & (occ["note"] != int(note))]
    top_df = cand.reindex(cand["change"].abs().sort_values(ascending=False).index).head(int(top))
    out = {"score": occ.attrs["score"], "occlusion": occ, "top": top_df.reset_index(drop=True),
           "losses": losses, "mean_loss": float(losses["loss"].mean())}
    for c in losses.columns:
        if c.startswith("loss_"):
            out[f"mean_{c}"] = float(losses[c].mean())
    return out
