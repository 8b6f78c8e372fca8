#!/usr/bin/env python
"""Build ``sample_midi/``: small public-domain MIDI files for tests, docs and the app.

Every file is made from a score bundled with music21 (``music21.corpus``), so
nothing is downloaded. Rules:

- Each entry of ``PIECES`` names a corpus path, an optional bar range (the
  excerpt keeps bars ``first..last`` inclusive, bar numbers as printed, so a
  pickup bar is bar 0) and an optional tempo in quarter notes per minute. When a
  tempo is given, every tempo mark of the excerpt is removed and that one tempo
  is set at the start, so the file lasts a known time; otherwise the score's own
  marks are kept (music21 writes 120 qpm when the score has none).
- Repeats are not played: repeat barlines, volta brackets and D.C./segno marks
  are removed, so each bar sounds once (cutting an excerpt can leave a repeat
  half-open, which music21 cannot expand).
- The result must last between ``MIN_SECONDS`` and ``MAX_SECONDS`` and be smaller
  than ``MAX_BYTES``; the script fails loudly otherwise.
- Output is deterministic: the same music21 version writes byte-identical files
  (checked by running the script twice; ``--check`` compares against the files
  on disk without writing).
- ``sample_midi/provenance.csv`` (machine readable) and ``sample_midi/PROVENANCE.md``
  (human readable) list, per file: work, composer, corpus path, excerpt, tempo,
  duration, notes, and licence.

Usage: ``python scripts/make_sample_midi.py [--out sample_midi] [--check]``
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MIN_SECONDS = 30.0
MAX_SECONDS = 120.0
MAX_BYTES = 50_000

LICENCE = (
    "Composition in the public domain (composer died more than 70 years ago). "
    "Encoding distributed with music21's corpus (see music21/corpus/license.txt)."
)


@dataclass(frozen=True)
class SamplePiece:
    """One sample file: where it comes from and how it is cut."""

    out_name: str
    corpus_path: str
    composer: str
    work: str
    first_bar: int | None = None
    last_bar: int | None = None
    tempo_qpm: float | None = None


PIECES: list[SamplePiece] = [
    SamplePiece("bach_bwv66_6.mid", "bach/bwv66.6", "Johann Sebastian Bach",
                "Chorale BWV 66.6 (four-part harmonisation)", tempo_qpm=60),
    SamplePiece("bach_bwv269.mid", "bach/bwv269", "Johann Sebastian Bach",
                "Chorale BWV 269 (four-part harmonisation)", tempo_qpm=90),
    SamplePiece("mozart_k545_mvt1_exposition.mid", "mozart/k545/movement1_exposition",
                "Wolfgang Amadeus Mozart", "Piano Sonata in C major K. 545, i (exposition)",
                tempo_qpm=84),
    SamplePiece("beethoven_op18no1_mvt1_excerpt.mid", "beethoven/opus18no1/movement1.mxl",
                "Ludwig van Beethoven", "String Quartet Op. 18 No. 1, i",
                first_bar=1, last_bar=40),
    SamplePiece("haydn_op1no1_mvt1_excerpt.mid", "haydn/opus1no1/movement1",
                "Joseph Haydn", "String Quartet Op. 1 No. 1, i", first_bar=0, last_bar=24,
                tempo_qpm=110),
    SamplePiece("schumann_r_dichterliebe_no2.mid", "schumann_robert/dichterliebe_no2",
                "Robert Schumann", "Dichterliebe Op. 48 No. 2 'Aus meinen Tränen spriessen'",
                tempo_qpm=50),
    SamplePiece("schumann_c_polonaise_op1no1.mid", "schumann_clara/polonaise_op1n1",
                "Clara Schumann", "Polonaise Op. 1 No. 1"),
    SamplePiece("chopin_mazurka_op6no2.mid", "chopin/mazurka06-2", "Frédéric Chopin",
                "Mazurka in C-sharp minor Op. 6 No. 2"),
    SamplePiece("joplin_maple_leaf_rag_excerpt.mid", "joplin/maple_leaf_rag", "Scott Joplin",
                "Maple Leaf Rag", first_bar=0, last_bar=36),
    SamplePiece("schubert_lindenbaum_excerpt.mid", "schubert/Lindenbaum", "Franz Schubert",
                "Winterreise D. 911 No. 5 'Der Lindenbaum'", first_bar=0, last_bar=40),
]


def _excerpt(piece: SamplePiece):
    """Parse the corpus score and cut/re-tempo it per the rules in the module doc."""
    from music21 import corpus, tempo

    score = corpus.parse(piece.corpus_path)
    if piece.first_bar is not None or piece.last_bar is not None:
        first = piece.first_bar if piece.first_bar is not None else 0
        score = score.measures(first, piece.last_bar)
    _drop_repeats(score)
    if piece.tempo_qpm is not None:
        for mark in list(score.recurse().getElementsByClass(tempo.TempoIndication)):
            mark.activeSite.remove(mark)
        first_measure = score.parts[0].getElementsByClass("Measure").first()
        target = first_measure if first_measure is not None else score.parts[0]
        target.insert(0, tempo.MetronomeMark(number=piece.tempo_qpm))
    return score


def _drop_repeats(score) -> None:
    """Remove repeat barlines, repeat expressions and volta brackets in place."""
    from music21 import bar, repeat, spanner, stream

    for m in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(m.leftBarline, bar.Repeat):
            m.leftBarline = None
        if isinstance(m.rightBarline, bar.Repeat):
            m.rightBarline = None
    for expr in list(score.recurse().getElementsByClass(repeat.RepeatExpression)):
        expr.activeSite.remove(expr)
    for sp in list(score.recurse().getElementsByClass(spanner.RepeatBracket)):
        sp.activeSite.remove(sp)


def _to_midi_bytes(score) -> bytes:
    from music21 import midi

    mf = midi.translate.streamToMidiFile(score)
    return mf.writestr()


def _describe(data: bytes) -> tuple[float, int]:
    """(duration in seconds, note count) of a MIDI file given as bytes."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    return float(pm.get_end_time()), sum(len(i.notes) for i in pm.instruments)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build(out_dir: Path, check: bool = False) -> list[dict]:
    """Make every sample file; return one provenance row per file.

    With ``check=True`` nothing is written and a mismatch with the files on
    disk raises ``SystemExit``.
    """
    import music21

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    problems = []
    for piece in PIECES:
        data = _to_midi_bytes(_excerpt(piece))
        seconds, n_notes = _describe(data)
        if not (MIN_SECONDS <= seconds <= MAX_SECONDS):
            problems.append(f"{piece.out_name}: {seconds:.1f} s is outside "
                            f"[{MIN_SECONDS}, {MAX_SECONDS}]")
        if len(data) >= MAX_BYTES:
            problems.append(f"{piece.out_name}: {len(data)} bytes >= {MAX_BYTES}")
        target = out_dir / piece.out_name
        if check:
            if not target.exists() or target.read_bytes() != data:
                problems.append(f"{piece.out_name}: differs from the file on disk")
        else:
            _atomic_write(target, data)
        if piece.first_bar is None and piece.last_bar is None:
            excerpt = "whole piece"
        else:
            excerpt = f"bars {piece.first_bar if piece.first_bar is not None else 0}-" \
                      f"{piece.last_bar if piece.last_bar is not None else 'end'}"
        rows.append({
            "file": piece.out_name,
            "work": piece.work,
            "composer": piece.composer,
            "corpus_path": piece.corpus_path,
            "excerpt": excerpt,
            "tempo_qpm": "" if piece.tempo_qpm is None else f"{piece.tempo_qpm:g}",
            "seconds": f"{seconds:.1f}",
            "notes": str(n_notes),
            "bytes": str(len(data)),
            "sha256": hashlib.sha256(data).hexdigest(),
            "licence": "public domain",
            "source": f"music21 {music21.__version__} corpus",
        })
    if problems:
        raise SystemExit("make_sample_midi: " + "; ".join(problems))
    if not check:
        _write_provenance(out_dir, rows)
    return rows


def _write_provenance(out_dir: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(out_dir / "provenance.csv", buf.getvalue().encode("utf-8"))

    lines = [
        "# sample_midi provenance",
        "",
        "Made by `scripts/make_sample_midi.py` from scores bundled with music21",
        "(`music21.corpus`); rerun the script to rebuild them byte for byte.",
        "",
        f"Licence: {LICENCE}",
        "",
        "Where a tempo is listed, the script replaced the score's tempo marks by that",
        "single tempo so the excerpt lasts 30-120 s; otherwise the score's own marks",
        "(or music21's default 120 qpm) are kept.",
        "",
        "| file | composer | work | corpus path | excerpt | tempo (qpm) | seconds | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['file']} | {r['composer']} | {r['work']} | `{r['corpus_path']}` | "
                     f"{r['excerpt']} | {r['tempo_qpm'] or 'score'} | {r['seconds']} | {r['notes']} |")
    lines += ["",
              "*notes*: the file's notes, as pretty_midi counts them and the project's reader reads them. Where a",
              "part opens a pitch again while it sounds (a unison inside one part, as music21 writes double stops:",
              "beethoven, schubert), every note-off closes all the open notes of its pitch, as sequencers read it",
              "(`Piece.stats[\"note_offs_added\"]`); symusic's own pairing would merge or lose some of them.",
              ""]
    _atomic_write(out_dir / "PROVENANCE.md", "\n".join(lines).encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    repo = Path(__file__).resolve().parent.parent
    parser.add_argument("--out", type=Path, default=repo / "sample_midi")
    parser.add_argument("--check", action="store_true",
                        help="compare with the files on disk instead of writing")
    args = parser.parse_args(argv)
    rows = build(args.out, check=args.check)
    for r in rows:
        print(f"{r['file']:40s} {r['seconds']:>6s} s {r['notes']:>5s} notes {r['bytes']:>6s} B")
    print(("checked " if args.check else "wrote ") + f"{len(rows)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
