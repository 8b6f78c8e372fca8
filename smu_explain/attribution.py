"""Why a fine-tuned model decided: its predictions on a piece and per-note attributions of them.

``predict_task`` / ``predict_piece``: a ``heads.FineTuneModel``'s prediction the way finetune
evaluates it; ``attribute_notes``: integrated gradients or occlusion of one class output per
note; ``attribution_agreement`` / ``spearman_agreement``: how far the two methods agree. May
import torch, ``encoder_inputs``, ``windows``, ``precision``, ``tokenizer`` and ``errors``.

Rules:

- The model under explanation: a ``heads.FineTuneModel``. The encoder is run
  through its own submodules (``encoder_inputs``: ``embeddings`` -> concatenation ->
  ``in_proj`` + position embeddings -> ``blocks`` -> ``ln_f``), exactly what
  ``MidiBert.encode`` does in eval mode, so gradients can be taken with respect to the
  per-note input embedding x_i (the concatenation of the note's attribute embeddings,
  A * emb_dim wide) without touching model.py.
- Windows: the fine-tuner's windows (``tokenizer.encode_windows``; or windows of
  the model's ``max_len`` when the model is shorter, see ``windows.piece_windows``).
- Explained quantity ``f``: the softmax probability (``output="prob"``, default)
  or the logit (``output="logit"``) of one class ``c``.
  * sequence tasks: f_w = class output of window w; the piece-level value is the
    MEAN over the piece's windows (finetune's piece prediction = argmax of the mean
    window probabilities), and a note's attribution is the mean over all windows
    of its attribution in each window (0 for windows that do not hold it), so the
    piece-level attributions still sum to the piece-level f(x) - f(baseline).
  * note tasks (``target`` = a note index): f_w = class output at the target note
    in window w; only the windows holding the target count (finetune averages a
    note's probabilities over the windows holding it), and the same mean is used.
    Notes outside every window that holds the target get exactly 0.
  * default class: the model's prediction (argmax of the mean probabilities).
- Integrated gradients: baseline = every note's input embedding replaced by the
  embedding of the all-MASK token (MASK id in every attribute; the position
  embeddings stay). a_i = sum over the embedding dims of
  (x_i - b_i) * mean_k dF/dx_i (b + alpha_k (x - b)), alpha_k = (k + 0.5) / steps
  (midpoint rule), the ``steps`` interpolated inputs run in chunks of ``batch_size``.
  Completeness: sum_i a_i ~= f(x) - f(baseline) (``attrs["completeness_gap"]``).
- Occlusion: a_i = f(x) - f(x with note i's token replaced by MASK in every
  attribute), one occluded copy per note of the window, copies batched.
  Positive = the note supports the class in both methods. Occlusion costs one
  forward per note; ``max_notes`` occludes a seeded uniform sample of the notes
  instead (a spot check of IG: the other notes get NaN, ``measured`` False).
- Precision: "bf16" runs IG's batched path points under bf16 autocast (about 2x
  faster on CPUs with bf16 units); f(x) and f(baseline) stay fp32, so IG's
  completeness gap shows the bf16 error. Occlusion is fp32 only: one note's
  effect is often below bf16's resolution (measured: Spearman with IG fell from
  0.97 to 0.13 in bf16).
- Agreement: Spearman rank correlation of the two attributions over the notes
  measured by both (scipy.stats.spearmanr).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from .encoder_inputs import encode_embeddings, encoder_of, note_embeddings
from .errors import SMUInputError
from .precision import PRECISIONS, autocast
from .tokenizer import MASK_ID
from .windows import check_inputs, piece_windows

ATTRIBUTION_METHODS = ("ig", "occlusion")


def _is_task_model(model) -> bool:
    return hasattr(model, "head") and getattr(model, "level", None) in ("note", "sequence")


def _class_index(model, cls) -> int | None:
    if cls is None:
        return None
    if isinstance(cls, str):
        if cls not in model.classes:
            raise SMUInputError("class", f"unknown class {cls!r}; the model's classes are {model.classes}")
        return model.classes.index(cls)
    c = int(cls)
    if not 0 <= c < len(model.classes):
        raise SMUInputError("class", f"class index {c} out of range 0..{len(model.classes) - 1}")
    return c


class _TaskFn:
    """f(embeddings) for one window: the class output of a FineTuneModel (see rules)."""

    def __init__(self, model, target_pos: int | None, cls: int, output: str):
        self.model, self.enc = model, encoder_of(model)
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
        with autocast(x.device, precision):
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
    enc = encoder_of(model)
    check_inputs(enc, tokenizer, 0.15, None, None)
    N = len(piece)
    if N == 0:
        raise SMUInputError(getattr(piece, "name", "piece"), "the piece has no notes")
    wins = piece_windows(tokenizer, piece, tokenizer.encode(piece), enc.config.max_len)
    if model.level == "sequence":
        if target is not None:
            raise SMUInputError("target", f"{model.task} is a sequence task: no target note (pass target=None)")
        return wins, list(range(len(wins))), [None] * len(wins)
    if target is None:
        raise SMUInputError("target", f"{model.task} is a note task: choose the target note (target=index)")
    t = int(target)
    if not 0 <= t < N:
        raise SMUInputError("target", f"note {t} is not in the piece (0..{N - 1})")
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
        raise SMUInputError("model", "attributions need a fine-tuned model (heads.FineTuneModel)")
    wins, counted, pos = _task_windows(model, tokenizer, piece, target)
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        probs = np.zeros(len(model.classes))
        for w, p in zip(counted, pos, strict=False):
            tok = torch.from_numpy(wins[w][0]).to(device)
            lg = _TaskFn(model, p, 0, "prob").logits(note_embeddings(encoder_of(model), tok[None]))
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
        raise SMUInputError("model", "piece predictions need a fine-tuned model (heads.FineTuneModel)")
    enc = encoder_of(model)
    check_inputs(enc, tokenizer, 0.15, None, None)
    n, C = len(piece), len(model.classes)
    wins = piece_windows(tokenizer, piece, tokenizer.encode(piece), enc.config.max_len) if n else []
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
    """Per-note attribution of a fine-tuned model's class output (rules in the module docstring).

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
        raise SMUInputError("method", f"unknown attribution method {method!r}; choose one of {ATTRIBUTION_METHODS}")
    if output not in ("prob", "logit"):
        raise SMUInputError("output", f"output must be 'prob' or 'logit', got {output!r}")
    if precision not in PRECISIONS:
        raise SMUInputError("precision", f"precision must be one of {PRECISIONS}, got {precision!r}")
    if int(steps) < 1 or int(batch_size) < 1:
        raise SMUInputError("steps", "steps and batch_size must be >= 1")
    if method == "occlusion" and precision != "fp32":
        raise SMUInputError("precision", "occlusion runs in fp32 only: one note's effect is often below "
                                          "bf16's resolution (bench/attribution.py measured it)")
    if max_notes is not None and int(max_notes) < 1:
        raise SMUInputError("max_notes", "max_notes must be >= 1 (or None for every note)")
    if not _is_task_model(model):
        raise SMUInputError("model", "attributions need a fine-tuned model (heads.FineTuneModel); "
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
        for w, p in zip(counted, pos, strict=False):
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
