"""Fixture data of the ``tiny`` preset: ``make_fixture_data`` writes a miniature copy of the
real datasets' folder layout (POP909, Pop1K7, EMOPIA, ASAP) with synthetic, learnable pieces.

Imports numpy (symusic lazily).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _write_midi(path: Path, tracks: Sequence[tuple[str, Sequence[tuple[int, int, int, int]]]],
                tpq: int = 480, qpm: float = 120.0, metre: tuple[int, int] = (4, 4)) -> None:
    from symusic import Note, Score, Tempo, TimeSignature, Track

    score = Score(tpq)
    for name, notes in tracks:
        tr = Track(name=name, program=0, is_drum=False)
        for t, d, p, v in notes:
            tr.notes.append(Note(int(t), int(d), int(p), int(v)))
        score.tracks.append(tr)
    score.time_signatures.append(TimeSignature(0, metre[0], metre[1]))
    score.tempos.append(Tempo(0, qpm=float(qpm)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(score.dumps_midi()))


def _phrase(rng: np.random.Generator, n: int, low: int, high: int, step: int, dur: int,
            vel: tuple[int, int], start: int = 0) -> list[tuple[int, int, int, int]]:
    pitches = np.clip(low + np.cumsum(rng.integers(-2, 3, n)) % (high - low), 22, 107)
    return [(start + i * step, dur, int(p), int(rng.integers(*vel))) for i, p in enumerate(pitches)]


def make_fixture_data(root: str | os.PathLike, seed: int = 0, n_notes: int = 48) -> Path:
    """Write a miniature copy of the real datasets' layout (shared/data/README.md) under ``root``.

    POP909 (10 songs, tracks MELODY/BRIDGE/PIANO, varied velocities), Pop1K7 (4 files),
    EMOPIA (12 songs x 2 clips, quadrant by song), ASAP (8 composers x 3 works, one
    score and one performance each, ``metadata.csv``; performances without beat
    annotations). Content differs by label (register, tempo, rhythm) so that labels
    are learnable. Deterministic in ``seed``; returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(1, 11):
        sid = f"{i:03d}"
        _write_midi(root / "pop909" / "POP909" / sid / f"{sid}.mid", [
            ("MELODY", _phrase(rng, n_notes // 2, 67, 84, 240, 220, (70, 120))),
            ("BRIDGE", _phrase(rng, n_notes // 4, 60, 72, 480, 400, (40, 80), start=120)),
            ("PIANO", _phrase(rng, n_notes // 2, 36, 55, 240, 460, (20, 70))),
        ])
    for i in range(4):
        _write_midi(root / "pop1k7" / "midi_analyzed" / "src_001" / f"{i}.mid",
                    [("piano", _phrase(rng, n_notes, 40, 80, 240, 240, (40, 100)))])
    for s in range(12):
        q = s % 4 + 1
        for clip in range(2):
            step = 120 if q in (1, 2) else 480
            low = 60 if q in (1, 4) else 40
            _write_midi(root / "emopia" / "midis" / f"Q{q}_song{s:02d}_{clip}.mid",
                        [("piano", _phrase(rng, n_notes, low, low + 20, step, step, (40, 110)))],
                        qpm=140 if q in (1, 2) else 80)
    composers = ["Bach", "Beethoven", "Chopin", "Haydn", "Liszt", "Mozart", "Schubert", "Schumann"]
    rows = []
    for c, comp in enumerate(composers):
        for w in range(3):
            folder = f"{comp}/work{w}"
            low = 30 + 5 * c
            score = _phrase(rng, n_notes, low, low + 24, 120 * (1 + c % 4), 120 * (1 + c % 4), (50, 90))
            _write_midi(root / "asap" / folder / "midi_score.mid", [("score", score)],
                        metre=(3, 4) if c % 2 else (4, 4))
            perf = [(t + int(rng.integers(0, 20)), d, p, v) for t, d, p, v in score]
            _write_midi(root / "asap" / folder / "perf1.mid", [("performance", perf)])
            rows.append({"composer": comp, "folder": folder, "midi_score": f"{folder}/midi_score.mid",
                         "midi_performance": f"{folder}/perf1.mid", "performance_annotations": ""})
    import csv

    with open(root / "asap" / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "FIXTURE.txt").write_text("synthetic fixture data written by smu_explain.study.make_fixture_data\n")
    return root
