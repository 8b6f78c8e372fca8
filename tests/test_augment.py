"""Transposition augmentation: explicit shifts and the random in-octave rule."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from smu_explain.reading import read_piece
from smu_explain.tokenizer import (
    MASK_ID,
    N_SPECIAL,
    PAD_ID,
    TRANSPOSE_RANGE,
    Tokenizer,
    allowed_shifts,
    random_transpose,
    transpose,
)
from smu_explain.tokenizer_config import TokenizerConfig

TOK = Tokenizer()
PJ = TOK.index["pitch"]


def _tokens(pitches):
    """Token rows for the given MIDI pitches (other attributes fixed)."""
    p = np.asarray(pitches) - TOK.config.pitch_min + N_SPECIAL
    return np.stack([np.full(len(p), 2), np.full(len(p), 3), p, np.full(len(p), 9)], axis=1).astype(np.int64)


def test_transpose_range_is_one_octave():
    assert tuple(range(-6, 6)) == TRANSPOSE_RANGE  # -6..+5, 12 shifts


def test_transpose_shifts_pitch_only_and_copies():
    x = _tokens([60, 64, 67])
    y = transpose(x, 3, TOK)
    assert TOK.decode_values("pitch", y[:, PJ]).tolist() == [63, 67, 70]
    np.testing.assert_array_equal(np.delete(y, PJ, axis=1), np.delete(x, PJ, axis=1))
    assert TOK.decode_values("pitch", x[:, PJ]).tolist() == [60, 64, 67]  # input untouched
    np.testing.assert_array_equal(transpose(y, -3, TOK), x)


def test_transpose_leaves_pad_and_mask_alone():
    x = _tokens([60, 62, 64])
    x[1, PJ] = MASK_ID
    x = np.concatenate([x, np.full((2, 4), PAD_ID)])
    y = transpose(x, -5, TOK)
    assert y[1, PJ] == MASK_ID and (y[3:] == PAD_ID).all()
    assert TOK.decode_values("pitch", y[[0, 2], PJ]).tolist() == [55, 59]


def test_transpose_out_of_range_raises():
    x = _tokens([30, 105])
    with pytest.raises(ValueError, match="outside 22..107"):
        transpose(x, 3, TOK)
    with pytest.raises(ValueError):
        transpose(x, -9, TOK)
    assert TOK.decode_values("pitch", transpose(x, 2, TOK)[:, PJ]).tolist() == [32, 107]


def test_allowed_shifts_keep_every_note_in_range():
    assert allowed_shifts(_tokens([60, 70]), TOK) == list(range(-6, 6))
    assert allowed_shifts(_tokens([24, 70]), TOK) == list(range(-2, 6))  # 22 is the floor
    assert allowed_shifts(_tokens([24, 104]), TOK) == list(range(-2, 4))  # 107 is the ceiling
    assert allowed_shifts(_tokens([22, 107]), TOK) == [0]


def test_random_transpose_draws_uniformly_from_allowed_shifts():
    rng = np.random.default_rng(0)
    x = _tokens([60, 72])
    counts = Counter()
    for _ in range(2400):
        y, s = random_transpose(x, rng, TOK, return_shift=True)
        np.testing.assert_array_equal(y[:, PJ] - x[:, PJ], [s, s])
        counts[s] += 1
    assert sorted(counts) == list(range(-6, 6))
    assert min(counts.values()) > 120 and max(counts.values()) < 280  # ~200 each


def test_random_transpose_near_the_edges_stays_in_range():
    rng = np.random.default_rng(1)
    x = _tokens([23, 50, 105])  # room: -1 .. +2
    shifts = set()
    for _ in range(300):
        y, s = random_transpose(x, rng, TOK, return_shift=True)
        p = TOK.decode_values("pitch", y[:, PJ])
        assert p.min() >= 22 and p.max() <= 107
        shifts.add(s)
    assert shifts == {-1, 0, 1, 2}


def test_random_transpose_when_nothing_fits_returns_unchanged():
    x = _tokens([22, 60, 107])
    y, s = random_transpose(x, np.random.default_rng(0), TOK, return_shift=True)
    assert s == 0
    np.testing.assert_array_equal(y, x)
    assert y is not x


def test_random_transpose_on_padded_batch():
    b = np.full((2, 5, 4), PAD_ID, dtype=np.int64)
    b[0, :3] = _tokens([60, 61, 62])
    b[1, :2] = _tokens([100, 101])
    y, s = random_transpose(b, np.random.default_rng(3), TOK, return_shift=True)
    assert allowed_shifts(b, TOK) == list(range(-6, 6))  # 60..101: every shift fits
    assert s in allowed_shifts(b, TOK)
    assert (y[0, 3:] == PAD_ID).all() and (y[1, 2:] == PAD_ID).all()
    np.testing.assert_array_equal(y[0, :3, PJ] - b[0, :3, PJ], s)


def test_transpose_roundtrips_through_decode(midi_bytes):
    tok = Tokenizer(TokenizerConfig())
    piece = read_piece(midi_bytes([(0, 480, 60), (480, 480, 64), (960, 240, 67)]))
    x = transpose(tok.encode(piece), 4, tok)
    assert tok.decode_notes(x).pitch.tolist() == [64, 68, 71]
