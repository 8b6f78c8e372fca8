"""Octuple tokenizer (smu_explain/octuple.py), its vocabulary JSON and the restricted pickle reader.

The numbers checked against the authors' code come from PianoBART
(github RS2002/PianoBart): ``Data/data_generation/make_dict.py`` (the vocabulary that
``Data/Octuple.pkl`` holds) and ``Data/data_generation/convert.py`` (the binning,
MusicBERT's ``MIDI_to_encoding``); the column order is Adversarial-MidiBERT's
``MidiBert.classes`` (github RS2002/Adversarial-MidiBERT, ``model.py``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from smu_explain.errors import SMUInputError
from smu_explain.octuple import (
    ATTRIBUTES,
    AUTHOR_ATTRIBUTES,
    VOCAB_PATH,
    OctupleTokenizer,
    load_vocab,
    reduce_time_signature,
)
from smu_explain.reading import read_piece
from smu_explain.tokenizer_config import TokenizerConfig

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO / "sample_midi").glob("*.mid"))
TPQ = 480
EIGHTH = TPQ // 2


def _script():
    spec = importlib.util.spec_from_file_location("octuple_vocab_script", REPO / "scripts" / "octuple_vocab.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tk() -> OctupleTokenizer:
    return OctupleTokenizer()


# --------------------------------------------------------------------------- vocabulary


def test_vocab_sizes_are_the_authors(tk):
    # make_dict.py: bar_max 256; positions max_notes_per_bar(2) * 4 * 16 = 128; programs 0..127 +
    # percussion; pitches 0..127 + 128 percussion pitches; duration_max(8) * 16 = 128 bins;
    # velocity 127 // 4 + 1 = 32; time signatures sum over den 2^0..2^6 of 2 * den = 254;
    # tempo round(12 * log2(256 / 16)) + 1 = 49; each + 6 specials (PAD MASK SOS EOS CLS SEP)
    regular = {"Bar": 256, "Position": 128, "Instrument": 129, "Pitch": 256, "Duration": 128,
               "Velocity": 32, "TimeSig": sum(2 * 2 ** i for i in range(7)), "Tempo": round(12 * math.log2(16)) + 1}
    doc = load_vocab()
    assert doc["sizes"] == {a: n + 6 for a, n in regular.items()}
    assert tk.vocab_sizes == [262, 134, 135, 262, 134, 38, 260, 55]
    assert tk.attributes == list(ATTRIBUTES) == [a.lower() for a in AUTHOR_ATTRIBUTES]
    # specials follow the regular values; convert.py pads with token_boundary + 1 and ends
    # sequences with token_boundary + 4 (EOS), token_boundary = (255, 127, 128, 255, 127, 31, 253, 48)
    boundary = np.array([255, 127, 128, 255, 127, 31, 253, 48])
    assert np.array_equal(tk.pad_ids, boundary + 1)
    assert np.array_equal(tk.mask_ids, boundary + 2)
    assert np.array_equal(tk.special_ids["EOS"], boundary + 4)
    for j, a in enumerate(AUTHOR_ATTRIBUTES):
        assert tk.tokens[ATTRIBUTES[j]][tk.pad_ids[j]] == f"{a} <PAD>"
        assert tk.tokens[ATTRIBUTES[j]][tk.mask_ids[j]] == f"{a} <MASK>"
    assert doc["provenance"]["source"].startswith("github RS2002/PianoBart")
    assert len(doc["provenance"]["sha256"]) == 64


def test_value_tables_match_the_authors_constructions(tk):
    # time signatures: for i in 0..6, for j in 1..2 * 2^i: (j, 2^i), in that order
    ts = [(j, 2 ** i) for i in range(7) for j in range(1, 2 ** i * 2 + 1)]
    assert tk.ts_list == ts
    # durations: bins of width 2^i, 16 per octave, 8 octaves, built by expansion
    enc = []
    for i in range(8):
        for j in range(16):
            enc.extend([16 * i + j] * 2 ** i)
    x = np.arange(len(enc) + 50)
    assert np.array_equal(tk.duration_id(x), [enc[v] if v < len(enc) else enc[-1] for v in x])
    assert np.array_equal(tk.duration_start, [enc.index(k) for k in range(128)])
    # velocity v // 4 -> 4 * id + 2; tempo round(12 * log2(clip(q, 16, 256) / 16))
    assert np.array_equal(tk.velocity_values, np.arange(32) * 4 + 2)
    for q in (5.0, 16.0, 60.0, 90.0, 119.9, 120.0, 200.0, 256.0, 999.0):
        assert tk.tempo_id(q) == round(math.log2(min(max(q, 16), 256) / 16) * 12)
    assert tk.tempo_id(120) == 35 and tk.tempo_id(60) == 23
    # reduction: 9/4 -> 3/4, 6/128 -> 3/64, 5/8 and 7/8 unchanged
    assert reduce_time_signature(9, 4) == (3, 4)
    assert reduce_time_signature(6, 128) == (3, 64)
    assert reduce_time_signature(5, 8) == (5, 8) and reduce_time_signature(7, 8) == (7, 8)
    # a 0 part (a MIDI denominator exponent >= 8 reads as 0) is refused, never an endless reduction
    for bad in ((4, 0), (0, 4), (0, 0)):
        with pytest.raises(ValueError, match="at least 1"):
            reduce_time_signature(*bad)
        with pytest.raises(SMUInputError, match=f"unsupported time signature {bad[0]}/{bad[1]}"):
            tk.timesig_id(*bad)
    assert [tk.measure_positions(tk.ts_index[t]) for t in [(4, 4), (3, 4), (5, 8), (7, 8), (6, 8)]] == [64, 48, 40, 56, 48]


def test_script_converts_a_pianobart_style_pickle(tmp_path):
    mod = _script()
    e2w, w2e = {}, {}
    for a in AUTHOR_ATTRIBUTES:
        words = [f"{a} {i}" for i in range(3)] + [f"{a} <{s}>" for s in mod.SPECIALS]
        e2w[a] = {w: i for i, w in enumerate(words)}
        w2e[a] = {i: w for i, w in enumerate(words)}
    pkl = tmp_path / "Octuple.pkl"
    pkl.write_bytes(pickle.dumps((e2w, w2e), protocol=4))
    out = tmp_path / "octuple.json"
    assert mod.main([str(pkl), "--out", str(out), "--source", "test"]) == 0
    doc = json.loads(out.read_text())
    assert doc["sizes"] == {a: 9 for a in AUTHOR_ATTRIBUTES}
    assert doc["tokens"]["Bar"][0] == "Bar 0" and doc["tokens"]["Tempo"][-1] == "Tempo <SEP>"
    # tables that do not mirror each other are refused
    w2e["Pitch"][0] = "Pitch 99"
    pkl.write_bytes(pickle.dumps((e2w, w2e)))
    assert mod.main([str(pkl), "--out", str(tmp_path / "bad.json")]) == 1
    assert not (tmp_path / "bad.json").exists()


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_reader_refuses_classes_and_functions(tmp_path):
    mod = _script()
    assert mod.load_plain(pickle.dumps(({"a": [1, 2.5, None, True]}, ("x",)))) == ({"a": [1, 2.5, None, True]}, ("x",))
    marker = tmp_path / "pwned"
    for payload in (pickle.dumps(os.system), pickle.dumps(_Exploit(str(marker))),
                    pickle.dumps(_Exploit(str(marker)), protocol=0), pickle.dumps(io.BytesIO)):
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            mod.load_plain(payload)
    assert not marker.exists()
    for not_plain in ({1, 2}, b"bytes", bytearray(b"x")):  # loads without globals, still not plain
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            mod.load_plain(pickle.dumps(not_plain, protocol=4))
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(_Exploit(str(marker))))
    assert mod.main([str(bad), "--out", str(tmp_path / "o.json")]) == 1
    assert not marker.exists() and not (tmp_path / "o.json").exists()


def test_load_vocab_refuses_a_wrong_file(tmp_path):
    p = tmp_path / "v.json"
    p.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(SMUInputError, match="not an Octuple vocabulary"):
        OctupleTokenizer(p)
    doc = json.loads(VOCAB_PATH.read_text())
    doc["tokens"]["Tempo"][3] = "Tempo 99.0"
    p.write_text(json.dumps(doc))
    with pytest.raises(SMUInputError, match="Tempo"):
        OctupleTokenizer(p)


# --------------------------------------------------------------------------- sample_midi


def _check_layout(tk, ids, n):
    assert ids.shape == (n, 8) and ids.dtype == np.int64
    assert (ids >= 0).all() and (ids < np.asarray(tk.n_values)).all()


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_round_trip_sample_midi(tk, path):
    piece = tk.read(path)
    ids = tk.encode(piece)
    _check_layout(tk, ids, len(piece))
    dec = tk.decode_notes(ids)
    assert len(dec) == len(piece)
    assert np.array_equal(dec.pitch, piece.pitch)
    assert np.array_equal(dec.program, piece.program)
    assert np.array_equal(dec.bar, piece.bar)  # metres at bar lines: the project's bars are the authors'
    assert np.abs(dec.onset_q - piece.onset_q).max() <= 1 / 32 + 1e-9  # half a 1/16-quarter position
    assert np.abs(dec.beat - piece.beat).max() <= 1 / 32 + 1e-9
    assert np.abs(dec.velocity.astype(int) - piece.velocity).max() <= 2
    width = tk.duration_width[ids[:, 4]] / 16
    err = piece.duration_q - dec.duration_q
    assert (err >= -1 / 16 - 1e-9).all() and (err <= width + 1 / 16 + 1e-9).all()
    # re-encoding the decoded piece gives the same tokens
    assert np.array_equal(tk.encode(dec), ids)
    table = tk.decode(ids)
    assert list(table.columns[:11]) == ["note", "pitch", "velocity", "track", "program", "start_sec",
                                        "end_sec", "onset_q", "duration_q", "bar", "beat"]
    assert set(table["time_signature"]) == {f"{n}/{d}" for _, n, d in piece.time_signatures}


def test_piece_read_elsewhere_encodes_the_same(tk):
    cfg = TokenizerConfig(pitch_min=0, pitch_max=127, min_bar_quarters=0.0)
    for path in SAMPLES[:4]:
        assert np.array_equal(tk.encode(read_piece(path, config=cfg)), tk.encode(tk.read(path)))


def test_windows(tk):
    small = OctupleTokenizer(max_len=100, stride=50)
    piece = small.read(SAMPLES[0])
    wins = small.encode_windows(piece)
    assert all(len(w) <= 100 for w, _ in wins)
    assert wins[0][1][0] == 0 and wins[-1][1][-1] == len(piece) - 1
    ids = small.encode(piece)
    for w, idx in wins:
        assert np.array_equal(w, ids[idx])
    assert tk.windows(0) == [] and tk.windows(1024) == [slice(0, 1024)]


# --------------------------------------------------------------------------- odd metres


@pytest.mark.parametrize("num,den", [(5, 8), (7, 8), (3, 4), (6, 8), (9, 4)])
def test_odd_metre(tk, midi_bytes, num, den):
    n = 3 * num + 2  # one note per 1/den beat, a bit more than three bars
    step = 4 * TPQ // den
    data = midi_bytes([(k * step, step, 60 + k % 12, 40 + k) for k in range(n)], time_signatures=[(0, num, den)])
    piece = tk.read(data, name=f"m{num}_{den}")
    ids = tk.encode(piece)
    _check_layout(tk, ids, n)
    rn, rd = reduce_time_signature(num, den)
    per_bar = rn * (den // rd)  # notes per (reduced) bar
    k = np.arange(n)
    assert np.array_equal(ids[:, 0], k // per_bar)
    assert np.array_equal(ids[:, 1], (k % per_bar) * (64 // den))
    assert (ids[:, 6] == tk.ts_index[(rn, rd)]).all()
    assert (ids[:, 7] == tk.tempo_id(120)).all()
    assert np.array_equal(ids[:, 5], (40 + k) // 4)
    assert (ids[:, 4] == tk.duration_id(64 // den)).all()
    dec = tk.decode_notes(ids)
    assert np.allclose(dec.onset_q, piece.onset_q) and np.allclose(dec.duration_q, piece.duration_q)
    assert dec.time_signatures == [(0.0, rn, rd)]


def test_metre_change_mid_piece(tk, midi_bytes):
    # 4/4 for 2 bars, 7/8 for 2 bars, 3/4 for 2 bars, 5/8 for 1 bar; one note per eighth
    plan = [(4, 4, 2), (7, 8, 2), (3, 4, 2), (5, 8, 1)]
    ts, notes, expect = [], [], []
    t = 0
    bar = 0
    for num, den, bars in plan:
        ts.append((t, num, den))
        eighths = num * 8 // den
        for _b in range(bars):
            for e in range(eighths):
                notes.append((t, EIGHTH, 60 + e, 80))
                expect.append((bar, e * 8, (num, den)))
                t += EIGHTH
            bar += 1
    data = midi_bytes(notes, time_signatures=ts, tempo_changes=[(0, 100.0), (8 * TPQ, 60.0)])
    piece = tk.read(data, name="changes")
    ids = tk.encode(piece)
    _check_layout(tk, ids, len(notes))
    assert ids[:, 0].tolist() == [e[0] for e in expect]
    assert ids[:, 1].tolist() == [e[1] for e in expect]
    assert [tk.ts_list[i] for i in ids[:, 6]] == [e[2] for e in expect]
    onset_q = np.asarray([n[0] for n in notes]) / TPQ
    assert ids[:, 7].tolist() == [tk.tempo_id(100.0) if q < 8 else tk.tempo_id(60.0) for q in onset_q]
    dec = tk.decode_notes(ids)
    assert np.allclose(dec.onset_q, onset_q)
    assert np.array_equal(dec.bar, piece.bar)
    assert [(n, d) for _, n, d in dec.time_signatures] == [(n, d) for n, d, _ in plan]
    assert np.array_equal(tk.encode(dec), ids)
    # seconds follow the decoded tempo map (100 qpm -> 0.6 s per quarter, then 1 s)
    tq = tk.tempo_values[tk.tempo_id(100.0)]
    assert np.allclose(dec.start_sec[onset_q <= 8], onset_q[onset_q <= 8] * 60 / tq)


def test_change_inside_a_bar_takes_effect_at_the_next_bar_line(tk, midi_bytes):
    # 4/4, then 3/4 written at beat 2 of bar 1: bar 1 stays 4 quarters (the authors' walk
    # fixes a bar's length at its first position) while its later notes carry 3/4
    notes = [(q * TPQ, TPQ, 60, 80) for q in range(12)]
    piece = tk.read(midi_bytes(notes, time_signatures=[(0, 4, 4), (6 * TPQ, 3, 4)]), name="mid")
    ids = tk.encode(piece)
    assert ids[:, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 3 + [3]
    assert ids[:, 1].tolist() == [0, 16, 32, 48] * 2 + [0, 16, 32, 0]
    assert [tk.ts_list[i] for i in ids[:, 6]] == [(4, 4)] * 6 + [(3, 4)] * 6


def test_unsupported_time_signature_is_an_input_error(tk, midi_bytes):
    data = midi_bytes([(0, TPQ, 60)], time_signatures=[(0, 3, 128)])
    with pytest.raises(SMUInputError, match="unsupported time signature 3/128"):
        tk.encode(tk.read(data, name="odd"))


def test_long_piece_bars_continue_in_segments(tk, midi_bytes):
    bars = [0, 100, 255, 256, 300, 510, 511, 600]
    piece = tk.read(midi_bytes([(b * 4 * TPQ, TPQ, 60) for b in bars]), name="long")
    ids = tk.encode(piece)
    assert ids[:, 0].tolist() == [0, 100, 255, 0, 44, 254, 0, 89]
    assert tk.decode_notes(ids).bar.tolist() == bars


def test_encode_refuses_what_octuple_cannot_hold(tk):
    piece = tk.read(SAMPLES[0])
    piece.velocity = piece.velocity.copy()
    piece.velocity[0] = 200
    with pytest.raises(SMUInputError, match="velocity outside"):
        tk.encode(piece)


def test_decode_rejects_masks_and_skips_padding(tk):
    ids = tk.encode(tk.read(SAMPLES[1]))[:10]
    padded = np.concatenate([ids, tk.special_ids["EOS"][None], np.repeat(tk.pad_ids[None], 5, axis=0)])
    assert len(tk.decode_notes(padded)) == 10
    masked = ids.copy()
    masked[3, 3] = tk.mask_ids[3]
    with pytest.raises(ValueError, match="special id in attribute 'pitch'"):
        tk.decode_notes(masked)
    with pytest.raises(ValueError, match="out of vocabulary"):
        tk.decode_notes(ids + 1000)
    assert tk.decode_values("pitch", [60, tk.pad_ids[3]]).tolist() == [60, -1]
    assert tk.decode_values("timesig", [tk.ts_index[(7, 8)]]).tolist() == [7008]


# PianoBART's convert.py MIDI_to_encoding (their code, run once outside this project with
# miditoolkit 1.0.1) on the file below: sorted rows (bar, position, program, pitch,
# duration, velocity, timesig, tempo). Metre changes inside bars (3/4 at beat 3 of bar 1,
# 7/8 half a beat into bar 4), two tempo events at one tick, odd durations and onsets.
AUTHORS_CHANGE_MID = [
    (0, 0, 0, 60, 32, 20, 9, 32), (0, 16, 0, 60, 44, 20, 9, 32), (0, 32, 0, 60, 50, 20, 9, 32),
    (0, 48, 0, 60, 50, 20, 9, 32), (1, 0, 0, 60, 54, 20, 9, 32), (1, 16, 0, 60, 54, 20, 9, 32),
    (1, 32, 0, 60, 56, 20, 8, 32), (1, 48, 0, 60, 56, 20, 8, 30), (2, 0, 0, 60, 56, 20, 8, 30),
    (2, 16, 0, 60, 58, 20, 8, 30), (2, 32, 0, 60, 58, 20, 8, 30), (3, 0, 0, 60, 58, 20, 8, 30),
    (3, 16, 0, 60, 58, 20, 8, 30), (3, 32, 0, 60, 58, 20, 8, 30), (4, 0, 0, 60, 58, 20, 8, 30),
    (4, 16, 0, 60, 58, 20, 20, 30), (4, 32, 0, 60, 58, 20, 20, 30), (5, 0, 0, 60, 58, 20, 20, 30),
    (5, 16, 0, 60, 58, 20, 20, 30), (5, 32, 0, 60, 58, 20, 20, 30), (5, 48, 0, 60, 58, 20, 18, 30),
    (6, 8, 0, 60, 58, 20, 18, 30), (6, 24, 0, 60, 58, 20, 18, 30), (7, 0, 0, 60, 58, 20, 18, 30),
    (7, 16, 0, 60, 58, 20, 18, 30), (7, 32, 0, 60, 58, 20, 18, 30), (8, 8, 0, 60, 62, 20, 18, 30),
    (8, 24, 0, 60, 62, 20, 18, 30), (9, 0, 0, 60, 65, 20, 18, 30), (9, 16, 0, 60, 68, 20, 18, 30),
]


def test_matches_the_authors_encoder(tk, midi_bytes):
    notes = [(q * TPQ + 13 * (q % 2), TPQ * (q % 7 + 1) * 3, 60, 80) for q in range(30)]
    data = midi_bytes(notes, time_signatures=[(0, 4, 4), (6 * TPQ, 3, 4), (14 * TPQ + TPQ // 2, 7, 8), (20 * TPQ, 5, 8)],
                      tempo_changes=[(0, 100.0), (7 * TPQ + 1, 60.0), (7 * TPQ + 1, 90.0)])
    ids = tk.encode(tk.read(data, name="change_mid"))
    assert sorted(map(tuple, ids.tolist())) == AUTHORS_CHANGE_MID


def test_description_round_trip(tk, tmp_path):
    d = tk.to_dict()
    assert d["kind"] == "octuple" and d["vocab_sizes"] == tk.vocab_sizes and d["max_len"] == 1024
    again = OctupleTokenizer.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d
    with pytest.raises(ValueError, match="vocab_sizes"):
        OctupleTokenizer.from_dict({**d, "vocab_sizes": [2] * 8})
    with pytest.raises(ValueError, match="not an Octuple"):
        OctupleTokenizer.from_dict({"kind": "cp"})
