"""The masker's view of some pieces stored beside a pre-trained model's weights.

``store_masker_scores`` runs ``explain.masker_view`` on music files and writes it with
``checkpoint.save_masker_scores``, so the app draws those pieces' first masker overlay
without loading the model. May import ``explain``, ``checkpoint`` and ``tokenizer``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .explain import masker_view


def store_masker_scores(folder, files: Iterable, ratio: float = 0.15) -> Path:
    """Compute :func:`masker_view` at ``ratio`` for MIDI ``files`` with the pre-trained model in
    ``folder`` (read as the app reads an upload: the default tokenizer config) and store it
    beside the weights (``checkpoint.save_masker_scores``). The app draws those pieces' masker
    overlay from this file on its first view, without loading the model."""
    from .checkpoint import load_checkpoint, save_masker_scores
    from .reading import read_piece

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
