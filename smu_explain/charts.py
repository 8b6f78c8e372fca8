"""Charts that are not piano rolls: training curves (loss, masker statistics), recovery accuracy
per attribute against the no-model rules, accuracy per class of notes (the bias view), top-k
prediction bars, and the Why page's IG-against-occlusion scatter and before/after bars.

Pure builders: plain data in, a ``plotly`` Figure out. Imports numpy, pandas, plotly and the
package's ``palette``, ``noteclasses``, ``readable`` and ``rollaxes`` only (no model, no
computation module, no streamlit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .noteclasses import CLASSIFIERS, metric_beats
from .palette import RULE_MARK_COLOURS, model_colours
from .readable import RULE_LABELS, stat_label
from .rollaxes import legend_below


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

        def _walk(prefix: str, obj, flat: dict = flat) -> None:
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
        if (any(c == p or c.startswith(p + "_") or c.startswith(p + ".") for p in prefixes)
                and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])):
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
    legend, bottom = legend_below(340)
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


def accuracy_bars(accs: Mapping[str, Mapping[str, float]], *,
                  title: str = "recovery accuracy per attribute") -> go.Figure:
    """Grouped bars: one trace per model, x = attribute, y = accuracy (0..1)."""
    fig = go.Figure()
    colours = model_colours(accs)
    for model, acc in accs.items():
        attrs = list(acc.keys())
        vals = [float(acc[a]) for a in attrs]
        fig.add_trace(go.Bar(name=model, x=attrs, y=vals, marker_color=colours[model],
                             text=[f"{v:.1%}" for v in vals], textposition="outside", cliponaxis=False))
    # headroom above 100% for the label of a full bar (ticks stop at 100%)
    fig.update_layout(barmode="group", title={"text": title}, yaxis={"range": [0, 1.12],
                      "tickvals": [0, 0.2, 0.4, 0.6, 0.8, 1.0],
                      "tickformat": ".0%", "title": {"text": "accuracy"}}, height=360,
                      margin={"l": 50, "r": 20, "t": 50, "b": 40})
    return fig


def add_rule_marks(fig: go.Figure, rules: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Draw the no-model rules (``baselines.rule_accuracy`` / ``piece_rules``: {rule: {attribute:
    accuracy}}) on an ``accuracy_bars`` figure as horizontal marks, one trace per rule
    (x = attribute, y = the rule's accuracy). Returns ``fig``."""
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
    if by not in CLASSIFIERS:
        raise ValueError(f"by must be one of {sorted(CLASSIFIERS)}, got {by!r}")
    col, fn, order = CLASSIFIERS[by]
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
                             text=[f"{a:.0%}<br>n={n:,}" for a, n in zip(sub["accuracy"], sub["n"], strict=False)],
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
