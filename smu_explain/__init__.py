"""smu_explain: see what symbolic-music BERT models learn.

In a notebook (docs/QUICKSTART.md)::

    import smu_explain as smu
    model = smu.load("models/demo-adversarial")          # a Checkpoint: model + tokenizer
    piece = model.read("sample_midi/bach_bwv66_6.mid")   # a Piece (notes, bars, tracks)
    notes = model.explain(piece)                          # a DataFrame, one row per note
    smu.piano_roll(notes, piece).show()                   # a Plotly figure
"""

from typing import Any

from .errors import SMUCheckpointError, SMUInputError, SMUTrainingError

__version__ = "0.1.0"
__all__ = ["SMUInputError", "SMUCheckpointError", "SMUTrainingError", "__version__", "load", "piano_roll"]


def load(folder: Any, map_location: Any = "cpu") -> Any:
    """A checkpoint folder (this project's, or one ``smu import`` wrote) -> ``checkpoint.Checkpoint``
    with ``.model``, ``.tokenizer``, ``.read(path)``, ``.explain(piece)``."""
    from .checkpoint import load_checkpoint

    return load_checkpoint(folder, map_location)


def piano_roll(notes: Any, piece: Any = None, **kw: Any) -> Any:
    """``pianoroll.piano_roll`` of a notes table (``Piece.notes_table()`` or an explain table: masker
    score as colour, picked notes outlined, frozen notes hatched), bars and track names from ``piece``."""
    from .pianoroll import piano_roll as _roll

    if piece is not None:
        kw.setdefault("bar_starts_q", piece.bar_starts_q)
        kw.setdefault("track_names", piece.track_names)
    return _roll(notes, **kw)
