"""Figure builders: the right notes, in the right places, in the right colours (inspect fig.data)."""

import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from smu_explain import charts, noteclasses, palette, pianoroll, picks, readable, rollaxes, valueroll


def notes_table(n=12, *, score=True, seed=0):
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
    assert readable.pitch_name(60) == "C4"
    assert readable.pitch_name(61) == "C#4"
    assert readable.pitch_name(21) == "A0"
    assert readable.pitch_name(108) == "C8"
    assert readable.pitch_name(59) == "B3"


def test_bar_beat_labels():
    assert readable.bar_beat_label(0, 0.0) == "bar 1, beat 1"
    assert readable.bar_beat_label(12, 0.0) == "bar 13, beat 1"
    assert readable.bar_beat_label(2, 2.0) == "bar 3, beat 3"
    assert readable.bar_beat_label(0, 2.5) == "bar 1, beat 3.5"
    assert readable.bar_beat_label(0, 1 / 3) == "bar 1, beat 1.33"


def test_piano_roll_score_overlay_states():
    df = notes_table()
    fig = pianoroll.piano_roll(df, bar_starts_q=[0.0, 4.0])
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
    # colour = the score's rank in the piece (0-100 %) on a fixed scale, whatever the raw range
    # (as colour strings on the scale, see pianoroll's docstring; the colour bar is a one-point trace on the axis)
    rank = pianoroll.score_rank(df.score)
    assert list(plain.marker.color) == palette.scale_colours(rank[note_ids(plain)], "Viridis", 0.0, 100.0)
    assert list(picked.marker.color) == palette.scale_colours(rank[note_ids(picked)], "Viridis", 0.0, 100.0)
    for tr in (plain, picked):  # the legend swatch: the scale's middle colour, no second colour bar
        assert (tr.marker.colorscale is not None, tr.marker.cmin, tr.marker.cmax, tr.marker.showscale) == (
            True, 0.0, 100.0, False)
    assert [t.marker.coloraxis for t in fig.data if t.marker.coloraxis] == ["coloraxis"]
    assert "rank in piece" in fig.layout.coloraxis.colorbar.title.text
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 100.0)
    narrow = pianoroll.piano_roll(df.assign(score=np.linspace(0.503, 0.517, len(df))))
    assert (narrow.layout.coloraxis.cmin, narrow.layout.coloraxis.cmax) == (0.0, 100.0)
    assert "masker score %{customdata[6]}" in plain.hovertemplate
    assert picked.marker.line.color == palette.STATE_COLORS["picked_outline"]
    assert picked.marker.line.width > plain.marker.line.width
    assert frozen.marker.color == palette.STATE_COLORS["frozen"]
    assert frozen.marker.pattern.shape == "/"
    assert fig.layout.barmode == "overlay"


def test_piano_roll_without_model_colours_by_track():
    df = notes_table(score=False)
    fig = pianoroll.piano_roll(df, track_names=["right hand", "left hand"])
    rh, lh = trace(fig, "right hand"), trace(fig, "left hand")
    assert note_ids(rh) == [i for i in range(len(df)) if i % 2 == 0]
    assert note_ids(lh) == [i for i in range(len(df)) if i % 2 == 1]
    assert rh.marker.color != lh.marker.color
    assert "coloraxis" not in fig.layout or fig.layout.coloraxis.colorbar.title.text is None
    # hover: pitch name, bar.beat, duration, velocity, track name
    cd = rh.customdata[1]  # note 2: pitch 70 = A#4, onset 1.0 -> bar 1 beat 2
    assert list(cd[:6]) == [2, "A#4", "bar 1, beat 2", "0.5", 50, "right hand"]
    for word in ("customdata[1]", "customdata[2]", "duration", "velocity", "track"):
        assert word in rh.hovertemplate


def test_grid_and_octave_labels():
    df = notes_table(n=20)  # onsets 0..9.5 q: bars at 0, 4, 8
    fig = pianoroll.piano_roll(df, bar_starts_q=[0.0, 4.0, 8.0])
    # bars = the time axis' grid lines, labelled with 1-based bar numbers; beats = minor lines
    ax = fig.layout.xaxis
    assert list(ax.tickvals) == [0.0, 4.0, 8.0] and list(ax.ticktext) == ["1", "2", "3"]
    assert ax.showgrid and ax.title.text == "bar"
    assert list(ax.minor.tickvals) == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 9.0, 10.0, 11.0]
    assert ax.range is None and not (ax.rangeslider and ax.rangeslider.visible)  # short: whole piece
    assert all(not isinstance(t, go.Scatter) for t in fig.data if t.name != "colour scale")  # none per grid line
    assert len(fig.layout.shapes) == 0  # never one shape per note or line
    ticks = dict(zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext, strict=False))
    assert ticks[60] == "C4" and ticks[72] == "C5"
    assert all(t.startswith("C") for t in ticks.values())


def test_grid_without_bar_starts_uses_bar_column():
    df = notes_table(n=20)
    fig = pianoroll.piano_roll(df)
    assert list(fig.layout.xaxis.tickvals) == [0.0, 4.0, 8.0]


def test_ghost_reconstruction_layer():
    df = notes_table()
    df["pred_pitch"] = df["pitch"] + 1
    df["pred_duration"] = 8  # grid steps of 1/8 quarter -> 1 quarter
    ghost = pianoroll.reconstruction_frame(df, dur_per_quarter=8)
    assert list(ghost["note"]) == list(df.index[df.picked])
    fig = pianoroll.piano_roll(df, ghost=ghost)
    g = trace(fig, "reconstruction (ghost)")
    np.testing.assert_allclose(g.y, df.pitch[df.picked] + 1)
    np.testing.assert_allclose(g.x, 1.0)
    assert g.marker.color == palette.STATE_COLORS["ghost"]
    assert "original" in g.text[0]


def test_reconstruction_full_moves_seconds_and_positions():
    df = notes_table(n=4)
    df["picked"] = [False, True, False, False]
    df["pred_pitch"] = [None, 50, None, None]
    df["pred_duration"] = [None, 2.0, None, None]  # quarters, as the explain table decodes
    df["true_position"] = [0.0, 0.5, 1.0, 1.5]  # quarters after the bar start
    df["pred_position"] = [None, 1.0, None, None]  # half a quarter later than the truth
    full = pianoroll.reconstruction_frame(df, full=True)
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
    fig = pianoroll.masking_draw_figure(df, rnd, mask)
    masked = [t for t in fig.data if t.name == "masked"]
    assert len(masked) == 2
    left, right = masked
    assert left.xaxis == "x" and right.xaxis == "x2"
    assert note_ids(left) == [0, 3, 5]
    assert note_ids(right) == [i for i in np.flatnonzero(mask) if i != 1]
    assert left.marker.color == palette.STATE_COLORS["masked"]
    assert "3 notes" in fig.layout.annotations[0].text
    with pytest.raises(ValueError):
        pianoroll.masking_draw_figure(df, rnd[:3], mask)


def test_note_from_selection():
    df = notes_table()
    fig = pianoroll.piano_roll(df)
    ci = [i for i, t in enumerate(fig.data) if t.name == "picked by masker (outlined)"][0]
    sel = {"points": [{"curve_number": ci, "point_index": 1}, {"curve_number": ci, "point_index": 9999},
                      {"curve_number": ci, "point_index": 1}]}
    expected = note_ids(fig.data[ci])[1]
    assert pianoroll.note_from_selection(fig, sel) == [expected]
    assert pianoroll.note_from_selection(fig, None) == []
    assert pianoroll.note_from_selection(fig, {"points": [{"curve_number": 99, "point_index": 0}]}) == []


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
    fig = pianoroll.piano_roll(df, ghost=pianoroll.reconstruction_frame(df))
    fig.to_json()
    assert time.perf_counter() - t0 < 2.0
    assert len(fig.data) <= 6
    assert sum(len(t.x) for t in fig.data if isinstance(t, go.Bar) and t.name not in ("reconstruction (ghost)", "bar ticks")) == n


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
    prog = charts.progress_frame(recs)
    assert list(prog.step) == [1, 2]
    assert "val_loss" not in prog.columns  # eval lines are not steps
    assert {"loss", "ce_pitch", "ce_duration", "masker_loss", "frozen_in_batch"} <= set(prog.columns)
    fig = charts.loss_curves(prog)
    assert {t.name for t in fig.data} == {"total", "pitch", "duration"}  # human names
    assert list(trace(fig, "pitch").y) == [2.0, 1.5]
    assert list(trace(fig, "total").y) == [3.0, 2.0]
    m = charts.masker_stats_figure(prog)
    assert {t.name for t in m.data} == {"masker loss", "mean masker score", "frozen notes per batch"}
    # older/other naming: loss_<attr>
    old = charts.progress_frame([{"step": 1, "loss": 1.0, "loss_pitch": 0.5}])
    assert {t.name for t in charts.loss_curves(old).data} == {"total", "pitch"}
    empty = charts.loss_curves(charts.progress_frame([]))
    assert len(empty.data) == 0 and "no progress" in empty.layout.annotations[0].text
    assert "random strategy" in charts.masker_stats_figure(charts.progress_frame(recs[:1])).layout.annotations[0].text


def test_classes():
    assert list(noteclasses.register_class(np.array([40, 48, 60, 71, 84, 100]))) == [
        "low (< C3)", "C3-B3", "C4-B4", "C4-B4", "high (>= C6)", "high (>= C6)"]
    assert list(noteclasses.metric_class(np.array([0.0, 1.0, 2.5, 0.25, 3.0]))) == [
        "downbeat", "on beat", "8th off-beat", "other", "on beat"]
    assert list(noteclasses.duration_class(np.array([0.25, 0.5, 1.0, 4.0]))) == noteclasses.DURATION_ORDER


def test_bias_table_and_figure():
    df = pd.DataFrame({"pitch": [40, 41, 60, 61, 62], "beat": [0.0, 0.5, 1.0, 0.0, 0.25],
                       "duration_q": [1, 1, 1, 1, 1], "picked": [True, True, True, True, False],
                       "correct_pitch": [True, False, True, True, False],
                       "correct_duration": [True, True, False, True, True]})
    t = charts.bias_table(df, "register", mask_col="picked")
    low = t[(t.group == "low (< C3)") & (t.attribute == "pitch")].iloc[0]
    mid = t[(t.group == "C4-B4") & (t.attribute == "pitch")].iloc[0]
    assert (low.accuracy, low.n) == (0.5, 2)
    assert (mid.accuracy, mid.n) == (1.0, 2)  # the unpicked note 62 does not count
    tm = charts.bias_table(df, "metric", mask_col="picked", attrs=["pitch"])
    assert list(tm.group) == ["downbeat", "on beat", "8th off-beat"]
    fig = charts.bias_figure({"A": t, "B": t.assign(accuracy=t.accuracy / 2)}, "pitch", by_label="register")
    assert [tr.name for tr in fig.data] == ["A", "B"]
    assert list(fig.data[0].x) == ["low (< C3)", "C4-B4"]
    assert list(fig.data[1].y) == [0.25, 0.5]
    with pytest.raises(ValueError):
        charts.bias_table(df, "colour")


def test_accuracy_bars_and_metrics_table():
    accs = {"adv": {"pitch": 0.5, "duration": 0.8}, "rnd": {"pitch": 0.4, "duration": 0.9}}
    fig = charts.accuracy_bars(accs)
    assert [t.name for t in fig.data] == ["adv", "rnd"]
    assert list(fig.data[1].y) == [0.4, 0.9]
    # a full bar's label ("100.0%", drawn above it) has room under the top of the plot
    assert fig.layout.yaxis.range[1] >= 1.1 and max(fig.layout.yaxis.tickvals) == 1.0
    assert all(t.cliponaxis is False for t in fig.data)
    table = readable.metrics_comparison(accs)
    assert list(table.columns) == ["adv", "rnd", "difference"]
    assert table.loc["pitch", "difference"] == pytest.approx(-0.1)
    assert "difference" not in readable.metrics_comparison({"one": {"x": 1.0}}).columns


def test_prediction_bars_marks_truth():
    fig = charts.prediction_bars([(62, 0.6), (60, 0.3), (64, 0.1)], truth=60)
    bar = fig.data[0]
    assert list(bar.y) == ["64", "60", "62"]  # best on top
    assert list(bar.marker.color) == ["#9e9e9e", "#2ca02c", "#9e9e9e"]


def test_metric_class_reads_the_quantised_position_when_there_is_one():
    # POP909-like raw timing: every note 1/12 quarter after the grid
    df = pd.DataFrame({"beat": [1 / 12, 1 + 1 / 12, 0.5 + 1 / 12, 0.25 + 1 / 12],
                       "true_position": [0.0, 1.0, 0.5, 0.25], "correct_pitch": [1, 0, 1, 1]})
    assert list(noteclasses.metric_class(df["beat"].to_numpy())) == ["other"] * 4
    assert list(noteclasses.metric_class(noteclasses.metric_beats(df))) == ["downbeat", "on beat", "8th off-beat", "other"]
    t = charts.bias_table(df, "metric")
    assert list(t["group"]) == ["downbeat", "on beat", "8th off-beat", "other"]
    # without the explain column, or with an undecodable one, the raw beat is used
    assert list(noteclasses.metric_beats(df.drop(columns="true_position"))) == list(df["beat"])
    bad = df.assign(true_position=[0.0, None, 0.5, 0.25])
    assert list(noteclasses.metric_beats(bad)) == list(df["beat"])


# ---------------------------------------------------------------- issue 12: long pieces, layout, words

def long_table(n_bars=427, per_bar=13):
    rng = np.random.default_rng(3)
    on = np.sort(rng.uniform(0, 4 * n_bars - 0.5, n_bars * per_bar))
    return pd.DataFrame({"note": np.arange(len(on)), "pitch": rng.integers(40, 90, len(on)), "velocity": 70,
                         "track": 0, "onset_q": on, "duration_q": 0.5, "bar": (on // 4).astype(int),
                         "beat": on % 4, "score": rng.uniform(0.47, 0.49, len(on))})


def test_long_piece_opens_on_16_bars_with_a_range_slider_and_zoomable_bar_labels():
    df = long_table()  # a 5,500-note movement of 427 bars
    bars = np.arange(427) * 4.0
    fig = pianoroll.piano_roll(df, bar_starts_q=bars)
    ax = fig.layout.xaxis
    # x in bar numbers: bar b spans [b, b + 1), so Plotly's automatic ticks follow the zoom
    assert list(ax.range) == [1.0, 17.0]  # bars 1-16
    assert ax.rangeslider.visible
    assert ax.tickmode == "auto" and ax.tickvals is None and ax.tickformat == "d"
    # a faint line at every bar (no grey wall: no beat lines), darker lines at the labelled bars
    assert list(ax.minor.tickvals) == [float(b) for b in range(1, 428)]
    assert ax.minor.gridcolor == palette.STATE_COLORS["beat_line"]
    assert ax.gridcolor == palette.STATE_COLORS["bar_line"]
    plain = trace(fig, "notes (colour = masker score)")
    ids = note_ids(plain)
    np.testing.assert_allclose(np.asarray(plain.base, float), 1 + df.onset_q[ids] / 4)
    np.testing.assert_allclose(np.asarray(plain.x, float), df.duration_q[ids] / 4)
    # the ticks Plotly picks (1-2-5 steps, about ``nticks`` per view): every bar in the opening
    # 16-bar view, every 50th over the whole piece; never between bar lines (the tick guard)
    guard = trace(fig, "bar ticks")
    assert list(guard.x) == [1, 1, 2] and guard.orientation == "v" and not guard.showlegend
    assert guard.hoverinfo == "skip" and guard.marker.opacity == 0
    assert 16 / ax.nticks < 2  # -> Plotly's step is one bar
    assert rollaxes.bar_label_step(427, ax.nticks) >= 20 and rollaxes.bar_label_step(16, ax.nticks) == 1
    # the hover still speaks quarters and bar/beat
    assert "quarters" in plain.hovertemplate and str(plain.customdata[0][2]).startswith("bar ")
    # a ghost layer sits on the same axis
    ghost = df.iloc[:5].assign(pitch=df.pitch.iloc[:5] + 1)
    g = trace(pianoroll.piano_roll(df, bar_starts_q=bars, ghost=ghost), "reconstruction (ghost)")
    np.testing.assert_allclose(np.asarray(g.base, float), 1 + ghost.onset_q / 4)
    # a metre change: a 3/4 bar spans one unit like a 4/4 one
    mixed = np.concatenate([np.arange(60) * 4.0, 240 + np.arange(367) * 3.0])
    m = pianoroll.piano_roll(df.assign(onset_q=241.5, duration_q=1.5), bar_starts_q=mixed)
    mt = trace(m, "notes (colour = masker score)")
    np.testing.assert_allclose(np.asarray(mt.base, float), 61.5)  # bar 61 (3/4) + 1.5 of 3 quarters
    np.testing.assert_allclose(np.asarray(mt.x, float), 0.5)
    # up to 48 bars: x in quarters, every bar labelled (fixed ticks) and beats as minor lines
    short = pianoroll.piano_roll(df[df.onset_q < 40], bar_starts_q=bars[:10])
    assert short.layout.xaxis.range is None and len(short.layout.xaxis.tickvals) == 10
    forty = pianoroll.piano_roll(df[df.onset_q < 190], bar_starts_q=bars[:48])
    assert list(forty.layout.xaxis.range) == [0.0, 64.0] and len(forty.layout.xaxis.tickvals) == 48
    assert not [t for t in forty.data if t.name == "bar ticks"]
    # side by side: both panels open on the same 16 bars and zoom together
    two = pianoroll.side_by_side_rolls([df, df], ["A", "B"], bar_starts_q=bars)
    assert list(two.layout.xaxis.range) == [1.0, 17.0] and two.layout.xaxis2.matches == "x"
    assert [t.xaxis for t in two.data if t.name == "bar ticks"] == ["x", "x2"]
    # the Why rolls: open around the selected note, arcs on the bar axis
    vals = np.linspace(-1, 1, len(df))
    sel = int(np.searchsorted(df.onset_q, 400.0))  # bar 101
    v = valueroll.value_roll(df, vals, label="attribution", diverging=True, selected=sel, bar_starts_q=bars, arcs=3)
    lo, hi = v.layout.xaxis.range
    assert hi - lo == 16 and lo <= 1 + df.onset_q[sel] / 4 <= hi
    arcs = next(t for t in v.data if t.name.startswith("top 3"))
    assert abs(arcs.x[0] - (1 + (df.onset_q[sel] + 0.25) / 4)) < 1e-9


def test_legends_sit_below_the_axis_title_never_on_the_plot():
    df = notes_table()
    figs = [pianoroll.piano_roll(df), pianoroll.masking_draw_figure(df, df.picked.to_numpy(), df.picked.to_numpy()),
            pianoroll.side_by_side_rolls([df, df], ["before", "after the edit"]),
            valueroll.value_roll(df, df.score.to_numpy(), label="x", diverging=True)]
    for fig in figs:
        lg = fig.layout.legend
        # anchored to the bottom of the whole figure (container), with a bottom margin that holds
        # the tick labels (~20 px), the axis title (~25 px) and one legend row (~25 px)
        assert lg.yref == "container" and lg.y == 0 and lg.yanchor == "bottom" and lg.orientation == "h"
        assert fig.layout.margin.b >= 90


def test_score_rank_and_spread_words():
    r = pianoroll.score_rank([0.47, 0.49, 0.48, np.nan])
    np.testing.assert_allclose(r[:3], [0.0, 100.0, 50.0])
    assert np.isnan(r[3])
    sp = pianoroll.score_spread(np.random.default_rng(0).uniform(0.47, 0.49, 200))
    assert sp["verdict"] == "barely" and sp["iqr"] < 0.02
    text = pianoroll.score_spread_text(np.random.default_rng(0).uniform(0.47, 0.49, 200))
    assert text.startswith("raw masker scores 0.47-0.49, IQR 0.01") and "barely distinguishes" in text
    assert pianoroll.score_spread([0.1, 0.9, 0.2, 0.8])["verdict"] == "clearly"


def test_numbers_and_values_read_as_words():
    assert readable.fmt_number(0.167956) == "0.17" and readable.fmt_number(68.0) == "68"
    assert readable.fmt_number(None) == "-" and readable.fmt_number(float("nan")) == "-"
    assert readable.fmt_quarters(0.167956) == "0.17 quarters" and readable.fmt_quarters(1.0) == "1 quarter"
    assert readable.value_label("pitch", 67) == "G4" and readable.value_label("pitch", 66.0) == "F#4"
    assert readable.value_label("duration", 0.5) == "0.5 q"
    assert readable.stat_label("masker_loss") == "masker loss" and readable.stat_label("loss_bar") == "bar"
    assert readable.stat_label("frozen_in_batch") == "frozen notes per batch"
    # hover: durations rounded
    fig = pianoroll.piano_roll(notes_table().assign(duration_q=0.167956))
    assert fig.data[0].customdata[0][3] == "0.17"


def test_masker_counts_get_their_own_axis():
    prog = pd.DataFrame({"step": [1, 2, 3], "masker_loss": [0.69, 0.68, 0.66], "score_mean": [0.5, 0.49, 0.48],
                         "frozen_in_batch": [0.0, 1150.0, 1148.0]})
    fig = charts.masker_stats_figure(prog)
    by = {t.name: t for t in fig.data}
    assert by["frozen notes per batch"].yaxis == "y2"
    assert by["masker loss"].yaxis == "y" and by["mean masker score"].yaxis == "y"
    assert fig.layout.yaxis2.overlaying == "y" and fig.layout.yaxis2.side == "right"
    # whole numbers on both: counts (0, 500, 1,000) and steps (1, 2, 3; not 1.5)
    assert fig.layout.yaxis2.tickformat == ",d" and fig.layout.yaxis2.dtick == 500
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == ",d"
    zero = charts.masker_stats_figure(prog.assign(frozen_in_batch=0.0))  # no 0.274, 0.547 ticks
    assert zero.layout.yaxis2.dtick == 1 and list(zero.layout.yaxis2.range) == [0, 4.0]
    assert charts.loss_curves(prog.assign(loss=1.0)).layout.xaxis.dtick == 1
    long = charts.loss_curves(pd.DataFrame({"step": np.arange(0, 500, 10), "loss": 1.0}))
    assert long.layout.xaxis.dtick is None and long.layout.xaxis.tickformat == ",d"


def test_bias_bar_labels_are_short_lines():
    df = notes_table(n=60)
    df["correct_pitch"] = np.arange(len(df)) % 3 > 0
    t = charts.bias_table(df, "register")
    fig = charts.bias_figure({"A": t, "B": t}, "pitch")
    for tr in fig.data:
        for text in tr.text:
            lines = text.split("<br>")
            assert len(lines) == 2 and all(len(x) <= 8 for x in lines), text  # "99%" / "n=2,073"
        assert tr.textangle == 0
    assert fig.layout.yaxis.range[0] == 0


def test_metrics_display_formats_each_row():
    t = readable.metrics_comparison({"A": {"recovery pitch (piece)": 0.5, "frozen notes": 68.0,
                                        "masker score mean": 0.48123, "parameters (M)": 3.21},
                                  "B": {"recovery pitch (piece)": 0.55, "frozen notes": 68.0,
                                        "masker score mean": np.nan, "parameters (M)": 3.21}})
    html = readable.metrics_display(t).to_html()
    for cell in (">50.0%<", ">55.0%<", ">+5.0 points<", ">68<", ">0.481<", ">-<", ">3.21<"):
        assert cell in html, cell
    assert "68.000" not in html and "None" not in html and "nan" not in html


def test_study_by_class_axis_starts_at_zero_and_example_titles_fit():
    from smu_explain import study

    by_class = {"register": [{"class": "C4-B4", "n": 10, "score": 0.47, "frozen": 0.3},
                             {"class": "C5-B5", "n": 12, "score": 0.49, "frozen": 0.35}]}
    fig = study.masker_class_figure(by_class)
    assert fig.layout.yaxis.range[0] == 0.0  # never zoomed on 0.46-0.50
    notes = [{"note": i, "pitch": 60 + i, "velocity": 64, "track": 0, "onset_q": 40.0 + i, "duration_q": 1.0,
              "bar": 10 + i // 4, "beat": float(i % 4), "score": 0.5, "frozen": i == 2, "picked": False}
             for i in range(8)]
    ex = {"piece": "asap/Bach/Prelude/bwv_854/Richardson01M_a_very_long_performer_name", "source": "asap",
          "note": 2, "onset_q": 42.0, "duration_q": 1.0, "pitch": 62,
          "context": {"notes": notes, "bar_starts_q": [40.0, 44.0], "track_names": ["piano"]}}
    f = study.frozen_example_figure(ex)
    first_line = f.layout.title.text.split("<br>")[0]
    assert len(first_line) <= 42 and "asap, note 2" in f.layout.title.text
    assert f.layout.annotations[0].ay < 0  # a note in the lower half: the arrow from above (see the next test)
    assert f.layout.coloraxis.showscale is False
    # the bars keep their numbers in the piece (bar index 10 -> "11"), not 1, 2 of the excerpt
    assert list(f.layout.xaxis.ticktext) == ["11", "12"]


def test_the_frozen_arrow_label_stays_inside_the_plot():
    """The "frozen" label sits 30 px from its note towards the middle of the pitch range: above the
    lowest note (below it, it sat on the bar numbers), below the highest (above it ran into the title)."""
    from smu_explain import study

    notes = [{"note": i, "pitch": 60 + 2 * i, "onset_q": 40.0 + i, "duration_q": 1.0, "score": 0.5,
              "frozen": i in (0, 7)} for i in range(8)]
    for i, below in ((0, False), (7, True)):
        ex = {"piece": "emopia/Q4_x_3", "source": "emopia", "note": i, "onset_q": 40.0 + i, "duration_q": 1.0,
              "pitch": 60 + 2 * i, "context": {"notes": notes, "bar_starts_q": [40.0, 44.0]}}
        [arrow] = study.frozen_example_figure(ex).layout.annotations
        assert arrow.text == "frozen" and (arrow.ay > 0) == below, (i, arrow.ay)


def test_one_freeze_book_update_has_an_axis_of_its_epoch_alone():
    """A run with one freeze-book update (epoch 3): its point on an axis of epoch 3 alone (not an
    autoranged 2-4, or -1 to 1 for epoch 0), with the sentence that says why there is no line."""
    from smu_explain import study

    one = [{"epoch": 3, "step": 1791, "frozen_frac": 0.27, "jaccard_prev": None, "kept_from_prev": None,
            "jaccard_last": 1.0}]
    fig = study.freeze_history_figure(one)
    assert list(fig.layout.xaxis.range) == [2.5, 3.5] and list(fig.layout.xaxis.tickvals) == [3]
    assert fig.layout.annotations[0].text == study.freeze_history_sentence(one, br="<br>")
    assert "it froze 27% of the training notes;<br>no later update" in fig.layout.annotations[0].text
    assert study.freeze_history_sentence(one + one) is None


def test_scale_colours_match_plotly():
    """scale_colours gives Plotly's colours (plotly.colors' interpolation of the same scale),
    clamps values outside [cmin, cmax] and draws NaN in Plotly's default line colour."""
    from plotly.colors import hex_to_rgb, sample_colorscale, unlabel_rgb

    vals = [0.0, 12.5, 50.0, 77.7, 100.0]
    ours = palette.scale_colours(vals, "Viridis", 0.0, 100.0)
    ref = sample_colorscale("Viridis", [v / 100 for v in vals])
    for a, b in zip(ours, ref, strict=False):
        assert np.allclose(hex_to_rgb(a), unlabel_rgb(b), atol=1.0), (a, b)  # it truncates, plotly.js rounds
    assert palette.scale_colours([-5.0, 200.0, np.nan], "RdBu_r", -1.0, 1.0) == [
        palette.scale_colours([-1.0], "RdBu_r", -1.0, 1.0)[0], palette.scale_colours([1.0], "RdBu_r", -1.0, 1.0)[0],
        "#444"]
    assert palette.scale_colours([], "Viridis", 0.0, 1.0) == []


def _score_frame(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame({"pitch": 60 + np.arange(n) % 7, "onset_q": np.arange(n, dtype=float),
                         "duration_q": np.ones(n), "velocity": 80, "track": 0, "bar": np.arange(n) // 4,
                         "beat": np.arange(n) % 4 * 1.0, "score": np.linspace(0, 1, n),
                         "picked": np.arange(n) % 3 == 0, "frozen": np.arange(n) == n - 1})


def test_untrained_overlay_is_faded():
    df = _score_frame()
    full = pianoroll.piano_roll(df)
    faded = pianoroll.piano_roll(df, faded=True)
    score_names = ("notes (colour = masker score)", "picked by masker (outlined)")
    assert all(t.opacity in (None, 1.0) for t in full.data if t.name in score_names)
    faded_traces = [t for t in faded.data if str(t.name).startswith(score_names)]
    assert len(faded_traces) == 2
    assert all(t.opacity == palette.FADED_OPACITY and "faded" in t.name for t in faded_traces)
    both = pianoroll.side_by_side_rolls([df, df], ["a", "b"], faded=[False, True])
    assert [t.opacity for t in both.data if str(t.name).startswith("notes (colour")] == [1.0, palette.FADED_OPACITY]


def test_one_palette_for_models_and_rules():
    # a model keeps its colour whatever its place in the figure (Explore shows one, Compare two)
    one = palette.model_colours(["demo random"])
    two = palette.model_colours(["demo adversarial", "demo random"])
    assert one["demo random"] == two["demo random"] == palette.PALETTE["models"]["demo random"]
    other = palette.model_colours(["mine", "demo adversarial", "theirs"])
    assert len(set(other.values())) == 3 and other["mine"] not in palette.PALETTE["models"].values()
    rules = {"most_frequent": {"pitch": 0.1}, "copy_neighbour": {"pitch": 0.2}}
    for accs in ({"demo random": {"pitch": 0.5}}, {"demo adversarial": {"pitch": 0.4}, "demo random": {"pitch": 0.5}}):
        fig = charts.rules_figure(accs, rules)
        bars = {t.name: t.marker.color for t in fig.data if t.type == "bar"}
        assert bars["demo random"] == palette.PALETTE["models"]["demo random"]
        marks = [t.marker.line.color for t in fig.data if t.type == "scatter"]
        assert marks == [palette.PALETTE["rules"]["most_frequent"], palette.PALETTE["rules"]["copy_neighbour"]]
    t = pd.DataFrame({"attribute": ["pitch"], "group": ["low"], "accuracy": [0.5], "n": [10]})
    fig = charts.bias_figure({"demo adversarial": t, "demo random": t}, "pitch")
    assert [b.marker.color for b in fig.data if b.type == "bar"] == [
        palette.PALETTE["models"]["demo adversarial"], palette.PALETTE["models"]["demo random"]]


def test_masking_draw_titles():
    df = _score_frame()
    fig = pianoroll.masking_draw_figure(df, df["picked"].to_numpy(), df["picked"].to_numpy(),
                                    titles=["random: 80%", "masker: 60%"])
    assert [a.text for a in fig.layout.annotations][:2] == ["random: 80%", "masker: 60%"]


def drawn(fig, name):
    """The trace of ``name`` that draws notes (a legend swatch of the same name draws none)."""
    found = [t for t in fig.data if t.name == name and t.customdata is not None]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


def _role_frame():
    df = notes_table(12)
    df["frozen"] = df["score"] >= 0.9
    df["picked"] = (df["score"] >= 0.6) & ~df["frozen"]
    df["chord_tone"] = np.arange(12) % 3 != 0
    df["voice_position"] = np.array(["bass", "inner", "top", "solo"] * 3, dtype=object)
    df["harmony"] = np.where(df["chord_tone"], "chord tone", "passing").astype(object)
    df["metric"] = "mystery"  # a class the palette does not know
    return df


def test_piano_roll_colours_notes_by_role():
    """Colour by a label column: one trace per class in its musical order, a colour each, counts in
    the legend; picked notes outlined red, frozen notes hatched in their class's colour; no colour bar."""
    df = _role_frame()
    fig = pianoroll.piano_roll(df, color_by="voice_position")
    names = [t.name for t in fig.data if t.type == "bar" and t.customdata is not None and len(t.customdata)]
    assert names == ["bass: 3", "inner: 3", "top: 3", "solo: 3"]
    colours = [drawn(fig, n).marker.color for n in names]
    assert colours == [pianoroll.ROLE_COLOURS["voice_position"][c] for c in ("bass", "inner", "top", "solo")]
    assert sorted(sum((note_ids(drawn(fig, n)) for n in names), [])) == list(range(12))  # every note once
    assert note_ids(drawn(fig, "bass: 3")) == [0, 4, 8]
    assert fig.layout.legend.title.text == "voice position:"
    assert "coloraxis" not in fig.layout or fig.layout.coloraxis.colorbar.title.text is None
    assert not any(t.name == "frozen (never masked)" for t in fig.data)
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == names + ["picked by masker (outlined)", "frozen (hatched)"]
    swatches = [t for t in fig.data if t.showlegend is not False][:4]
    assert [t.marker.color for t in swatches] == colours and all(t.customdata is None for t in swatches)
    top = drawn(fig, "top: 3")  # notes 2, 6, 10: scores 0.18, 0.55, 0.91
    assert list(top.marker.pattern.shape) == ["", "", "/"]  # note 10 frozen
    solo = drawn(fig, "solo: 3")  # notes 3, 7, 11: 0.27, 0.64 (picked), 1.0 (frozen)
    assert list(solo.marker.line.width) == [0.0, 2.5, 0.0]
    assert solo.marker.line.color[1] == palette.STATE_COLORS["picked_outline"]
    assert "voice position: solo" in solo.hovertemplate and "masker score" in solo.hovertemplate


def test_role_colours_read_booleans_and_unknown_classes():
    df = _role_frame()
    fig = pianoroll.piano_roll(df, color_by="chord_tone", show_score=False)
    assert [t.name for t in fig.data if t.customdata is not None][:2] == ["chord tone: 8", "non-chord tone: 4"]
    assert "masker score" not in drawn(fig, "chord tone: 8").hovertemplate
    fig = pianoroll.piano_roll(df, color_by="metric")
    assert drawn(fig, "mystery: 12").marker.color in palette.TRACK_PALETTE
    with pytest.raises(ValueError, match="no such column"):
        pianoroll.piano_roll(df, color_by="register")
    # a user's text in a class never reaches the hover unescaped
    df["metric"] = "<b>x</b>"
    fig = pianoroll.piano_roll(df, color_by="metric")
    tr = next(t for t in fig.data if t.customdata is not None)
    assert "<b>x</b>" not in tr.hovertemplate and "&lt;b&gt;x" in tr.hovertemplate
    assert all("<b>x" not in t.name for t in fig.data if t.name)


def test_role_colouring_of_a_real_piece_draws():
    """harmony.analyze's labels joined to a piece's notes: every label column draws."""
    from smu_explain import harmony
    from smu_explain.reading import read_piece

    piece = read_piece(pianoroll.__file__.rsplit("/", 2)[0] + "/sample_midi/bach_bwv269.mid")
    labels = harmony.analyze(piece)
    df = piece.notes_table().assign(**{c: labels[c].to_numpy() for c in harmony.LABEL_COLUMNS})
    for col in harmony.LABEL_COLUMNS:
        fig = pianoroll.piano_roll(df, bar_starts_q=piece.bar_starts_q, color_by=col)
        n = sum(len(t.customdata) for t in fig.data if t.customdata is not None and t.name and ":" in t.name)
        assert n == len(df), col


def test_picks_table_cells():
    iv = lambda e, lo, hi: {"est": e, "lo": lo, "hi": hi}  # noqa: E731
    res = {"columns": {"chord_tone": [
        {"class": "non-chord tone", "n_notes": 30, "n_pieces": 2, "score": iv(0.5, 0.4, 0.6),
         "picked": iv(0.1, 0.05, 0.2), "frozen": iv(0.3, None, None), "score_diff": iv(0.05, 0.01, 0.09),
         "score_adj": iv(-0.02, -0.05, 0.01), "picked_adj": None}],
        "duration": [{"class": "< 1/8 (<0.5 q)", "n_notes": 5, "n_pieces": 1, "score": iv(None, None, None),
                      "picked": None, "frozen": None, "score_diff": None, "score_adj": None}]}}
    t = picks.picks_table(res)
    assert list(t["label"]) == ["chord or non-chord tone", "duration"]
    r = t.iloc[0]
    assert r["mean score"] == "0.500 [0.400, 0.600]" and r["picked %"] == "10.0 [5.0, 20.0]"
    assert r["frozen %"] == "30.0" and r["score vs rest"] == "+0.050 [+0.010, +0.090] *"
    assert r["score vs same duration x register"] == "-0.020 [-0.050, +0.010]"
    assert r["picked % vs same duration x register"] == "-" and t.iloc[1]["mean score"] == "-"
    assert list(picks.picks_table(res, columns=["duration"])["class"]) == ["< 1/8 (<0.5 q)"]
    assert picks.picks_table({}).empty
