"""Where a note looks: the attention weights of a pre-trained encoder, read per note.

``attention_weights`` gives every layer's and head's attention probabilities of one window;
``attention_rollout`` combines the layers; ``note_attention`` the row of one note, read in the
window where the note is farthest from an edge (``encoder_inputs.note_window``, as
``explain.explain_piece``). May import torch, ``encoder_inputs``, ``relattn`` and ``errors``.

Rules: the fused SDPA path returns no weights; for explanations only, each block's
softmax(q k^T / sqrt(head_dim)) comes from ``Block.attention_probs`` (the same q, k as
training, rotary positions included; training is untouched). Rollout (Abnar & Zuidema 2020):
per layer the head mean A, A' = 0.5 A + 0.5 I with rows renormalised, R = A'_last ... A'_1.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .encoder_inputs import encoder_of, note_embeddings, note_window
from .errors import SMUInputError


@torch.no_grad()
def attention_weights(model, tokens) -> np.ndarray:
    """Attention probabilities of one window, tokens (L, A) -> (n_layers, n_heads, L, L); every
    row sums to 1. From each block's ``Block.attention_probs`` (explanation path only)."""
    enc = encoder_of(model)
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
            raise SMUInputError("layer", f"layer {layer} out of range (the model has {n_layers})")
        lw = w[li]
        if head is None:
            row = lw[:, p].mean(0)
        else:
            if not 0 <= int(head) < n_heads:
                raise SMUInputError("head", f"head {head} out of range (the model has {n_heads})")
            row = lw[int(head), p]
    out = np.zeros(len(piece), dtype=np.float64)
    out[ids] = row
    return out
