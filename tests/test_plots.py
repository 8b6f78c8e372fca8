"""Figure builders: the right notes, in the right places, in the right colours (inspect fig.data)."""

import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from smu_explain import plots


def notes_table(n=12, *, score=True, seed=0):
    rng = np.random.default_rng(seed)
    onset = np.arange(n) * 0.5
    df = pd.DataFrame({
        "note": np.arange(n),
        "pitch": 60 + (np.arange(n) * 5) % 24,
        "velocity": 40 + np.arange(n) * 5,
        "track": np.arange(n) % 2,
        "program": 0,
        "start_sec": onset * 0.5,
        "end_sec": onset * 0.5 + 0.25,
        "onset_q": onset,
        "duration_q": np.full(n, 0.5),
        "bar": (onset // 4).astype(int),
        "beat": onset % 4,
    })
    if score:
        df["score"] = np.linspace(0.0, 1.0, n)
        df["picked"] = df["score"] >= 0.75
        df["frozen"] = False
        df.loc[1, "frozen"] = True
    return df


def trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


def note_ids(tr):
    return [int(c[0]) for c in tr.customdata] if tr.customdata is not None else []


def test_pitch_names():
    assert plots.pitch_name(60) == "C4"
    assert plots.pitch_name(61) == "C#4"
    assert plots.pitch_name(21) == "A0"
    assert plots.pitch_name(108) == "C8"
    assert plots.pitch_name(59) == "B3"


def test_bar_beat_labels():
    assert plots.bar_beat_label(0, 0.0) == "1.1"
    assert plots.bar_beat_label(2, 2.0) == "3.3"
    assert plots.bar_beat_label(0, 2.5) == "1.3+0.5"


def test_piano_roll_score_overlay_states():
    df = notes_table()
    fig = plots.piano_roll(df, bar_starts_q=[0.0, 4.0])
    plain = trace(fig, "notes (colour = masker score)")
    picked = trace(fig, "picked by masker (outlined)")
    frozen = trace(fig, "frozen (never masked)")
    # every note is drawn exactly once, in the trace of its state
    exp_picked = [i for i in range(len(df)) if df.score[i] >= 0.75 and i != 1]
    assert note_ids(picked) == exp_picked
    assert note_ids(frozen) == [1]
    assert sorted(note_ids(plain) + note_ids(picked) + note_ids(frozen)) == list(range(len(df)))
    # geometry: horizontal bars, base = onset, length = duration, y = pitch
    for tr in (plain, picked, frozen):
        assert isinstance(tr, go.Bar) and tr.orientation == "h"
        ids = note_ids(tr)
        np.testing.assert_allclose(np.asarray(tr.base, dtype=float), df.onset_q[ids])
        np.testing.assert_allclose(tr.x, df.duration_q[ids])
        np.testing.assert_allclose(tr.y, df.pitch[ids])
    # colours: score on a shared colour axis with a colorbar; picked outlined red; frozen grey hatched
    np.testing.assert_allclose(plain.marker.color, df.score[note_ids(plain)])
    assert plain.marker.coloraxis == picked.marker.coloraxis == "coloraxis"
    assert fig.layout.coloraxis.colorbar.title.text == "masker score"
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)  # the scores' range
    narrow = plots.piano_roll(df.assign(score=np.linspace(0.503, 0.517, len(df))))
    assert (narrow.layout.coloraxis.cmin, narrow.layout.coloraxis.cmax) == (0.5, 0.52)
    flat = plots.piano_roll(df.assign(score=0.505))
    assert (flat.layout.coloraxis.cmin, flat.layout.coloraxis.cmax) == pytest.approx((0.49, 0.52))
    assert picked.marker.line.color == plots.STATE_COLORS["picked_outline"]
    assert picked.marker.line.width > plain.marker.line.width
    assert frozen.marker.color == plots.STATE_COLORS["frozen"]
    assert frozen.marker.pattern.shape == "/"
    assert fig.layout.barmode == "overlay"


def test_piano_roll_without_model_colours_by_track():
    df = notes_table(score=False)
    fig = plots.piano_roll(df, track_names=["right hand", "left hand"])
    rh, lh = trace(fig, "right hand"), trace(fig, "left hand")
    assert note_ids(rh) == [i for i in range(len(df)) if i % 2 == 0]
    assert note_ids(lh) == [i for i in range(len(df)) if i % 2 == 1]
    assert rh.marker.color != lh.marker.color
    assert "coloraxis" not in fig.layout or fig.layout.coloraxis.colorbar.title.text is None
    # hover: pitch name, bar.beat, duration, velocity, track name
    cd = rh.customdata[1]  # note 2: pitch 70 = A#4, onset 1.0 -> bar 1 beat 2
    assert list(cd[:6]) == [2, "A#4", "1.2", 0.5, 50, "right hand"]
    for word in ("customdata[1]", "bar.beat", "duration", "velocity", "track"):
        assert word in rh.hovertemplate


def test_grid_and_octave_labels():
    df = notes_table(n=20)  # onsets 0..9.5 q: bars at 0, 4, 8
    fig = plots.piano_roll(df, bar_starts_q=[0.0, 4.0, 8.0])
    bars, beats = trace(fig, "bars"), trace(fig, "beats")
    assert [x for x in bars.x if x is not None][::2] == [0.0, 4.0, 8.0]
    beat_x = sorted(set(x for x in beats.x if x is not None))
    assert beat_x == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 9.0, 10.0, 11.0]
    assert len(fig.layout.shapes) == 0  # never one shape per note or line
    ticks = dict(zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext))
    assert ticks[60] == "C4" and ticks[72] == "C5"
    assert all(t.startswith("C") for t in ticks.values())


def test_grid_without_bar_starts_uses_bar_column():
    df = notes_table(n=20)
    fig = plots.piano_roll(df)
    assert [x for x in trace(fig, "bars").x if x is not None][::2] == [0.0, 4.0, 8.0]


def test_ghost_reconstruction_layer():
    df = notes_table()
    df["pred_pitch"] = df["pitch"] + 1
    df["pred_duration"] = 8  # grid steps of 1/8 quarter -> 1 quarter
    ghost = plots.reconstruction_frame(df, dur_per_quarter=8)
    assert list(ghost["note"]) == list(df.index[df.picked])
    fig = plots.piano_roll(df, ghost=ghost)
    g = trace(fig, "reconstruction (ghost)")
    np.testing.assert_allclose(g.y, df.pitch[df.picked] + 1)
    np.testing.assert_allclose(g.x, 1.0)
    assert g.marker.color == plots.STATE_COLORS["ghost"]
    assert "original" in g.text[0]


def test_reconstruction_full_moves_seconds_and_positions():
    df = notes_table(n=4)
    df["picked"] = [False, True, False, False]
    df["pred_pitch"] = [None, 50, None, None]
    df["pred_duration"] = [None, 2.0, None, None]  # quarters, as the explain table decodes
    df["true_position"] = [0.0, 0.5, 1.0, 1.5]  # quarters after the bar start
    df["pred_position"] = [None, 1.0, None, None]  # half a quarter later than the truth
    full = plots.reconstruction_frame(df, full=True)
    assert len(full) == 4
    assert list(full.pitch) == [60, 50, 70, 75]
    r = full.iloc[1]
    assert r.onset_q == pytest.approx(1.0) and r.duration_q == pytest.approx(2.0)
    # seconds per quarter of the note was 0.5 (0.25 s for 0.5 q)
    assert r.start_sec == pytest.approx(df.start_sec[1] + 0.5 * 0.5)
    assert r.end_sec - r.start_sec == pytest.approx(1.0)
    pd.testing.assert_series_equal(full.iloc[0][df.columns], df.iloc[0], check_names=False)


def test_masking_draw_side_by_side():
    df = notes_table()
    rnd = np.zeros(len(df), bool)
    rnd[[0, 3, 5]] = True
    mask = df.picked.to_numpy()
    fig = plots.masking_draw_figure(df, rnd, mask)
    masked = [t for t in fig.data if t.name == "masked"]
    assert len(masked) == 2
    left, right = masked
    assert left.xaxis == "x" and right.xaxis == "x2"
    assert note_ids(left) == [0, 3, 5]
    assert note_ids(right) == [i for i in np.flatnonzero(mask) if i != 1]
    assert left.marker.color == plots.STATE_COLORS["masked"]
    assert "3 notes" in fig.layout.annotations[0].text
    with pytest.raises(ValueError):
        plots.masking_draw_figure(df, rnd[:3], mask)


def test_note_from_selection():
    df = notes_table()
    fig = plots.piano_roll(df)
    ci = [i for i, t in enumerate(fig.data) if t.name == "picked by masker (outlined)"][0]
    sel = {"points": [{"curve_number": ci, "point_index": 1}, {"curve_number": 0, "point_index": 0},
                      {"curve_number": ci, "point_index": 1}]}
    expected = note_ids(fig.data[ci])[1]
    assert plots.note_from_selection(fig, sel) == [expected]
    assert plots.note_from_selection(fig, None) == []
    assert plots.note_from_selection(fig, {"points": [{"curve_number": 99, "point_index": 0}]}) == []


def test_thousands_of_notes_stay_few_traces_and_fast():
    n = 5000
    rng = np.random.default_rng(1)
    on = np.sort(rng.uniform(0, 720, n))
    df = pd.DataFrame({"note": np.arange(n), "pitch": rng.integers(30, 90, n), "velocity": 80,
                       "track": 0, "onset_q": on, "duration_q": 0.5, "bar": (on // 4).astype(int),
                       "beat": on % 4, "score": rng.random(n)})
    df["picked"] = df.score > 0.85
    df["frozen"] = df.score < 0.02
    t0 = time.perf_counter()
    fig = plots.piano_roll(df, ghost=plots.reconstruction_frame(df))
    fig.to_json()
    assert time.perf_counter() - t0 < 2.0
    assert len(fig.data) <= 6
    assert sum(len(t.x) for t in fig.data if isinstance(t, go.Bar) and t.name != "reconstruction (ghost)") == n


def test_progress_frame_and_curves():
    recs = [
        {"event": "start", "step": 0, "total_steps": 3},
        {"event": "step", "step": 1, "loss": 3.0, "lr": 1e-4,
         "stats": {"loss": 3.0, "ce_pitch": 2.0, "ce_duration": 1.0, "acc_pitch": 0.1,
                   "masker_loss": 0.7, "score_mean": 0.5, "frozen_in_batch": 0.0}},
        {"event": "eval", "step": 1, "metrics": {"val_loss": 9.0}},
        {"event": "step", "step": 2, "loss": 2.0, "lr": 1e-4,
         "stats": {"loss": 2.0, "ce_pitch": 1.5, "ce_duration": 0.5, "acc_pitch": 0.2,
                   "masker_loss": 0.6, "score_mean": 0.55, "frozen_in_batch": 0.1}},
        {"event": "status", "status": "done", "step": 2},
    ]
    prog = plots.progress_frame(recs)
    assert list(prog.step) == [1, 2]
    assert "val_loss" not in prog.columns  # eval lines are not steps
    assert {"loss", "ce_pitch", "ce_duration", "masker_loss", "frozen_in_batch"} <= set(prog.columns)
    fig = plots.loss_curves(prog)
    assert {t.name for t in fig.data} == {"total", "pitch", "duration"}
    assert list(trace(fig, "pitch").y) == [2.0, 1.5]
    assert list(trace(fig, "total").y) == [3.0, 2.0]
    m = plots.masker_stats_figure(prog)
    assert {t.name for t in m.data} == {"masker_loss", "score_mean", "frozen_in_batch"}
    # older/other naming: loss_<attr>
    old = plots.progress_frame([{"step": 1, "loss": 1.0, "loss_pitch": 0.5}])
    assert {t.name for t in plots.loss_curves(old).data} == {"total", "pitch"}
    empty = plots.loss_curves(plots.progress_frame([]))
    assert len(empty.data) == 0 and "no progress" in empty.layout.annotations[0].text
    assert "random strategy" in plots.masker_stats_figure(plots.progress_frame(recs[:1])).layout.annotations[0].text


def test_classes():
    assert list(plots.register_class(np.array([40, 48, 60, 71, 84, 100]))) == [
        "low (< C3)", "C3-B3", "C4-B4", "C4-B4", "high (>= C6)", "high (>= C6)"]
    assert list(plots.metric_class(np.array([0.0, 1.0, 2.5, 0.25, 3.0]))) == [
        "downbeat", "on beat", "8th off-beat", "other", "on beat"]
    assert list(plots.duration_class(np.array([0.25, 0.5, 1.0, 4.0]))) == plots.DURATION_ORDER


def test_bias_table_and_figure():
    df = pd.DataFrame({"pitch": [40, 41, 60, 61, 62], "beat": [0.0, 0.5, 1.0, 0.0, 0.25],
                       "duration_q": [1, 1, 1, 1, 1], "picked": [True, True, True, True, False],
                       "correct_pitch": [True, False, True, True, False],
                       "correct_duration": [True, True, False, True, True]})
    t = plots.bias_table(df, "register", mask_col="picked")
    low = t[(t.group == "low (< C3)") & (t.attribute == "pitch")].iloc[0]
    mid = t[(t.group == "C4-B4") & (t.attribute == "pitch")].iloc[0]
    assert (low.accuracy, low.n) == (0.5, 2)
    assert (mid.accuracy, mid.n) == (1.0, 2)  # the unpicked note 62 does not count
    tm = plots.bias_table(df, "metric", mask_col="picked", attrs=["pitch"])
    assert list(tm.group) == ["downbeat", "on beat", "8th off-beat"]
    fig = plots.bias_figure({"A": t, "B": t.assign(accuracy=t.accuracy / 2)}, "pitch", by_label="register")
    assert [tr.name for tr in fig.data] == ["A", "B"]
    assert list(fig.data[0].x) == ["low (< C3)", "C4-B4"]
    assert list(fig.data[1].y) == [0.25, 0.5]
    with pytest.raises(ValueError):
        plots.bias_table(df, "colour")


def test_accuracy_bars_and_metrics_table():
    accs = {"adv": {"pitch": 0.5, "duration": 0.8}, "rnd": {"pitch": 0.4, "duration": 0.9}}
    fig = plots.accuracy_bars(accs)
    assert [t.name for t in fig.data] == ["adv", "rnd"]
    assert list(fig.data[1].y) == [0.4, 0.9]
    table = plots.metrics_comparison(accs)
    assert list(table.columns) == ["adv", "rnd", "difference"]
    assert table.loc["pitch", "difference"] == pytest.approx(-0.1)
    assert "difference" not in plots.metrics_comparison({"one": {"x": 1.0}}).columns


def test_prediction_bars_marks_truth():
    fig = plots.prediction_bars([(62, 0.6), (60, 0.3), (64, 0.1)], truth=60)
    bar = fig.data[0]
    assert list(bar.y) == ["64", "60", "62"]  # best on top
    assert list(bar.marker.color) == ["#9e9e9e", "#2ca02c", "#9e9e9e"]


def test_metric_class_reads_the_quantised_position_when_there_is_one():
    # POP909-like raw timing: every note 1/12 quarter after the grid
    df = pd.DataFrame({"beat": [1 / 12, 1 + 1 / 12, 0.5 + 1 / 12, 0.25 + 1 / 12],
                       "true_position": [0.0, 1.0, 0.5, 0.25], "correct_pitch": [1, 0, 1, 1]})
    assert list(plots.metric_class(df["beat"].to_numpy())) == ["other"] * 4
    assert list(plots.metric_class(plots.metric_beats(df))) == ["downbeat", "on beat", "8th off-beat", "other"]
    t = plots.bias_table(df, "metric")
    assert list(t["group"]) == ["downbeat", "on beat", "8th off-beat", "other"]
    # without the explain column, or with an undecodable one, the raw beat is used
    assert list(plots.metric_beats(df.drop(columns="true_position"))) == list(df["beat"])
    bad = df.assign(true_position=[0.0, None, 0.5, 0.25])
    assert list(plots.metric_beats(bad)) == list(df["beat"])
