"""smu_explain.harmony on hand-made pieces whose labels are known, and on every sample file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smu_explain import harmony
from smu_explain.reading import read_piece

ROOT = Path(__file__).resolve().parents[1]
Q = 480  # ticks per quarter


def _piece(midi_bytes, *parts, time_signatures=((0, 4, 4),), name="hand"):
    """A piece from parts given as (track name, [(onset_q, duration_q, pitch), ...])."""
    tracks = [{"name": nm, "notes": [(int(on * Q), int(d * Q), p) for on, d, p in notes]} for nm, notes in parts]
    return read_piece(midi_bytes(tracks=tracks, time_signatures=list(time_signatures)), name=name)


def _row(df, pitch, onset_q):
    hit = df[(df["pitch"] == pitch) & (np.abs(df["onset_q"] - onset_q) < 1e-6)]
    assert len(hit) == 1, (pitch, onset_q, df[["pitch", "onset_q"]])
    return hit.iloc[0]


C_MAJOR_BAR = ("PIANO", [(0, 4, 48), (0, 4, 52), (0, 4, 55)])


def test_passing_tone(midi_bytes):
    df = harmony.analyze(_piece(midi_bytes, C_MAJOR_BAR, ("MELODY", [(0, 1, 76), (1, 1, 77), (2, 2, 79)])))
    assert _row(df, 77, 1)["chord"] == "C:maj"
    assert _row(df, 77, 1)["harmony"] == "passing"
    assert not _row(df, 77, 1)["chord_tone"]
    assert _row(df, 76, 0)["harmony"] == _row(df, 79, 2)["harmony"] == "chord tone"


def test_neighbour_tone(midi_bytes):
    df = harmony.analyze(_piece(midi_bytes, C_MAJOR_BAR, ("MELODY", [(0, 1, 76), (1, 1, 77), (2, 2, 76)])))
    assert _row(df, 77, 1)["harmony"] == "neighbour"
    assert int(_row(df, 77, 1)["prev_interval"]) == 1 and int(_row(df, 77, 1)["next_interval"]) == -1


C_THEN_G = ("PIANO", [(0, 2, 48), (0, 2, 52), (2, 2, 43), (2, 2, 50), (0, 4, 55)])


def test_tied_suspension(midi_bytes):
    """C5 held from a C chord into a G chord, resolving down a step to B4: a 4-3 suspension."""
    df = harmony.analyze(_piece(midi_bytes, C_THEN_G, ("MELODY", [(0, 3, 72), (3, 1, 71)])))
    assert list(harmony.chords(_piece(midi_bytes, C_THEN_G))["chord"]) == ["C:maj", "G:maj"]
    assert _row(df, 72, 0)["harmony"] == "suspension/appoggiatura"
    assert _row(df, 71, 3)["harmony"] == "chord tone"


def test_restruck_suspension_and_appoggiatura(midi_bytes):
    df = harmony.analyze(_piece(midi_bytes, C_THEN_G, ("MELODY", [(0, 2, 72), (2, 1, 72), (3, 1, 71)])))
    assert _row(df, 72, 2)["harmony"] == "suspension/appoggiatura"  # prepared by the same pitch
    assert bool(_row(df, 72, 2)["repeated"])
    df = harmony.analyze(_piece(midi_bytes, C_THEN_G, ("MELODY", [(0, 2, 67), (2, 1, 72), (3, 1, 71)])))
    assert _row(df, 72, 2)["harmony"] == "suspension/appoggiatura"  # reached by a leap, left by a step


def _pedal_upper():
    return ("PIANO", [(0, 2, 60), (0, 2, 64), (0, 2, 67), (2, 2, 65), (2, 2, 69), (2, 2, 72),
                      (4, 2, 67), (4, 2, 71), (4, 2, 74), (6, 2, 60), (6, 2, 64), (6, 2, 67)])


def test_pedal_bass(midi_bytes):
    held = harmony.analyze(_piece(midi_bytes, _pedal_upper(), ("BASS", [(0, 8, 36)])))
    assert list(held.groupby("segment")["chord"].first()) == ["C:maj", "F:maj", "G:maj", "C:maj"]
    assert _row(held, 36, 0)["harmony"] == "pedal"
    assert _row(held, 36, 0)["voice_position"] == "bass"
    struck = harmony.analyze(_piece(midi_bytes, _pedal_upper(), ("BASS", [(0, 2, 36), (2, 2, 36), (4, 2, 36),
                                                                       (6, 2, 36)])))
    assert _row(struck, 36, 4)["harmony"] == "pedal"
    assert _row(struck, 36, 0)["harmony"] == _row(struck, 36, 2)["harmony"] == "chord tone"
    assert list(struck[struck["pitch"] == 36]["repeated"]) == [False, True, True, True]


def test_metric_weight_and_repeated_note(midi_bytes):
    notes = [(0, 1, 72), (1, 0.5, 72), (1.5, 0.5, 74), (2.25, 0.25, 76), (4, 1, 72)]
    df = harmony.analyze(_piece(midi_bytes, ("MELODY", notes)))
    assert list(df["metric"]) == ["downbeat", "beat", "off-beat", "off-beat", "downbeat"]
    assert list(df["repeated"]) == [False, True, False, False, False]
    assert (df["voice"] == df["voice"].iloc[0]).all()  # one line, one voice


def test_metric_compound_metre_pickup_and_grid_offset(midi_bytes):
    six8 = harmony.analyze(_piece(midi_bytes, ("A", [(0, 0.5, 72), (0.5, 0.5, 74), (1.5, 0.5, 76), (3, 1, 72)]),
                                  time_signatures=[(0, 6, 8)]))
    assert list(six8["metric"]) == ["downbeat", "off-beat", "beat", "downbeat"]
    # a one-quarter pickup bar (1/4 spanning one bar, then 4/4): the pickup is a beat, not a downbeat
    pick = harmony.analyze(_piece(midi_bytes, ("A", [(0, 1, 67), (1, 1, 72)]),
                                  time_signatures=[(0, 1, 4), (Q, 4, 4)]))
    assert list(pick["metric"]) == ["beat", "downbeat"]
    # POP909-style: every onset 1/12 quarter after the grid
    late = harmony.analyze(_piece(midi_bytes, ("A", [(1 / 12, 1, 72), (1 + 1 / 12, 0.5, 74), (1.5 + 1 / 12, 1, 76)])))
    assert list(late["metric"]) == ["downbeat", "beat", "off-beat"]


def test_voice_position_and_roles(midi_bytes):
    df = harmony.analyze(_piece(midi_bytes, ("PIANO", [(0, 1, 48), (0, 1, 55), (0, 1, 64), (2, 1, 60)]),
                                ("MELODY", [(0, 1, 72)]), ("BRIDGE", [(3, 1, 67)])))
    pos = dict(zip(df["pitch"], df["voice_position"], strict=False))
    assert pos == {48: "bass", 55: "inner", 64: "inner", 72: "top", 60: "solo", 67: "solo"}
    role = dict(zip(df["pitch"], df["role"], strict=False))
    assert role[72] == "melody" and role[67] == "bridge" and role[48] == "accompaniment"
    other = harmony.analyze(_piece(midi_bytes, ("Soprano", [(0, 1, 72)])))
    assert list(other["role"]) == ["other"]
    sonata = harmony.analyze(_piece(midi_bytes, ("Piano", [(0, 1, 72)]), ("Piano", [(0, 1, 48)])))
    assert list(sonata["role"]) == ["other", "other"]  # not a POP909 file: no roles


def test_voices_follow_nearest_pitch(midi_bytes):
    # two lines in one track: 60 62 64 below, 72 71 72 above -> two voices
    df = harmony.analyze(_piece(midi_bytes, ("PIANO", [(0, 1, 60), (0, 1, 72), (1, 1, 62), (1, 1, 71),
                                                       (2, 1, 64), (2, 1, 72)])))
    v = dict(zip(zip(df["pitch"], df["onset_q"], strict=False), df["voice"], strict=False))
    assert v[(60, 0)] == v[(62, 1)] == v[(64, 2)]
    assert v[(72, 0)] == v[(71, 1)] == v[(72, 2)] != v[(60, 0)]


@pytest.mark.parametrize("pcs, expected", [((0, 4, 7), "C:maj"), ((9, 0, 4), "A:min"), ((7, 11, 2, 5), "G:dom7"),
                                           ((11, 2, 5), "B:dim"), ((2, 5, 9, 0), "D:min7")])
def test_chord_templates(pcs, expected):
    prof = np.zeros(12)
    prof[list(pcs)] = 1.0
    root, quality, _ = harmony.best_chord(prof, bass_pc=pcs[0])
    assert harmony.chord_name(root, quality) == expected
    assert harmony.best_chord(np.zeros(12)) == (-1, "N", 0.0)


def test_chord_accuracy_and_markers(midi_bytes, tmp_path):
    from symusic import Score, TextMeta

    piece = _piece(midi_bytes, C_THEN_G)
    assert harmony.chord_accuracy(piece, [(0.0, 0, "M"), (2.0, 7, "M")])["root_accuracy"] == 1.0
    half = harmony.chord_accuracy(piece, [(0.0, 0, "M"), (2.0, 2, "m"), (3.25, -1, "N")])
    assert half["n_beats"] == 3 and half["root_hits"] == 2  # beat by beat; the 4th beat has no reference chord
    score = Score(Q)
    for t, text in [(0, "global_bpm_90"), (0, "N_N_N"), (Q, "A#_m7_F"), (2 * Q, "C_M_C")]:
        score.markers.append(TextMeta(t, text))
    path = tmp_path / "m.mid"
    score.dump_midi(str(path))
    assert harmony.marker_chords(path) == [(0.0, -1, "N"), (1.0, 10, "m7"), (2.0, 0, "M")]


def test_units():
    piece = read_piece(ROOT / "sample_midi" / "bach_bwv66_6.mid")  # 4/4: two units a bar
    u = harmony.units(piece)
    assert len(u) == 2 * len(piece.bar_starts_q)
    assert len(harmony.units(piece, "beat")) == 4 * len(piece.bar_starts_q)
    with pytest.raises(ValueError):
        harmony.units(piece, "phrase")


ALLOWED = {"harmony": set(harmony.HARMONY_ORDER), "voice_position": set(harmony.VOICE_POSITIONS),
           "metric": set(harmony.METRIC_WEIGHTS), "role": set(harmony.ROLE_ORDER)}


@pytest.mark.parametrize("path", sorted((ROOT / "sample_midi").glob("*.mid")), ids=lambda p: p.stem)
def test_every_sample_file(path):
    piece = read_piece(path)
    df = harmony.analyze(piece)
    assert len(df) == len(piece) and list(df["note"]) == list(range(len(piece)))
    for col in harmony.LABEL_COLUMNS:
        assert df[col].notna().all(), col
    for col, allowed in ALLOWED.items():
        assert set(df[col]) <= allowed, col
    assert (df["chord_tone"] == (df["harmony"] == "chord tone")).all()
    assert (df["chord"] != "N").all()  # every note's unit has a chord
    assert df["harmony"].eq("chord tone").mean() > 0.6  # tonal music: most notes are chord tones
    again = harmony.analyze(piece)
    assert again.equals(df)  # deterministic


def test_edge_pieces(midi_bytes):
    one = harmony.analyze(_piece(midi_bytes, ("A", [(0, 1, 60)])))
    assert list(one["harmony"]) == ["chord tone"] and list(one["voice_position"]) == ["solo"]
    zero = harmony.analyze(_piece(midi_bytes, ("A", [(0, 0, 60), (0, 0, 64), (5, 0, 67)])))
    assert len(zero) == 3 and zero["chord"].ne("N").all()
    empty = harmony.analyze(read_piece(ROOT / "sample_midi" / "bach_bwv66_6.mid").subset(np.zeros(0, dtype=int)))
    assert len(empty) == 0 and set(harmony.LABEL_COLUMNS) <= set(empty.columns)


def test_busy_file_with_metre_and_tempo_changes(rich_midi_bytes, tiny_midi_dir):
    pieces = [read_piece(rich_midi_bytes, name="rich")] + [read_piece(p) for p in sorted(tiny_midi_dir.glob("*.mid"))]
    for piece in pieces:
        df = harmony.analyze(piece)
        assert len(df) == len(piece)
        assert df[list(harmony.LABEL_COLUMNS)].notna().all().all()
    roles = set(harmony.analyze(pieces[0])["role"])
    assert roles == {"melody", "accompaniment"}


# --------------------------------------------------------------------------- anything the tokenizer reads

_notes = st.lists(st.tuples(st.integers(0, 40 * Q), st.integers(0, 8 * Q), st.integers(22, 107)), min_size=1,
                  max_size=40)
_metres = st.lists(st.tuples(st.integers(0, 30 * Q), st.integers(1, 13), st.sampled_from([1, 2, 4, 8, 16])),
                   max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_notes, b=_notes, metres=_metres, names=st.sampled_from([("MELODY", "PIANO"), ("x", "y"), ("BRIDGE", "")]))
def test_any_readable_piece(midi_bytes, a, b, metres, names):
    data = midi_bytes(tracks=[{"name": names[0], "notes": a}, {"name": names[1], "notes": b}],
                      time_signatures=sorted(metres))
    piece = read_piece(data, name="fuzz")
    df = harmony.analyze(piece)
    assert len(df) == len(piece)
    assert df[list(harmony.LABEL_COLUMNS)].notna().all().all()
    assert set(df["harmony"]) <= set(harmony.HARMONY_ORDER)
    assert set(df["metric"]) <= set(harmony.METRIC_WEIGHTS)
    for unit in harmony.UNITS:
        ch = harmony.chords(piece, unit)
        assert (ch["end_q"] > ch["start_q"]).all()


def test_auto_units_follow_the_harmonic_rhythm(midi_bytes):
    # a chorale-like bar, one chord a beat (C F G C), then a bar of one chord (C)
    block = [(0, 60, 64, 67), (1, 60, 65, 69), (2, 59, 62, 67), (3, 60, 64, 67)]
    notes = [(b, 1, p) for b, *ps in block for p in ps] + [(b, 1, 48 if b in (0, 3) else 53 if b == 1 else 43)
                                                          for b, *_ in block]
    notes += [(4, 4, 48), (4, 4, 64), (4, 4, 67), (4, 4, 72)]
    piece = _piece(midi_bytes, ("PIANO", notes))
    auto = harmony.chords(piece)
    assert list(auto["chord"]) == ["C:maj", "F:maj", "G:maj", "C:maj", "C:maj", "C:maj"]
    assert list(auto["start_q"][:4]) == [0, 1, 2, 3] and len(auto) == 6  # bar 1: its two halves, unsplit
    assert len(harmony.chords(piece, "half-bar")) == 4
    assert harmony.analyze(piece)["chord_tone"].all()
