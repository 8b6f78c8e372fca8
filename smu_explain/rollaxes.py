"""The axes of a piano roll: time in quarters or in bar numbers (:class:`BarAxis`) with the bar
grid as axis grid lines, the opening view of a long piece, the pitch axis labelled at every C,
and the legend's place under the time axis.

Used by ``pianoroll`` and ``valueroll`` (and ``charts`` for the legend). Imports numpy, pandas,
plotly and the package's ``palette`` and ``readable`` only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .palette import STATE_COLORS
from .readable import pitch_name

INITIAL_BARS = 16  # a long piece opens on its first 16 bars; the rest is a drag (or the slider) away
# under the roll of a piece longer than INITIAL_BARS: a range slider to reach every bar (the figure taller by this)
RANGE_SLIDER = {"visible": True, "thickness": 0.08}
SLIDER_HEIGHT = 60
MAX_BAR_LABELS = 48  # up to this many bars every bar is labelled; longer pieces get a zoomable bar axis


def opening_text(n_bars: int, rolls: str = "the roll") -> str:
    """The sentence under a roll that opens on its first ``INITIAL_BARS`` of ``n_bars`` bars (how to
    reach the rest); "" for a piece that is shown whole."""
    if n_bars <= INITIAL_BARS:
        return ""
    return (f"Showing bars 1-{INITIAL_BARS} of {n_bars:,}: drag the slider under {rolls} (or pan) to move "
            "through the piece. ")


def bar_label_step(n_bars: int, max_labels: int = MAX_BAR_LABELS) -> int:
    """Every k-th bar labelled so that ``n_bars`` bars hold at most ``max_labels`` labels:
    1 up to 48 bars, then 2, 4, 5, 10, 20, 50, ... (the spacing Plotly's automatic ticks pick
    on the bar axis of a long piece's whole view)."""
    for k in (1, 2, 4, 5, 10, 20, 25, 50, 100, 200, 500, 1000):
        if n_bars / k <= max_labels:
            return k
    return int(np.ceil(n_bars / max_labels))


def bar_layout(df: pd.DataFrame, bar_starts_q) -> tuple[np.ndarray, np.ndarray, float]:
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


def bar_grid(df: pd.DataFrame, bar_starts_q) -> tuple[np.ndarray, float]:
    """(bar starts in quarters up to the last note, end of the last note)."""
    bars, _, end = bar_layout(df, bar_starts_q)
    return bars, end


def first_bar_index(df: pd.DataFrame, bars: np.ndarray) -> int:
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
    metre, and Plotly's automatic ticks (integers only, see :func:`tick_guard`) label every bar
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


def bar_axis_for(df: pd.DataFrame, bar_starts_q, bar_axis: bool | None) -> BarAxis | None:
    """The :class:`BarAxis` of a roll, or None for an axis in quarters: ``bar_axis=None`` picks
    bars when the piece has more than ``MAX_BAR_LABELS`` bars (where labelling every bar would
    crowd the whole view and thinned fixed labels would leave a zoomed view with one or two)."""
    bars, lengths, _ = bar_layout(df, bar_starts_q)
    if not len(bars) or not (bar_axis or (bar_axis is None and len(bars) > MAX_BAR_LABELS)):
        return None
    return BarAxis(bars, lengths, 1 + first_bar_index(df, bars))


def tick_guard(axis: BarAxis, y: float, xaxis: str = "x", yaxis: str = "y") -> go.Bar:
    """An invisible zero-height vertical bar trace at two consecutive bar numbers (the first one
    twice): Plotly spaces the automatic ticks of the position axis of overlapping bars at least
    one position apart, aligned on the positions (``Axes.minDtick``; it needs a repeated
    position), so the bar axis' ticks never fall between bar lines ("12.5")."""
    return go.Bar(x=[axis.first, axis.first, axis.first + 1], y=[0.0] * 3, base=[y] * 3, orientation="v",
                  width=1e-6,
                  marker={"opacity": 0.0, "line": {"width": 0}}, hoverinfo="skip", showlegend=False,
                  name="bar ticks", xaxis=xaxis, yaxis=yaxis)


def time_axis(df: pd.DataFrame, bar_starts_q, *, x_range=None,
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
    bars, end = bar_grid(df, bar_starts_q)
    n = len(bars)
    ax: dict = {"title": {"text": "bar"}, "zeroline": False, "tickangle": 0,
                "showgrid": True, "gridcolor": STATE_COLORS["bar_line"], "gridwidth": 1}
    if axis is not None:
        ax.update({"tickmode": "auto", "tickformat": "d", "nticks": 20})
        minor = [float(axis.first + i) for i in range(n)]
        x_of = axis
        opening = [float(axis.first), float(axis.first + min(n, initial_bars or n))]
    else:
        numbers = np.arange(1, n + 1) + first_bar_index(df, bars)
        ax.update({"tickmode": "array", "tickvals": bars.tolist(), "ticktext": [str(b) for b in numbers]})
        bounds = np.append(bars, max(end, bars[-1] + 4.0)) if n else np.zeros(0)
        minor = [float(x) for a, b in zip(bounds[:-1], bounds[1:], strict=False) for x in np.arange(a + 1.0, b - 1e-9, 1.0)]
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


def legend_below(fig_height: int) -> tuple[dict, int]:
    """(legend, bottom margin): a horizontal legend at the very bottom of the figure, under
    the time axis' labels and title, never on the plot area or the axis title."""
    return ({"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom", "x": 0.0,
             "xanchor": "left"}, 100)


def pitch_axis(pmin: int, pmax: int) -> dict:
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
