"""Did the masker LEARN its preferences? The trained masker head against many random read-outs of its own encoder.

``picks.class_effects`` says which classes of note a masker scores higher or lower;
``picks.compare_effects`` compares that with ONE untrained head on another model's encoder. Here
the null is "what a random read-out of THIS model's encoder shows": ``n_heads`` masker heads are
drawn at their initialisation (the same architecture as ``model.masker_head``, initialised as the
model's ``config.init`` initialises it: PyTorch's own for ``"torch"``, N(0, 0.02) with zero biases
for ``"normal"``; head ``i`` under torch seed ``SeedSequence([seed, i])``), each scores the same
notes from the same hidden states (the encoder runs once per window: ``note_hidden``, the windows
and owner windows of ``explain.masker_view``), and each head's standardised class effects are
computed exactly as the trained head's (``picks.stratified_effects``, the estimator of
``class_effects``: ``score_adj`` within duration x register bins, ``score_diff`` for duration and
register; divided by that head's own score SD over all notes). ``random_head_test`` checks that its
trained effects equal ``class_effects``' and that the model's own head reproduces the table's scores.

The test, per class a sentence may name (``picks.candidates``, k of them)
    the Monte Carlo p-value of the trained effect t among the random heads' effects r_1..r_n:
    p = (1 + #{i: |r_i - c| >= |t - c|}) / (1 + n), two-sided around c, the median of the n + 1
    effects (the random heads' and the trained one). The median, not 0: a random read-out of an
    encoder need not be centred on 0 (an encoder can make every read-out favour long notes), and
    "learned" means "unlike a random read-out", so extremeness is measured from the random heads'
    centre; a trained effect of -1 SD among random heads all near +1 SD is extreme although it is
    no farther from 0 than they are. Taking the median of all n + 1 (a symmetric function of them)
    keeps p exact: if the trained head's effect were one more draw of a random head, p <= a with
    probability <= a. Bonferroni over the k classes: ``p_corrected = min(1, k p)``, so
    n >= k / ALPHA is needed for any class to be called learned (k = 24: n >= 480; default 1,000).
    *learned*: ``p_corrected < ALPHA`` (5%) and the trained effect differs from the random heads'
    median by at least ``picks.MIN_EFFECT_SD`` (0.2 SD, the sentences' minimum effect). The random
    heads' 2.5-97.5% range is reported beside each trained effect. A confirmatory run tests only the
    classes it was given (``classes=``: an exploratory run's hypotheses), k = their number.
What it does not cover
    The pieces are fixed: p says whether the trained head is unlike random heads ON THESE PIECES
    (the piece bootstrap of ``class_effects`` covers other pieces, for one head). And the encoder is
    the trained model's own, already shaped by its training: the null is "a random read-out of this
    encoder", so a preference the encoder's features give every read-out is not called learned.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .harmony import LABEL_COLUMNS
from .picks import (
    ALPHA,
    CONTROLS,
    MIN_EFFECT_SD,
    MIN_NOTES,
    MIN_PIECES,
    candidates,
    class_order,
    label_values,
    phrase,
    stratified_effects,
)

#: random heads drawn by default: with k = 24 classes, 1 / (n + 1) * k = 0.024 < ALPHA leaves room for a tie
NULL_HEADS = 1000
#: notes per block of the heads' matrix products (block x chunk x masker_hidden floats stay in the CPU's cache: measured
#: 0.14-0.17 s per head of 256 on 143,785 notes, one thread; 4,096 notes a block: 0.21 s)
NOTE_BLOCK = 256


# --------------------------------------------------------------------------- the encoder, once

def note_hidden(model, tokenizer, piece, *, batch_size: int = 32) -> np.ndarray:
    """The encoder's hidden state of each note of ``piece`` (N, D) float32, read in the note's owner
    window: the windows and owners of ``explain.masker_view``, so ``model.masker`` of these rows is the
    masker score of its table."""
    import torch

    from .model import unwrap
    from .windows import gather_notes, note_owners, pad_windows, piece_windows

    m = unwrap(model)
    N = len(piece.notes_table())
    if N == 0:
        return np.zeros((0, m.config.d_model), dtype=np.float32)
    wins = piece_windows(tokenizer, piece, tokenizer.encode(piece), m.config.max_len)
    owner, owner_pos = note_owners(wins, N)
    device = next(m.parameters()).device
    per: list[np.ndarray] = []
    was = m.training
    m.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(wins), batch_size):
                chunk = [wt for wt, _ in wins[i:i + batch_size]]
                tok, am = pad_windows(chunk, device)
                h = m.encode(tok, am).float().cpu().numpy()
                per += [h[j, : len(c)] for j, c in enumerate(chunk)]
    finally:
        m.train(was)
    return gather_notes(per, owner, owner_pos).astype(np.float32)


# --------------------------------------------------------------------------- random heads

def head_seed(seed: int, i: int) -> int:
    """The torch seed of random head ``i`` of a draw seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1)[0])


def draw_head(like, init: str, seed: int):
    """A copy of the head module ``like`` (e.g. ``model.masker_head``) re-initialised as a new model's
    would be (``init``: ``"torch"`` = each layer's ``reset_parameters``; ``"normal"`` = N(0, 0.02)
    weights and zero biases, ``MidiBert``'s scheme) under torch seed ``seed`` (the global generator
    is left as it was)."""
    import torch
    from torch import nn

    head = copy.deepcopy(like).float().cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for mod in head.modules():
            if init == "normal" and isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, mean=0.0, std=0.02)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif init == "normal" and isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, mean=0.0, std=0.02)
            elif init != "normal" and hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
    return head


def _mlp_weights(heads: Sequence) -> tuple | None:
    """(W1 (m*H, D), b1 (m*H,), W2 (m*H, m) block-diagonal, b2 (m,)) of heads that are Linear-ReLU-Linear(->1),
    else None."""
    import torch
    from torch import nn

    mods = [[x for x in h.modules() if not isinstance(x, nn.Sequential)] for h in heads]
    if not all(len(m) == 3 and isinstance(m[0], nn.Linear) and isinstance(m[1], nn.ReLU)
               and isinstance(m[2], nn.Linear) and m[2].out_features == 1 for m in mods):
        return None
    W1 = torch.cat([m[0].weight for m in mods])
    b1 = torch.cat([m[0].bias for m in mods])
    W2 = torch.block_diag(*[m[2].weight[0][:, None] for m in mods])
    b2 = torch.cat([m[2].bias for m in mods])
    return W1, b1, W2, b2


def head_scores(hidden: np.ndarray, heads: Sequence) -> np.ndarray:
    """Scores (N, len(heads)) float64 in (0, 1): sigmoid of each head on every row of ``hidden`` (N, D),
    fp32. Linear-ReLU-Linear heads are evaluated together, ``NOTE_BLOCK`` notes at a time (the
    second layers as one block-diagonal product), any other head one by one."""
    import torch

    H = torch.from_numpy(np.ascontiguousarray(hidden, dtype=np.float32))
    out = np.empty((len(H), len(heads)))
    with torch.no_grad():
        mlp = _mlp_weights(heads)
        if mlp is None:
            for j, h in enumerate(heads):
                out[:, j] = torch.sigmoid(h(H).reshape(len(H))).double().numpy()
            return out
        W1, b1, W2, b2 = mlp
        W1t = W1.t().contiguous()
        for s in range(0, len(H), NOTE_BLOCK):
            a = torch.addmm(b1, H[s:s + NOTE_BLOCK], W1t).relu_()
            out[s:s + len(a)] = torch.sigmoid(torch.addmm(b2, a, W2)).double().numpy()
    return out


# --------------------------------------------------------------------------- effects of many heads

def effect_design(frames: Sequence[pd.DataFrame], classes: Sequence[tuple[str, str]]):
    """A function ``scores (N, M) -> (effects (M, k), sds (M,))`` for the notes of ``frames`` concatenated
    (empty frames left out, as ``class_effects`` does) and the ``(column, class)`` pairs ``classes``:
    each score column's ``class_effects`` point estimate (``picks.stratified_effects`` on the full
    sample: ``score_adj``; ``score_diff`` for duration and register) over its population SD over all
    notes. The labels are read once; each call costs a sparse product per label column."""
    from scipy import sparse

    allf = pd.concat([f for f in frames if len(f)], ignore_index=True)
    n = len(allf)
    bins = pd.Series(label_values(allf, "duration")).str.cat(pd.Series(label_values(allf, "register")), sep=" | ")
    bin_codes, bin_names = pd.factorize(bins, sort=True)
    B = len(bin_names)
    parts = []
    for col in dict.fromkeys(c for c, _ in classes):
        labels = label_values(allf, col)
        present = set(labels)
        order = [c for c in class_order(col) if c in present] + sorted(present - set(class_order(col)))
        code = {c: i for i, c in enumerate(order)}
        g = np.asarray([code[v] for v in labels], dtype=np.int64) * B + bin_codes
        C = len(order)
        onehot = sparse.csr_matrix((np.ones(n), (g, np.arange(n))), shape=(C * B, n))
        cnt = np.bincount(g, minlength=C * B).astype(float).reshape(1, C, B)
        where = [(j, code[cls]) for j, (c2, cls) in enumerate(classes) if c2 == col and cls in code]
        parts.append((col, C, onehot, cnt, where))

    def effects(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        S = np.asarray(scores, dtype=float)
        if S.ndim != 2 or S.shape[0] != n:
            raise ValueError(f"scores of shape {S.shape} for {n} notes")
        sd = S.std(0)
        out = np.full((S.shape[1], len(classes)), np.nan)
        for col, C, onehot, cnt, where in parts:
            sx = np.asarray(onehot @ S).reshape(1, C, B, S.shape[1])
            eff = stratified_effects(cnt, sx, np.ones((1, 1)))["diff" if col in CONTROLS else "adj"][0]  # (C, M)
            with np.errstate(invalid="ignore", divide="ignore"):
                for j, i in where:
                    out[:, j] = eff[i] / sd
        return out, sd

    return effects


def effect_matrix(frames: Sequence[pd.DataFrame], scores: np.ndarray,
                  classes: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """``effect_design(frames, classes)(scores)``: each score column's standardised effect of each class
    (M, k) and the columns' score SDs (M,)."""
    return effect_design(frames, classes)(scores)


def monte_carlo_p(trained: np.ndarray, random: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the two-sided Monte Carlo p-value of ``trained`` (k,) among ``random`` (n, k) and the
    centre it is measured from (the median of the n + 1 values): (1 + #{|r - c| >= |t - c|}) / (1 + n).
    Random effects that are NaN are left out of their column (n counts the rest)."""
    t = np.asarray(trained, dtype=float)
    R = np.asarray(random, dtype=float)
    p = np.full(t.shape, np.nan)
    centre = np.full(t.shape, np.nan)
    for j in range(t.size):
        r = R[:, j][np.isfinite(R[:, j])]
        if not np.isfinite(t[j]) or r.size == 0:
            continue
        centre[j] = np.median(np.append(r, t[j]))
        far = np.abs(t[j] - centre[j])
        p[j] = (1 + np.count_nonzero(np.abs(r - centre[j]) >= far - 1e-12 * max(1.0, far))) / (1 + r.size)
    return p, centre


def given_classes(result: Mapping[str, Any], classes: Iterable[tuple[str, str]]) -> tuple[list[dict[str, Any]], list]:
    """Of the ``(column, class)`` pairs ``classes`` (duplicates dropped, order kept), those ``result`` (a
    ``class_effects`` table) can measure, ``{column, class, phrase}`` as ``picks.candidates`` gives them: at
    least ``MIN_NOTES`` notes in ``min(MIN_PIECES, pieces)`` pieces; and the pairs it cannot (too few notes, or
    absent). Unlike ``candidates``, either class of a two-class column may be asked for."""
    need_pieces = min(MIN_PIECES, int(result.get("n_pieces", 0)))
    found, missing = [], []
    for col, cls in dict.fromkeys((str(c), str(k)) for c, k in classes):
        row = next((r for r in result.get("columns", {}).get(col, []) if r["class"] == cls), None)
        if row is None or row["n_notes"] < MIN_NOTES or row["n_pieces"] < need_pieces:
            missing.append([col, cls])
        else:
            found.append({"column": col, "class": cls, "phrase": phrase(col, cls)})
    return found, missing


def random_head_test(frames: Sequence[pd.DataFrame], hidden: Sequence[np.ndarray], like, init: str = "torch", *,
                     columns: Sequence[str] = LABEL_COLUMNS, n_heads: int = NULL_HEADS, seed: int = 0,
                     chunk: int = 32, alpha: float = ALPHA,
                     min_sd: float = MIN_EFFECT_SD, result: Mapping[str, Any] | None = None,
                     trained_head=None, model: str = "",
                     classes: Iterable[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The trained masker's class effects (its scores: ``frames``' ``score``) against ``n_heads`` heads
    drawn like ``like`` at initialisation ``init`` (module docstring), all scoring ``hidden`` (one
    (N_i, D) array per frame, rows = its notes). ``result``: the trained head's ``class_effects`` of
    ``frames`` (made here when None; its point estimates must equal this module's: checked).
    ``trained_head``: when given, its scores of ``hidden`` must be the frames' (checked, 1e-4).
    ``classes``: test only these ``(column, class)`` pairs (e.g. the hypotheses of an earlier, exploratory
    run), Bonferroni over their number, those the pieces have too few notes of included (they are listed under
    ``untested``, not tested, and count in ``k``); None = every class a sentence may name (``picks.candidates``).
    JSON-serialisable; ``classes`` in the order of ``picks.candidates`` (or of the ``classes`` given)."""
    from .picks import class_effects

    pairs = [(f, h) for f, h in zip(frames, hidden, strict=True) if len(f)]
    if any(len(f) != len(h) for f, h in pairs):
        raise ValueError("hidden states and note tables differ in their notes")
    frames = [f for f, _ in pairs]
    H = np.concatenate([h for _, h in pairs]) if pairs else np.zeros((0, 1), dtype=np.float32)
    # candidates need intervals; given classes do not
    res = result if result is not None else class_effects(frames, columns=columns, n_boot=50 if classes is None else 0)
    if classes is None:
        cands, untested = candidates(res), None
    else:
        cands, untested = given_classes(res, classes)
    keys = [(c["column"], c["class"]) for c in cands]
    out: dict[str, Any] = {"model": model, "n_heads": int(n_heads), "seed": int(seed), "init": init,
                           "n_pieces": len(frames), "n_notes": int(len(H)),
                           "k": len(keys) + len(untested or []),
                           "alpha": float(alpha), "min_sd": float(min_sd), "classes": []}
    if untested is not None:
        out["untested"] = untested
    if not keys or n_heads < 1:
        return out
    trained_scores = np.concatenate([f["score"].to_numpy(dtype=float) for f in frames])
    if trained_head is not None:
        gap = float(np.max(np.abs(head_scores(H, [trained_head])[:, 0] - trained_scores)))
        if gap > 1e-4:
            raise ValueError(f"the trained head's scores of these hidden states differ from the table's by {gap:.2g}")
        out["trained_head_gap"] = gap
    effects = effect_design(frames, keys)
    t_eff, t_sd = effects(trained_scores[:, None])
    table = np.array([next(r for r in res["columns"][c] if r["class"] == k)["score_diff" if c in CONTROLS
                                                                              else "score_adj"]["est"]
                      for c, k in keys]) / res["overall"]["score_sd"]
    if not np.allclose(t_eff[0], table, rtol=1e-9, atol=1e-9):
        raise ValueError("this module's effects of the trained head differ from class_effects'")
    R = np.empty((n_heads, len(keys)))
    sds = np.empty(n_heads)
    for s in range(0, n_heads, chunk):
        heads = [draw_head(like, init, head_seed(seed, i)) for i in range(s, min(s + chunk, n_heads))]
        R[s:s + len(heads)], sds[s:s + len(heads)] = effects(head_scores(H, heads))
    p, centre = monte_carlo_p(t_eff[0], R)
    k = out["k"]
    out["trained_score_sd"] = float(t_sd[0])
    out["random_score_sd"] = {"median": float(np.median(sds)), "lo": float(np.quantile(sds, 0.025)),
                              "hi": float(np.quantile(sds, 0.975))}
    for j, c in enumerate(cands):
        r = R[:, j][np.isfinite(R[:, j])]
        if r.size == 0 or not np.isfinite(p[j]):
            continue
        med = float(np.median(r))
        pc = min(1.0, k * float(p[j]))
        out["classes"].append({
            "column": c["column"], "class": c["class"], "phrase": c["phrase"],
            "vs": "rest" if c["column"] in CONTROLS else "same duration x register",
            "trained_sd": float(t_eff[0, j]), "random_median": med,
            "random_lo": float(np.quantile(r, 0.025)), "random_hi": float(np.quantile(r, 0.975)),
            "random_min": float(r.min()), "random_max": float(r.max()), "centre": float(centre[j]),
            "p": float(p[j]), "p_corrected": pc, "n": int(r.size),
            "learned": bool(pc < alpha and abs(t_eff[0, j] - med) >= min_sd)})
    return out


def confirms(confirm: Any, null: Any, pieces: Sequence[str]) -> bool:
    """Whether ``confirm`` (docs/masker_picks_confirm.json: ``scripts/masker_picks_confirm.py``) re-tests THIS
    random-head result ``null`` on new pieces: the same model and exploratory ``pieces``, and its hypotheses are
    ``null``'s classes below the rule's uncorrected p threshold, in order. False for anything malformed."""
    try:
        exp, p_below = confirm.get("exploratory") or {}, float(confirm["rule"]["hypothesis_p"])
        hyps = [(f["column"], f["class"]) for f in null["classes"] if float(f["p"]) < p_below]
        return bool(exp.get("model") == null.get("model") and list(exp.get("pieces") or []) == list(pieces)
                    and hyps == [(h["column"], h["class"]) for h in confirm["hypotheses"]]
                    and isinstance(confirm.get("outcome"), str))
    except (AttributeError, KeyError, TypeError, ValueError):
        return False


def confirmed_sentence(confirm: Any) -> str | None:
    """One sentence, in music's words, of what a confirmatory run (docs/masker_picks_confirm.json) confirmed
    the masker learned: the confirmed classes with their direction, out of how many pre-registered, on how
    many new pieces; None when it is malformed (the caller says nothing then)."""
    try:
        hyps = [h for h in confirm["hypotheses"] if isinstance(h, Mapping)]
        done = [h for h in hyps if h.get("confirmed") is True]
        way = {"above": "higher", "below": "lower"}
        parts = [f"{h['phrase']} {way[h['direction']]} than " + ("notes of the same duration and register"
                                                                if h.get("vs") == "same duration x register"
                                                                else "the other notes") for h in done]
        n, k = int(confirm["n_pieces"]), len(confirm["hypotheses"])
        who = f"{confirm['model']}'s masker" if confirm.get("model") else "The masker"
    except (KeyError, TypeError, ValueError):
        return None
    if not parts:
        return (f"None of the {k} candidate preferences of {who[0].lower() + who[1:]} held on {n} new pieces against random "
                "read-outs of its own encoder (pre-registered).")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
    return (f"{who} learned to score {listed}, unlike random read-outs of its own "
            f"encoder: {len(done)} of {k} pre-registered candidates, confirmed on {n} new pieces.")


def null_sentence(null: Mapping[str, Any], named: Iterable[tuple[str, str]] = ()) -> str:
    """What the random-head test says, in words: the label classes called learned (higher / lower than a
    random read-out), the classes of the model's own sentence (``named``) that are not, and the largest
    learned duration or register class."""
    who = f"{null['model']}'s masker" if null.get("model") else "The masker"
    n, k, bound = int(null.get("n_heads", 0)), int(null.get("k", 0)), float(null.get("min_sd", MIN_EFFECT_SD))
    if not null.get("classes"):
        return f"There is too little to compare {who[0].lower() + who[1:]} with random read-outs of its encoder on."

    def told(f: Mapping[str, Any]) -> str:
        way = "higher" if f["trained_sd"] > f["random_median"] else "lower"
        return (f"{f['phrase']} {way} ({f['trained_sd']:+.2f} SD; random heads {f['random_median']:+.2f}, 95% of them "
                f"in [{f['random_lo']:+.2f}, {f['random_hi']:+.2f}]; corrected p = {f['p_corrected']:.3f})")

    labels = [f for f in null["classes"] if f["column"] not in CONTROLS]
    learned = sorted((f for f in labels if f["learned"]), key=lambda f: -abs(f["trained_sd"] - f["random_median"]))
    named = [tuple(x) for x in named]
    unlearned = [f for key in named for f in labels if (f["column"], f["class"]) == key and not f["learned"]]
    lead = (f"Against {n:,} random read-outs of its own encoder (masker heads drawn at their initialisation, "
            f"scoring the same {null['n_pieces']} pieces), {who}")
    body = (f"{lead} learned to score " + "; and ".join(told(f) for f in learned) + " than notes of the same "
            "duration and register" if learned else
            f"{lead} scores no class of note, beyond duration and register, unlike a random read-out")
    if unlearned:
        body += ("; its own sentence's " + ", ".join(f["phrase"] for f in unlearned)
                 + " (" + "; ".join(f"{f['trained_sd']:+.2f} SD, random heads [{f['random_lo']:+.2f}, "
                                    f"{f['random_hi']:+.2f}], p = {f['p']:.3f}, corrected {f['p_corrected']:.3f}"
                                    for f in unlearned)
                 + f") are not clearly unlike a random read-out once the {k} classes tested are corrected for")
    dur = sorted((f for f in null["classes"] if f["column"] in CONTROLS and f["learned"]),
                 key=lambda f: -abs(f["trained_sd"] - f["random_median"]))
    if dur:
        body += f". Not controlled for duration and register, it learned to score {told(dur[0])} than the rest"
    if k / (n + 1) >= float(null["alpha"]):
        body += (f" (with {n:,} random heads no class can be: the smallest corrected p is {k / (n + 1):.2f}; at least "
                 f"{int(k / null['alpha'])} are needed)")
    return (f"{body}. (Each class's effect in standard deviations of each head's own scores; learned = a Monte "
            f"Carlo p-value among the random heads, two-sided around their median, below {null['alpha']:g} after "
            f"Bonferroni over the {k} classes, and at least ±{bound:g} SD from the random heads' median; the "
            f"pieces are fixed, so this covers the draw of the head, not the choice of pieces.)")
