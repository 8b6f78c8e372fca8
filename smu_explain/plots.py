"""Pure Plotly figure builders for the app and the HTML report.

Rules every builder follows:

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
  one-point trace on the layout's colour axis (:func:`_colorbar_trace`); each bar trace keeps
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

import functools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .markup import html_escape

__all__ = [
    "NOTE_NAMES",
    "STATE_COLORS",
    "SCORE_COLORSCALE",
    "pitch_name",
    "bar_beat_label",
    "fmt_number",
    "fmt_quarters",
    "value_label",
    "stat_label",
    "score_rank",
    "score_spread",
    "score_spread_text",
    "bar_label_step",
    "metrics_display",
    "readable_notes",
    "display_table",
    "readable_column",
    "readable_table",
    "reconstruction_frame",
    "piano_roll",
    "masking_draw_figure",
    "side_by_side_rolls",
    "note_from_selection",
    "progress_frame",
    "loss_curves",
    "masker_stats_figure",
    "accuracy_bars",
    "metric_beats",
    "register_class",
    "metric_class",
    "duration_class",
    "bias_table",
    "bias_figure",
    "metrics_comparison",
    "prediction_bars",
    "PALETTE",
    "model_colours",
]

NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]

# One colour family per state. Score-coloured notes use SCORE_COLORSCALE.
STATE_COLORS = {
    "note": "#4c78a8",  # plain notes when no model is loaded
    "picked_outline": "#d62728",  # outline of the notes the masker would pick
    "frozen": "#9e9e9e",  # frozen (never masked) notes: grey, hatched
    "frozen_outline": "#424242",
    "ghost": "rgba(255, 127, 14, 0.45)",  # reconstruction of masked notes
    "ghost_outline": "#ff7f0e",
    "masked": "#d62728",  # masked notes in a concrete draw
    "bar_line": "rgba(60, 60, 60, 0.55)",
    "beat_line": "rgba(150, 150, 150, 0.25)",
}
TRACK_PALETTE = [
    "#4c78a8", "#54a24b", "#b279a2", "#e45756", "#72b7b2",
    "#eeca3b", "#ff9da6", "#9d755d", "#bab0ac", "#f58518",
]
SCORE_COLORSCALE = "Viridis"
#: The colours of the recovery figures on every page (Explore, Compare, the report): the no-model
#: rules' marks, the demo models' bars (a model keeps its colour from page to page, whichever side
#: of a comparison it is on) and the colours other models take in turn. One palette, used by
#: :func:`accuracy_bars`, :func:`add_rule_marks` and :func:`bias_figure` (via :func:`model_colours`).
PALETTE = {
    "rules": {"most_frequent": "#7f7f7f", "copy_neighbour": "#000000", "window_mode": "#8c564b"},
    "models": {"demo adversarial": "#e45756", "demo random": "#4c78a8"},
    "others": ["#54a24b", "#b279a2", "#72b7b2", "#eeca3b", "#9d755d", "#f58518", "#ff9da6", "#bab0ac"],
}
#: opacity of a score overlay whose masker head is untrained (its scores carry no information)
FADED_OPACITY = 0.3
SCORE_SCALE = {"colorscale": SCORE_COLORSCALE, "cmin": 0.0, "cmax": 100.0}  # rank in piece, 0-100 %
NOTE_HEIGHT = 0.8


# ---------------------------------------------------------------- labels

def pitch_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI pitch: 60 -> ``C4``, 61 -> ``C#4``, 21 -> ``A0``."""
    p = int(pitch)
    return f"{NOTE_NAMES[p % 12]}{p // 12 - 1}"


def bar_beat_label(bar: float, beat: float) -> str:
    """The one way the app names a moment: ``bar 13, beat 1`` (1-based) from a 0-based bar
    index and a float beat in the bar (quarter notes from the bar line). An off-beat onset
    keeps its fraction of a beat, rounded: half-way through beat 3 of bar 1 is
    ``bar 1, beat 3.5``; a triplet onset ``beat 1.33``."""
    b = int(bar) + 1
    x = round(float(beat) + 1.0, 2)
    return f"bar {b}, beat {fmt_number(x)}"


def fmt_number(x: float, digits: int = 2) -> str:
    """A number rounded for reading: at most ``digits`` decimals, no trailing zeros
    (0.167956 -> ``0.17``, 68.0 -> ``68``, 1,234.5 -> ``1,234.5``); NaN/None -> ``-``."""
    if x is None:
        return "-"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not np.isfinite(v):
        return "-"
    v = round(v, digits)
    if v == int(v):
        return f"{int(v):,}"
    return f"{v:,.{digits}f}".rstrip("0").rstrip(".")


def fmt_quarters(q: float) -> str:
    """A duration in quarter notes for reading: ``1 quarter``, ``0.17 quarters``."""
    return f"{fmt_number(q)} quarter" + ("" if fmt_number(q) == "1" else "s")


def value_label(attribute: str, value) -> str:
    """A decoded token value as a person reads it: pitch as a note name (67 -> ``G4``),
    duration in quarters (``0.5 q``), bar skips and positions rounded; others as numbers."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(v) or v < 0:
        return "-"
    if attribute == "pitch":
        return pitch_name(int(round(v)))
    if attribute in ("duration", "position"):
        return f"{fmt_number(v)} q"
    return fmt_number(v)


STAT_LABELS = {
    "loss": "total", "recovery_loss": "recovery", "masker_loss": "masker loss",
    "score_mean": "mean masker score", "frozen_in_batch": "frozen notes per batch",
    "n_picked": "picked notes per batch", "n_labelled": "labelled notes per batch",
}


def stat_label(column: str) -> str:
    """A human label for a training statistic (``masker_loss`` -> ``masker loss``,
    ``ce_pitch`` / ``loss_pitch`` -> ``pitch``, ``acc_bar`` -> ``bar accuracy``)."""
    if column in STAT_LABELS:
        return STAT_LABELS[column]
    for pre, fmt in (("ce_", "{}"), ("loss_", "{}"), ("acc_", "{} accuracy"), ("w_", "{} weight")):
        if column.startswith(pre):
            return fmt.format(column[len(pre):])
    return column.replace("_", " ")


# ---------------------------------------------------------------- tables

def _track_names(piece_or_names) -> list[str] | None:
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


# ---------------------------------------------------------------- piano roll

def _hover_customdata(df: pd.DataFrame, track_names: list[str] | None) -> np.ndarray:
    """customdata columns: note, pitch name, "bar N, beat B", duration (rounded), velocity,
    track, masker score (3 decimals), rank of the score in the piece (percent)."""
    n = len(df)
    note = df["note"].to_numpy() if "note" in df.columns else np.arange(n)
    names = [pitch_name(p) for p in df["pitch"].to_numpy()]
    if "bar" in df.columns and "beat" in df.columns:
        bb = [bar_beat_label(b, t) for b, t in zip(df["bar"].to_numpy(), df["beat"].to_numpy())]
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
        list(zip(note.tolist(), names, bb, dur, np.asarray(vel).tolist(), tracks, score, rank)),
        dtype=object,
    ).reshape(n, 8)


_HOVER = (
    "<b>%{customdata[1]}</b> (note %{customdata[0]})<br>"
    "%{customdata[2]}<br>"
    "duration %{customdata[3]} quarters<br>"
    "velocity %{customdata[4]}<br>"
    "track %{customdata[5]}"
)
_HOVER_SCORE = _HOVER + "<br>masker score %{customdata[6]} (higher than %{customdata[7]} of the piece)"


@functools.lru_cache(maxsize=16)
def _scale_stops(colorscale: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions 0..1, RGB rows) of a named Plotly colour scale."""
    from plotly.colors import convert_colors_to_same_type, get_colorscale, unlabel_rgb

    scale = get_colorscale(colorscale)
    pos = np.array([float(p) for p, _ in scale])
    rgb = np.array([unlabel_rgb(convert_colors_to_same_type(c, "rgb")[0][0]) for _, c in scale], dtype=float)
    return pos, rgb


def scale_colours(values, colorscale: str, cmin: float, cmax: float, *, nan_colour: str = "#444") -> list[str]:
    """The colour Plotly draws for each value on ``colorscale`` from ``cmin`` to ``cmax`` (values
    outside clamped, linear RGB interpolation between the stops, channels rounded as plotly.js
    rounds them), as ``"#rrggbb"`` strings; NaN gets ``nan_colour`` (Plotly's default line
    colour, what it draws for a missing number)."""
    v = np.asarray(values, dtype=float).reshape(-1)
    pos, rgb = _scale_stops(colorscale)
    span = float(cmax) - float(cmin)
    t = np.clip((v - float(cmin)) / span, 0.0, 1.0) if span > 0 else np.zeros_like(v)
    ok = np.isfinite(t)
    chans = np.zeros((len(v), 3), dtype=np.int64)
    if ok.any():
        chans[ok] = np.floor(np.stack([np.interp(t[ok], pos, rgb[:, k]) for k in range(3)], axis=1) + 0.5)
    return [f"#{r:02x}{g:02x}{b:02x}" if good else nan_colour for (r, g, b), good in zip(chans.tolist(), ok.tolist())]


def _colorbar_trace(scale: Mapping, xaxis: str = "x", yaxis: str = "y") -> go.Scatter:
    """An invisible one-point trace on the layout's colour axis: it draws the colour bar of
    notes coloured with :func:`scale_colours` (bars with string colours show none)."""
    return go.Scatter(x=[None], y=[None], mode="markers", name="colour scale", showlegend=False,
                      hoverinfo="skip", marker={"color": [float(scale["cmin"])], "coloraxis": "coloraxis"},
                      xaxis=xaxis, yaxis=yaxis)


def _note_trace(df: pd.DataFrame, name: str, *, color, line_color=None, line_width=0.0,
                pattern: str | None = None, opacity: float = 1.0, scale: Mapping | None = None,
                values=None, track_names=None, hover: str = _HOVER, legendgroup: str | None = None,
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


INITIAL_BARS = 16  # a long piece opens on its first 16 bars; the rest is a drag (or the slider) away
MAX_BAR_LABELS = 48  # up to this many bars every bar is labelled; longer pieces get a zoomable bar axis


def bar_label_step(n_bars: int, max_labels: int = MAX_BAR_LABELS) -> int:
    """Every k-th bar labelled so that ``n_bars`` bars hold at most ``max_labels`` labels:
    1 up to 48 bars, then 2, 4, 5, 10, 20, 50, ... (the spacing Plotly's automatic ticks pick
    on the bar axis of a long piece's whole view)."""
    for k in (1, 2, 4, 5, 10, 20, 25, 50, 100, 200, 500, 1000):
        if n_bars / k <= max_labels:
            return k
    return int(np.ceil(n_bars / max_labels))


def _bar_layout(df: pd.DataFrame, bar_starts_q) -> tuple[np.ndarray, np.ndarray, float]:
    """(bar starts in quarters up to the last note, their lengths, end of the last note)."""
    end = float((df["onset_q"] + df["duration_q"]).max()) if len(df) else 0.0
    if bar_starts_q is not None and len(bar_starts_q):
        bars = np.asarray(bar_starts_q, dtype=float)
    elif len(df) and "bar" in df.columns and "beat" in df.columns:
        starts = (df["onset_q"] - df["beat"]).groupby(df["bar"]).min()
        bars = np.sort(starts.to_numpy(dtype=float))
    else:
        bars = np.arange(0.0, end + 4.0, 4.0)
    if not len(bars):
        return bars, bars, end
    last = float(bars[-1] - bars[-2]) if len(bars) > 1 else 4.0
    lengths = np.diff(np.append(bars, bars[-1] + (last if last > 0 else 4.0)))
    keep = bars <= end + 1e-9
    return bars[keep], lengths[keep], end


def _bar_grid(df: pd.DataFrame, bar_starts_q) -> tuple[np.ndarray, float]:
    """(bar starts in quarters up to the last note, end of the last note)."""
    bars, _, end = _bar_layout(df, bar_starts_q)
    return bars, end


def _first_bar_index(df: pd.DataFrame, bars: np.ndarray) -> int:
    """0-based bar index (in its piece) of the first bar line in ``bars``, read from the
    notes' ``bar``/``beat`` columns: a few bars cut from a piece keep their real numbers."""
    if not len(df) or not len(bars) or "bar" not in df.columns or "beat" not in df.columns:
        return 0
    start = float(df["onset_q"].iloc[0] - df["beat"].iloc[0])
    j = int(np.argmin(np.abs(bars - start)))
    if abs(bars[j] - start) > 1e-3:
        return 0
    return max(0, int(df["bar"].iloc[0]) - j)


class BarAxis:
    """The time axis of a long piece in bar numbers: x = ``first + i + (q - start_i) / length_i``
    for a time ``q`` (quarters) in the i-th bar, so bar ``b`` spans ``[b, b + 1)`` whatever its
    metre, and Plotly's automatic ticks (integers only, see :func:`_tick_guard`) label every bar
    when zoomed in and thin out (2, 5, 10, 50, ...) when zoomed out."""

    def __init__(self, bars: np.ndarray, lengths: np.ndarray, first: int):
        self.bars, self.lengths, self.first = bars, lengths, int(first)

    def __call__(self, q) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        i = np.clip(np.searchsorted(self.bars, q, side="right") - 1, 0, len(self.bars) - 1)
        return self.first + i + (q - self.bars[i]) / self.lengths[i]

    def place(self, df: pd.DataFrame | None) -> pd.DataFrame | None:
        """``df`` with ``_x0`` / ``_xlen``: where its notes start and how long they are on this axis."""
        if df is None or not len(df):
            return df
        on = df["onset_q"].to_numpy(dtype=float)
        x0 = self(on)
        return df.assign(_x0=x0, _xlen=self(on + df["duration_q"].to_numpy(dtype=float)) - x0)


def _bar_axis(df: pd.DataFrame, bar_starts_q, bar_axis: bool | None) -> BarAxis | None:
    """The :class:`BarAxis` of a roll, or None for an axis in quarters: ``bar_axis=None`` picks
    bars when the piece has more than ``MAX_BAR_LABELS`` bars (where labelling every bar would
    crowd the whole view and thinned fixed labels would leave a zoomed view with one or two)."""
    bars, lengths, _ = _bar_layout(df, bar_starts_q)
    if not len(bars) or not (bar_axis or (bar_axis is None and len(bars) > MAX_BAR_LABELS)):
        return None
    return BarAxis(bars, lengths, 1 + _first_bar_index(df, bars))


def _tick_guard(axis: BarAxis, y: float, xaxis: str = "x", yaxis: str = "y") -> go.Bar:
    """An invisible zero-height vertical bar trace at two consecutive bar numbers (the first one
    twice): Plotly spaces the automatic ticks of the position axis of overlapping bars at least
    one position apart, aligned on the positions (``Axes.minDtick``; it needs a repeated
    position), so the bar axis' ticks never fall between bar lines ("12.5")."""
    return go.Bar(x=[axis.first, axis.first, axis.first + 1], y=[0.0] * 3, base=[y] * 3, orientation="v",
                  width=1e-6,
                  marker={"opacity": 0.0, "line": {"width": 0}}, hoverinfo="skip", showlegend=False,
                  name="bar ticks", xaxis=xaxis, yaxis=yaxis)


def _time_axis(df: pd.DataFrame, bar_starts_q, *, x_range=None,
               initial_bars: int | None = INITIAL_BARS, axis: BarAxis | None = None) -> dict:
    """The time axis of a roll with the bar grid as axis grid lines (never one trace or shape
    per line); pieces longer than ``initial_bars`` open on their first ``initial_bars`` bars.

    - ``axis`` None (up to ``MAX_BAR_LABELS`` bars): x in quarters; every bar line labelled with
      its number (fixed ticks), each beat a faint minor line.
    - ``axis`` a :class:`BarAxis` (longer pieces): x in bar numbers; automatic integer ticks
      that follow the zoom (every bar in the opening 16-bar view, every 50th on the whole of a
      400-bar piece), darker lines at the labelled bars, a faint line at every bar.
    ``x_range`` is in quarters either way.
    """
    bars, end = _bar_grid(df, bar_starts_q)
    n = len(bars)
    ax: dict = {"title": {"text": "bar"}, "zeroline": False, "tickangle": 0,
                "showgrid": True, "gridcolor": STATE_COLORS["bar_line"], "gridwidth": 1}
    if axis is not None:
        ax.update({"tickmode": "auto", "tickformat": "d", "nticks": 20})
        minor = [float(axis.first + i) for i in range(n)]
        x_of = axis
        opening = [float(axis.first), float(axis.first + min(n, initial_bars or n))]
    else:
        numbers = np.arange(1, n + 1) + _first_bar_index(df, bars)
        ax.update({"tickmode": "array", "tickvals": bars.tolist(), "ticktext": [str(b) for b in numbers]})
        bounds = np.append(bars, max(end, bars[-1] + 4.0)) if n else np.zeros(0)
        minor = [float(x) for a, b in zip(bounds[:-1], bounds[1:]) for x in np.arange(a + 1.0, b - 1e-9, 1.0)]
        x_of = lambda q: np.asarray(q, dtype=float)  # noqa: E731
        opening = [float(bars[0]), float(bars[initial_bars])] if initial_bars and n > initial_bars else None
    if minor:
        ax["minor"] = {"tickmode": "array", "tickvals": minor, "showgrid": True, "ticks": "",
                       "gridcolor": STATE_COLORS["beat_line"], "gridwidth": 1}
    if x_range is not None:
        ax["range"] = [float(x_of(x_range[0])), float(x_of(x_range[1]))]
    elif initial_bars and n > initial_bars:
        ax["range"] = opening
    return ax


def _legend_below(fig_height: int) -> tuple[dict, int]:
    """(legend, bottom margin): a horizontal legend at the very bottom of the figure, under
    the time axis' labels and title, never on the plot area or the axis title."""
    return ({"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom", "x": 0.0,
             "xanchor": "left"}, 100)


def _pitch_axis(pmin: int, pmax: int) -> dict:
    lo = int(pmin) - 1
    hi = int(pmax) + 1
    cs = [p for p in range(lo - lo % 12, hi + 1, 12) if lo <= p <= hi] or [int(pmin)]
    return {
        "tickvals": cs,
        "ticktext": [pitch_name(p) for p in cs],
        "range": [lo - 0.5, hi + 0.5],
        "title": {"text": "pitch"},
        "showgrid": True,
        "gridcolor": "rgba(200,200,200,0.35)",
        "zeroline": False,
    }


def _bool_col(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df[col].fillna(False).to_numpy(dtype=bool)


# ---------------------------------------------------------------- notes coloured by their role

#: the note labels of ``harmony.analyze`` a piano roll can colour by: column -> what a person reads
ROLE_LABELS = {
    "harmony": "chord tone or kind of non-chord tone",
    "chord_tone": "chord or non-chord tone",
    "voice_position": "voice position",
    "metric": "metric weight",
    "repeated": "repeated note",
    "duration": "duration",
    "register": "register",
    "role": "POP909 track role",
}
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
    hover = _HOVER_SCORE if has_score else _HOVER
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
        tr = _note_trace(sub, name, color=colour, track_names=track_names,
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
        traces.append(_note_trace(df[~masked & ~frozen], "visible to the model",
                                  color=STATE_COLORS["note"], opacity=0.55,
                                  track_names=track_names, showlegend=showlegend))
        traces.append(_note_trace(df[masked], "masked", color=STATE_COLORS["masked"],
                                  line_color="#000000", line_width=1.0,
                                  track_names=track_names, showlegend=showlegend))
    elif has_score:
        picked = _bool_col(df, picked_col) & ~frozen
        fade = " (untrained masker: faded)" if faded else ""
        traces.append(_note_trace(df[~picked & ~frozen], "notes (colour = masker score)" + fade,
                                  color=None, scale=SCORE_SCALE, track_names=track_names,
                                  hover=_HOVER_SCORE, showlegend=showlegend,
                                  opacity=FADED_OPACITY if faded else 1.0))
        traces.append(_note_trace(df[picked], "picked by masker (outlined)" + fade, color=None,
                                  scale=SCORE_SCALE, line_color=STATE_COLORS["picked_outline"],
                                  line_width=2.5, track_names=track_names, hover=_HOVER_SCORE,
                                  showlegend=showlegend, opacity=FADED_OPACITY if faded else 1.0))
    else:
        tracks = sorted(df["track"].unique()) if "track" in df.columns and len(df) else [0]
        frozen_free = df[~frozen]
        for i, t in enumerate(tracks):
            sub = frozen_free[frozen_free["track"] == t] if "track" in df.columns else frozen_free
            label = (track_names[int(t)] if track_names and 0 <= int(t) < len(track_names)
                     else f"track {int(t)}")
            traces.append(_note_trace(sub, label, color=TRACK_PALETTE[i % len(TRACK_PALETTE)],
                                      track_names=track_names, showlegend=showlegend))
    if frozen.any() or ("frozen" in df.columns and color_by is None):
        traces.append(_note_trace(df[frozen], "frozen (never masked)",
                                  color=STATE_COLORS["frozen"], pattern="/",
                                  line_color=STATE_COLORS["frozen_outline"], line_width=1.0,
                                  track_names=track_names,
                                  hover=_HOVER_SCORE if has_score else _HOVER,
                                  showlegend=showlegend))
    if ghost is not None and len(ghost):
        g = _note_trace(ghost, "reconstruction (ghost)", color=STATE_COLORS["ghost"],
                        line_color=STATE_COLORS["ghost_outline"], line_width=1.5,
                        track_names=track_names, showlegend=showlegend)
        if "orig_pitch" in ghost.columns:
            g.text = [f"original {pitch_name(p)}, {d:g} q" for p, d in
                      zip(ghost["orig_pitch"].to_numpy(), ghost["orig_duration_q"].to_numpy())]
            g.hovertemplate = _HOVER + "<br>%{text}<extra>reconstruction</extra>"
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
    - Bars: axis grid lines (see :func:`_time_axis`); a piece of more than
      ``initial_bars`` bars opens on its first ``initial_bars`` with a range slider
      under the roll to reach the rest (``x_range``, in quarters, overrides the opening view).
      x is in quarters up to ``MAX_BAR_LABELS`` bars, in bar numbers beyond (``bar_axis``
      True/False forces one, see :func:`_bar_axis`), so the bar labels follow the zoom.
    Hover on a note shows pitch name, bar and beat, duration (quarters), velocity, track
    (and masker score with its rank). ``dragmode`` is zoom; pan from the mode bar.
    """
    track_names = _track_names(track_names) if track_names is not None else None
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
    axis = _bar_axis(df, bar_starts_q, bar_axis)
    if axis is not None:
        df, ghost = axis.place(df), axis.place(ghost)
    for tr in _roll_traces(df, track_names=track_names, show_score=show_score,
                           picked_col=picked_col, ghost=ghost, faded=faded, color_by=color_by):
        fig.add_trace(tr)
    if axis is not None:
        fig.add_trace(_tick_guard(axis, pmin))
    xaxis = _time_axis(df, bar_starts_q, x_range=x_range, initial_bars=initial_bars, axis=axis)
    long_piece = "range" in xaxis and x_range is None
    if long_piece:
        xaxis["rangeslider"] = {"visible": True, "thickness": 0.08}
    legend, bottom = _legend_below(height)
    fig.update_layout(
        barmode="overlay",
        height=height + (60 if long_piece else 0),
        title={"text": title} if title else None,
        dragmode="zoom",
        hovermode="closest",
        margin={"l": 60, "r": 20, "t": 40 if title else 10, "b": bottom},
        legend=legend,
        plot_bgcolor="white",
        yaxis=_pitch_axis(pmin, pmax),
        xaxis=xaxis,
    )
    if color_by is not None:
        fig.update_layout(legend_title={"text": html_escape(ROLE_LABELS.get(color_by, color_by)) + ":",
                                        "side": "top"})
    elif show_score and "score" in df.columns and df["score"].notna().any():
        fig.add_trace(_colorbar_trace(SCORE_SCALE))
        fig.update_layout(coloraxis=_score_axis([df]))
    return fig


def side_by_side_rolls(frames: Sequence[pd.DataFrame], titles: Sequence[str], *,
                       bar_starts_q=None, track_names=None, show_score: bool = True,
                       ghosts: Sequence[pd.DataFrame | None] | None = None,
                       masked_cols: Sequence[str | None] | None = None,
                       height: int = 460, initial_bars: int | None = INITIAL_BARS,
                       bar_axis: bool | None = None, faded: Sequence[bool] | None = None) -> go.Figure:
    """Several piano rolls in one figure, side by side, sharing the pitch axis and the
    time axis (zooming one panel zooms all; long pieces open on their first bars).

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
    names = _track_names(track_names) if track_names is not None else None
    any_score = False
    for i, df in enumerate(frames):
        if show_score and masked_cols[i] is None:
            df = _with_rank(df)
        axis = _bar_axis(df, bar_starts_q, bar_axis)
        ghost = ghosts[i]
        if axis is not None:
            df, ghost = axis.place(df), axis.place(ghost)
        for tr in _roll_traces(df, track_names=names, show_score=show_score,
                               ghost=ghost, masked_col=masked_cols[i], showlegend=(i == 0),
                               faded=bool(faded[i])):
            fig.add_trace(tr, row=1, col=i + 1)
        if axis is not None:
            fig.add_trace(_tick_guard(axis, pmin), row=1, col=i + 1)
        fig.update_xaxes(**_time_axis(df, bar_starts_q, initial_bars=initial_bars, axis=axis), row=1, col=i + 1)
        any_score |= (show_score and masked_cols[i] is None and "score" in df.columns
                      and df["score"].notna().any())
    legend, bottom = _legend_below(height)
    fig.update_layout(barmode="overlay", height=height, dragmode="zoom", plot_bgcolor="white",
                      hovermode="closest", margin={"l": 60, "r": 20, "t": 60, "b": bottom}, legend=legend)
    fig.update_yaxes(**_pitch_axis(pmin, pmax), row=1, col=1)
    for i in range(2, n + 1):
        fig.update_yaxes(showgrid=True, gridcolor="rgba(200,200,200,0.35)", row=1, col=i)
        fig.update_xaxes(matches="x", row=1, col=i)
    if any_score:
        fig.add_trace(_colorbar_trace(SCORE_SCALE), row=1, col=1)
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


# ---------------------------------------------------------------- training curves

def progress_frame(records: Iterable[Mapping]) -> pd.DataFrame:
    """Table of the training steps of a JSONL progress file, one row per step.

    Keeps records whose ``event`` is ``"step"`` (records without ``event``
    but with a ``step`` are kept too, for older files); start, eval,
    checkpoint, epoch and status lines are dropped. The objective's ``stats``
    dict is flattened into top-level columns (``stats.loss_pitch`` ->
    ``loss_pitch``; deeper dicts join keys with ``_``). Sorted by step; a
    repeated step (a resumed run) keeps its last record.
    """
    rows = []
    for rec in records:
        if not isinstance(rec, Mapping) or "step" not in rec:
            continue
        if rec.get("event", "step") != "step":
            continue
        flat: dict = {}

        def _walk(prefix: str, obj) -> None:
            for k, v in obj.items():
                key = f"{prefix}_{k}" if prefix else str(k)
                if isinstance(v, Mapping):
                    _walk("" if key in ("stats", "metrics") and not prefix else key, v)
                else:
                    flat[key] = v

        _walk("", rec)
        rows.append(flat)
    if not rows:
        return pd.DataFrame(columns=["step"])
    out = pd.DataFrame(rows).drop_duplicates("step", keep="last")
    return out.sort_values("step", kind="stable").reset_index(drop=True)


def _numeric_cols(df: pd.DataFrame, prefixes: Sequence[str], exclude=()) -> list[str]:
    cols = []
    for c in df.columns:
        if c in exclude or c == "step":
            continue
        if any(c == p or c.startswith(p + "_") or c.startswith(p + ".") for p in prefixes):
            if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
                cols.append(c)
    return cols


def loss_curves(progress: pd.DataFrame, *, title: str = "training loss") -> go.Figure:
    """Loss against step: ``loss`` (the total, thick) and one line per attribute.

    Per-attribute columns are ``ce_<attr>`` (the strategies' cross-entropy
    stats) or ``loss_<attr>``; ``recovery_loss`` is drawn too when present.
    """
    fig = go.Figure()
    cols = []
    if len(progress):
        cols = [c for c in ("loss", "recovery_loss") if c in progress.columns]
        cols += _numeric_cols(progress, ["ce", "loss"], exclude=set(cols))
    for c in cols:
        name = stat_label(c)
        fig.add_trace(go.Scatter(x=progress["step"], y=progress[c], mode="lines", name=name,
                                 line={"width": 3 if c == "loss" else 1.5}))
    fig.update_layout(title={"text": title}, xaxis_title="step", yaxis_title="loss", height=340,
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, hovermode="x unified",
                      xaxis=_step_axis(progress))
    if not cols:
        fig.add_annotation(text="no progress yet", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
    return fig


MASKER_STAT_PREFIXES = ("masker", "score", "frozen", "freeze")


def _is_count(progress: pd.DataFrame, col: str) -> bool:
    """A statistic counted in notes (frozen_in_batch, n_picked, ...), not a 0-1 quantity."""
    vals = pd.to_numeric(progress[col], errors="coerce")
    return col.startswith("n_") or col.endswith("_in_batch") or bool((vals.abs() > 1.5).any())


def _step_axis(progress: pd.DataFrame) -> dict:
    """Whole steps only: a run's first few logged steps get one tick per step (not 1, 1.5, 2)."""
    axis: dict = {"tickformat": ",d"}
    steps = pd.to_numeric(progress["step"], errors="coerce").dropna() if "step" in progress.columns else []
    if len(steps) and float(steps.max() - steps.min()) <= 10:
        axis.update({"tickmode": "linear", "tick0": 0, "dtick": 1})
    return axis


def _count_axis(values: np.ndarray) -> dict:
    """A 0-based axis of note counts with whole-number ticks (0, 1, 2 or 0, 200, 400, ...)."""
    top = float(np.nanmax(values)) if len(values) and np.isfinite(values).any() else 0.0
    top = max(top * 1.1, 4.0)
    step = next(s * 10 ** e for e in range(0, 9) for s in (1, 2, 5) if top / (s * 10 ** e) <= 5)
    return {"range": [0, top], "tickmode": "linear", "tick0": 0, "dtick": step, "tickformat": ",d"}


def masker_stats_figure(progress: pd.DataFrame, *, title: str = "masker statistics") -> go.Figure:
    """Lines for every numeric masker statistic against step, by human names.

    Columns starting with ``masker``, ``score``, ``frozen`` or ``freeze``
    (e.g. ``masker_loss``, ``score_mean``, ``frozen_in_batch``). Counts of notes
    (``frozen_in_batch``, ~1,000) go on a right-hand axis of their own, so they do not
    flatten the 0-1 statistics (loss, mean score) on the left. The random strategy has
    none, which the figure says.
    """
    fig = go.Figure()
    cols = _numeric_cols(progress, MASKER_STAT_PREFIXES) if len(progress) else []
    counts = [c for c in cols if _is_count(progress, c)]
    for c in cols:
        fig.add_trace(go.Scatter(x=progress["step"], y=progress[c], mode="lines", name=stat_label(c),
                                 yaxis="y2" if c in counts else "y",
                                 line={"dash": "dot"} if c in counts else {}))
    legend, bottom = _legend_below(340)
    fig.update_layout(title={"text": title}, xaxis_title="step", height=380, xaxis=_step_axis(progress),
                      yaxis={"title": {"text": "loss / score"}, "rangemode": "tozero"},
                      margin={"l": 50, "r": 60, "t": 50, "b": bottom}, hovermode="x unified",
                      legend=legend)
    if counts:
        vals = np.concatenate([pd.to_numeric(progress[c], errors="coerce").to_numpy(dtype=float) for c in counts])
        fig.update_layout(yaxis2={"title": {"text": "notes (dotted)"}, "overlaying": "y", "side": "right",
                                  "showgrid": False, **_count_axis(vals)})
    if not cols:
        fig.add_annotation(text="no masker statistics (random strategy or no progress yet)",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


# ---------------------------------------------------------------- comparisons

def accuracy_bars(accs: Mapping[str, Mapping[str, float]], *,
                  title: str = "recovery accuracy per attribute") -> go.Figure:
    """Grouped bars: one trace per model, x = attribute, y = accuracy (0..1)."""
    fig = go.Figure()
    colours = model_colours(accs)
    for model, acc in accs.items():
        attrs = list(acc.keys())
        vals = [float(acc[a]) for a in attrs]
        fig.add_trace(go.Bar(name=model, x=attrs, y=vals, marker_color=colours[model],
                             text=[f"{v:.1%}" for v in vals], textposition="outside"))
    fig.update_layout(barmode="group", title={"text": title}, yaxis={"range": [0, 1.05],
                      "tickformat": ".0%", "title": {"text": "accuracy"}}, height=360,
                      margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


RULE_MARK_COLOURS = PALETTE["rules"]  # the no-model rules' marks (the one palette, above)


def model_colours(names: Iterable[str]) -> dict[str, str]:
    """Each model's bar colour (``PALETTE``): a demo model its own, others the next unused colour
    of ``PALETTE["others"]`` in order. The same name gets the same colour on every page."""
    names = list(dict.fromkeys(names))
    out = {n: PALETTE["models"][n] for n in names if n in PALETTE["models"]}
    free = [c for c in PALETTE["others"] if c not in out.values()]
    for i, n in enumerate(n for n in names if n not in out):
        out[n] = free[i % len(free)]
    return out


def add_rule_marks(fig: go.Figure, rules: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Draw the no-model rules (``baselines.rule_accuracy`` / ``piece_rules``: {rule: {attribute:
    accuracy}}) on an ``accuracy_bars`` figure as horizontal marks, one trace per rule
    (x = attribute, y = the rule's accuracy). Returns ``fig``."""
    from .baselines import RULE_LABELS

    for rule, acc in rules.items():
        attrs = [a for a, v in acc.items() if v is not None and np.isfinite(v)]
        vals = [float(acc[a]) for a in attrs]
        fig.add_trace(go.Scatter(
            name=f"rule: {RULE_LABELS.get(rule, rule)}", x=attrs, y=vals, mode="markers",
            marker={"symbol": "line-ew-open", "size": 46,
                    "line": {"width": 3, "color": RULE_MARK_COLOURS.get(rule, "#444444")}},
            hovertemplate="%{x}: %{y:.1%}<extra>" + RULE_LABELS.get(rule, rule) + "</extra>"))
    return fig


def rules_figure(model_acc: Mapping[str, Mapping[str, float]], rules: Mapping[str, Mapping[str, float]], *,
                 title: str = "recovery accuracy vs the no-model rules") -> go.Figure:
    """Bars = each model's recovery accuracy per attribute ({model: {attribute: acc}});
    horizontal marks = the no-model rules ({rule: {attribute: acc}}). A model has learned an
    attribute only where its bar rises above every mark."""
    fig = add_rule_marks(accuracy_bars(model_acc, title=title), rules)
    fig.update_layout(legend={"orientation": "h", "y": -0.15})
    return fig


REGISTER_EDGES = [(None, 48, "low (< C3)"), (48, 60, "C3-B3"), (60, 72, "C4-B4"),
                  (72, 84, "C5-B5"), (84, None, "high (>= C6)")]
METRIC_ORDER = ["downbeat", "on beat", "8th off-beat", "other"]
DURATION_ORDER = ["< 1/8 (<0.5 q)", "1/8-1/4 (0.5-1 q)", "1/4-1/2 (1-2 q)", ">= 1/2 (>= 2 q)"]


def register_class(pitch: np.ndarray) -> np.ndarray:
    """Pitch register class per note (see ``REGISTER_EDGES``; C4 = MIDI 60)."""
    pitch = np.asarray(pitch)
    out = np.empty(len(pitch), dtype=object)
    for lo, hi, label in REGISTER_EDGES:
        m = np.ones(len(pitch), dtype=bool)
        if lo is not None:
            m &= pitch >= lo
        if hi is not None:
            m &= pitch < hi
        out[m] = label
    return out


def metric_class(beat: np.ndarray) -> np.ndarray:
    """Metrical position class from the float beat in bar (beats = quarter notes).

    ``downbeat`` (beat 0), ``on beat`` (whole beat), ``8th off-beat`` (x.5),
    ``other`` (16ths, triplets...). Tolerance 1e-3 beat.
    """
    beat = np.asarray(beat, dtype=float)
    frac = beat - np.floor(beat + 1e-3)
    out = np.full(len(beat), "other", dtype=object)
    out[np.abs(frac - 0.5) < 1e-3] = "8th off-beat"
    on = np.abs(frac) < 1e-3
    out[on] = "on beat"
    out[on & (np.abs(beat) < 1e-3)] = "downbeat"
    return out


def duration_class(duration_q: np.ndarray) -> np.ndarray:
    """Duration class from the duration in quarter notes (see ``DURATION_ORDER``)."""
    d = np.asarray(duration_q, dtype=float)
    return np.select([d < 0.5, d < 1.0, d < 2.0], DURATION_ORDER[:3], DURATION_ORDER[3]).astype(object)


_CLASSIFIERS = {
    "register": ("pitch", register_class, [e[2] for e in REGISTER_EDGES]),
    "metric": ("beat", metric_class, METRIC_ORDER),
    "duration": ("duration_q", duration_class, DURATION_ORDER),
}


def metric_beats(df: pd.DataFrame) -> np.ndarray:
    """The beat in bar that ``metric_class`` should read: the tokenizer's quantised position
    (``true_position`` of an explain table: quarters after the token bar's start, what the
    model sees) when present, else the raw ``beat`` (performed or offset MIDI, e.g. POP909's
    notes 1/12 quarter after the grid, would otherwise all read as ``other``)."""
    if "true_position" in df.columns:
        pos = pd.to_numeric(df["true_position"], errors="coerce").to_numpy(dtype=float)
        if np.isfinite(pos).all():
            return pos
    return df["beat"].to_numpy(dtype=float)


def bias_table(df: pd.DataFrame, by: str, *, mask_col: str | None = None,
               attrs: Sequence[str] | None = None) -> pd.DataFrame:
    """Recovery accuracy per class of notes (the bias view).

    ``by`` is ``register`` (pitch register), ``metric`` (metrical position) or
    ``duration`` (duration class). Only rows where ``mask_col`` is True count
    (all rows when None); per attribute ``a`` (every ``correct_<a>`` column, or
    ``attrs``) accuracy = mean of ``correct_a`` over the rows of the class with a
    non-null value. Returns a long table: ``group, attribute, accuracy, n``,
    groups in musical order, empty groups left out.
    """
    if by not in _CLASSIFIERS:
        raise ValueError(f"by must be one of {sorted(_CLASSIFIERS)}, got {by!r}")
    col, fn, order = _CLASSIFIERS[by]
    if mask_col is not None and mask_col in df.columns:
        df = df[df[mask_col].fillna(False).astype(bool)]
    if attrs is None:
        attrs = [c[len("correct_"):] for c in df.columns if c.startswith("correct_")]
    rows = []
    if len(df):
        groups = fn(metric_beats(df) if by == "metric" else df[col].to_numpy())
        for a in attrs:
            c = f"correct_{a}"
            if c not in df.columns:
                continue
            vals = df[c]
            for g in order:
                sel = (groups == g) & vals.notna().to_numpy()
                n = int(sel.sum())
                if n:
                    rows.append({"group": g, "attribute": a,
                                 "accuracy": float(vals[sel].astype(float).mean()), "n": n})
    return pd.DataFrame(rows, columns=["group", "attribute", "accuracy", "n"])


def bias_figure(tables: Mapping[str, pd.DataFrame], attribute: str, *, by_label: str = "",
                title: str | None = None) -> go.Figure:
    """Grouped bars of :func:`bias_table` outputs: one trace per model, x = group.

    Bar text shows accuracy and the number of notes behind it.
    """
    fig = go.Figure()
    colours = model_colours(tables)
    for model, t in tables.items():
        sub = t[t["attribute"] == attribute]
        fig.add_trace(go.Bar(name=model, x=sub["group"].tolist(), y=sub["accuracy"].tolist(),
                             marker_color=colours[model],
                             text=[f"{a:.0%}<br>n={n:,}" for a, n in zip(sub["accuracy"], sub["n"])],
                             textposition="outside", textangle=0, textfont={"size": 10},
                             cliponaxis=False,
                             hovertemplate="%{x}: %{y:.1%}<extra>" + str(model) + "</extra>"))
    fig.update_layout(barmode="group", height=380, bargap=0.25, bargroupgap=0.08,
                      title={"text": title or f"{attribute} recovery by {by_label or 'group'}"},
                      yaxis={"range": [0, 1.2], "tickformat": ".0%", "title": {"text": "accuracy"},
                             "tickvals": [0, 0.25, 0.5, 0.75, 1.0]},
                      uniformtext={"minsize": 8, "mode": "show"},
                      margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def metrics_comparison(metrics: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Table of metrics (rows) x models (columns) plus ``difference`` (2nd - 1st).

    With exactly two models, ``difference`` = second minus first; with other
    counts no difference column is added. Missing values stay NaN.
    """
    names = list(metrics.keys())
    keys: list[str] = []
    for m in metrics.values():
        for k in m:
            if k not in keys:
                keys.append(k)
    table = pd.DataFrame({n: [metrics[n].get(k, np.nan) for k in keys] for n in names},
                         index=pd.Index(keys, name="metric"), dtype=float)
    if len(names) == 2:
        table["difference"] = table[names[1]] - table[names[0]]
    return table


def _metric_format(metric: str):
    m = metric.lower()
    if m.startswith("recovery") or "accuracy" in m:
        return lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.1%}"
    if m.startswith("frozen notes") or m.startswith("picked notes") or m.startswith("notes"):
        return lambda v: "-" if v is None or not np.isfinite(v) else f"{v:,.0f}"
    if "parameters" in m:
        return lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.2f}"
    return lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def metrics_display(table: pd.DataFrame, *, highlight: bool = True):
    """A :func:`metrics_comparison` table ready to show: every row in its own format
    (recoveries as percentages, counts of notes as whole numbers, scores with 3
    decimals), ``-`` for missing values, the ``difference`` column green where the
    second model recovers more and red where less - only on the recovery rows, where higher is
    better; a masker score, a count of notes or a size is not better for being higher, so its
    difference is left uncoloured. Returns a pandas ``Styler``."""
    def colour(v):
        if not isinstance(v, (int, float)) or np.isnan(v) or abs(v) < 1e-12:
            return ""
        return "background-color: #d9f2d9" if v > 0 else "background-color: #f8d7d7"

    styled = table.style
    plain = [c for c in table.columns if c != "difference"]
    for metric in table.index:
        fmt = _metric_format(str(metric))
        if plain:
            styled = styled.format(fmt, subset=pd.IndexSlice[[metric], plain])
        if "difference" in table.columns:
            styled = styled.format(lambda v, f=fmt: ("+" if v is not None and np.isfinite(v) and v > 0 else "")
                                   + f(v), subset=pd.IndexSlice[[metric], ["difference"]])
    better = [m for m in table.index if str(m).startswith("recovery")]
    if highlight and "difference" in table.columns and better:
        styled = styled.map(colour, subset=pd.IndexSlice[better, ["difference"]])
    return styled


def display_table(df: pd.DataFrame, *, digits: int = 2) -> pd.DataFrame:
    """A table of mixed values as text for showing: numbers rounded (:func:`fmt_number`),
    ``-`` for a missing value (never ``None`` / ``nan``), everything else as it reads."""
    def cell(v):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "-"
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (int, float, np.integer, np.floating)):
            return fmt_number(v, digits)
        return str(v)

    return df.astype(object).map(cell)


def readable_notes(df: pd.DataFrame, values: Sequence[str] = (), *, digits: int = 3) -> pd.DataFrame:
    """A notes table for people: ``note`` (its number), ``pitch`` as a note name, ``when``
    (``bar 13, beat 1``), then the ``values`` columns rounded to ``digits`` decimals, named
    by :func:`stat_label` when they are training-style names (``loss_bar`` -> ``bar loss``)."""
    out = pd.DataFrame(index=df.index)
    if "note" in df.columns:
        out["note"] = df["note"].to_numpy()
    if "pitch" in df.columns:
        out["pitch"] = [pitch_name(int(p)) for p in df["pitch"].to_numpy()]
    if "bar" in df.columns and "beat" in df.columns:
        out["when"] = [bar_beat_label(b, t) for b, t in zip(df["bar"].to_numpy(), df["beat"].to_numpy())]
    for c in values:
        if c in df.columns:
            out[readable_column(c)] = pd.to_numeric(df[c], errors="coerce").round(digits)
    return out.reset_index(drop=True)


def readable_column(column: str) -> str:
    """A column name for people: ``loss_pitch`` -> ``pitch loss``, ``loss`` -> ``loss (all
    attributes)``, ``mask`` -> ``random mask``; other names with spaces for underscores."""
    if column == "loss":
        return "loss (all attributes)"
    if column.startswith("loss_"):
        return f"{column[len('loss_'):]} loss"
    return {"mask": "random mask"}.get(column, column.replace("_", " "))


def readable_table(df: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """Any small numeric table for people: :func:`readable_column` names, floats rounded."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(digits)
    return out.rename(columns={c: readable_column(str(c)) for c in out.columns})


def prediction_bars(topk: Sequence[tuple], *, title: str = "", truth=None) -> go.Figure:
    """Horizontal bars of a top-k prediction list ``[(value, prob), ...]``.

    The bar of the true value (``truth``) is green, the others grey; best on top.
    """
    labels = [str(v) for v, _ in topk]
    probs = [float(p) for _, p in topk]
    colors = ["#2ca02c" if truth is not None and str(v) == str(truth) else "#9e9e9e"
              for v, _ in topk]
    fig = go.Figure(go.Bar(x=probs[::-1], y=labels[::-1], orientation="h",
                           marker_color=colors[::-1], text=[f"{p:.0%}" for p in probs[::-1]],
                           textposition="auto"))
    fig.update_layout(title={"text": title}, xaxis={"range": [0, 1], "tickformat": ".0%"},
                      yaxis={"type": "category"},  # values such as 4 or 0.5 are labels, not positions
                      height=90 + 30 * max(1, len(labels)),
                      margin={"l": 60, "r": 10, "t": 30 if title else 5, "b": 25})
    return fig


# =============================================================================
# WHY views (issue 6): attributions, attention, before/after. Appended section.
# Rules: same as above (pure builders, one trace per state, customdata column 0 =
# note index). Values are drawn on the piano roll as the notes' colour:
# attributions on a diverging scale symmetric around 0 (red = for the class,
# blue = against), attention weights on a sequential scale from 0; notes outside
# the explained window are light grey; the selected/target note has a black outline.
# =============================================================================

ATTRIBUTION_COLORSCALE = "RdBu_r"
ATTENTION_COLORSCALE = "Oranges"


def _value_trace(df: pd.DataFrame, values: np.ndarray, name: str, *, scale: Mapping, track_names=None,
                 label: str = "value", line_color=None, line_width=0.0, showlegend=True) -> go.Bar:
    if line_color is None:  # a thin outline keeps near-zero (near-white) notes visible
        line_color, line_width = "rgba(90, 90, 90, 0.45)", 0.6
    vals = np.asarray(values, dtype=float)
    tr = _note_trace(df, name, color="#000000", line_color=line_color, line_width=line_width,
                     track_names=track_names, showlegend=showlegend, scale=scale, values=vals)
    tr.text = [f"{v:.4g}" for v in vals]
    tr.textposition = "none"
    tr.hovertemplate = _HOVER + f"<br>{label} %{{text}}<extra>{name}</extra>"
    return tr


def value_roll(df: pd.DataFrame, values, *, label: str, diverging: bool, selected: int | None = None,
               in_window=None, bar_starts_q=None, track_names=None, title: str | None = None,
               height: int = 480, arcs: int = 0, bar_axis: bool | None = None) -> go.Figure:
    """Piano roll with one number per note as colour (see the section rules).

    ``values`` (N,) aligned with ``df`` rows; ``in_window`` (N,) bool (default all True):
    notes outside are grey; ``selected``: note index outlined in black; ``arcs`` > 0 draws
    lines from the selected note to the ``arcs`` notes with the largest |value|.
    """
    track_names = _track_names(track_names) if track_names is not None else None
    vals = np.asarray(values, dtype=float)
    inw = np.ones(len(df), dtype=bool) if in_window is None else np.asarray(in_window, dtype=bool)
    notes = df["note"].to_numpy() if "note" in df.columns else np.arange(len(df))
    sel = (notes == int(selected)) if selected is not None else np.zeros(len(df), dtype=bool)
    fig = go.Figure()
    pmin, pmax = (int(df["pitch"].min()), int(df["pitch"].max())) if len(df) else (60, 72)
    axis = _bar_axis(df, bar_starts_q, bar_axis)
    x_of = axis if axis is not None else (lambda q: np.asarray(q, dtype=float))
    if axis is not None:
        df = axis.place(df)
    out = ~inw
    unmeasured = inw & ~np.isfinite(vals)  # e.g. notes left out of a sampled occlusion
    measured = inw & np.isfinite(vals)
    lim = float(np.nanmax(np.abs(vals[measured]))) if measured.any() and len(vals) else 1.0
    lim = lim if lim > 0 else 1.0
    caxis = ({"colorscale": ATTRIBUTION_COLORSCALE, "cmin": -lim, "cmax": lim, "cmid": 0.0} if diverging
             else {"colorscale": ATTENTION_COLORSCALE, "cmin": 0.0, "cmax": lim})
    scale = {k: caxis[k] for k in ("colorscale", "cmin", "cmax")}
    if out.any():
        fig.add_trace(_note_trace(df[out], "outside the window", color="#e0e0e0", track_names=track_names))
    if unmeasured.any():
        fig.add_trace(_note_trace(df[unmeasured], "not measured", color="#c8c8c8", track_names=track_names))
        inw = measured
    body = inw & ~sel
    fig.add_trace(_value_trace(df[body], vals[body], f"notes (colour = {label})", scale=scale,
                               track_names=track_names, label=label))
    if sel.any():
        fig.add_trace(_value_trace(df[sel], vals[sel], "selected note", scale=scale,
                                   track_names=track_names, label=label, line_color="#000000",
                                   line_width=3.0))
        if arcs > 0:
            cand = np.flatnonzero(inw & ~sel)
            top = cand[np.argsort(-np.abs(vals[cand]), kind="stable")[:int(arcs)]]
            s = int(np.flatnonzero(sel)[0])
            x0 = float(x_of(df["onset_q"].iloc[s] + df["duration_q"].iloc[s] / 2))
            y0 = float(df["pitch"].iloc[s])
            xs, ys = [], []
            for j in top:
                x1 = float(x_of(df["onset_q"].iloc[j] + df["duration_q"].iloc[j] / 2))
                y1 = float(df["pitch"].iloc[j])
                mid = (x0 + x1) / 2
                lift = min(2.0 + abs(x1 - x0) * (0.6 if axis is not None else 0.15), 6.0)
                apex = max(y0, y1) + lift
                if apex > pmax + 1.0:  # bend downwards rather than leave the plot
                    apex = min(y0, y1) - lift
                xs += [x0, mid, x1, None]
                ys += [y0, apex, y1, None]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "rgba(0,0,0,0.45)",
                                                                      "width": 1.5, "shape": "spline"},
                                     name=f"top {len(top)} by |{label}|", hoverinfo="skip"))
    caxis["colorbar"] = {"title": {"text": label}, "thickness": 14, "len": 0.8}
    legend, bottom = _legend_below(height)
    xaxis = _time_axis(df, bar_starts_q, axis=axis)
    if axis is not None:
        fig.add_trace(_tick_guard(axis, pmin))
    fig.add_trace(_colorbar_trace(scale))
    if selected is not None and sel.any() and "range" in xaxis:  # open on the bars around the selected note
        bars, _ = _bar_grid(df, bar_starts_q)
        x0 = float(df["onset_q"].to_numpy()[sel][0])
        i = int(np.clip(np.searchsorted(bars, x0, side="right") - 1 - INITIAL_BARS // 2, 0,
                        max(0, len(bars) - 1 - INITIAL_BARS)))
        j = min(len(bars) - 1, i + INITIAL_BARS)
        xaxis["range"] = ([float(axis.first + i), float(axis.first + j)] if axis is not None
                          else [float(bars[i]), float(bars[j])])
    fig.update_layout(barmode="overlay", height=height, title={"text": title} if title else None,
                      dragmode="zoom", hovermode="closest", plot_bgcolor="white", coloraxis=caxis,
                      margin={"l": 60, "r": 20, "t": 40 if title else 10, "b": bottom},
                      legend=legend, yaxis=_pitch_axis(pmin, pmax), xaxis=xaxis)
    return fig


def attribution_roll(table: pd.DataFrame, *, bar_starts_q=None, track_names=None, title: str | None = None,
                     height: int = 480) -> go.Figure:
    """An ``attribution.attribute_notes`` table on the piano roll (diverging colours; the target note
    of a note task outlined, from ``table.attrs["target"]``)."""
    target = table.attrs.get("target") if hasattr(table, "attrs") else None
    inw = table["in_window"].to_numpy(bool) if "in_window" in table.columns else None
    label = f"{table.attrs.get('method', 'attribution')} attribution" if hasattr(table, "attrs") else "attribution"
    return value_roll(table, table["attribution"].to_numpy(float), label=label, diverging=True,
                      selected=target, in_window=inw, bar_starts_q=bar_starts_q, track_names=track_names,
                      title=title, height=height)


def attention_roll(df: pd.DataFrame, weights, note: int, *, arcs: int = 8, bar_starts_q=None, track_names=None,
                   title: str | None = None, height: int = 480) -> go.Figure:
    """Where note ``note`` looks: ``weights`` (N,) from ``attention.note_attention`` as colour, arcs
    to the ``arcs`` most attended notes; notes with weight 0 outside its window are grey."""
    w = np.asarray(weights, dtype=float)
    inw = w > 0
    inw[int(note)] = True
    return value_roll(df, w, label="attention", diverging=False, selected=int(note), in_window=inw,
                      bar_starts_q=bar_starts_q, track_names=track_names, title=title, height=height, arcs=arcs)


def attribution_scatter(ig: pd.DataFrame, occlusion: pd.DataFrame, *, title: str = "") -> go.Figure:
    """IG (x) against occlusion (y) attribution per note (notes measured by both), hover = note index."""
    sel = ig["measured"].to_numpy(bool) & occlusion["measured"].to_numpy(bool)
    fig = go.Figure(go.Scatter(x=ig["attribution"].to_numpy(float)[sel],
                               y=occlusion["attribution"].to_numpy(float)[sel], mode="markers",
                               customdata=ig["note"].to_numpy()[sel], marker={"size": 6, "opacity": 0.7},
                               hovertemplate="note %{customdata}<br>IG %{x:.4g}<br>occlusion %{y:.4g}<extra></extra>"))
    fig.update_layout(title={"text": title} if title else None, height=360,
                      xaxis={"title": {"text": "integrated gradients"}},
                      yaxis={"title": {"text": "occlusion"}}, margin={"l": 60, "r": 10, "t": 40 if title else 10,
                                                                        "b": 40})
    return fig


def before_after_bars(before: Sequence[tuple], after: Sequence[tuple], *, title: str = "",
                      value_label: str = "probability") -> go.Figure:
    """Grouped bars of ``[(class, value), ...]`` before and after an edit (class order of ``before``)."""
    classes = [str(c) for c, _ in before]
    b = {str(c): float(v) for c, v in before}
    a = {str(c): float(v) for c, v in after}
    classes += [c for c in a if c not in b]
    fig = go.Figure([go.Bar(name="before", x=classes, y=[b.get(c, 0.0) for c in classes], marker_color="#9e9e9e"),
                     go.Bar(name="after the edit", x=classes, y=[a.get(c, 0.0) for c in classes],
                            marker_color="#4c78a8")])
    fig.update_layout(barmode="group", title={"text": title} if title else None, height=320,
                      yaxis={"title": {"text": value_label}}, margin={"l": 60, "r": 10, "t": 40 if title else 10,
                                                                         "b": 40})
    return fig


__all__ += ["value_roll", "attribution_roll", "attention_roll", "attribution_scatter", "before_after_bars"]


# ---------------------------------------------------------------- what the masker picks (picks.py)

#: the label columns of a "What it picks" table, readable (``picks.class_effects``' columns)
PICKS_LABELS = {**ROLE_LABELS, "harmony": "harmony"}


def picks_table(result: Mapping, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The per-class table of a ``picks.class_effects`` / ``picks.measure_picks`` result as text
    cells, one row per class: notes, pieces, mean score, picked %, frozen % (each with its
    interval), the score's difference from all other notes and from notes of the same duration x
    register, and the picked share's controlled difference; ``*`` = the interval excludes 0 (the
    cells of ``picks.markdown_table``). ``columns``: the label columns to keep (default all)."""
    from .picks import interval_text

    def cell(iv, pct=False):
        return interval_text(iv, pct=pct, missing="-")

    def diff(iv, pct=False):
        return interval_text(iv, pct=pct, signed=True, missing="-")

    rows = []
    for col, classes in (result.get("columns") or {}).items():
        if columns is not None and col not in columns:
            continue
        for r in classes:
            rows.append({"label": PICKS_LABELS.get(col, col.replace("_", " ")), "class": str(r["class"]),
                         "notes": int(r["n_notes"]), "pieces": int(r["n_pieces"]),
                         "mean score": cell(r.get("score")), "picked %": cell(r.get("picked"), True),
                         "frozen %": cell(r.get("frozen"), True), "score vs rest": diff(r.get("score_diff")),
                         "score vs same duration x register": diff(r.get("score_adj")),
                         "picked % vs same duration x register": diff(r.get("picked_adj"), True)})
    cols = ["label", "class", "notes", "pieces", "mean score", "picked %", "frozen %", "score vs rest",
            "score vs same duration x register", "picked % vs same duration x register"]
    return pd.DataFrame(rows, columns=cols)


PICKS_CAPTION = ("Per class of note: mean masker score (0-1), share picked at the ratio, share frozen; then the "
                 "score's difference from all other notes and from notes of the same duration x register (what "
                 "is left once duration and register are accounted for). Brackets: 95% bootstrap intervals "
                 "(over pieces; one piece: over its 4-bar spans); * = the interval excludes 0.")
