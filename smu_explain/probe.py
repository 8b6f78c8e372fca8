"""Linear probe: a logistic regression on the frozen encoder's features.

What pre-training put into the representation, measured without fine-tuning the
encoder: the encoder runs once (eval mode, no masking, no gradient) over the task's
windows, and a multinomial logistic regression is fitted on its final hidden states.

- Note tasks (melody, velocity): one feature row per real token (the token's hidden
  state); at most ``max_train_rows`` training rows, drawn uniformly with a fixed seed.
- Sequence tasks (composer, emotion): one row per window, the mean of its real tokens'
  hidden states.
- The L2 penalty is chosen from ``l2_grid`` by validation accuracy; features are
  standardised with the training rows' mean and std.
- Scores use ``finetune.scores_from_predictions``, so units match fine-tuning: notes
  (probabilities averaged over overlapping windows) or pieces (argmax of the mean
  window probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .finetune import scores_from_predictions
from .masks import attention_mask_of
from .model import unwrap

DEFAULT_L2 = (1e-4, 1e-3, 1e-2)


@torch.no_grad()
def encoder_features(encoder, dataset, level: str, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Frozen features of every sample of ``dataset`` (a ``datasets.TokenDataset`` with labels).

    Returns ``x`` (N, D) float32, ``label``, ``piece_id`` and, for note tasks, ``note_id``
    (N,) int64: rows are real tokens (note tasks) or windows (sequence tasks).
    """
    from .datasets import collate

    m = unwrap(encoder)
    was = m.training
    m.eval()
    device = next(m.parameters()).device
    xs, ys, pids, nids = [], [], [], []
    try:
        for i in range(0, len(dataset), batch_size):
            b = collate([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))])
            tokens = b["tokens"].to(device)
            am = attention_mask_of(b).to(device)
            h = m.encode(tokens, am).float().cpu()
            am = am.cpu()
            if level == "note":
                xs.append(h[am].numpy())
                ys.append(b["labels"][am].numpy())
                pids.append(b["piece_id"][:, None].expand_as(am)[am].numpy())
                nids.append(b["note_ids"][am].numpy())
            else:
                w = am.float().unsqueeze(-1)
                xs.append(((h * w).sum(1) / w.sum(1).clamp_min(1)).numpy())
                ys.append(b["labels"].numpy())
                pids.append(b["piece_id"].numpy())
    finally:
        m.train(was)
    out = {"x": np.concatenate(xs).astype(np.float32), "label": np.concatenate(ys).astype(np.int64),
           "piece_id": np.concatenate(pids).astype(np.int64)}
    if level == "note":
        out["note_id"] = np.concatenate(nids).astype(np.int64)
        keep = out["label"] >= 0  # unlabelled notes (-100) are not scored
        out = {k: v[keep] for k, v in out.items()}
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, max_iter: int = 200,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (full-batch L-BFGS; mean cross-entropy + ``l2`` * |W|^2 / 2).
    Returns (W (D, C), b (C,))."""
    g = torch.Generator().manual_seed(int(seed))
    X = torch.from_numpy(x)
    Y = torch.from_numpy(y)
    W = (0.01 * torch.randn(X.shape[1], n_classes, generator=g)).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(X @ W + b, Y) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def _predict(feats: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, W: torch.Tensor, b: torch.Tensor
             ) -> dict[str, Any]:
    logits = torch.from_numpy((feats["x"] - mean) / std) @ W + b
    y = torch.from_numpy(feats["label"])
    pred = {"probs": torch.softmax(logits, -1).numpy(), "label": feats["label"], "piece_id": feats["piece_id"],
            "loss": float(F.cross_entropy(logits, y)) if len(y) else float("nan")}
    if "note_id" in feats:
        pred["note_id"] = feats["note_id"]
    return pred


def linear_probe(encoder, train, val, test, classes: Sequence[str], level: str, *,
                 l2_grid: Sequence[float] = DEFAULT_L2, max_train_rows: int = 100_000, batch_size: int = 64,
                 seed: int = 0) -> dict[str, Any]:
    """Fit the probe on ``train``, choose the L2 penalty on ``val``, score ``val`` and ``test``.

    Returns ``{"l2", "val": scores, "test": scores, "by_l2": {l2: val acc}, "n_train_rows",
    "feature_dim"}`` (scores: ``acc``, ``macro_f1``, ``confusion``, ``n``, ``unit``, ...)."""
    n_classes = len(classes)
    tr = encoder_features(encoder, train, level, batch_size)
    if len(tr["label"]) > max_train_rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(tr["label"]), max_train_rows, replace=False))
        tr = {k: v[keep] for k, v in tr.items()}
    va = encoder_features(encoder, val, level, batch_size)
    te = encoder_features(encoder, test, level, batch_size)
    mean = tr["x"].mean(0)
    std = tr["x"].std(0) + 1e-6
    xtr = (tr["x"] - mean) / std
    best = None
    by_l2: dict[str, float] = {}
    for l2 in l2_grid:
        W, b = fit_logistic(xtr, tr["label"], n_classes, float(l2), seed=seed)
        val_scores = scores_from_predictions(_predict(va, mean, std, W, b), level, n_classes)
        by_l2[f"{l2:g}"] = val_scores["acc"]
        if best is None or val_scores["acc"] > best[0]["acc"]:
            best = (val_scores, float(l2), W, b)
    val_scores, l2, W, b = best
    test_scores = scores_from_predictions(_predict(te, mean, std, W, b), level, n_classes)
    return {"l2": l2, "by_l2": by_l2, "val": val_scores, "test": test_scores,
            "n_train_rows": int(len(tr["label"])), "feature_dim": int(tr["x"].shape[1])}


def majority_rate(dataset, level: str, n_classes: int) -> dict[str, Any]:
    """The majority-class baseline of ``dataset`` in the scoring unit (notes or pieces):
    ``{"class": index, "rate": share of the most frequent class, "n": units}``. The
    majority class is the test set's own, so it is an upper bound on any constant guess."""
    counts = np.zeros(n_classes, dtype=np.int64)
    for p in dataset.pieces:
        if level == "note":
            lab = np.asarray(p.note_labels if p.note_labels is not None else [], dtype=np.int64)
            lab = lab[lab >= 0]
            counts += np.bincount(lab, minlength=n_classes)[:n_classes]
        elif p.label is not None:
            counts[int(p.label)] += 1
    n = int(counts.sum())
    c = int(counts.argmax()) if n else 0
    return {"class": c, "rate": float(counts[c] / n) if n else None, "n": n, "counts": counts.tolist()}
