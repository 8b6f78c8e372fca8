"""Bounds on the work one request may cause, shared by the CLI and the app. Torch-free.

- ``MAX_NOTES``: pieces with more notes are refused before any model runs, by the app (a
  message) and by ``smu explain`` (``error:``, exit 2; ``--max-notes`` raises it for a local
  run). About 30 minutes of dense piano music; a model pass grows with the notes (~1 s per
  1,000 notes on 2 cores), and the explain table masks every note once.

The memory a model may take is checked against the machine's memory in ``checkpoint.py``
(``check_memory``: loading, training).

- ``is_whole(v)``: the check every bounded count or seed read from a user, a file or a record
  starts with: a whole number (Python's or numpy's), not a bool.
"""

import numbers

MAX_NOTES = 20_000


def is_whole(v: object) -> bool:
    """A whole number (``int`` or a numpy integer), not a bool (``True`` is an ``int`` in Python)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)
