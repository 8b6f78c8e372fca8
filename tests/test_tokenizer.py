"""Reading, encoding, decoding and windowing (smu_explain.tokenizer)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smu_explain.piece import NOTE_COLUMNS
from smu_explain.reading import read_piece
from smu_explain.tokenizer import MASK_ID, N_SPECIAL, PAD_ID, Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig

# ---------------------------------------------------------------- config


def test_config_json_roundtrip_and_hash(tmp_path):
    cfg = TokenizerConfig(use_velocity=True, max_len=128, stride=64)
    assert TokenizerConfig.from_json(cfg.to_json()) == cfg
    cfg.save(tmp_path / "tok.json")
    assert TokenizerConfig.load(tmp_path / "tok.json") == cfg
    assert json.loads((tmp_path / "tok.json").read_text())["max_len"] == 128
    # the hash is stable (same config -> same hash) and sensitive to every field
    assert cfg.hash() == TokenizerConfig(use_velocity=True, max_len=128, stride=64).hash()
    assert cfg.hash() != TokenizerConfig(use_velocity=True, max_len=128, stride=32).hash()
    assert TokenizerConfig().hash() != TokenizerConfig(pitch_min=21).hash()
    assert len(cfg.hash()) == 16


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        TokenizerConfig(pos_per_quarter=0)
    with pytest.raises(ValueError):
        TokenizerConfig(pitch_min=90, pitch_max=80)
    with pytest.raises(ValueError):
        TokenizerConfig.from_dict({"nonsense": 1})


def test_attributes_and_vocab_sizes():
    tok = Tokenizer()
    assert tok.attributes == ["bar", "position", "pitch", "duration"]
    assert tok.vocab_sizes == [N_SPECIAL + 17, N_SPECIAL + 16, N_SPECIAL + 86, N_SPECIAL + 64]
    tok2 = Tokenizer(TokenizerConfig(use_velocity=True, use_program=True, n_velocity_bins=8))
    assert tok2.attributes == ["bar", "position", "pitch", "duration", "velocity", "program"]
    assert tok2.vocab_sizes[-2:] == [N_SPECIAL + 8, N_SPECIAL + 128]
    assert (PAD_ID, MASK_ID, N_SPECIAL) == (0, 1, 2)


# ---------------------------------------------------------------- reading


def test_read_merges_tracks_drops_drums_and_keeps_pointers(tiny_midi):
    from symusic import Score

    p = read_piece(tiny_midi)
    assert p.name == "tiny"
    assert len(p) == 20  # 16 melody + 4 bass; 8 drum notes dropped
    assert p.dropped["drums"] == 8
    assert p.track_names == ["MELODY", "PIANO", "drums"]
    assert set(p.track.tolist()) == {0, 1}
    # sorted by (onset, pitch)
    key = p.onset_q * 1000 + p.pitch
    assert np.all(np.diff(key) >= 0)
    # every note points back to its source note
    score = Score(str(tiny_midi))
    for i in range(len(p)):
        src = score.tracks[int(p.track[i])].notes[int(p.note_index[i])]
        assert src.pitch == p.pitch[i]
        assert src.time / 480 == p.onset_q[i]
        assert src.velocity == p.velocity[i]
    # 120 qpm: a quarter is 0.5 s
    np.testing.assert_allclose(p.start_sec, p.onset_q * 0.5)
    np.testing.assert_allclose(p.end_sec, (p.onset_q + p.duration_q) * 0.5)


def test_read_accepts_bytes(midi_bytes):
    data = midi_bytes([(0, 480, 60), (480, 480, 64)])
    p = read_piece(data, name="from-bytes")
    assert p.name == "from-bytes" and p.pitch.tolist() == [60, 64]


def test_pitch_range_drops_are_counted(make_midi, tmp_path):
    path = make_midi(tmp_path, [(0, 480, 10), (0, 480, 60), (480, 480, 120), (960, 480, 107), (960, 480, 22)])
    p = read_piece(path)
    assert sorted(p.pitch.tolist()) == [22, 60, 107]
    assert p.dropped == {"drums": 0, "pitch_below_min": 1, "pitch_above_max": 1}
    p2 = read_piece(path, config=TokenizerConfig(pitch_min=0, pitch_max=127))
    assert len(p2) == 5


def test_program_and_velocity_kept(make_midi, tmp_path):
    path = make_midi(tmp_path, tracks=[
        {"notes": [(0, 480, 60, 10)], "program": 40},
        {"notes": [(0, 480, 48, 127)], "program": 0},
    ])
    tok = Tokenizer(TokenizerConfig(use_velocity=True, use_program=True))
    p = tok.read(path)
    x = tok.encode(p)
    # sorted by pitch at equal onset: 48 (program 0, vel 127) then 60 (program 40, vel 10)
    assert tok.decode_values("program", x[:, tok.index["program"]]).tolist() == [0, 40]
    vb = tok.decode_values("velocity", x[:, tok.index["velocity"]])
    assert abs(vb[0] - 127) <= 4 and abs(vb[1] - 10) <= 4
    d = tok.decode_notes(x)
    assert d.program.tolist() == [0, 40]


def test_zero_length_and_overlapping_same_pitch_notes(make_midi, tmp_path):
    # zero-length note at 0; two overlapping C4s (0..960 and 480..1440) kept as they are
    path = make_midi(tmp_path, [(0, 0, 72), (0, 960, 60), (480, 960, 60)])
    p = read_piece(path)
    assert len(p) == 3
    assert p.duration_q.tolist() == [2.0, 0.0, 2.0]  # sorted by (onset, pitch): 60, 72, 60
    tok = Tokenizer()
    x = tok.encode(p)
    dur = tok.decode_values("duration", x[:, 3])
    assert dur.tolist() == [16, 1, 16]  # zero-length -> minimum duration 1 (a 32nd)


def test_duration_clipped_to_vocab(make_midi, tmp_path):
    path = make_midi(tmp_path, [(0, 480 * 20, 60), (0, 1, 62)])  # 20 quarters, 1 tick
    tok = Tokenizer()
    x = tok.encode(read_piece(path))
    assert tok.decode_values("duration", x[:, 3]).tolist() == [64, 1]


def test_encode_hand_computed_example(make_midi, tmp_path):
    # 4/4, tpq 480: notes at quarters 0, 1.25, 4 (bar 1), 12.5 (bar 3)
    notes = [(0, 480, 60), (600, 240, 62), (1920, 960, 64), (6000, 60, 65)]
    p = read_piece(make_midi(tmp_path, notes))
    x = Tokenizer().encode(p)
    expected = np.array([
        [0, 0, 60 - 22, 8 - 1],
        [0, 5, 62 - 22, 4 - 1],
        [1, 0, 64 - 22, 16 - 1],
        [2, 2, 65 - 22, 1 - 1],
    ]) + N_SPECIAL
    np.testing.assert_array_equal(x, expected)
    assert x.dtype == np.int64
    assert p.bar.tolist() == [0, 0, 1, 3]
    assert p.beat.tolist() == [0.0, 1.25, 0.0, 0.5]


def test_encode_refuses_piece_read_with_wider_range(make_midi, tmp_path):
    p = read_piece(make_midi(tmp_path, [(0, 480, 10)]), config=TokenizerConfig(pitch_min=0))
    with pytest.raises(ValueError, match="outside"):
        Tokenizer().encode(p)


def test_musicxml_is_read_through_music21(tmp_path):
    import music21

    s = music21.stream.Stream()
    s.append(music21.meter.TimeSignature("3/4"))
    for name in ["C4", "E4", "G4", "C5"]:
        s.append(music21.note.Note(name, quarterLength=1.0))
    path = tmp_path / "score.musicxml"
    s.write("musicxml", fp=str(path))
    p = read_piece(path)
    assert p.pitch.tolist() == [60, 64, 67, 72]
    assert p.onset_q.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert p.bar.tolist() == [0, 0, 0, 1]  # 3/4 from the score


# ---------------------------------------------------------------- round trip

METERS = [(4, 4), (3, 4), (2, 4), (6, 8), (3, 8), (7, 8), (5, 4), (6, 4), (12, 8), (2, 2)]
TPQ = 480


@st.composite
def on_grid_pieces(draw):
    """Segments of metres (changes on bar lines) and notes on the 16th grid.

    Gaps between notes are drawn in *token* bars (bars split at 16 positions),
    within the skip cap, so the round trip must be exact.
    """
    tok = Tokenizer()
    c = tok.config
    segs = draw(st.lists(st.tuples(st.sampled_from(METERS), st.integers(1, 6)), min_size=1, max_size=4))
    # musical bars -> token bars (start quarter, length in quarters)
    ts_events, tbars = [], []
    t = 0.0
    for (num, den), nb in segs:
        ts_events.append((int(round(t * TPQ)), num, den))
        blen = 4.0 * num / den
        for _ in range(nb):
            off = 0.0
            while off < blen - 1e-9:
                tbars.append((t + off, min(4.0, blen - off)))
                off += 4.0
            t += blen
    n_notes = draw(st.integers(1, 40))
    notes = []
    bi = 0
    for k in range(n_notes):
        max_skip = min(c.max_bar_skip, len(tbars) - 1 - bi)
        skip = draw(st.integers(0, max(0, min(max_skip, 3)))) if k else draw(st.integers(0, min(2, len(tbars) - 1)))
        bi += skip
        start, blen = tbars[bi]
        pos = draw(st.integers(0, int(blen * c.pos_per_quarter) - 1))
        onset_q = start + pos / c.pos_per_quarter
        dur = draw(st.integers(1, c.n_durations))
        pitch = draw(st.integers(c.pitch_min, c.pitch_max))
        notes.append((int(round(onset_q * TPQ)), dur * TPQ // c.dur_per_quarter, pitch))
    return notes, ts_events


def _sorted_triples(onset_q, pitch, duration_q):
    return sorted(zip(np.round(onset_q, 9).tolist(), pitch.tolist(), np.round(duration_q, 9).tolist(), strict=False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(on_grid_pieces())
def test_roundtrip_on_grid_is_exact(midi_bytes, case):
    notes, ts_events = case
    tok = Tokenizer()
    piece = read_piece(midi_bytes(notes, time_signatures=ts_events))
    tokens = tok.encode(piece)
    assert tokens.shape == (len(notes), 4)
    back = tok.decode_notes(tokens, grid=piece)
    assert _sorted_triples(back.onset_q, back.pitch, back.duration_q) == \
        _sorted_triples(piece.onset_q, piece.pitch, piece.duration_q)
    # decoded notes stay in token order (same order as the piece)
    np.testing.assert_array_equal(back.pitch, piece.pitch)
    np.testing.assert_array_equal(back.bar, piece.bar)


def test_roundtrip_through_midi_file(midi_bytes):
    notes = [(0, 240, 60), (240, 60, 64), (1440, 480, 67), (1440 + 480 * 9, 3840, 71), (480 * 20 + 120, 60, 48)]
    tok = Tokenizer()
    piece = read_piece(midi_bytes(notes, time_signatures=[(0, 3, 4)], tempo_changes=[(0, 77)]))
    pm = tok.decode(tok.encode(piece), grid=piece)
    buf = io.BytesIO()
    pm.write(buf)
    again = read_piece(buf.getvalue())
    np.testing.assert_allclose(again.onset_q, piece.onset_q)
    np.testing.assert_array_equal(again.pitch, piece.pitch)
    np.testing.assert_allclose(again.duration_q, piece.duration_q)
    assert again.time_signatures == [(0.0, 3, 4)]
    np.testing.assert_array_equal(again.bar, piece.bar)


def test_decode_without_grid_uses_4_4_bars(midi_bytes):
    tok = Tokenizer()
    piece = read_piece(midi_bytes([(0, 480, 60), (480 * 5, 480, 62)]))
    back = tok.decode_notes(tok.encode(piece))
    assert back.onset_q.tolist() == [0.0, 5.0]
    assert back.time_signatures == [(0.0, 4, 4)]


def test_decode_skips_padding_and_rejects_mask():
    tok = Tokenizer()
    x = np.array([[2, 2, 40, 9], [PAD_ID] * 4])
    assert len(tok.decode_notes(x)) == 1
    with pytest.raises(ValueError, match="special"):
        tok.decode_notes(np.array([[2, MASK_ID, 40, 9]]))
    with pytest.raises(ValueError, match="vocabulary"):
        tok.decode_notes(np.array([[2, 2, 400, 9]]))


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize("n,max_len,stride,expected", [
    (0, 4, None, []),
    (3, 4, None, [(0, 3)]),
    (8, 4, None, [(0, 4), (4, 8)]),
    (9, 4, None, [(0, 4), (4, 8), (8, 9)]),
    (9, 4, 2, [(0, 4), (2, 6), (4, 8), (6, 9)]),
    (10, 4, 3, [(0, 4), (3, 7), (6, 10)]),
])
def test_windows(n, max_len, stride, expected):
    tok = Tokenizer(TokenizerConfig(max_len=max_len, stride=stride))
    assert [(s.start, s.stop) for s in tok.windows(n)] == expected


def test_encode_windows_rebases_bar_and_points_to_notes(midi_bytes):
    # 10 notes, one per bar, starting in bar 2
    notes = [(1920 * (i + 2), 480, 60 + i) for i in range(10)]
    tok = Tokenizer(TokenizerConfig(max_len=4, stride=3))
    piece = read_piece(midi_bytes(notes))
    full = tok.encode(piece)
    assert full[0, 0] == N_SPECIAL + 2  # first note counts from bar 0 of the piece
    wins = tok.encode_windows(piece)
    assert [idx.tolist() for _, idx in wins] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    for w, idx in wins:
        assert w[0, 0] == N_SPECIAL  # re-based: the window's first note is in its bar 0
        np.testing.assert_array_equal(w[1:], full[idx[1:]])
        np.testing.assert_array_equal(w[:, 1:], full[idx, 1:])
    assert full[0, 0] == N_SPECIAL + 2  # encode_windows did not modify anything shared


@pytest.mark.data
def test_real_pop909_file_reads_and_roundtrips(data_root):
    path = data_root / "pop909" / "POP909" / "003" / "003.mid"
    if not path.exists():
        pytest.skip(f"{path} not present")
    tok = Tokenizer()
    piece = tok.read(path)
    assert len(piece) > 500 and piece.dropped["drums"] == 0
    assert set(piece.track_names) == {"MELODY", "BRIDGE", "PIANO"}
    tokens = tok.encode(piece)
    back = tok.decode_notes(tokens, grid=piece)
    q = np.floor(piece.onset_q * 4 + 0.5) / 4
    # onsets come back quantised to the 16th grid (exact when within the skip cap)
    assert np.isin(np.round(back.onset_q, 6), np.round(q, 6)).mean() > 0.99


def test_abc_is_read_through_music21(tmp_path):
    path = tmp_path / "tune.abc"
    path.write_text("X:1\nT:t\nM:3/4\nL:1/4\nK:C\nC D E | F G A |\n")
    p = read_piece(path)
    assert p.pitch.tolist() == [60, 62, 64, 65, 67, 69]
    assert p.bar.tolist() == [0, 0, 0, 1, 1, 1]
    assert p.time_signatures == [(0.0, 3, 4)]


def test_one_notes_table(make_midi, tmp_path):
    """Piece.notes_table is the notes table every per-note table starts from; to_dataframe adds note_index."""
    piece = read_piece(make_midi(tmp_path, [(i * 240, 240, 60 + i, 70) for i in range(5)], name="n.mid"))
    table = piece.notes_table()
    assert table.columns.tolist() == NOTE_COLUMNS and table["note"].tolist() == list(range(5))
    full = piece.to_dataframe()
    assert full.drop(columns="note_index").equals(table)
    assert full["note_index"].tolist() == piece.note_index.tolist()
