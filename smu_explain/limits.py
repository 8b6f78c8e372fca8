"""Bounds on the work one request may cause, shared by the CLI and the app. Torch-free.

- ``MAX_NOTES``: pieces with more notes are refused before any model runs, by the app (a
  message) and by ``smu explain`` (``error:``, exit 2; ``--max-notes`` raises it for a local
  run). About 30 minutes of dense piano music; a model pass grows with the notes (~1 s per
  1,000 notes on 2 cores), and the explain table masks every note once.

The memory a model may take is checked against the machine's memory in ``checkpoint.py``
(``check_memory``: loading, training).
"""

MAX_NOTES = 20_000
