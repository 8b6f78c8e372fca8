"""Unusable inputs raise one typed error, SMUInputError(path, reason); big files stay bounded."""

from __future__ import annotations

import os
import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smu_explain.errors import SMUInputError
from smu_explain.musicfile import MAX_TICKS_PER_QUARTER, validate_midi_bytes
from smu_explain.reading import MEMORY_BOUND_BYTES_PER_NOTE, read_piece
from smu_explain.tokenizer import Tokenizer


def _expect_error(source, *fragments):
    with pytest.raises(SMUInputError) as info:
        read_piece(source)
    err = info.value
    if not isinstance(source, (bytes, bytearray)):
        assert str(source) in str(err) and err.path == str(source)
    for f in fragments:
        assert f in err.reason, err.reason
    return err


def _patch_header(data: bytes, fmt=None, ntrk=None, division=None) -> bytes:
    hlen, f, n, d = struct.unpack(">IHHH", data[4:14])
    f = f if fmt is None else fmt
    n = n if ntrk is None else ntrk
    d = d if division is None else division
    return data[:4] + struct.pack(">IHHH", hlen, f, n, d) + data[14:]


def test_zero_length_file(tmp_path):
    p = tmp_path / "empty.mid"
    p.write_bytes(b"")
    _expect_error(p, "empty")
    _expect_error(b"", "empty")


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.mid"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _expect_error(p, "not a MIDI file")


def test_text_file_named_mid(tmp_path):
    p = tmp_path / "notes.mid"
    p.write_text("this is not music\n" * 20)
    _expect_error(p, "not a MIDI file")


@pytest.mark.parametrize("cut", [10, 13, 14, 22, 40, 200, -1])
def test_truncated_real_file(tmp_path, rich_midi_bytes, cut):
    p = tmp_path / "cut.mid"
    p.write_bytes(rich_midi_bytes[:cut])
    err = _expect_error(p)
    assert "truncated" in err.reason or "header" in err.reason


def test_drum_only_file(make_midi, tmp_path):
    p = make_midi(tmp_path, drums=[(i * 240, 60, 36) for i in range(10)])
    _expect_error(p, "only drum notes")


def test_no_notes(make_midi, tmp_path):
    p = make_midi(tmp_path, [], tempo_changes=[(0, 100)], time_signatures=[(0, 3, 4)])
    _expect_error(p, "no notes")


def test_no_notes_in_pitch_range(make_midi, tmp_path):
    p = make_midi(tmp_path, [(0, 480, 5), (0, 480, 120)])
    _expect_error(p, "no notes in the pitch range")


def test_midi_type_2(tmp_path, rich_midi_bytes):
    p = tmp_path / "type2.mid"
    p.write_bytes(_patch_header(rich_midi_bytes, fmt=2))
    _expect_error(p, "type 2")
    p.write_bytes(_patch_header(rich_midi_bytes, fmt=7))
    _expect_error(p, "unknown MIDI format")


@pytest.mark.parametrize("division,fragment", [
    (0, "implausible resolution: 0"),
    (MAX_TICKS_PER_QUARTER + 1, "implausible resolution"),
    (0x7FFF, "implausible resolution"),
    (0xE728, "SMPTE"),
])
def test_absurd_tick_resolution(tmp_path, rich_midi_bytes, division, fragment):
    p = tmp_path / "res.mid"
    p.write_bytes(_patch_header(rich_midi_bytes, division=division))
    _expect_error(p, fragment)


def test_resolution_bounds_accepted(midi_bytes):
    assert validate_midi_bytes(midi_bytes([(0, 1, 60)], tpq=1)) == 1
    assert len(read_piece(midi_bytes([(0, 30000, 60)], tpq=MAX_TICKS_PER_QUARTER))) == 1


def test_header_declares_more_tracks_than_present(tmp_path, rich_midi_bytes):
    p = tmp_path / "tracks.mid"
    p.write_bytes(_patch_header(rich_midi_bytes, ntrk=40))
    _expect_error(p, "declares 40 tracks")
    p.write_bytes(_patch_header(rich_midi_bytes, ntrk=0))
    _expect_error(p, "0 tracks")


@pytest.mark.parametrize("name", ["song.wav", "song.txt", "song", "song.mp3", "song.pdf"])
def test_wrong_extension(tmp_path, rich_midi_bytes, name):
    p = tmp_path / name
    p.write_bytes(rich_midi_bytes)  # even real MIDI content: the type is refused by name
    _expect_error(p, "unsupported file type")


def test_missing_file_and_directory(tmp_path):
    _expect_error(tmp_path / "nope.mid", "file not found")
    d = tmp_path / "folder.mid"
    d.mkdir()
    _expect_error(d, "is a folder, not a file")
    (tmp_path / "pieces").mkdir()  # named like no music file: still said to be a folder
    _expect_error(tmp_path / "pieces", "is a folder, not a file")
    _expect_error(tmp_path / "nope.txt", "file not found")
    fifo = tmp_path / "pipe.mid"
    os.mkfifo(fifo)
    _expect_error(fifo, "not a regular file")


def test_broken_musicxml(tmp_path):
    p = tmp_path / "bad.musicxml"
    p.write_text("<?xml version='1.0'?><score-partwise><part id='P1'><measure><note>")
    _expect_error(p, "not well-formed MusicXML")  # parsed (and its values checked) before music21
    q = tmp_path / "bad.mxl"
    q.write_bytes(b"PK\x03\x04garbage")
    _expect_error(q, "not a valid compressed MusicXML (.mxl)")  # checked as a zip before music21


def test_bytes_that_are_neither_midi_nor_xml():
    _expect_error(b"RIFF....WAVEfmt ", "not a MIDI file")


def test_piece_too_long(midi_bytes):
    # tpq 1 and a note 2 million quarters in
    _expect_error(midi_bytes([(0, 1, 60), (2_000_000, 1, 62)], tpq=1), "piece too long")


# ---------------------------------------------------------------- fuzzing


def _read_or_typed_error(data: bytes):
    try:
        piece = read_piece(data)
    except SMUInputError as e:
        assert e.reason
        return None
    # anything that reads must also tokenise
    tokens = Tokenizer().encode(piece)
    assert tokens.shape[0] == len(piece)
    return piece


# derandomize and the database come from the hypothesis profile (tests/conftest.py: 'ci'
# under CI=true or SMU_HYPOTHESIS_PROFILE=ci); no deadline, whatever the profile (loaded machines)
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data):
    _read_or_typed_error(data)
    _read_or_typed_error(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0" + data)


@FUZZ
@given(st.data())
def test_fuzz_truncations(rich_midi_bytes, data):
    cut = data.draw(st.integers(0, len(rich_midi_bytes)))
    _read_or_typed_error(rich_midi_bytes[:cut])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 7)), min_size=1, max_size=30))
def test_fuzz_bit_flips(rich_midi_bytes, flips):
    b = bytearray(rich_midi_bytes)
    for pos, bit in flips:
        b[pos % len(b)] ^= 1 << bit
    _read_or_typed_error(bytes(b))


def test_fuzz_tests_follow_the_hypothesis_profile():
    """No fuzz test overrides what the profile decides (CI: derandomized, no database)."""
    profile = settings.default
    fuzz = [f for f in globals().values() if hasattr(f, "_hypothesis_internal_use_settings")]
    assert {f.__name__ for f in fuzz} >= {"test_fuzz_random_bytes", "test_fuzz_truncations", "test_fuzz_bit_flips"}
    for f in fuzz:
        s = f._hypothesis_internal_use_settings
        assert s.derandomize == profile.derandomize and s.database == profile.database, f.__name__
        assert s.deadline is None, f.__name__


def test_hypothesis_profile_choice_and_ci_reproducibility():
    from conftest import hypothesis_profile_name

    assert hypothesis_profile_name({}) == "dev"
    assert hypothesis_profile_name({"CI": "true"}) == "ci" and hypothesis_profile_name({"CI": "1"}) == "ci"
    assert hypothesis_profile_name({"CI": "false"}) == "dev"
    assert hypothesis_profile_name({"CI": "true", "SMU_HYPOTHESIS_PROFILE": "dev"}) == "dev"
    assert hypothesis_profile_name({"SMU_HYPOTHESIS_PROFILE": "ci"}) == "ci"
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.database is None
    # under the ci profile two runs of one test draw the same examples
    seen: list[list[bytes]] = []

    @settings(ci, max_examples=25)
    @given(st.binary(max_size=50))
    def draw(b):
        seen[-1].append(b)

    for _ in range(2):
        seen.append([])
        draw()
    assert seen[0] == seen[1] and len(set(seen[0])) > 5


# ---------------------------------------------------------------- size


def test_100k_notes_within_memory_bound(tmp_path):
    from symusic import Note, Score, Track

    n = 100_000
    rng = np.random.default_rng(0)
    score = Score(480)
    for k in range(2):
        tr = Track(name=f"t{k}", program=0, is_drum=False)
        m = n // 2
        tr.notes = Note.from_numpy(
            (np.arange(m, dtype=np.int32) * 120 + k * 60),
            rng.integers(0, 960, m).astype(np.int32),
            rng.integers(30, 100, m).astype(np.int8),
            rng.integers(1, 127, m).astype(np.int8),
        )
        score.tracks.append(tr)
    path = tmp_path / "big.mid"
    score.dump_midi(str(path))
    tok = Tokenizer()

    tracemalloc.start()
    t0 = time.perf_counter()
    piece = tok.read(path)
    tokens = tok.encode(piece)
    windows = tok.encode_windows(piece, tokens)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert len(piece) == n and tokens.shape == (n, 4)
    assert sum(len(w) for w, _ in windows) == n
    assert peak < MEMORY_BOUND_BYTES_PER_NOTE * n, f"peak {peak / 1e6:.1f} MB"
    assert elapsed < 5.0


def _smf(track: bytes, tpq: int = 480) -> bytes:
    """A type-0 MIDI file of one track's raw events (end-of-track appended)."""
    body = track + b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpq) + b"MTrk" + struct.pack(">I", len(body)) + body


def test_a_pitch_opened_again_while_sounding_is_read_as_sequencers_read_it(tmp_path):
    """60 opened at 0 and again at 480, closed once at 960: symusic alone pairs the note-off with the first
    note-on and loses the second; the reader closes both at 960 (every note-off closes all open notes of its
    pitch and channel), says how many note-offs that added, and counts a note never closed as unpaired.
    Running status, a velocity-0 note-on as a note-off and a drum note (channel 10) are handled."""
    from smu_explain.musicfile import close_all_on_note_off, midi_walk

    # 60 on at 0, 60 on again at 480, one 60 off at 960 (velocity-0 note-on, running status), 62 at 960-1440,
    # a drum note on channel 10
    track = (b"\x00\x90\x3c\x40" b"\x83\x60\x3c\x40" b"\x83\x60\x3c\x00" b"\x00\x3e\x40" b"\x83\x60\x80\x3e\x00"
             b"\x00\x99\x24\x40" b"\x60\x89\x24\x00")
    data = _smf(track)
    assert midi_walk(data) == (1536, 3)
    fixed, added = close_all_on_note_off(data)
    assert added == 1 and midi_walk(fixed) == (1536, 3)
    p = tmp_path / "unison.mid"
    p.write_bytes(data)
    piece = read_piece(p)
    notes = piece.notes_table()
    assert len(piece) == 3 and piece.stats["note_offs_added"] == 1 and "unpaired_note_ons" not in piece.dropped
    got = sorted(zip(notes["onset_q"], notes["duration_q"], notes["pitch"], strict=True))
    assert got == [(0.0, 2.0, 60), (1.0, 1.0, 60), (2.0, 1.0, 62)]
    # a note-on never closed: nothing to pair it with, counted
    p.write_bytes(_smf(b"\x00\x90\x3c\x40" b"\x83\x60\x3e\x40" b"\x83\x60\x3e\x00"))
    piece = read_piece(p)
    assert len(piece) == 1 and piece.dropped["unpaired_note_ons"] == 1
    # the same notes written one after the other: nothing added, nothing unpaired
    p.write_bytes(_smf(b"\x00\x90\x3c\x40" b"\x83\x60\x3c\x00" b"\x00\x3c\x40" b"\x83\x60\x3c\x00"))
    piece = read_piece(p)
    assert len(piece) == 2 and "unpaired_note_ons" not in piece.dropped and "note_offs_added" not in piece.stats


def test_a_large_file_keeps_symusics_pairing_and_counts_its_losses(tmp_path, monkeypatch):
    """Past REPAIR_MAX_BYTES (mido is pure Python) the file is not read again: symusic's pairing stands and the
    notes it lost are counted as unpaired."""
    from smu_explain import reading

    monkeypatch.setattr(reading, "REPAIR_MAX_BYTES", 10)
    p = tmp_path / "unison.mid"
    p.write_bytes(_smf(b"\x00\x90\x3c\x40" b"\x83\x60\x3c\x40" b"\x83\x60\x3c\x00" b"\x00\x3e\x40" b"\x83\x60\x80\x3e\x00"))
    piece = read_piece(p)
    assert len(piece) == 2 and piece.dropped["unpaired_note_ons"] == 1 and "note_offs_added" not in piece.stats
