"""Convert PianoBART's ``Octuple.pkl`` into the project's JSON vocabulary (never ``pickle.load``).

PianoBART (github RS2002/PianoBart, ``Data/Octuple.pkl``, written by
``Data/data_generation/make_dict.py``) ships the Octuple vocabulary that
Adversarial-MidiBERT loads as ``e2w, w2e = pickle.load(f)``. This script reads that
file with :class:`PlainUnpickler`, whose ``find_class`` refuses every global: only
the pickle opcodes for builtin containers and scalars (dict, list, tuple, str, int,
float, bool, None) can run, so a pickle that references a class or a function
(``os.system``, ``builtins.eval``, ...) raises :class:`pickle.UnpicklingError` before
anything is called. The result is then checked (two dicts of per-attribute tables
that mirror each other, contiguous ids) and written as
``smu_explain/vocab/octuple.json``.

Usage::

    python scripts/octuple_vocab.py PATH/TO/Octuple.pkl [--out smu_explain/vocab/octuple.json]
        [--source "github RS2002/PianoBart@<commit>:Data/Octuple.pkl"]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import sys
from pathlib import Path

# the order of Adversarial-MidiBERT's MidiBert.classes (model.py): the token column order
ATTRIBUTES = ("Bar", "Position", "Instrument", "Pitch", "Duration", "Velocity", "TimeSig", "Tempo")
SPECIALS = ("PAD", "MASK", "SOS", "EOS", "CLS", "SEP")
MAX_PICKLE_BYTES = 4 * 1024 * 1024
PLAIN_TYPES = (dict, list, tuple, str, int, float, bool, type(None))


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that loads builtin containers and scalars only.

    ``find_class`` is the only door through which a pickle reaches a class or a
    function (GLOBAL / STACK_GLOBAL, and through them REDUCE, BUILD, INST, OBJ, NEWOBJ);
    persistent ids are refused too. So nothing named in the file is ever imported or
    called.
    """

    def find_class(self, module, name):  # noqa: D401 - refuses everything
        raise pickle.UnpicklingError(f"refused: the pickle references {module}.{name} (only plain containers load)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused: the pickle uses persistent ids")


def _check_plain(obj, depth: int = 0) -> None:
    if depth > 50:
        raise ValueError("nesting too deep")
    if not isinstance(obj, PLAIN_TYPES):
        raise ValueError(f"not a plain value: {type(obj).__name__}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, depth + 1)


def load_plain(data: bytes):
    """Unpickle ``data`` admitting only plain containers/scalars (raises ``pickle.UnpicklingError``)."""
    if len(data) > MAX_PICKLE_BYTES:
        raise pickle.UnpicklingError(f"refused: {len(data)} bytes (> {MAX_PICKLE_BYTES})")
    obj = PlainUnpickler(io.BytesIO(data)).load()
    try:
        _check_plain(obj)
    except ValueError as e:
        raise pickle.UnpicklingError(f"refused: {e}") from e
    return obj


def vocab_from_tables(obj) -> dict:
    """Check PianoBART's ``(event2word, word2event)`` and return per-attribute token lists."""
    if not (isinstance(obj, tuple) and len(obj) == 2 and all(isinstance(t, dict) for t in obj)):
        raise ValueError("expected a tuple (event2word, word2event) of two dicts")
    e2w, w2e = obj
    if set(e2w) != set(ATTRIBUTES) or set(w2e) != set(ATTRIBUTES):
        raise ValueError(f"attribute keys {sorted(e2w)} / {sorted(w2e)} are not {sorted(ATTRIBUTES)}")
    tokens = {}
    for a in ATTRIBUTES:
        words, events = e2w[a], w2e[a]
        n = len(words)
        if sorted(words.values()) != list(range(n)):
            raise ValueError(f"{a}: ids are not 0..{n - 1}")
        if len(events) != n or any(events.get(i) != w for w, i in words.items()):
            raise ValueError(f"{a}: event2word and word2event disagree")
        if not all(isinstance(w, str) and w.startswith(a + " ") for w in words):
            raise ValueError(f"{a}: a token string does not start with '{a} '")
        by_id = [events[i] for i in range(n)]
        tail = by_id[n - len(SPECIALS):]
        if tail != [f"{a} <{s}>" for s in SPECIALS]:
            raise ValueError(f"{a}: the last {len(SPECIALS)} tokens are {tail}, not the specials {SPECIALS}")
        tokens[a] = by_id
    return tokens


def build_json(data: bytes, source: str) -> dict:
    obj = load_plain(data)
    tokens = vocab_from_tables(obj)
    return {
        "format": "smu_explain.octuple_vocab",
        "format_version": 1,
        "provenance": {
            "source": source,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "how": ("read with scripts/octuple_vocab.py (pickle.Unpickler subclass whose find_class refuses "
                    "every global: only builtin containers load); the tuple (event2word, word2event) was "
                    "checked to mirror itself and re-written here as one token list per attribute, "
                    "id = index in the list"),
            "generator": "PianoBART Data/data_generation/make_dict.py",
            "reconstructed": False,  # read from the published file itself
        },
        "attributes": list(ATTRIBUTES),
        "specials": list(SPECIALS),
        "sizes": {a: len(tokens[a]) for a in ATTRIBUTES},
        "tokens": tokens,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pkl", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "smu_explain/vocab/octuple.json")
    ap.add_argument("--source", default="github RS2002/PianoBart:Data/Octuple.pkl")
    args = ap.parse_args(argv)
    try:
        doc = build_json(args.pkl.read_bytes(), args.source)
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        print(f"{args.pkl}: {e}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{a} {n}" for a, n in doc["sizes"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
