"""sample_midi/: small public-domain files with provenance, readable by the tokenizer."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from smu_explain.reading import read_piece
from smu_explain.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_midi"


def _rows():
    with open(SAMPLES / "provenance.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_files_match_provenance():
    rows = _rows()
    files = sorted(p.name for p in SAMPLES.glob("*.mid"))
    assert 6 <= len(files) <= 12
    assert sorted(r["file"] for r in rows) == files
    assert len({r["composer"] for r in rows}) >= 5
    md = (SAMPLES / "PROVENANCE.md").read_text(encoding="utf-8")
    for r in rows:
        data = (SAMPLES / r["file"]).read_bytes()
        assert len(data) < 50_000 and len(data) == int(r["bytes"])
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        assert 30.0 <= float(r["seconds"]) <= 120.0
        assert r["licence"] == "public domain" and r["corpus_path"] and r["work"]
        assert r["file"] in md and r["corpus_path"] in md


def test_samples_read_and_tokenize():
    tok = Tokenizer()
    metres = set()
    for r in _rows():
        piece = read_piece(SAMPLES / r["file"])
        # provenance counts notes with pretty_midi; the reader (symusic) may pair a few
        # repeated same-pitch notes differently, never many
        assert 0.97 * int(r["notes"]) <= len(piece) <= int(r["notes"])
        assert 30.0 <= float(piece.end_sec.max()) <= 121.0
        tokens = tok.encode(piece)
        assert tokens.shape == (len(piece), 4)
        metres.update((n, d) for _, n, d in piece.time_signatures)
    assert {(4, 4), (3, 4), (2, 4), (6, 8)} <= metres


def test_script_is_deterministic():
    import music21

    if not _rows()[0]["source"].startswith(f"music21 {music21.__version__} "):
        pytest.skip("sample_midi was made with another music21 version")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample_midi.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checked" in proc.stdout
