"""smu_explain: see what symbolic-music BERT models learn.

In a notebook (docs/QUICKSTART.md; the calls are ``notebook.py``'s)::

    import smu_explain as smu
    model = smu.load("models/demo-adversarial")          # a NotebookModel: model + tokenizer
    piece = model.read("sample_midi/bach_bwv66_6.mid")   # a Piece (notes, bars, tracks)
    notes = model.explain(piece)                          # a DataFrame, one row per note
    smu.piano_roll(notes, piece).show()                   # a Plotly figure

``import smu_explain`` loads only the error classes; the rest is imported when called.
"""

from typing import Any

from .errors import SMUCheckpointError, SMUInputError, SMUTrainingError

__version__ = "0.1.0"
__all__ = ["SMUInputError", "SMUCheckpointError", "SMUTrainingError", "__version__", "load", "piano_roll"]


def load(folder: Any, map_location: Any = "cpu") -> Any:
    """``notebook.load``: a checkpoint folder -> ``notebook.NotebookModel`` (``.model``, ``.tokenizer``,
    ``.read(path)``, ``.explain(piece)``)."""
    from .notebook import load as load_model

    return load_model(folder, map_location)


def piano_roll(notes: Any, piece: Any = None, **kw: Any) -> Any:
    """``notebook.piano_roll``: the piano roll of a notes table, bars and tracks from ``piece``."""
    from .notebook import piano_roll as roll

    return roll(notes, piece, **kw)
