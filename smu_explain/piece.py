"""The :class:`Piece`: one music file's notes after reading, and its notes table.

A Piece holds N notes as parallel numpy arrays (pitch, velocity, program, track, times in
seconds and in quarters, bar and beat) plus the bar grid and the metres of the file; it is
what :func:`smu_explain.reading.read_piece` returns and what the tokenizers encode.
``NOTE_COLUMNS`` names the first columns of every per-note table (:meth:`Piece.notes_table`).
Imports numpy only (pandas lazily, for the table); every other module may import it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["NOTE_COLUMNS", "Piece"]

# The notes table of a piece (``Piece.notes_table``): the first columns of every per-note table.
NOTE_COLUMNS = ["note", "pitch", "velocity", "track", "program", "start_sec", "end_sec",
                "onset_q", "duration_q", "bar", "beat"]


@dataclass
class Piece:
    """One file's notes after the reading rules, sorted by (onset, pitch).

    All note arrays have the same length N. ``time_signatures`` lists the metres in
    effect as ``(start_q, numerator, denominator)`` at the bar lines where they start.
    """

    name: str
    pitch: np.ndarray  # int16
    velocity: np.ndarray  # int16
    program: np.ndarray  # int16
    track: np.ndarray  # int32, index into track_names
    note_index: np.ndarray  # int64, index of the note in its source track
    start_sec: np.ndarray  # float64
    end_sec: np.ndarray  # float64
    onset_q: np.ndarray  # float64, quarters on the beat grid
    duration_q: np.ndarray  # float64, quarters
    bar: np.ndarray  # int64, 0-based bar index
    beat: np.ndarray  # float64, quarters from the start of the bar
    track_names: list[str]
    bar_starts_q: np.ndarray  # float64
    bar_lengths_q: np.ndarray  # float64
    time_signatures: list[tuple[float, int, int]]
    ticks_per_quarter: int = 480
    dropped: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return int(self.pitch.shape[0])

    @property
    def n_notes(self) -> int:
        return len(self)

    def notes_table(self):
        """The notes table (pandas): one row per note, the columns ``NOTE_COLUMNS`` (``note`` =
        0..N-1, the note's index in the piece, then the fields of the same names). The one
        builder of it: explain tables, the app's piano rolls and plots start from it."""
        import pandas as pd

        return pd.DataFrame({c: np.arange(len(self)) if c == "note" else getattr(self, c) for c in NOTE_COLUMNS})

    def to_dataframe(self):
        """:meth:`notes_table` plus ``note_index`` (the note's index in its source track)."""
        df = self.notes_table()
        df.insert(NOTE_COLUMNS.index("program") + 1, "note_index", self.note_index)
        return df

    def subset(self, idx) -> Piece:
        """A Piece with only the notes ``idx`` (same grid and metadata)."""
        idx = np.asarray(idx)
        arrays = {
            f.name: getattr(self, f.name)[idx]
            for f in dataclasses.fields(self)
            if f.name in _NOTE_FIELDS
        }
        return dataclasses.replace(self, **arrays)


_NOTE_FIELDS = (
    "pitch", "velocity", "program", "track", "note_index", "start_sec", "end_sec",
    "onset_q", "duration_q", "bar", "beat",
)

