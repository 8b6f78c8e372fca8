"""What the explanations feed a model's encoder: the encoder itself, the window a note is read
in, and the per-note input embeddings.

``encoder_of`` is the MidiBert of a fine-tuned model or of a (wrapped) MidiBert;
``note_window`` the window where a note is farthest from an edge (the owner rule of
``explain.explain_piece``); ``note_embeddings`` / ``encode_embeddings`` run the encoder through
its own submodules (attribute embeddings concatenated -> the rest of ``MidiBert.encode``), so
gradients can be taken with respect to each note's input embedding. May import torch,
``model``, ``windows`` and ``errors``.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import SMUInputError
from .model import unwrap
from .windows import check_inputs, note_owners, piece_windows


def encoder_of(model):
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


def note_window(model, tokenizer, piece, note: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(window tokens, note ids of the window, position of ``note`` in it): the window where the
    note is farthest from an edge (the same owner rule as ``explain_piece``)."""
    enc = encoder_of(model)
    check_inputs(enc, tokenizer, 0.15, None, None)
    N = len(piece)
    if not 0 <= int(note) < N:
        raise SMUInputError("note", f"note {note} is not in the piece (0..{N - 1})")
    wins = piece_windows(tokenizer, piece, tokenizer.encode(piece), enc.config.max_len)
    owner, owner_pos = note_owners(wins, N)
    wt, ids = wins[int(owner[int(note)])]
    return wt, ids, int(owner_pos[int(note)])
