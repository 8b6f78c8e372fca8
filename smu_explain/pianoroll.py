"""Piano rolls of a notes table: the masker's view (scores, picked and frozen notes), tracks,
notes coloured by a harmony label, the reconstruction overlay, side-by-side panels and a
concrete masking draw; :func:`note_from_selection` maps a click back to a note. Imports
numpy, pandas, plotly and the package's figure helpers (``palette``, ``readable``,
``rollaxes``, ``markup``), never a model or streamlit.

Rules every roll follows (``valueroll`` too):

- Input is plain data (pandas DataFrames / dicts / numpy arrays), output is a
  ``plotly.graph_objects.Figure``; no builder reads files, touches a model or
  imports streamlit, so each can be unit-tested by inspecting ``fig.data``.
- Notes are drawn as ONE horizontal ``go.Bar`` trace per note *state*
  (``base`` = onset, ``x`` = duration, ``y`` = pitch, bar height 0.8 semitone),
  never one layout shape per note: thousands of notes stay fast.
- Every note trace carries ``customdata`` whose first column is the note index
  (column ``note`` of the table), so a selection event (curve number, point
  index) maps back to a note with :func:`note_from_selection`.
- Time comes in quarter notes on the beat grid (``onset_q`` / ``duration_q``);
  bar lines come from ``bar_starts_q`` (or, without it, the first onset of
  each bar index) and are the time axis' own grid lines: no trace or shape per
  line. Up to ``MAX_BAR_LABELS`` bars the x axis is in quarters with every bar
  labelled and beats as faint minor lines; longer pieces get x in bar numbers
  (:class:`BarAxis`: bar b spans [b, b + 1) whatever its metre) with Plotly's
  automatic integer ticks, which follow the zoom (every bar in the opening
  view, every 50th on a 400-bar whole). Long pieces open on their first
  ``INITIAL_BARS`` bars.
- Notes coloured by a number (masker score rank, attribution, attention) carry their colours
  as strings (:func:`scale_colours`: Plotly's own interpolation of the colour scale), never
  as numbers on the colour axis: the Plotly build Streamlit ships logs a console stack trace
  for every numeric colour of every bar on every draw (about 1,000 on one piano roll), which
  was most of the browser's time for a redraw. The colour bar comes from an invisible
  one-point trace on the layout's colour axis (:func:`colorbar_trace`); each bar trace keeps
  the scale (``colorscale``/``cmin``/``cmax``, no scale shown) so its legend swatch is the
  scale's middle colour, as before.
- Legends sit under the time axis title (container-anchored), never on a plot.
- Words: note names (never MIDI numbers), ``bar 13, beat 1`` (never ``13.1``),
  numbers rounded (:func:`fmt_number`), training statistics by human names
  (:func:`stat_label`).
- The pitch axis labels every C with its name (MIDI 60 = ``C4``).

Notes tables follow the explain-table contract of ``ARCHITECTURE.md``:
``note, pitch, velocity, track, onset_q, duration_q, bar, beat`` and, when a
model has been run, ``score, picked, frozen, correct_<attr>, pred_<attr>,
topk_<attr>``. ``Piece.notes_table()`` (tokenizer.py) is such a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .markup import html_escape
from .palette import FADED_OPACITY, SCORE_SCALE, STATE_COLORS, TRACK_PALETTE, scale_colours
from .readable import ROLE_LABELS, bar_beat_label, fmt_number, pitch_name
from .rollaxes import (
    INITIAL_BARS,
    RANGE_SLIDER,
    SLIDER_HEIGHT,
    bar_axis_for,
    legend_below,
    pitch_axis,
    tick_guard,
    time_axis,
)

NOTE_HEIGHT = 0.8


def track_name_list(piece_or_names) -> list[str] | None:
    """The track names of a piece (its ``track_names``) or of a list, None when there are none."""
    if piece_or_names is None:
        return None
    if isinstance(piece_or_names, (list, tuple)):
        return list(piece_or_names)
    return list(getattr(piece_or_names, "track_names", []) or []) or None


def reconstruction_frame(df: pd.DataFrame, picked_col: str = "picked", *, full: bool = False,
                         dur_per_quarter: float = 1.0) -> pd.DataFrame:
    """The model's reconstruction of the masked notes, as a notes table.

    Rows: the notes where ``picked_col`` is True (``full=True``: every note,
    the unpicked ones unchanged, for listening to the whole reconstruction).
    For picked notes, ``pitch`` becomes ``pred_pitch`` and ``duration_q``
    becomes ``pred_duration / dur_per_quarter`` when those hold a value (the
    explain table decodes durations in quarters, so the default is 1); with
    ``pred_position`` and ``true_position`` (quarters after the token bar's
    start) the onset moves by ``pred_position - true_position``. ``start_sec``
    / ``end_sec`` follow, at the note's own seconds-per-quarter. ``velocity``
    becomes ``pred_velocity`` when predicted. Columns ``orig_pitch`` and
    ``orig_duration_q`` keep the truth for the hover text.
    """
    if picked_col not in df.columns:
        return df.copy() if full else df.iloc[0:0].copy()
    out = df.copy()
    for c in ("pitch", "velocity"):  # Piece arrays are int16: widen before writing predictions
        if c in out.columns:
            out[c] = out[c].astype(np.int64)
    for c in ("onset_q", "duration_q", "start_sec", "end_sec"):
        if c in out.columns:
            out[c] = out[c].astype(np.float64)
    out["orig_pitch"] = out["pitch"]
    out["orig_duration_q"] = out["duration_q"]
    m = out[picked_col].fillna(False).to_numpy(dtype=bool)

    def _num(col):
        return pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=float)

    spq = None
    if "start_sec" in out.columns and "end_sec" in out.columns:
        dq = out["duration_q"].to_numpy(dtype=float)
        span = out["end_sec"].to_numpy(dtype=float) - out["start_sec"].to_numpy(dtype=float)
        spq = np.where(dq > 0, span / np.where(dq > 0, dq, 1.0), 0.5)
    if "pred_pitch" in out.columns:
        pp = _num("pred_pitch")
        ok = m & np.isfinite(pp) & (pp >= 0)
        out.loc[ok, "pitch"] = pp[ok].astype(int)
    if "pred_velocity" in out.columns and "velocity" in out.columns:
        pv = _num("pred_velocity")
        ok = m & np.isfinite(pv) & (pv > 0)
        out.loc[ok, "velocity"] = pv[ok].astype(int)
    new_onset = out["onset_q"].to_numpy(dtype=float).copy()
    if "pred_position" in out.columns and "true_position" in out.columns:
        shift = _num("pred_position") - _num("true_position")
        ok = m & np.isfinite(shift)
        new_onset[ok] = new_onset[ok] + shift[ok]
    new_dur = out["duration_q"].to_numpy(dtype=float).copy()
    if "pred_duration" in out.columns:
        pdur = _num("pred_duration")
        ok = m & np.isfinite(pdur) & (pdur > 0)
        new_dur[ok] = pdur[ok] / float(dur_per_quarter)
    if spq is not None:
        shift = (new_onset - out["onset_q"].to_numpy(dtype=float)) * spq
        start = out["start_sec"].to_numpy(dtype=float) + shift
        out["start_sec"] = start
        out["end_sec"] = start + new_dur * spq
    out["onset_q"] = new_onset
    out["duration_q"] = new_dur
    return out if full else out[m]


def _hover_customdata(df: pd.DataFrame, track_names: list[str] | None) -> np.ndarray:
    """customdata columns: note, pitch name, "bar N, beat B", duration (rounded), velocity,
    track, masker score (3 decimals), rank of the score in the piece (percent)."""
    n = len(df)
    note = df["note"].to_numpy() if "note" in df.columns else np.arange(n)
    names = [pitch_name(p) for p in df["pitch"].to_numpy()]
    if "bar" in df.columns and "beat" in df.columns:
        bb = [bar_beat_label(b, t) for b, t in zip(df["bar"].to_numpy(), df["beat"].to_numpy(), strict=False)]
    else:
        bb = ["?"] * n
    dur = [fmt_number(d) for d in df["duration_q"].to_numpy(dtype=float)]
    vel = df["velocity"].to_numpy() if "velocity" in df.columns else np.full(n, -1)
    if "track" in df.columns:
        tr = df["track"].to_numpy()
        if track_names:
            tracks = [track_names[int(t)] if 0 <= int(t) < len(track_names) else str(t) for t in tr]
        else:
            tracks = [str(int(t)) for t in tr]
    else:
        tracks = ["0"] * n
    score = ([fmt_number(v, 3) for v in df["score"].to_numpy(dtype=float)] if "score" in df.columns
             else ["-"] * n)
    rank = ([f"{v:.0f}%" for v in df["score_rank"].to_numpy(dtype=float)] if "score_rank" in df.columns
            else ["-"] * n)
    return np.array(
        list(zip(note.tolist(), names, bb, dur, np.asarray(vel).tolist(), tracks, score, rank, strict=False)),
        dtype=object,
    ).reshape(n, 8)


HOVER = (
    "<b>%{customdata[1]}</b> (note %{customdata[0]})<br>"
    "%{customdata[2]}<br>"
    "duration %{customdata[3]} quarters<br>"
    "velocity %{customdata[4]}<br>"
    "track %{customdata[5]}"
)
HOVER_SCORE = HOVER + "<br>masker score %{customdata[6]} (higher than %{customdata[7]} of the piece)"


def colorbar_trace(scale: Mapping, xaxis: str = "x", yaxis: str = "y") -> go.Scatter:
    """An invisible one-point trace on the layout's colour axis: it draws the colour bar of
    notes coloured with :func:`scale_colours` (bars with string colours show none)."""
    return go.Scatter(x=[None], y=[None], mode="markers", name="colour scale", showlegend=False,
                      hoverinfo="skip", marker={"color": [float(scale["cmin"])], "coloraxis": "coloraxis"},
                      xaxis=xaxis, yaxis=yaxis)


def note_trace(df: pd.DataFrame, name: str, *, color, line_color=None, line_width=0.0,
                pattern: str | None = None, opacity: float = 1.0, scale: Mapping | None = None,
                values=None, track_names=None, hover: str = HOVER, legendgroup: str | None = None,
                showlegend: bool = True, extra_hover: str = "") -> go.Bar:
    """One horizontal bar trace drawing every note of ``df`` (may be empty).

    ``scale`` (``colorscale``, ``cmin``, ``cmax``): each note coloured by its value on that
    scale (``values``, default the ``score_rank`` or ``score`` column), as colour strings
    (:func:`scale_colours`; see the module docstring)."""
    marker: dict = {"line": {"width": line_width}}
    if line_color is not None:
        marker["line"]["color"] = line_color
    if scale is not None:
        if values is None:
            values = df["score_rank" if "score_rank" in df.columns else "score"].to_numpy(dtype=float)
        marker["color"] = scale_colours(values, scale["colorscale"], scale["cmin"], scale["cmax"])
        marker.update(colorscale=scale["colorscale"], cmin=float(scale["cmin"]), cmax=float(scale["cmax"]),
                      showscale=False)
    else:
        marker["color"] = color
    if pattern:  # hatch drawn over the fill colour
        marker["pattern"] = {"shape": pattern, "fgcolor": STATE_COLORS["frozen_outline"],
                             "fillmode": "overlay", "solidity": 0.3}
    return go.Bar(
        name=name,
        orientation="h",
        base=df["_x0" if "_x0" in df.columns else "onset_q"].to_numpy(dtype=float),
        x=df["_xlen" if "_xlen" in df.columns else "duration_q"].to_numpy(dtype=float),
        y=df["pitch"].to_numpy(dtype=float),
        width=NOTE_HEIGHT,
        marker=marker,
        opacity=opacity,
        customdata=_hover_customdata(df, track_names),
        hovertemplate=hover + extra_hover + "<extra>" + name + "</extra>",
        legendgroup=legendgroup or name,
        showlegend=showlegend,
    )


def _bool_col(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df[col].fillna(False).to_numpy(dtype=bool)


#: boolean label columns, read as (True class, False class)
ROLE_BOOLS = {"chord_tone": ("chord tone", "non-chord tone"), "repeated": ("repeated", "not repeated")}
#: each label column's classes in their musical order, with one colour each (qualitative
#: classes: distinct hues; ordered classes (duration, register): one sequential run)
ROLE_COLOURS: dict[str, dict[str, str]] = {
    "harmony": {"chord tone": "#4c78a8", "passing": "#f58518", "neighbour": "#54a24b",
                "suspension/appoggiatura": "#e45756", "pedal": "#b279a2", "other NCT": "#9d755d"},
    "chord_tone": {"chord tone": "#4c78a8", "non-chord tone": "#f58518"},
    "voice_position": {"bass": "#4c78a8", "inner": "#bab0ac", "top": "#e45756", "solo": "#eeca3b"},
    "metric": {"downbeat": "#e45756", "beat": "#f58518", "off-beat": "#9ecae9"},
    "repeated": {"repeated": "#b279a2", "not repeated": "#bab0ac"},
    "duration": {"< 1/8 (<0.5 q)": "#c6dbef", "1/8-1/4 (0.5-1 q)": "#6baed6", "1/4-1/2 (1-2 q)": "#2171b5",
                 ">= 1/2 (>= 2 q)": "#08306b"},
    "register": {"low (< C3)": "#440154", "C3-B3": "#3b528b", "C4-B4": "#21918c", "C5-B5": "#5ec962",
                 "high (>= C6)": "#fde725"},
    "role": {"melody": "#e45756", "bridge": "#f58518", "accompaniment": "#4c78a8", "other": "#bab0ac"},
}


def role_classes(df: pd.DataFrame, column: str) -> np.ndarray:
    """The class of every note in label ``column`` as text (booleans read with ``ROLE_BOOLS``;
    a missing value reads ``"?"``)."""
    v = df[column]
    if column in ROLE_BOOLS:
        yes, no = ROLE_BOOLS[column]
        return np.where(v.fillna(False).to_numpy(dtype=bool), yes, no).astype(object)
    return v.fillna("?").astype(str).to_numpy(dtype=object)


def role_colour_map(column: str, classes: Iterable[str]) -> dict[str, str]:
    """{class: colour} for the classes present, in the column's musical order (``ROLE_COLOURS``),
    classes it does not know after them in alphabetical order, coloured from ``TRACK_PALETTE``."""
    known = ROLE_COLOURS.get(column, {})
    present = set(classes)
    ordered = [c for c in known if c in present] + sorted(present - set(known))
    extra = iter(TRACK_PALETTE[(i + 4) % len(TRACK_PALETTE)] for i in range(len(ordered)))
    return {c: known.get(c) or next(extra) for c in ordered}


def _role_traces(df: pd.DataFrame, column: str, *, track_names=None, picked_col="picked",
                 has_score: bool = False, showlegend: bool = True) -> list[go.Bar]:
    """One trace per class of ``column`` (every note, frozen ones included), in the class's
    colour; the masker's state stays visible: picked notes outlined red, frozen notes hatched.
    The legend shows plain swatches (empty traces of the same name and group: a trace's own swatch
    would take its first note's outline or hatching), then "picked" and "frozen" when there are any."""
    labels = role_classes(df, column)
    frozen = _bool_col(df, "frozen")
    picked = _bool_col(df, picked_col) & ~frozen
    what = ROLE_LABELS.get(column, column.replace("_", " "))
    hover = HOVER_SCORE if has_score else HOVER
    traces = []

    def swatch(name: str, group: str, marker: dict) -> go.Bar:
        return go.Bar(x=[None], y=[None], orientation="h", name=name, legendgroup=group, marker=marker,
                      showlegend=showlegend, hoverinfo="skip")

    for cls, colour in role_colour_map(column, labels).items():
        sel = labels == cls
        sub = df[sel]
        pk, fz = picked[sel], frozen[sel]
        name = html_escape(f"{cls}: {int(sel.sum()):,}")
        traces.append(swatch(name, f"role {cls}", {"color": colour, "line": {"width": 0}}))
        tr = note_trace(sub, name, color=colour, track_names=track_names,
                         hover=hover, showlegend=False, legendgroup=f"role {cls}",
                         extra_hover=f"<br>{html_escape(what)}: {html_escape(cls)}")
        if pk.any():
            tr.marker.line.color = [STATE_COLORS["picked_outline"] if p else colour for p in pk]
            tr.marker.line.width = [2.5 if p else 0.0 for p in pk]
        if fz.any():
            tr.marker.pattern = {"shape": ["/" if f else "" for f in fz], "fgcolor": STATE_COLORS["frozen_outline"],
                                 "fillmode": "overlay", "solidity": 0.3}
        traces.append(tr)
    if picked.any():
        traces.append(swatch("picked by masker (outlined)", "role picked",
                             {"color": "white", "line": {"width": 2.5, "color": STATE_COLORS["picked_outline"]}}))
    if frozen.any():
        traces.append(swatch("frozen (hatched)", "role frozen",
                             {"color": "white", "line": {"width": 1.0, "color": STATE_COLORS["frozen_outline"]},
                              "pattern": {"shape": "/", "fgcolor": STATE_COLORS["frozen_outline"], "solidity": 0.3}}))
    return traces


def _roll_traces(df: pd.DataFrame, *, track_names=None, show_score=True, picked_col="picked",
                 ghost: pd.DataFrame | None = None, masked_col: str | None = None,
                 showlegend=True, faded: bool = False, color_by: str | None = None) -> list[go.Bar]:
    """The note traces of one roll, one per state, in draw order. ``faded``: the score overlay
    (colours, picked outlines) drawn at ``FADED_OPACITY``: an untrained masker's scores.
    ``color_by``: a label column of ``df`` (``ROLE_LABELS``): one trace per class instead
    (:func:`_role_traces`)."""
    traces: list[go.Bar] = []
    has_score = show_score and "score" in df.columns and df["score"].notna().any()
    frozen = _bool_col(df, "frozen")
    if color_by is not None and masked_col is None:
        traces += _role_traces(df, color_by, track_names=track_names, picked_col=picked_col,
                               has_score=has_score, showlegend=showlegend)
        frozen = np.zeros(len(df), dtype=bool)  # hatched within their class's trace
    elif masked_col is not None:
        # a concrete draw: masked notes in red, the rest neutral
        masked = _bool_col(df, masked_col) & ~frozen
        traces.append(note_trace(df[~masked & ~frozen], "visible to the model",
                                  color=STATE_COLORS["note"], opacity=0.55,
                                  track_names=track_names, showlegend=showlegend))
        traces.append(note_trace(df[masked], "masked", color=STATE_COLORS["masked"],
                                  line_color="#000000", line_width=1.0,
                                  track_names=track_names, showlegend=showlegend))
    elif has_score:
        picked = _bool_col(df, picked_col) & ~frozen
        fade = " (untrained masker: faded)" if faded else ""
        traces.append(note_trace(df[~picked & ~frozen], "notes (colour = masker score)" + fade,
                                  color=None, scale=SCORE_SCALE, track_names=track_names,
                                  hover=HOVER_SCORE, showlegend=showlegend,
                                  opacity=FADED_OPACITY if faded else 1.0))
        traces.append(note_trace(df[picked], "picked by masker (outlined)" + fade, color=None,
                                  scale=SCORE_SCALE, line_color=STATE_COLORS["picked_outline"],
                                  line_width=2.5, track_names=track_names, hover=HOVER_SCORE,
                                  showlegend=showlegend, opacity=FADED_OPACITY if faded else 1.0))
    else:
        tracks = sorted(df["track"].unique()) if "track" in df.columns and len(df) else [0]
        frozen_free = df[~frozen]
        for i, t in enumerate(tracks):
            sub = frozen_free[frozen_free["track"] == t] if "track" in df.columns else frozen_free
            label = (track_names[int(t)] if track_names and 0 <= int(t) < len(track_names)
                     else f"track {int(t)}")
            traces.append(note_trace(sub, label, color=TRACK_PALETTE[i % len(TRACK_PALETTE)],
                                      track_names=track_names, showlegend=showlegend))
    if frozen.any() or ("frozen" in df.columns and color_by is None):
        traces.append(note_trace(df[frozen], "frozen (never masked)",
                                  color=STATE_COLORS["frozen"], pattern="/",
                                  line_color=STATE_COLORS["frozen_outline"], line_width=1.0,
                                  track_names=track_names,
                                  hover=HOVER_SCORE if has_score else HOVER,
                                  showlegend=showlegend))
    if ghost is not None and len(ghost):
        g = note_trace(ghost, "reconstruction (ghost)", color=STATE_COLORS["ghost"],
                        line_color=STATE_COLORS["ghost_outline"], line_width=1.5,
                        track_names=track_names, showlegend=showlegend)
        if "orig_pitch" in ghost.columns:
            g.text = [f"original {pitch_name(p)}, {d:g} q" for p, d in
                      zip(ghost["orig_pitch"].to_numpy(), ghost["orig_duration_q"].to_numpy(), strict=False)]
            g.hovertemplate = HOVER + "<br>%{text}<extra>reconstruction</extra>"
            g.textposition = "none"
        traces.append(g)
    return traces


def score_rank(scores) -> np.ndarray:
    """Each score's rank within its piece as a percentile, 0..100 (the share of the piece's
    notes with a lower score; ties share their mean rank); NaN stays NaN."""
    v = np.asarray(scores, dtype=float)
    out = np.full(len(v), np.nan)
    ok = np.isfinite(v)
    m = int(ok.sum())
    if m == 1:
        out[ok] = 50.0
    elif m > 1:
        out[ok] = (pd.Series(v[ok]).rank(method="average").to_numpy() - 1) / (m - 1) * 100.0
    return out


def score_spread(scores) -> dict:
    """How spread a piece's raw masker scores are: ``min``, ``max``, ``iqr`` (75th - 25th
    percentile) and ``verdict``: ``barely`` (IQR < 0.05: the masker hardly tells the notes
    apart, its ranking is close to noise), ``weakly`` (< 0.15) or ``clearly``."""
    v = np.asarray(scores, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"min": np.nan, "max": np.nan, "iqr": np.nan, "verdict": "no scores"}
    q1, q3 = np.percentile(v, [25, 75])
    iqr = float(q3 - q1)
    verdict = "barely" if iqr < 0.05 else "weakly" if iqr < 0.15 else "clearly"
    return {"min": float(v.min()), "max": float(v.max()), "iqr": iqr, "verdict": verdict}


def score_spread_text(scores) -> str:
    """One sentence on the raw score spread, e.g. ``raw masker scores 0.47-0.49, IQR 0.01:
    the masker barely distinguishes the notes ...``."""
    sp = score_spread(scores)
    if sp["verdict"] == "no scores":
        return "no masker scores"
    what = {"barely": "the masker barely distinguishes the notes, so read the colours as a weak "
                      "ranking, not as strong preferences",
            "weakly": "the masker separates the notes only weakly",
            "clearly": "the masker clearly separates the notes"}[sp["verdict"]]
    iqr = f"{sp['iqr']:.2f}" if sp["iqr"] >= 0.01 else f"{sp['iqr']:.3f}"
    return (f"raw masker scores {sp['min']:.2f}-{sp['max']:.2f}, IQR {iqr} "
            f"(on a 0-1 scale): {what}")


def _with_rank(df: pd.DataFrame) -> pd.DataFrame:
    if "score" in df.columns and "score_rank" not in df.columns and df["score"].notna().any():
        return df.assign(score_rank=score_rank(df["score"]))
    return df


def _score_axis(frames: Sequence[pd.DataFrame] = ()) -> dict:
    """Shared colour axis of masker scores: each note's rank in its piece (0-100%), a fixed
    scale, so the colours mean the same whatever range the raw scores span (a weak masker's
    0.47-0.49 is not stretched into a full-range rainbow); the raw spread goes in words
    (:func:`score_spread_text`)."""
    return {**SCORE_SCALE,
            "colorbar": {"title": {"text": "masker score<br>rank in piece"}, "thickness": 14, "len": 0.8,
                         "ticksuffix": "%", "tickvals": [0, 25, 50, 75, 100]}}


def piano_roll(df: pd.DataFrame, *, bar_starts_q: Sequence[float] | None = None,
               track_names: Sequence[str] | None = None, show_score: bool = True,
               picked_col: str = "picked", ghost: pd.DataFrame | None = None,
               title: str | None = None, height: int = 480,
               x_range: tuple[float, float] | None = None,
               initial_bars: int | None = INITIAL_BARS, bar_axis: bool | None = None,
               faded: bool = False, color_by: str | None = None) -> go.Figure:
    """Piano roll of a notes table: time (quarters, labelled in bars) x pitch, C labels.

    - Without a ``score`` column (or ``show_score=False``): one trace per track,
      coloured from a fixed palette.
    - With ``score``: unpicked notes coloured by the rank of their masker score in the
      piece (0-100%, :func:`score_rank`) on a shared colour axis; notes with ``picked_col``
      True drawn with the same colours and a thick red outline; notes with
      ``frozen`` True grey and hatched (a frozen note is never drawn as picked).
    - ``ghost``: a notes table (see :func:`reconstruction_frame`) drawn on top,
      semi-transparent orange.
    - ``faded``: the score overlay drawn at ``FADED_OPACITY`` (an untrained masker head: its
      scores mean nothing, the page says so; the notes stay visible).
    - ``color_by``: a label column of ``df`` (``ROLE_LABELS``: ``harmony.analyze``'s labels joined
      to the notes): every note coloured by its class (``ROLE_COLOURS``), one legend entry per
      class with its count (legend titled with the label), like the track colouring; the
      masker's state stays: picked notes outlined red, frozen notes hatched; no colour bar.
      ``ValueError`` when ``df`` has no such column.
    - Bars: axis grid lines (see :func:`time_axis`); a piece of more than
      ``initial_bars`` bars opens on its first ``initial_bars`` with a range slider
      under the roll to reach the rest (``x_range``, in quarters, overrides the opening view).
      x is in quarters up to ``MAX_BAR_LABELS`` bars, in bar numbers beyond (``bar_axis``
      True/False forces one, see :func:`bar_axis_for`), so the bar labels follow the zoom.
    Hover on a note shows pitch name, bar and beat, duration (quarters), velocity, track
    (and masker score with its rank). ``dragmode`` is zoom; pan from the mode bar.
    """
    track_names = track_name_list(track_names) if track_names is not None else None
    if color_by is not None and color_by not in df.columns:
        raise ValueError(f"cannot colour the notes by {color_by!r}: the notes table has no such column")
    if show_score:
        df = _with_rank(df)
    fig = go.Figure()
    if len(df):
        pmin, pmax = int(df["pitch"].min()), int(df["pitch"].max())
        if ghost is not None and len(ghost):
            pmin, pmax = min(pmin, int(ghost["pitch"].min())), max(pmax, int(ghost["pitch"].max()))
    else:
        pmin, pmax = 60, 72
    axis = bar_axis_for(df, bar_starts_q, bar_axis)
    if axis is not None:
        df, ghost = axis.place(df), axis.place(ghost)
    for tr in _roll_traces(df, track_names=track_names, show_score=show_score,
                           picked_col=picked_col, ghost=ghost, faded=faded, color_by=color_by):
        fig.add_trace(tr)
    if axis is not None:
        fig.add_trace(tick_guard(axis, pmin))
    xaxis = time_axis(df, bar_starts_q, x_range=x_range, initial_bars=initial_bars, axis=axis)
    long_piece = "range" in xaxis and x_range is None
    if long_piece:
        xaxis["rangeslider"] = RANGE_SLIDER
    legend, bottom = legend_below(height)
    fig.update_layout(
        barmode="overlay",
        height=height + (SLIDER_HEIGHT if long_piece else 0),
        title={"text": title} if title else None,
        dragmode="zoom",
        hovermode="closest",
        margin={"l": 60, "r": 20, "t": 40 if title else 10, "b": bottom},
        legend=legend,
        plot_bgcolor="white",
        yaxis=pitch_axis(pmin, pmax),
        xaxis=xaxis,
    )
    if color_by is not None:
        fig.update_layout(legend_title={"text": html_escape(ROLE_LABELS.get(color_by, color_by)) + ":",
                                        "side": "top"})
    elif show_score and "score" in df.columns and df["score"].notna().any():
        fig.add_trace(colorbar_trace(SCORE_SCALE))
        fig.update_layout(coloraxis=_score_axis([df]))
    return fig


def side_by_side_rolls(frames: Sequence[pd.DataFrame], titles: Sequence[str], *,
                       bar_starts_q=None, track_names=None, show_score: bool = True,
                       ghosts: Sequence[pd.DataFrame | None] | None = None,
                       masked_cols: Sequence[str | None] | None = None,
                       height: int = 460, initial_bars: int | None = INITIAL_BARS,
                       bar_axis: bool | None = None, faded: Sequence[bool] | None = None) -> go.Figure:
    """Several piano rolls in one figure, side by side, sharing the pitch axis and the
    time axis (zooming one panel zooms all; long pieces open on their first bars, with a range
    slider under each panel that moves all of them).

    Each panel is built like :func:`piano_roll` (``masked_cols[i]`` switches a
    panel to "concrete draw" colouring: masked notes red, others neutral).
    The legend appears once, under the panels and their axis titles; all score panels
    share one colour axis (rank in piece). ``faded[i]``: panel i's score overlay faded (an
    untrained masker head, as in :func:`piano_roll`).
    """
    n = len(frames)
    faded = list(faded) if faded is not None else [False] * n
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True, subplot_titles=list(titles),
                        horizontal_spacing=0.04)
    ghosts = list(ghosts) if ghosts is not None else [None] * n
    masked_cols = list(masked_cols) if masked_cols is not None else [None] * n
    non_empty = [f for f in frames if len(f)]
    pmin = min((int(f["pitch"].min()) for f in non_empty), default=60)
    pmax = max((int(f["pitch"].max()) for f in non_empty), default=72)
    names = track_name_list(track_names) if track_names is not None else None
    any_score = long_piece = False
    for i, df in enumerate(frames):
        if show_score and masked_cols[i] is None:
            df = _with_rank(df)
        axis = bar_axis_for(df, bar_starts_q, bar_axis)
        ghost = ghosts[i]
        if axis is not None:
            df, ghost = axis.place(df), axis.place(ghost)
        for tr in _roll_traces(df, track_names=names, show_score=show_score,
                               ghost=ghost, masked_col=masked_cols[i], showlegend=(i == 0),
                               faded=bool(faded[i])):
            fig.add_trace(tr, row=1, col=i + 1)
        if axis is not None:
            fig.add_trace(tick_guard(axis, pmin), row=1, col=i + 1)
        xaxis = time_axis(df, bar_starts_q, initial_bars=initial_bars, axis=axis)
        long_piece = "range" in xaxis
        if long_piece:  # a slider under each panel: dragging one moves both (their x axes match)
            xaxis["rangeslider"] = RANGE_SLIDER
        fig.update_xaxes(**xaxis, row=1, col=i + 1)
        any_score |= (show_score and masked_cols[i] is None and "score" in df.columns
                      and df["score"].notna().any())
    legend, bottom = legend_below(height)
    fig.update_layout(barmode="overlay", height=height + (SLIDER_HEIGHT if long_piece else 0), dragmode="zoom",
                      plot_bgcolor="white",
                      hovermode="closest", margin={"l": 60, "r": 20, "t": 60, "b": bottom}, legend=legend)
    fig.update_yaxes(**pitch_axis(pmin, pmax), row=1, col=1)
    for i in range(2, n + 1):
        fig.update_yaxes(showgrid=True, gridcolor="rgba(200,200,200,0.35)", row=1, col=i)
        fig.update_xaxes(matches="x", row=1, col=i)
    if any_score:
        fig.add_trace(colorbar_trace(SCORE_SCALE), row=1, col=1)
        fig.update_layout(coloraxis=_score_axis())
    return fig


def masking_draw_figure(df: pd.DataFrame, random_mask: np.ndarray, masker_mask: np.ndarray, *,
                        bar_starts_q=None, track_names=None, height: int = 460,
                        titles: Sequence[str] | None = None) -> go.Figure:
    """One concrete masking draw, random (left) against the masker (right).

    ``random_mask`` / ``masker_mask`` are boolean arrays over the rows of
    ``df``; masked notes are red with a black outline, visible notes neutral,
    frozen notes grey hatched in both panels.
    """
    random_mask = np.asarray(random_mask, dtype=bool)
    masker_mask = np.asarray(masker_mask, dtype=bool)
    if len(random_mask) != len(df) or len(masker_mask) != len(df):
        raise ValueError("masks must have one entry per note of the table")
    left = df.assign(_masked=random_mask)
    right = df.assign(_masked=masker_mask)
    titles = list(titles) if titles is not None else [f"random mask ({int(random_mask.sum())} notes)",
                                                      f"masker's pick ({int(masker_mask.sum())} notes)"]
    return side_by_side_rolls([left, right], titles, bar_starts_q=bar_starts_q,
                              track_names=track_names, masked_cols=["_masked", "_masked"],
                              height=height)


def note_from_selection(fig: go.Figure, selection: Mapping | None) -> list[int]:
    """Note indices picked in a ``st.plotly_chart(on_select=...)`` selection.

    ``selection`` is the event's ``selection`` dict (``{"points": [...]}``);
    each point's ``curve_number`` and ``point_index`` index the figure's
    traces and their ``customdata`` (first column = note index). Points on
    grid traces are ignored. Order is kept, duplicates removed.
    """
    if not selection:
        return []
    points = selection.get("points", []) if isinstance(selection, Mapping) else []
    out: list[int] = []
    for pt in points:
        c = pt.get("curve_number")
        i = pt.get("point_index", pt.get("point_number"))
        if c is None or i is None or not (0 <= int(c) < len(fig.data)):
            continue
        cd = fig.data[int(c)].customdata
        if cd is None or int(i) >= len(cd):
            continue
        note = int(cd[int(i)][0])
        if note not in out:
            out.append(note)
    return out
