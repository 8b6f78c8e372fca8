"""Counterfactual edits of a Piece (smu_explain/counterfactual.py) and the MIDI round trip."""

from __future__ import annotations

import numpy as np
import pytest

from smu_explain import counterfactual as cf
from smu_explain.errors import SMUInputError
from smu_explain.reading import read_piece
from smu_explain.tokenizer import Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig

TOK = Tokenizer(TokenizerConfig())


@pytest.fixture
def piece(tmp_path):
    from conftest import make_midi

    mel = [(i * 480, 480, 60 + (i % 7), 60 + i) for i in range(12)]
    bass = [(i * 960, 960, 40 + (i % 3), 70) for i in range(6)]
    path = make_midi(tmp_path, tracks=[{"notes": mel, "name": "MEL", "program": 0},
                                       {"notes": bass, "name": "BASS", "program": 33}],
                     time_signatures=[(0, 3, 4)], tempo_changes=[(0, 100), (2880, 140)])
    return read_piece(path)


def key(p, i):
    return (int(p.track[i]), int(p.note_index[i]))


def by_key(p):
    return {key(p, i): i for i in range(len(p))}


def assert_consistent(p):
    """Sorted, grid fields consistent, seconds increasing with quarters, tokenizable."""
    order = np.lexsort((p.note_index, p.track, p.pitch, p.onset_q))
    assert (order == np.arange(len(p))).all()
    assert np.allclose(p.bar_starts_q[p.bar] + p.beat, p.onset_q)
    assert (p.beat >= -1e-9).all() and (p.beat < p.bar_lengths_q[p.bar] + 1e-9).all()
    assert p.bar.max() == len(p.bar_starts_q) - 1
    assert (np.diff(p.start_sec) >= -1e-9).all() and (p.end_sec >= p.start_sec).all()
    assert TOK.encode(p).shape == (len(p), len(TOK.attributes))


def test_transpose_all_and_selected(piece):
    before = piece.pitch.copy()
    up = cf.transpose(piece, 3)
    assert (up.pitch == piece.pitch + 3).all()  # order unchanged: same shift for every note
    assert_consistent(up)
    sel = [0, 5]
    part = cf.transpose(piece, -12, sel)
    k = by_key(part)
    for i in range(len(piece)):
        j = k[key(piece, i)]
        assert part.pitch[j] == piece.pitch[i] - (12 if i in sel else 0)
        assert part.onset_q[j] == piece.onset_q[i]
    assert_consistent(part)
    assert (piece.pitch == before).all()  # the input is unchanged
    with pytest.raises(SMUInputError, match="outside"):
        cf.transpose(piece, 80)


def test_delete_removes_exactly_those(piece):
    sel = [1, 4, 7]
    out = cf.delete_notes(piece, sel)
    assert len(out) == len(piece) - 3
    gone = {key(piece, i) for i in sel}
    assert set(by_key(out)) == {key(piece, i) for i in range(len(piece))} - gone
    assert_consistent(out)
    with pytest.raises(SMUInputError, match="every note"):
        cf.delete_notes(piece, range(len(piece)))
    with pytest.raises(SMUInputError, match="not in the piece"):
        cf.delete_notes(piece, [len(piece)])


def test_shift_passage_moves_onsets_by_one_beat(piece):
    moved = cf.notes_in_range(piece, 3.0, 6.0)
    assert moved.sum() > 0
    out = cf.shift_passage(piece, 3.0, 6.0)
    k = by_key(out)
    for i in range(len(piece)):
        j = k[key(piece, i)]
        assert out.onset_q[j] == pytest.approx(piece.onset_q[i] + (1.0 if moved[i] else 0.0))
        assert out.duration_q[j] == piece.duration_q[i]
    assert_consistent(out)
    # a moved note at the 100 qpm part starts 0.6 s later
    i = int(np.flatnonzero(moved)[0])
    assert out.start_sec[k[key(piece, i)]] == pytest.approx(piece.start_sec[i] + 0.6, abs=1e-6)
    # shifting the end past the grid extends it with the last metre
    late = cf.shift_passage(piece, 0.0, 100.0, by_q=7.0)
    assert late.bar_starts_q[-1] + late.bar_lengths_q[-1] > late.onset_q.max()
    assert (late.bar_lengths_q == 3.0).all()
    assert_consistent(late)
    with pytest.raises(SMUInputError, match="before the start"):
        cf.shift_passage(piece, 0.0, 1.0, by_q=-1.0)


def test_change_velocity(piece):
    out = cf.change_velocity(piece, [0, 2], velocity=20)
    assert out.velocity[0] == 20 and out.velocity[by_key(out)[key(piece, 2)]] == 20
    assert out.velocity[by_key(out)[key(piece, 1)]] == piece.velocity[1]
    loud = cf.change_velocity(piece, scale=3.0)
    assert (loud.velocity == np.clip(np.round(piece.velocity * 3.0), 1, 127)).all()
    assert loud.velocity.max() == 127
    with pytest.raises(SMUInputError):
        cf.change_velocity(piece, [0])


def test_midi_round_trip(piece):
    edited = cf.shift_passage(cf.transpose(cf.delete_notes(piece, [2]), 2, [0, 1]), 6.0, 9.0)
    back = read_piece(cf.to_midi_bytes(edited), name="back")
    assert len(back) == len(edited)
    np.testing.assert_array_equal(back.pitch, edited.pitch)
    np.testing.assert_allclose(back.onset_q, edited.onset_q)
    np.testing.assert_allclose(back.duration_q, edited.duration_q)
    np.testing.assert_array_equal(back.velocity, edited.velocity)
    np.testing.assert_array_equal(back.program, edited.program)
    np.testing.assert_allclose(back.bar_starts_q, edited.bar_starts_q)
    assert [tuple(t[1:]) for t in back.time_signatures] == [(3, 4)]
    np.testing.assert_allclose(back.start_sec, edited.start_sec, atol=2e-3)
    assert back.track_names == ["MEL", "BASS"]
