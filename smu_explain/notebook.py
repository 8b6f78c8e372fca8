"""The notebook API (docs/QUICKSTART.md): load a model, read a piece, explain it, draw it.

Owns :class:`NotebookModel` (a ``checkpoint.Checkpoint`` that can also ``.read`` music the way
its model reads it and ``.explain`` a piece), :func:`load` and :func:`piano_roll`; the package's
``smu_explain.load`` / ``smu_explain.piano_roll`` call these. This is the top of the library:
it imports checkpoint, and explain and the piano-roll figure inside the functions; no module
of the library imports it (checkpoint.py must not import explain).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .checkpoint import Checkpoint, load_checkpoint
from .errors import SMUCheckpointError


class NotebookModel(Checkpoint):
    """A loaded checkpoint (``.model``, ``.tokenizer``, ``.info``, ...) with the notebook calls."""

    def read(self, source: Any, name: str | None = None) -> Any:
        """A ``Piece`` read from a file path or bytes the way this model reads music."""
        if self.tokenizer is None:
            raise SMUCheckpointError(self.folder, "this checkpoint has no tokenizer; cannot read music for it")
        return self.tokenizer.read(source, name)

    def explain(self, piece: Any, ratio: float = 0.15, **kw: Any) -> Any:
        """One row per note (``explain.explain_piece``): the masker's ``score`` / ``picked`` /
        ``frozen`` and, per attribute, the recovery when the note is masked (``correct_pitch``, ...).
        ``piece``: a ``Piece`` or anything :meth:`read` takes."""
        from .explain import explain_piece

        if self.kind != "pretrained":
            raise SMUCheckpointError(self.folder, "explain needs a pre-trained model (masker and attribute heads)")
        if not hasattr(piece, "notes_table"):
            piece = self.read(piece)
        return explain_piece(self.model.eval(), self.tokenizer, piece, ratio, **kw)


def load(folder: Any, map_location: Any = "cpu") -> NotebookModel:
    """A checkpoint folder (this project's, or one ``smu import`` wrote) -> :class:`NotebookModel`
    with ``.model``, ``.tokenizer``, ``.read(path)``, ``.explain(piece)`` (``checkpoint.load_checkpoint``)."""
    ck = load_checkpoint(folder, map_location)
    return NotebookModel(**{f.name: getattr(ck, f.name) for f in dataclasses.fields(ck)})


def piano_roll(notes: Any, piece: Any = None, **kw: Any) -> Any:
    """``pianoroll.piano_roll`` of a notes table (``Piece.notes_table()`` or an explain table: masker
    score as colour, picked notes outlined, frozen notes hatched), bars and track names from ``piece``."""
    from .pianoroll import piano_roll as roll

    need = ("onset_q", "duration_q", "pitch")
    if not hasattr(notes, "columns") or any(c not in notes.columns for c in need):
        raise ValueError(f"notes must be a notes table with columns {', '.join(need)} (piece.notes_table() or "
                         "model.explain(piece)), got " + (f"columns {list(notes.columns)[:8]}"
                                                          if hasattr(notes, "columns") else type(notes).__name__))
    if piece is not None:
        kw.setdefault("bar_starts_q", piece.bar_starts_q)
        kw.setdefault("track_names", piece.track_names)
    return roll(notes, **kw)
