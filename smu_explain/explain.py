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
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .limits import MAX_NOTES  # noqa: F401  (the note cap of smu explain and the app)
from .masks import n_to_pick, validate
from .model import unwrap
from .tokenizer import MASK_ID, N_SPECIAL, PAD_ID


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


def _windows(tokenizer, piece, tokens: np.ndarray, max_len: int) -> list[tuple[np.ndarray, np.ndarray]]:
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


def _pad(seqs: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    A = seqs[0].shape[1]
    tokens = torch.full((len(seqs), L, A), PAD_ID, dtype=torch.long)
    am = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.from_numpy(np.ascontiguousarray(s))
        am[i, : len(s)] = True
    return tokens.to(device), am.to(device)


def _top_fraction(scores: np.ndarray, candidates: np.ndarray, frac: float, at_least_one: bool) -> np.ndarray:
    """Bool mask of the round(frac * #candidates) highest-scoring candidates (ties: lower index)."""
    out = np.zeros(len(scores), dtype=bool)
    idx = np.flatnonzero(candidates)
    k = int(n_to_pick(torch.tensor([idx.size]), frac)[0]) if at_least_one else int(round(frac * idx.size))
    if k > 0:
        out[idx[np.argsort(-scores[idx], kind="stable")[:k]]] = True
    return out


def _owners(wins: list[tuple[np.ndarray, np.ndarray]], N: int) -> tuple[np.ndarray, np.ndarray]:
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


def _window_scores(model, wins, device: torch.device, batch_size: int, precision: str = "fp32"
                   ) -> list[np.ndarray]:
    """Masker scores of each clean window (batched)."""
    out: list[np.ndarray] = []
    for i in range(0, len(wins), batch_size):
        chunk = [wt for wt, _ in wins[i:i + batch_size]]
        tok, am = _pad(chunk, device)
        with _autocast(device, precision):
            logits = model(tok, am, masker=True)["masker_logits"]
        s = torch.sigmoid(logits.float()).cpu().numpy()
        out += [s[j, : len(c)] for j, c in enumerate(chunk)]
    return out


def _gather(per_window: list[np.ndarray], owner: np.ndarray, owner_pos: np.ndarray) -> np.ndarray:
    N = len(owner)
    out = np.empty((N,) + per_window[0].shape[1:], dtype=per_window[0].dtype)
    for w in range(len(per_window)):
        sel = owner == w
        out[sel] = per_window[w][owner_pos[sel]]
    return out


def _frozen_picked(score: np.ndarray, ratio: float, freeze_book, piece_id, freeze_top: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    N = len(score)
    if freeze_book is not None:
        fb = freeze_book.frozen_notes(piece_id)
        frozen = np.zeros(N, dtype=bool)
        frozen[: min(N, len(fb))] = fb[:N]
    else:
        frozen = _top_fraction(score, np.ones(N, dtype=bool), freeze_top, at_least_one=False)
    return frozen, picks_at(score, frozen, ratio)


def picks_at(score, frozen, ratio: float) -> np.ndarray:
    """The ``picked`` rule: the round(ratio * n) (at least 1) highest scores among the n notes
    that are not ``frozen``, ties to the lower note index (a new ratio costs a sort, no model pass)."""
    return _top_fraction(np.asarray(score, dtype=float), ~np.asarray(frozen, dtype=bool), ratio,
                         at_least_one=True)


def _check(m, tokenizer, ratio: float, freeze_book, piece_id) -> None:
    attrs = list(m.config.attributes)
    if list(tokenizer.attributes) != attrs or list(tokenizer.vocab_sizes) != list(m.config.vocab_sizes):
        raise ValueError(f"tokenizer ({tokenizer.attributes}, {tokenizer.vocab_sizes}) does not match the model "
                         f"({attrs}, {m.config.vocab_sizes}); load the tokenizer config saved with the model")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if freeze_book is not None and piece_id is None:
        raise ValueError("explain_piece needs piece_id to read frozen notes from a freeze book")


@torch.no_grad()
@torch.no_grad()
def masker_view(model, tokenizer, piece, ratio: float = 0.15, freeze_book=None, *, piece_id: int | None = None,
                freeze_top: float = 0.3, batch_size: int = 32, precision: str = "fp32") -> pd.DataFrame:
    """The ``score`` / ``picked`` / ``frozen`` columns of ``explain_piece`` (same rules, same
    numbers) from one clean pass per window: the cheap view (no recovery passes).
    ``precision="bf16"``: the passes under bf16 autocast (:func:`fast_precision` says where it is fast)."""
    m = unwrap(model)
    _check(m, tokenizer, ratio, freeze_book, piece_id)
    df = piece.notes_table()
    N = len(df)
    if N == 0:
        return df.assign(score=pd.Series(dtype=float), picked=pd.Series(dtype=bool),
                         frozen=pd.Series(dtype=bool))
    wins = _windows(tokenizer, piece, tokenizer.encode(piece), m.config.max_len)
    owner, owner_pos = _owners(wins, N)
    was_training = model.training
    model.eval()
    try:
        score = _gather(_window_scores(model, wins, next(m.parameters()).device, batch_size, precision),
                        owner, owner_pos)
    finally:
        model.train(was_training)
    frozen, picked = _frozen_picked(score, ratio, freeze_book, piece_id, freeze_top)
    df["score"] = score.astype(np.float64)
    df["picked"] = picked
    df["frozen"] = frozen
    return df


def store_masker_scores(folder, files: Iterable, ratio: float = 0.15) -> Path:
    """Compute :func:`masker_view` at ``ratio`` for MIDI ``files`` with the pre-trained model in
    ``folder`` (read as the app reads an upload: the default tokenizer config) and store it
    beside the weights (``checkpoint.save_masker_scores``). The app draws those pieces' masker
    overlay from this file on its first view, without loading the model."""
    from .checkpoint import load_checkpoint, save_masker_scores
    from .tokenizer import read_piece

    ckpt = load_checkpoint(folder, kind="pretrained")
    model = ckpt.encoder.eval()
    pieces: dict[str, dict[str, Any]] = {}
    for f in files:
        f = Path(f)
        data = f.read_bytes()
        view = masker_view(model, ckpt.tokenizer, read_piece(data, name=f.stem), ratio)
        pieces[hashlib.sha256(data).hexdigest()] = {
            "name": f.name, "n_notes": len(view), "ratio": float(ratio),
            "score": [float(s) for s in view["score"]],
            "frozen": np.flatnonzero(view["frozen"].to_numpy(dtype=bool)).tolist(),
            "picked": np.flatnonzero(view["picked"].to_numpy(dtype=bool)).tolist()}
    return save_masker_scores(folder, pieces)


@torch.no_grad()
def explain_piece(model, tokenizer, piece, ratio: float = 0.15, freeze_book=None, top_k: int = 3,
                  seed: int = 0, *, piece_id: int | None = None, freeze_top: float = 0.3,
                  batch_size: int = 32, precision: str = "fp32") -> pd.DataFrame:
    """One row per note of ``piece``: note fields, ``score``, ``picked``, ``frozen`` and, per
    attribute ``a``, ``loss_a``, ``correct_a``, ``pred_a``, ``topk_a``, ``true_a`` (rules above).
    ``precision="bf16"`` runs the model passes under bf16 autocast (probabilities in fp32)."""
    m = unwrap(model)
    attrs = list(m.config.attributes)
    _check(m, tokenizer, ratio, freeze_book, piece_id)
    top_k = max(1, min(int(top_k), min(v - N_SPECIAL for v in m.config.vocab_sizes)))
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
    wins = _windows(tokenizer, piece, tokens, m.config.max_len)
    owner, owner_pos = _owners(wins, N)

    was_training = model.training
    model.eval()
    try:
        # 1) masker scores on the clean windows
        win_scores = _window_scores(model, wins, device, batch_size, precision)

        # 2) recovery: K masked copies per window, batched
        K = max(1, int(round(1.0 / ratio)))
        loss = [np.zeros((len(ids), A), dtype=np.float32) for _, ids in wins]
        pred = [np.zeros((len(ids), A), dtype=np.int64) for _, ids in wins]
        tk_id = [np.zeros((len(ids), A, top_k), dtype=np.int64) for _, ids in wins]
        tk_p = [np.zeros((len(ids), A, top_k), dtype=np.float32) for _, ids in wins]
        jobs = []  # (window, masked positions)
        for w, (wt, _) in enumerate(wins):
            L = len(wt)
            group = np.empty(L, dtype=np.int64)
            group[np.random.default_rng([int(seed), w]).permutation(L)] = np.arange(L) % K
            jobs += [(w, group == g) for g in range(min(K, L))]
        for i in range(0, len(jobs), batch_size):
            chunk = jobs[i:i + batch_size]
            tok, am = _pad([wins[w][0] for w, _ in chunk], device)
            masked = torch.zeros_like(am)
            for r, (_, sel) in enumerate(chunk):
                masked[r, : len(sel)] = torch.from_numpy(sel)
            target = tok[masked]  # (n, A)
            with _autocast(device, precision):
                out = model(tok.masked_fill(masked[..., None], MASK_ID), am, heads_at=masked)
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
        return _gather(per_window, owner, owner_pos)

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
        df[f"topk_{a}"] = [list(zip(v, p)) for v, p in zip(vals, probs)]
        df[f"true_{a}"] = decode_values(tokenizer, a, true_ids[:, j])
    return df


def _as_loader(data: Any, batch_size: int) -> Iterable[dict]:
    """A loader of collated batches from a loader, a list of batches, or a map-style dataset."""
    if isinstance(data, torch.utils.data.DataLoader):
        return data
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and len(data) > 0:
        first = data[0]
        if isinstance(first, dict) and np.ndim(first["tokens"]) == 2:  # samples: collate them
            from .data import collate
            return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)
    return data


def recovery_accuracy(model, dataset, ratio: float = 0.15, seed: int = 0, batch_size: int = 16,
                      max_batches: int | None = None) -> dict[str, float]:
    """{attribute: accuracy} of recovering a fixed-seed random ``ratio`` of the real tokens
    (replaced by MASK), exactly as ``masks.validate`` (same masks for the same batches).
    ``dataset``: a DataLoader / iterable of collated batches, or a map-style dataset of
    samples (collated with ``data.collate`` in order, ``batch_size`` per batch)."""
    stats = validate(model, _as_loader(dataset, batch_size), ratio=ratio, seed=seed, max_batches=max_batches)
    attrs = unwrap(model).config.attributes
    if stats.get("n_tokens", 0) == 0:
        raise ValueError("recovery_accuracy: the dataset has no tokens")
    return {a: stats[f"acc_{a}"] for a in attrs}


# =============================================================================
# WHY: note attributions, attention, masker explanations (issue 6)
# -----------------------------------------------------------------------------
# This section is appended by the "why" work; the code above is not touched.
#
# Rules:
#
# - The model under explanation: a ``finetune.FineTuneModel`` (attributions of a
#   task prediction) or a ``MidiBert`` (attention, masker). The encoder is run
#   through its own submodules (``embeddings`` -> concatenation -> ``in_proj`` +
#   position embeddings -> ``blocks`` -> ``ln_f``), exactly what ``MidiBert.encode``
#   does in eval mode, so gradients can be taken with respect to the per-note
#   input embedding x_i (the concatenation of the note's attribute embeddings,
#   A * emb_dim wide) without touching model.py.
# - Windows: the fine-tuner's windows (``tokenizer.encode_windows``; or windows of
#   the model's ``max_len`` when the model is shorter, see ``_windows``).
# - Explained quantity ``f``: the softmax probability (``output="prob"``, default)
#   or the logit (``output="logit"``) of one class ``c``.
#   * sequence tasks: f_w = class output of window w; the piece-level value is the
#     MEAN over the piece's windows (finetune's piece prediction = argmax of the mean
#     window probabilities), and a note's attribution is the mean over all windows
#     of its attribution in each window (0 for windows that do not hold it), so the
#     piece-level attributions still sum to the piece-level f(x) - f(baseline).
#   * note tasks (``target`` = a note index): f_w = class output at the target note
#     in window w; only the windows holding the target count (finetune averages a
#     note's probabilities over the windows holding it), and the same mean is used.
#     Notes outside every window that holds the target get exactly 0.
#   * default class: the model's prediction (argmax of the mean probabilities).
# - Integrated gradients: baseline = every note's input embedding replaced by the
#   embedding of the all-MASK token (MASK id in every attribute; the position
#   embeddings stay). a_i = sum over the embedding dims of
#   (x_i - b_i) * mean_k dF/dx_i (b + alpha_k (x - b)), alpha_k = (k + 0.5) / steps
#   (midpoint rule), the ``steps`` interpolated inputs run in chunks of ``batch_size``.
#   Completeness: sum_i a_i ~= f(x) - f(baseline) (``attrs["completeness_gap"]``).
# - Occlusion: a_i = f(x) - f(x with note i's token replaced by MASK in every
#   attribute), one occluded copy per note of the window, copies batched.
#   Positive = the note supports the class in both methods. Occlusion costs one
#   forward per note; ``max_notes`` occludes a seeded uniform sample of the notes
#   instead (a spot check of IG: the other notes get NaN, ``measured`` False).
# - Precision: "bf16" runs IG's batched path points under bf16 autocast (about 2x
#   faster on CPUs with bf16 units); f(x) and f(baseline) stay fp32, so IG's
#   completeness gap shows the bf16 error. Occlusion is fp32 only: one note's
#   effect is often below bf16's resolution (measured: Spearman with IG fell from
#   0.97 to 0.13 in bf16).
# - Agreement: Spearman rank correlation of the two attributions over the notes
#   measured by both (scipy.stats.spearmanr).
# - Attention: the fused SDPA path returns no weights; for explanations only, each
#   block's softmax(q k^T / sqrt(head_dim)) comes from ``Block.attention_probs``
#   (the same q, k as training, rotary positions included; training is untouched). Weights of a note are
#   read in the window where the note is farthest from an edge (as explain_piece).
#   Rollout (Abnar & Zuidema 2020): per layer the head mean A, A' = 0.5 A + 0.5 I
#   with rows renormalised, R = A'_last ... A'_1.
# - Masker explanations of a note (in its owning window): its clean ``score``;
#   occlusion on the masker: for every other note j of the window, the selected
#   note's score with j masked minus the clean score (batched copies); and the
#   recoverer's loss on the note under ``n_masks`` seeded random masks of
#   round(ratio * L) notes that all include the note (mean over masks).
# =============================================================================

from .errors import SMUInputError as _SMUInputError

ATTRIBUTION_METHODS = ("ig", "occlusion")
PRECISIONS = ("fp32", "bf16")


def _encoder_of(model):
    """The MidiBert of a FineTuneModel (``.encoder``) or of a (wrapped) MidiBert."""
    enc = getattr(model, "encoder", None)
    if enc is not None and hasattr(enc, "embeddings") and hasattr(enc, "blocks"):
        return enc
    return unwrap(model)


def note_embeddings(encoder, tokens: torch.Tensor) -> torch.Tensor:
    """tokens (B, L, A) -> per-note input embeddings (B, L, A * emb_dim): the concatenated
    attribute embeddings, before ``in_proj`` and the position embeddings."""
    return torch.cat([emb(tokens[..., j]) for j, emb in enumerate(encoder.embeddings)], dim=-1)


def encode_embeddings(encoder, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The rest of ``MidiBert.encode`` from per-note embeddings x (B, L, A * emb_dim) -> hidden (B, L, D)."""
    return encoder.encode_embedded(x, attention_mask)


def _is_task_model(model) -> bool:
    return hasattr(model, "head") and getattr(model, "level", None) in ("note", "sequence")


def _class_index(model, cls) -> int | None:
    if cls is None:
        return None
    if isinstance(cls, str):
        if cls not in model.classes:
            raise _SMUInputError("class", f"unknown class {cls!r}; the model's classes are {model.classes}")
        return model.classes.index(cls)
    c = int(cls)
    if not 0 <= c < len(model.classes):
        raise _SMUInputError("class", f"class index {c} out of range 0..{len(model.classes) - 1}")
    return c


class _TaskFn:
    """f(embeddings) for one window: the class output of a FineTuneModel (see rules)."""

    def __init__(self, model, target_pos: int | None, cls: int, output: str):
        self.model, self.enc = model, _encoder_of(model)
        self.pos, self.cls, self.output = target_pos, cls, output

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        am = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        lg = self.model.head(encode_embeddings(self.enc, x, None), am)
        return lg[:, self.pos] if self.pos is not None else lg  # (B, C)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lg = self.logits(x)
        if self.output == "logit":
            return lg[:, self.cls]
        return torch.softmax(lg, dim=-1)[:, self.cls]


def _mask_tokens_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, MASK_ID)


def fast_precision(device: str | torch.device = "cpu") -> str:
    """"bf16" where bf16 IG passes are fast (a CUDA GPU with bf16, or a CPU with bf16 units:
    avx512_bf16 / amx_bf16 in /proc/cpuinfo, and PyTorch running its AVX-512 kernels), else
    "fp32" (emulated bf16 would be slower)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    # The kernels PyTorch dispatches to must be AVX-512 ones too: with the CPU's bf16 units
    # present but ATEN_CPU_CAPABILITY=avx2/default, bf16 attention fails ("pack_vnni2 is only
    # supported when avx512 is supported").
    if not torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512"):
        return "fp32"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def _autocast(device: torch.device, precision: str):
    """bf16 autocast for the batched interior passes (``precision="bf16"``), else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _ig_window(fn: _TaskFn, tok: torch.Tensor, steps: int, batch_size: int, precision: str = "fp32"
               ) -> tuple[np.ndarray, float, float]:
    """Integrated gradients of one window (tok (L, A)) -> (a (L,), f(x), f(baseline)).

    f(x) and f(baseline) are always computed in fp32, so the completeness gap also shows
    the error of bf16 path gradients."""
    with torch.no_grad():
        x = note_embeddings(fn.enc, tok[None])[0]
        b = note_embeddings(fn.enc, _mask_tokens_like(tok)[None])[0]
        fx, fb = float(fn(x[None])[0]), float(fn(b[None])[0])
    diff = x - b
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    grad_sum = torch.zeros_like(x)
    for i in range(0, steps, batch_size):
        a = alphas[i:i + batch_size]
        inp = (b[None] + a[:, None, None] * diff[None]).detach().requires_grad_(True)
        with _autocast(x.device, precision):
            out = fn(inp).double().sum()
        (g,) = torch.autograd.grad(out, inp)
        grad_sum += g.to(grad_sum.dtype).sum(0)
    attr = (diff * grad_sum / steps).sum(-1)
    return attr.detach().cpu().double().numpy(), fx, fb


@torch.no_grad()
def _occlusion_window(fn: _TaskFn, tok: torch.Tensor, batch_size: int, positions: np.ndarray | None = None
                      ) -> tuple[np.ndarray, float, float]:
    """Occlusion of one window: (f(x) - f(x with note i masked) for i in ``positions`` (default:
    every position; others stay 0), f(x), f(all masked))."""
    L = tok.shape[0]
    pos = np.arange(L) if positions is None else np.asarray(positions, dtype=np.int64)
    fx = float(fn(note_embeddings(fn.enc, tok[None]))[0])
    fb = float(fn(note_embeddings(fn.enc, _mask_tokens_like(tok)[None]))[0])
    out = np.zeros(L, dtype=np.float64)
    for i in range(0, len(pos), batch_size):
        idx = torch.from_numpy(pos[i:i + batch_size]).to(tok.device)
        t = tok[None].repeat(len(idx), 1, 1)
        t[torch.arange(len(idx)), idx] = MASK_ID
        out[pos[i:i + batch_size]] = fx - fn(note_embeddings(fn.enc, t)).double().cpu().numpy()
    return out, fx, fb


def _task_windows(model, tokenizer, piece, target):
    """(windows, counted window ids, target position per counted window)."""
    enc = _encoder_of(model)
    _check(enc, tokenizer, 0.15, None, None)
    N = len(piece)
    if N == 0:
        raise _SMUInputError(getattr(piece, "name", "piece"), "the piece has no notes")
    wins = _windows(tokenizer, piece, tokenizer.encode(piece), enc.config.max_len)
    if model.level == "sequence":
        if target is not None:
            raise _SMUInputError("target", f"{model.task} is a sequence task: no target note (pass target=None)")
        return wins, list(range(len(wins))), [None] * len(wins)
    if target is None:
        raise _SMUInputError("target", f"{model.task} is a note task: choose the target note (target=index)")
    t = int(target)
    if not 0 <= t < N:
        raise _SMUInputError("target", f"note {t} is not in the piece (0..{N - 1})")
    counted, pos = [], []
    for w, (_, ids) in enumerate(wins):
        hit = np.flatnonzero(ids == t)
        if hit.size:
            counted.append(w)
            pos.append(int(hit[0]))
    return wins, counted, pos


@torch.no_grad()
def predict_task(model, tokenizer, piece, target: int | None = None) -> dict[str, Any]:
    """The fine-tuned model's prediction the way finetune evaluates it: mean softmax over the
    counted windows (all windows; note tasks: the windows holding ``target``) ->
    ``{"probs": (C,), "class_index", "class", "classes", "n_windows"}``."""
    if not _is_task_model(model):
        raise _SMUInputError("model", "attributions need a fine-tuned model (finetune.FineTuneModel)")
    wins, counted, pos = _task_windows(model, tokenizer, piece, target)
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        probs = np.zeros(len(model.classes))
        for w, p in zip(counted, pos):
            tok = torch.from_numpy(wins[w][0]).to(device)
            lg = _TaskFn(model, p, 0, "prob").logits(note_embeddings(_encoder_of(model), tok[None]))
            probs += torch.softmax(lg.double(), -1)[0].cpu().numpy()
    finally:
        model.train(was)
    probs /= max(1, len(counted))
    c = int(np.argmax(probs))
    return {"probs": probs, "class_index": c, "class": model.classes[c], "classes": list(model.classes),
            "n_windows": len(counted)}


@torch.no_grad()
def predict_piece(model, tokenizer, piece) -> dict[str, Any]:
    """A fine-tuned model's predictions on a whole piece, averaged like finetune evaluates:
    ``{"task", "level", "classes", "probs"}`` (+ ``"notes"`` for note tasks).

    Sequence tasks: ``probs`` (C,) = the softmax averaged over the piece's windows;
    ``classes`` = ``[(class, probability), ...]`` best first. Note tasks: ``probs`` (N, C) =
    per note the softmax averaged over the windows holding it; ``notes`` = a table with the
    predicted class ``pred`` and its probability ``confidence`` per note; ``classes`` = the share
    of notes per predicted class, best first. One plain forward pass per window (the windows
    of :func:`predict_task`, which explains one prediction through the attribution path)."""
    if not _is_task_model(model):
        raise _SMUInputError("model", "piece predictions need a fine-tuned model (finetune.FineTuneModel)")
    enc = _encoder_of(model)
    _check(enc, tokenizer, 0.15, None, None)
    n, C = len(piece), len(model.classes)
    wins = _windows(tokenizer, piece, tokenizer.encode(piece), enc.config.max_len) if n else []
    device = next(model.parameters()).device
    seq, note_p, note_k = np.zeros(C), np.zeros((n, C)), np.zeros(n)
    was = model.training
    model.eval()
    try:
        for w, ids in wins:
            tok = torch.from_numpy(w)[None].to(device)
            out = model(tok, torch.ones(1, len(w), dtype=torch.bool, device=device))["logits"]
            prob = torch.softmax(out.float(), dim=-1)[0].cpu().numpy()
            if model.level == "sequence":
                seq += prob
            else:
                note_p[ids] += prob
                note_k[ids] += 1
    finally:
        model.train(was)
    result: dict[str, Any] = {"task": model.task, "level": model.level}
    if model.level == "sequence":
        seq /= max(1, len(wins))
        result["probs"] = seq
        result["classes"] = [(model.classes[i], float(seq[i])) for i in np.argsort(-seq)]
    else:
        note_p /= np.maximum(note_k, 1)[:, None]
        pred = note_p.argmax(1)
        result["probs"] = note_p
        result["notes"] = pd.DataFrame({"pred": [model.classes[i] for i in pred], "confidence": note_p.max(1)})
        counts = np.bincount(pred, minlength=C) / max(1, n)
        result["classes"] = [(model.classes[i], float(counts[i])) for i in np.argsort(-counts)]
    return result


def attribute_notes(model, tokenizer, piece, target: int | None = None, method: str = "ig", steps: int = 16,
                    *, cls: int | str | None = None, output: str = "prob", batch_size: int = 16,
                    precision: str = "fp32", max_notes: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Per-note attribution of a fine-tuned model's class output (rules at the top of this section).

    ``target``: None for sequence tasks (composer, emotion, folder), the target note's index
    for note tasks (melody, velocity). ``cls``: class name or index (default: the prediction).
    ``precision`` (IG only): "fp32", or "bf16" for the batched path points (f(x) and
    f(baseline) stay fp32); occlusion is always fp32. ``max_notes`` (occlusion only): occlude
    a uniform random sample (``seed``) of at most this many of the notes in counted windows,
    each in every counted window that holds it; the others get NaN and ``measured`` False
    (None = every note).
    Returns the notes table (``Piece.notes_table``) plus ``attribution``, ``in_window`` (the note
    lies in a counted window) and ``measured`` (it has an attribution); ``df.attrs`` holds ``method``,
    ``class``, ``class_index``, ``output``, ``value`` (f(x), piece level), ``baseline_value``
    (f(all-MASK)), ``completeness_gap`` (sum of attributions - (value - baseline_value); IG),
    ``n_windows``, ``steps``, ``target``, ``precision``, ``n_measured``, ``n_forward`` (sequences run).
    """
    if method not in ATTRIBUTION_METHODS:
        raise _SMUInputError("method", f"unknown attribution method {method!r}; choose one of {ATTRIBUTION_METHODS}")
    if output not in ("prob", "logit"):
        raise _SMUInputError("output", f"output must be 'prob' or 'logit', got {output!r}")
    if precision not in PRECISIONS:
        raise _SMUInputError("precision", f"precision must be one of {PRECISIONS}, got {precision!r}")
    if int(steps) < 1 or int(batch_size) < 1:
        raise _SMUInputError("steps", "steps and batch_size must be >= 1")
    if method == "occlusion" and precision != "fp32":
        raise _SMUInputError("precision", "occlusion runs in fp32 only: one note's effect is often below "
                                          "bf16's resolution (bench/attribution.py measured it)")
    if max_notes is not None and int(max_notes) < 1:
        raise _SMUInputError("max_notes", "max_notes must be >= 1 (or None for every note)")
    if not _is_task_model(model):
        raise _SMUInputError("model", "attributions need a fine-tuned model (finetune.FineTuneModel); "
                                      "make one with `smu finetune`")
    wins, counted, pos = _task_windows(model, tokenizer, piece, target)
    c = _class_index(model, cls)
    if c is None:
        c = predict_task(model, tokenizer, piece, target)["class_index"]
    device = next(model.parameters()).device
    N = len(piece)
    attr = np.zeros(N, dtype=np.float64)
    in_win = np.zeros(N, dtype=bool)
    for w in counted:
        in_win[wins[w][1]] = True
    measured = in_win.copy()
    if method == "occlusion" and max_notes is not None and int(max_notes) < int(in_win.sum()):
        pick = np.random.default_rng(seed).choice(np.flatnonzero(in_win), int(max_notes), replace=False)
        measured = np.zeros(N, dtype=bool)
        measured[pick] = True
    fx_sum = fb_sum = 0.0
    n_forward = 0
    was = model.training
    model.eval()
    try:
        for w, p in zip(counted, pos):
            wt, ids = wins[w]
            fn = _TaskFn(model, p, c, output)
            tok = torch.from_numpy(wt).to(device)
            if method == "ig":
                a, fx, fb = _ig_window(fn, tok, int(steps), int(batch_size), precision)
                n_forward += int(steps) + 2
            else:
                positions = np.flatnonzero(measured[ids])
                a, fx, fb = _occlusion_window(fn, tok, int(batch_size), positions)
                n_forward += len(positions) + 2
            np.add.at(attr, ids, a)
            fx_sum, fb_sum = fx_sum + fx, fb_sum + fb
    finally:
        model.train(was)
    K = max(1, len(counted))
    attr /= K
    attr[in_win & ~measured] = np.nan
    df = piece.notes_table()
    df["attribution"] = attr
    df["in_window"] = in_win
    df["measured"] = measured
    value, base = fx_sum / K, fb_sum / K
    df.attrs.update({"method": method, "class": model.classes[c], "class_index": c, "output": output,
                     "value": value, "baseline_value": base,
                     "completeness_gap": float(np.nansum(attr) - (value - base)),
                     "n_windows": len(counted), "steps": int(steps) if method == "ig" else 0,
                     "target": None if target is None else int(target), "task": model.task,
                     "precision": precision, "n_measured": int(measured.sum()), "n_forward": n_forward})
    return df


def spearman_agreement(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """Spearman rank correlation of two ``attribute_notes`` tables' ``attribution`` over the
    notes measured in both -> ``{"spearman", "pvalue", "n"}`` (NaN when fewer than 3 notes or
    one attribution is constant)."""
    from scipy.stats import spearmanr

    sel = a["measured"].to_numpy(bool) & b["measured"].to_numpy(bool)
    x, y = a["attribution"].to_numpy(float)[sel], b["attribution"].to_numpy(float)[sel]
    n = int(sel.sum())
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": float("nan"), "pvalue": float("nan"), "n": n}
    r = spearmanr(x, y)
    return {"spearman": float(r.statistic), "pvalue": float(r.pvalue), "n": n}


def attribution_agreement(model, tokenizer, piece, target: int | None = None, steps: int = 16, *,
                          cls: int | str | None = None, output: str = "prob", batch_size: int = 16,
                          precision: str = "fp32", occlusion_notes: int | None = None, seed: int = 0
                          ) -> dict[str, Any]:
    """IG and occlusion of the same class output of one piece, and their Spearman agreement
    (over the occluded notes: all, or a sample of ``occlusion_notes``; ``precision`` applies to IG):
    ``{"spearman", "pvalue", "n", "ig": DataFrame, "occlusion": DataFrame, "class"}``."""
    ig = attribute_notes(model, tokenizer, piece, target, "ig", steps, cls=cls, output=output,
                         batch_size=batch_size, precision=precision)
    occ = attribute_notes(model, tokenizer, piece, target, "occlusion", cls=ig.attrs["class_index"],
                          output=output, batch_size=batch_size,
                          max_notes=occlusion_notes, seed=seed)
    return {**spearman_agreement(ig, occ), "ig": ig, "occlusion": occ, "class": ig.attrs["class"]}


# ----------------------------------------------------------------------------- attention

@torch.no_grad()
def attention_weights(model, tokens) -> np.ndarray:
    """Attention probabilities of one window, tokens (L, A) -> (n_layers, n_heads, L, L); every
    row sums to 1. From each block's ``Block.attention_probs`` (explanation path only)."""
    enc = _encoder_of(model)
    tok = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=next(enc.parameters()).device)
    if tok.dim() != 2:
        raise ValueError(f"tokens must be (L, A), got {tuple(tok.shape)}")
    was = enc.training
    enc.eval()
    try:
        if getattr(enc.config, "arch", "smu") == "bert":
            return _bert_attention_weights(enc, tok)
        h = enc.embed_notes(note_embeddings(enc, tok[None]))
        out = []
        for blk in enc.blocks:
            out.append(blk.attention_probs(h, None)[0].cpu().numpy())
            h = blk(h, None)
    finally:
        enc.train(was)
    return np.stack(out)


def _bert_attention_weights(enc, tok: torch.Tensor) -> np.ndarray:
    """``attention_weights`` of an ``arch="bert"`` encoder (imported models): per layer,
    softmax((q.k + the relative-position logits) / sqrt(head_dim)) in float64, as the layer's
    forward computes it (``relattn``)."""
    from .relattn import RELATIVE, relative_position_bias

    c = enc.config
    h = enc.bert.embeddings(enc.embed_notes(note_embeddings(enc, tok[None])), None)
    H, L = c.n_heads, tok.shape[0]
    out = []
    for layer in enc.bert.encoder.layer:
        sa = layer.attention.self
        q = sa.query(h).view(1, L, H, -1).transpose(1, 2).double()
        k = sa.key(h).view(1, L, H, -1).transpose(1, 2).double()
        w = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if c.position in RELATIVE:
            w = w + relative_position_bias(q, k, sa.distance_embedding.weight.double(), c.max_len, c.position)
        out.append(torch.softmax(w, dim=-1)[0].cpu().numpy())
        h = layer(h, None)
    return np.stack(out)


def attention_rollout(weights: np.ndarray) -> np.ndarray:
    """Attention rollout of (n_layers, n_heads, L, L) weights -> (L, L), rows summing to 1."""
    w = np.asarray(weights, dtype=np.float64)
    L = w.shape[-1]
    eye = np.eye(L)
    R = eye
    for layer in w:
        a = 0.5 * layer.mean(0) + 0.5 * eye
        a /= a.sum(-1, keepdims=True)
        R = a @ R
    return R


def note_window(model, tokenizer, piece, note: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(window tokens, note ids of the window, position of ``note`` in it): the window where the
    note is farthest from an edge (the same owner rule as ``explain_piece``)."""
    enc = _encoder_of(model)
    _check(enc, tokenizer, 0.15, None, None)
    N = len(piece)
    if not 0 <= int(note) < N:
        raise _SMUInputError("note", f"note {note} is not in the piece (0..{N - 1})")
    wins = _windows(tokenizer, piece, tokenizer.encode(piece), enc.config.max_len)
    owner, owner_pos = _owners(wins, N)
    wt, ids = wins[int(owner[int(note)])]
    return wt, ids, int(owner_pos[int(note)])


def note_attention(model, tokenizer, piece, note: int, *, layer: int | None = None, head: int | None = None,
                   rollout: bool = False) -> np.ndarray:
    """(n_notes,) weights of the notes ``note`` attends to (0 outside its window; sums to 1).

    ``rollout=True``: attention rollout through all layers; else layer ``layer`` (default the
    last; negative counts from the end) and head ``head`` (default the mean of the heads).
    """
    wt, ids, p = note_window(model, tokenizer, piece, note)
    w = attention_weights(model, wt)
    n_layers, n_heads = w.shape[:2]
    if rollout:
        row = attention_rollout(w)[p]
    else:
        li = n_layers - 1 if layer is None else int(layer)
        if not -n_layers <= li < n_layers:
            raise _SMUInputError("layer", f"layer {layer} out of range (the model has {n_layers})")
        lw = w[li]
        if head is None:
            row = lw[:, p].mean(0)
        else:
            if not 0 <= int(head) < n_heads:
                raise _SMUInputError("head", f"head {head} out of range (the model has {n_heads})")
            row = lw[int(head), p]
    out = np.zeros(len(piece), dtype=np.float64)
    out[ids] = row
    return out


# ----------------------------------------------------------------------------- masker

@torch.no_grad()
def masker_occlusion(model, tokenizer, piece, note: int, *, batch_size: int = 32) -> pd.DataFrame:
    """Which notes drive the masker score of ``note``: for each other note j of its window,
    ``change`` = score(note | j masked) - score(note) (0 and ``in_window`` False outside the
    window; 0 for the note itself). ``df.attrs["score"]`` = the clean score."""
    enc = _encoder_of(model)
    wt, ids, p = note_window(model, tokenizer, piece, note)
    device = next(enc.parameters()).device
    tok = torch.from_numpy(wt).to(device)
    L = len(wt)
    was = enc.training
    enc.eval()
    try:
        clean = float(enc.masker(enc.encode(tok[None]))[0, p])
        change = np.zeros(L)
        for i in range(0, L, batch_size):
            idx = torch.arange(i, min(i + batch_size, L), device=device)
            t = tok[None].repeat(len(idx), 1, 1)
            t[torch.arange(len(idx)), idx] = MASK_ID
            change[i:i + len(idx)] = enc.masker(enc.encode(t))[:, p].double().cpu().numpy() - clean
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
        raise _SMUInputError("masks", "n_masks must be >= 1 and ratio in (0, 1]")
    enc = _encoder_of(model)
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
        hidden = enc.encode(tok.masked_fill(mk[..., None], MASK_ID))
        logits = enc.heads(hidden[:, p])
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
