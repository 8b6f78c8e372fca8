"""Beat grid, time signatures, tempo map, quantisation and bar splitting."""

from __future__ import annotations

import numpy as np
import pytest

from smu_explain.reading import build_bar_grid, read_piece
from smu_explain.tokenizer import N_SPECIAL, Tokenizer
from smu_explain.tokenizer_config import TokenizerConfig

Q = 480  # ticks per quarter used by the fixtures


def _read(midi_bytes, notes, **kw):
    return read_piece(midi_bytes(notes, **kw))


def _bar_lengths(p):
    return p.bar_lengths_q.tolist()


def test_no_time_signature_means_4_4(midi_bytes):
    p = _read(midi_bytes, [(0, Q, 60), (4 * Q, Q, 62), (9 * Q, Q, 64)])
    assert p.bar_starts_q.tolist() == [0.0, 4.0, 8.0]
    assert p.bar.tolist() == [0, 1, 2]
    assert p.beat.tolist() == [0.0, 0.0, 1.0]
    assert p.time_signatures == [(0.0, 4, 4)]


@pytest.mark.parametrize("num,den,bar_q", [(3, 4, 3.0), (6, 8, 3.0), (2, 4, 2.0), (2, 2, 4.0), (3, 8, 1.5), (7, 8, 3.5)])
def test_simple_meters(midi_bytes, num, den, bar_q):
    notes = [(int(k * bar_q * Q), Q // 2, 60 + k) for k in range(4)]
    p = _read(midi_bytes, notes, time_signatures=[(0, num, den)])
    assert p.bar.tolist() == [0, 1, 2, 3]
    assert set(_bar_lengths(p)) == {bar_q}
    tok = Tokenizer()
    x = tok.encode(p)
    # one note on the downbeat of every bar: bar skip 1 (first: 0), position 0
    assert x[:, 0].tolist() == [N_SPECIAL] + [N_SPECIAL + 1] * 3
    assert (x[:, 1] == N_SPECIAL).all()


def test_artefact_1_4_for_whole_piece_is_ignored(midi_bytes):
    """POP909 style: a 1/4 event that lasts the whole song is not the metre -> 4/4."""
    notes = [(k * Q, Q, 60) for k in range(9)]
    p = _read(midi_bytes, notes, time_signatures=[(0, 1, 4)])
    assert set(_bar_lengths(p)) == {4.0}
    assert p.bar.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert p.stats["time_signatures_ignored"] == 1
    # 4/4 then 1/4 at the same tick (76 POP909 files): last wins -> 1/4 -> ignored -> 4/4
    p2 = _read(midi_bytes, notes, time_signatures=[(0, 4, 4), (0, 1, 4)])
    assert set(_bar_lengths(p2)) == {4.0}
    # a short metre after a real one: the previous metre (3/4) continues
    p3 = _read(midi_bytes, notes, time_signatures=[(0, 3, 4), (3 * Q, 1, 4)])
    assert set(_bar_lengths(p3)) == {3.0}


def test_pickup_written_as_partial_first_bar(midi_bytes):
    # 1/4 anacrusis then 4/4: the short metre spans exactly one of its bars -> kept
    notes = [(0, Q, 67), (Q, Q, 72), (5 * Q, Q, 74)]
    p = _read(midi_bytes, notes, time_signatures=[(0, 1, 4), (Q, 4, 4)])
    assert p.bar_starts_q.tolist()[:3] == [0.0, 1.0, 5.0]
    assert p.bar.tolist() == [0, 1, 2]
    assert p.time_signatures == [(0.0, 1, 4), (1.0, 4, 4)]
    # 2/4 pickup then 3/4
    p2 = _read(midi_bytes, [(Q, Q, 60), (2 * Q, Q, 62), (5 * Q, Q, 64)],
               time_signatures=[(0, 2, 4), (2 * Q, 3, 4)])
    assert p2.bar_starts_q.tolist()[:3] == [0.0, 2.0, 5.0]
    assert p2.bar.tolist() == [0, 1, 2]
    assert p2.beat.tolist() == [1.0, 0.0, 0.0]


def test_pickup_inside_a_full_first_bar_stays_in_bar_0(midi_bytes):
    # leading rests: grid starts at tick 0, the upbeat is at beat 3 of bar 0
    p = _read(midi_bytes, [(3 * Q, Q, 67), (4 * Q, Q, 72)], time_signatures=[(0, 4, 4)])
    assert p.bar.tolist() == [0, 1] and p.beat.tolist() == [3.0, 0.0]


def test_change_mid_piece_on_bar_line(midi_bytes):
    # 2 bars of 4/4, then 3/4
    notes = [(0, Q, 60), (8 * Q, Q, 62), (11 * Q, Q, 64)]
    p = _read(midi_bytes, notes, time_signatures=[(0, 4, 4), (8 * Q, 3, 4)])
    assert p.bar_starts_q.tolist() == [0.0, 4.0, 8.0, 11.0]
    assert p.bar.tolist() == [0, 2, 3]
    assert p.time_signatures == [(0.0, 4, 4), (8.0, 3, 4)]


def test_change_mid_bar_takes_effect_at_next_bar_line(midi_bytes):
    # 3/4 announced at quarter 6 (inside bar 1 of 4/4) -> takes effect at quarter 8
    notes = [(0, Q, 60), (6 * Q, Q, 62), (8 * Q, Q, 64), (11 * Q, Q, 65)]
    p = _read(midi_bytes, notes, time_signatures=[(0, 4, 4), (6 * Q, 3, 4)])
    assert p.bar_starts_q.tolist() == [0.0, 4.0, 8.0, 11.0]
    assert p.bar.tolist() == [0, 1, 2, 3]


def test_several_changes_on_one_bar_line_last_wins(midi_bytes):
    notes = [(0, Q, 60), (5 * Q, Q, 62), (7 * Q, Q, 64)]
    # 2/4 at quarter 5 and 3/4 at quarter 6: both land on the bar line at 8 -> 3/4 wins
    p = _read(midi_bytes, notes + [(8 * Q, Q, 65), (11 * Q, Q, 67)],
              time_signatures=[(0, 4, 4), (5 * Q, 2, 4), (6 * Q, 3, 4)])
    assert p.bar_starts_q.tolist() == [0.0, 4.0, 8.0, 11.0]
    # same tick: the later event in the file wins
    p2 = _read(midi_bytes, notes, time_signatures=[(0, 3, 4), (0, 2, 4)])
    assert set(_bar_lengths(p2)) == {2.0}


def test_short_metre_never_runs_on_after_a_kept_short_bar():
    """Two 1/4 events one quarter apart: the first spans exactly one of its bars (kept, a
    single short bar), the second is ignored and restates the previous regular metre (4/4),
    so the grid goes back to 4/4 after one short bar (it used to keep 1/4 bars running)."""
    starts, lengths, eff, n_ign = build_bar_grid([(0.0, 1, 4), (1.0, 1, 4)], 2.0)
    assert starts.tolist() == [0.0, 1.0] and lengths.tolist() == [1.0, 4.0]
    assert eff == [(0.0, 1, 4), (1.0, 4, 4)] and n_ign == 1
    # same after a regular metre: 3/4, a single 1/4 bar, an ignored 1/4 -> 3/4 again
    starts, lengths, eff, n_ign = build_bar_grid([(0.0, 3, 4), (3.0, 1, 4), (4.0, 1, 4)], 10.0)
    assert starts.tolist() == [0.0, 3.0, 4.0, 7.0, 10.0] and lengths.tolist() == [3.0, 1.0, 3.0, 3.0, 3.0]
    assert eff == [(0.0, 3, 4), (3.0, 1, 4), (4.0, 3, 4)] and n_ign == 1
    # two kept short bars in a row, then a regular metre: both short bars stay
    starts, lengths, _, n_ign = build_bar_grid([(0.0, 1, 4), (1.0, 1, 4), (2.0, 3, 4)], 6.0)
    assert starts.tolist() == [0.0, 1.0, 2.0, 5.0] and lengths.tolist() == [1.0, 1.0, 3.0, 3.0] and n_ign == 0


def test_short_metre_announced_mid_bar_is_overruled_on_the_same_bar_line():
    """4/16 at quarter 9 (inside a 4/4 bar) spans one of its bars, so it is kept, but it takes
    effect only at the bar line 12; the ignored 1/4 at quarter 10 restates 4/4, which lands on
    the same bar line and wins (last change on a bar line wins): 4/4 throughout, no short bar."""
    starts, lengths, eff, n_ign = build_bar_grid([(9.0, 4, 16), (10.0, 1, 4)], 14.0)
    assert starts.tolist() == [0.0, 4.0, 8.0, 12.0] and lengths.tolist() == [4.0] * 4
    assert eff == [(0.0, 4, 4)] and n_ign == 1
    # with a regular metre at quarter 10 instead, the outcome is the same
    s2, l2, _, _ = build_bar_grid([(9.0, 4, 16), (10.0, 4, 4)], 14.0)
    assert s2.tolist() == starts.tolist() and l2.tolist() == lengths.tolist()


def test_ignored_short_event_reads_like_the_previous_metre_restated(midi_bytes):
    # through read_piece: 1/4 pickup, an ignored 1/4 one quarter later -> 4/4 from quarter 1
    notes = [(0, Q, 67), (Q, Q, 72), (5 * Q, Q, 74), (9 * Q, Q, 76)]
    p = _read(midi_bytes, notes, time_signatures=[(0, 1, 4), (Q, 1, 4)])
    assert p.bar_starts_q.tolist() == [0.0, 1.0, 5.0, 9.0]
    assert p.bar.tolist() == [0, 1, 2, 3]
    assert p.time_signatures == [(0.0, 1, 4), (1.0, 4, 4)]
    assert p.stats["time_signatures_ignored"] == 1


def test_invalid_time_signature_events_are_ignored():
    starts, lengths, eff, n_ign = build_bar_grid([(0.0, 0, 4), (0.0, 3, 3)], end_q=8.0)
    assert set(lengths.tolist()) == {4.0} and n_ign == 2 and eff == [(0.0, 4, 4)]


def test_long_bars_are_split_into_token_bars(midi_bytes):
    # 6/4 bar = 24 sixteenths > 16 positions -> token sub-bars of 16 + 8 steps
    notes = [(0, Q, 60), (5 * Q, Q, 62), (6 * Q, Q, 64), (10 * Q + Q // 4, Q, 65)]
    p = _read(midi_bytes, notes, time_signatures=[(0, 6, 4)])
    assert p.bar.tolist() == [0, 0, 1, 1]  # musical bars are not split
    x = Tokenizer().encode(p)
    assert (x[:, 0] - N_SPECIAL).tolist() == [0, 1, 1, 1]  # token bars 0, 1, 2, 3
    assert (x[:, 1] - N_SPECIAL).tolist() == [0, 4, 0, 1]
    # a coarser position vocabulary splits 4/4 too
    tok8 = Tokenizer(TokenizerConfig(n_positions=8))
    x8 = tok8.encode(_read(midi_bytes, [(0, Q, 60), (3 * Q, Q, 62)]))
    assert (x8[:, 0] - N_SPECIAL).tolist() == [0, 1] and (x8[:, 1] - N_SPECIAL).tolist() == [0, 4]


def test_bar_skip_is_capped_and_first_note_counts_from_bar_0(midi_bytes):
    tok = Tokenizer(TokenizerConfig(max_bar_skip=4))
    notes = [(2 * 4 * Q, Q, 60), (4 * Q * 30, Q, 62), (4 * Q * 31, Q, 64)]
    x = tok.encode(_read(midi_bytes, notes))
    assert (x[:, 0] - N_SPECIAL).tolist() == [2, 4, 1]  # 28 bars later capped at 4


def test_tempo_changes_do_not_move_notes(midi_bytes):
    notes = [(0, Q, 60), (2 * Q, Q, 62), (4 * Q, 2 * Q, 64)]
    a = _read(midi_bytes, notes, tempo_changes=[(0, 120)])
    b = _read(midi_bytes, notes, tempo_changes=[(0, 120), (Q, 60), (3 * Q, 240)])
    np.testing.assert_array_equal(a.onset_q, b.onset_q)
    tok = Tokenizer()
    np.testing.assert_array_equal(tok.encode(a), tok.encode(b))
    # seconds follow the tempo map: 0.5 s (q0 at 120) + 1 s (q1..2 at 60) ...
    np.testing.assert_allclose(b.start_sec, [0.0, 0.5 + 1.0, 0.5 + 2.0 + 0.25])
    np.testing.assert_allclose(b.end_sec, [0.5, 0.5 + 2.0, 0.5 + 2.0 + 0.25 + 0.5])


def test_default_tempo_before_first_event(midi_bytes):
    p = _read(midi_bytes, [(0, Q, 60), (2 * Q, Q, 62)], tempo_changes=[(2 * Q, 60)])
    np.testing.assert_allclose(p.start_sec, [0.0, 1.0])  # 120 qpm until the first event
    np.testing.assert_allclose(p.end_sec, [0.5, 2.0])


def test_positions_are_quantised_round_half_up(midi_bytes):
    # 16th = 120 ticks: 59 -> 0, 60 -> 1 (half up), 179 -> 1, 180 -> 2, 1910 -> next bar
    notes = [(59, 60, 60), (60, 60, 61), (179, 60, 62), (180, 60, 63), (1910, 60, 64)]
    x = Tokenizer().encode(_read(midi_bytes, notes))
    assert (x[:, 1] - N_SPECIAL).tolist() == [0, 1, 1, 2, 0]
    assert (x[:, 0] - N_SPECIAL).tolist() == [0, 0, 0, 0, 1]


def test_other_resolutions(midi_bytes):
    for tpq in (96, 384, 960):
        notes = [(0, tpq, 60), (tpq * 3 // 2, tpq // 4, 62)]
        p = read_piece(midi_bytes(notes, tpq=tpq, time_signatures=[(0, 3, 4)]))
        assert p.onset_q.tolist() == [0.0, 1.5] and p.duration_q.tolist() == [1.0, 0.25]


@pytest.mark.data
def test_pop909_meters_follow_the_rule(data_root):
    """Every POP909 file: bars are never shorter than 1.5 quarters, except a single kept bar;
    files that only carry 1/4 get a 4/4 grid."""
    from symusic import Score

    root = data_root / "pop909" / "POP909"
    files = sorted(root.glob("*/*.mid"))[:120]
    if not files:
        pytest.skip(f"no POP909 files under {root}")
    n_quarter_only = 0
    for f in files:
        p = read_piece(f)
        short = p.bar_lengths_q < 1.5
        assert short.sum() <= 1, f
        ts = {(t.numerator, t.denominator) for t in Score(str(f)).time_signatures}
        if ts == {(1, 4)}:
            n_quarter_only += 1
            assert set(p.bar_lengths_q.tolist()) == {4.0}, f
    assert n_quarter_only > 50


@pytest.mark.data
def test_asap_meter_changes(data_root):
    root = data_root / "asap"
    scores = sorted(root.glob("*/*/midi_score.mid"))[:40] + sorted(root.glob("*/*/*/midi_score.mid"))[:20]
    if not scores:
        pytest.skip(f"no ASAP scores under {root}")
    seen = set()
    for f in scores:
        p = read_piece(f)
        # the grid is contiguous and every note lies in its bar
        np.testing.assert_allclose(p.bar_starts_q[1:], p.bar_starts_q[:-1] + p.bar_lengths_q[:-1])
        assert (p.beat >= -1e-9).all() and (p.beat < p.bar_lengths_q[p.bar] + 1e-9).all()
        seen.update((n, d) for _, n, d in p.time_signatures)
    assert len(seen) >= 3


def test_positions_count_from_the_bar_line_even_off_the_16th_grid(midi_bytes):
    # a single 1/32 bar (kept: it spans exactly one of its bars) shifts later bar lines by
    # an eighth of a quarter; positions are counted from each bar line, so they stay exact
    notes = [(0, 60, 70), (60, 480, 60), (60 + 480 + 240, 240, 62), (60 + 1920, 480, 64)]
    p = _read(midi_bytes, notes, time_signatures=[(0, 1, 32), (60, 4, 4)])
    assert p.bar_starts_q.tolist()[:3] == [0.0, 0.125, 4.125]
    tok = Tokenizer()
    x = tok.encode(p)
    assert (x[:, 0] - N_SPECIAL).tolist() == [0, 1, 0, 1]
    assert (x[:, 1] - N_SPECIAL).tolist() == [0, 0, 6, 0]
    np.testing.assert_allclose(tok.decode_notes(x, grid=p).onset_q, p.onset_q)


def test_onset_rounded_onto_the_next_bar_line_moves_to_that_bar(midi_bytes):
    # 3/4: tick 1430 is 2.979 quarters -> rounds to 3.0 = the next bar line
    p = _read(midi_bytes, [(0, 480, 60), (1430, 480, 62)], time_signatures=[(0, 3, 4)])
    x = Tokenizer().encode(p)
    assert (x[:, 0] - N_SPECIAL).tolist() == [0, 1] and (x[:, 1] - N_SPECIAL).tolist() == [0, 0]


@pytest.mark.parametrize("meter,unit,body,first_bars,ts", [
    # 3/4 with a one-quarter pickup
    ("3/4", "1/4", "G | C D E | F G A |", [0, 1, 1, 1, 2, 2, 2], [(0.0, 1, 4), (1.0, 3, 4)]),
    # 6/8 with an eighth pickup (a 1/8 bar: shorter than 1.5 quarters, kept as one bar)
    ("6/8", "1/8", "G | c d e f g a |", [0, 1, 1, 1, 1, 1, 1], [(0.0, 1, 8), (0.5, 6, 8)]),
    # 4/4 with a half-bar pickup
    ("4/4", "1/4", "G A | c d e f |", [0, 0, 1, 1, 1, 1], [(0.0, 2, 4), (2.0, 4, 4)]),
])
def test_score_pickup_becomes_a_partial_first_bar(tmp_path, meter, unit, body, first_bars, ts):
    path = tmp_path / "pickup.abc"
    path.write_text(f"X:1\nT:t\nM:{meter}\nL:{unit}\nK:C\n{body}\n")
    p = read_piece(path)
    assert p.bar.tolist() == first_bars
    assert p.time_signatures == ts
    assert p.beat[first_bars.index(1)] == 0.0  # the first full bar starts on its downbeat


from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


# derandomize and the database come from the hypothesis profile (tests/conftest.py)
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 64).map(lambda k: k * 0.5), st.integers(0, 13), st.sampled_from([1, 2, 3, 4, 8, 16, 32])),
                max_size=8),
       st.integers(0, 80).map(lambda k: k * 0.5))
@example([(0.0, 1, 4), (1.0, 1, 4)], 2.0)  # a kept 1/4 bar then an ignored 1/4 (gave three 1/4 bars)
@example([(9.0, 4, 16), (10.0, 1, 4)], 14.0)  # the same announced mid-bar (gave three short bars)
def test_bar_grid_invariants(events, end_q):
    starts, lengths, eff, n_ign = build_bar_grid(events, end_q)
    assert starts[0] == 0.0 and len(starts) == len(lengths)
    np.testing.assert_allclose(starts[1:], starts[:-1] + lengths[:-1])  # contiguous
    assert starts[-1] <= end_q + 1e-9 < starts[-1] + lengths[-1]  # last bar holds end_q
    assert (lengths > 0).all()
    assert n_ign <= len(events)
    # a short metre (bar < 1.5 quarters) yields at most one bar per event, and only an event
    # that spans exactly one of its bars (another event comes one short bar later) yields one
    short = [(t, 4 * n / d) for t, n, d in events if n >= 1 and 4 * n / d < 1.5]
    assert (lengths < 1.5 - 1e-9).sum() <= len(short)
    n_one_bar = sum(1 for t, b in short if any(abs(t2 - (t + b)) < 1e-9 for t2, _, _ in events))
    assert (lengths < 1.5 - 1e-9).sum() <= n_one_bar
    # the effective list starts at 0 and every entry starts on a bar line
    assert eff[0][0] == 0.0
    assert all(np.isclose(starts, t).any() for t, _, _ in eff)
