"""Piano rolls with one number per note as the notes' colour (the Why page): attributions on a
diverging scale symmetric around 0 (red = for the class, blue = against), attention weights on a
sequential scale from 0; notes outside the explained window are light grey; the selected/target
note has a black outline. Same rules as ``pianoroll`` (one trace per state, customdata column 0
= note index). Imports the package's figure helpers only, never a model or streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .palette import ATTENTION_COLORSCALE, ATTRIBUTION_COLORSCALE
from .pianoroll import HOVER, colorbar_trace, note_trace, track_name_list
from .rollaxes import INITIAL_BARS, bar_axis_for, bar_grid, legend_below, pitch_axis, tick_guard, time_axis


def _value_trace(df: pd.DataFrame, values: np.ndarray, name: str, *, scale: Mapping, track_names=None,
                 label: str = "value", line_color=None, line_width=0.0, showlegend=True) -> go.Bar:
    if line_color is None:  # a thin outline keeps near-zero (near-white) notes visible
        line_color, line_width = "rgba(90, 90, 90, 0.45)", 0.6
    vals = np.asarray(values, dtype=float)
    tr = note_trace(df, name, color="#000000", line_color=line_color, line_width=line_width,
                     track_names=track_names, showlegend=showlegend, scale=scale, values=vals)
    tr.text = [f"{v:.4g}" for v in vals]
    tr.textposition = "none"
    tr.hovertemplate = HOVER + f"<br>{label} %{{text}}<extra>{name}</extra>"
    return tr


def value_roll(df: pd.DataFrame, values, *, label: str, diverging: bool, selected: int | None = None,
               in_window=None, bar_starts_q=None, track_names=None, title: str | None = None,
               height: int = 480, arcs: int = 0, bar_axis: bool | None = None) -> go.Figure:
    """Piano roll with one number per note as colour (see the section rules).

    ``values`` (N,) aligned with ``df`` rows; ``in_window`` (N,) bool (default all True):
    notes outside are grey; ``selected``: note index outlined in black; ``arcs`` > 0 draws
    lines from the selected note to the ``arcs`` notes with the largest |value|.
    """
    track_names = track_name_list(track_names) if track_names is not None else None
    vals = np.asarray(values, dtype=float)
    inw = np.ones(len(df), dtype=bool) if in_window is None else np.asarray(in_window, dtype=bool)
    notes = df["note"].to_numpy() if "note" in df.columns else np.arange(len(df))
    sel = (notes == int(selected)) if selected is not None else np.zeros(len(df), dtype=bool)
    fig = go.Figure()
    pmin, pmax = (int(df["pitch"].min()), int(df["pitch"].max())) if len(df) else (60, 72)
    axis = bar_axis_for(df, bar_starts_q, bar_axis)
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
        fig.add_trace(note_trace(df[out], "outside the window", color="#e0e0e0", track_names=track_names))
    if unmeasured.any():
        fig.add_trace(note_trace(df[unmeasured], "not measured", color="#c8c8c8", track_names=track_names))
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
    legend, bottom = legend_below(height)
    xaxis = time_axis(df, bar_starts_q, axis=axis)
    if axis is not None:
        fig.add_trace(tick_guard(axis, pmin))
    fig.add_trace(colorbar_trace(scale))
    if selected is not None and sel.any() and "range" in xaxis:  # open on the bars around the selected note
        bars, _ = bar_grid(df, bar_starts_q)
        x0 = float(df["onset_q"].to_numpy()[sel][0])
        i = int(np.clip(np.searchsorted(bars, x0, side="right") - 1 - INITIAL_BARS // 2, 0,
                        max(0, len(bars) - 1 - INITIAL_BARS)))
        j = min(len(bars) - 1, i + INITIAL_BARS)
        xaxis["range"] = ([float(axis.first + i), float(axis.first + j)] if axis is not None
                          else [float(bars[i]), float(bars[j])])
    fig.update_layout(barmode="overlay", height=height, title={"text": title} if title else None,
                      dragmode="zoom", hovermode="closest", plot_bgcolor="white", coloraxis=caxis,
                      margin={"l": 60, "r": 20, "t": 40 if title else 10, "b": bottom},
                      legend=legend, yaxis=pitch_axis(pmin, pmax), xaxis=xaxis)
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
