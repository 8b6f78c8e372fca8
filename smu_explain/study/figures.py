"""Figures of the study (plotly, imported when a figure is built)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_text

# ============================================================================ figures

def data_efficiency_figure(efficiency: Mapping[str, Any]):
    """Plotly figure: test accuracy vs labelled fraction, one panel per task, one line
    per model (mean ± std over seeds as error bars), a dashed line at the no-pre-training
    model's 100% accuracy. Input: ``results["efficiency"]`` (see docs/study/README.md)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = list(efficiency)
    fig = make_subplots(rows=1, cols=max(1, len(tasks)), subplot_titles=tasks, shared_yaxes=False)
    colors = {"adversarial": "#d62728", "random": "#1f77b4", "bar": "#2ca02c", "none": "#7f7f7f"}
    for j, task in enumerate(tasks, start=1):
        eff = efficiency[task]
        for model, pts in eff.get("curves", {}).items():
            xs = [p["fraction"] for p in pts]
            ys = [None if p["mean"] is None else 100 * p["mean"] for p in pts]
            es = [0 if p.get("std") is None else 100 * p["std"] for p in pts]
            fig.add_trace(go.Scatter(x=xs, y=ys, error_y={"type": "data", "array": es, "visible": True},
                                     mode="lines+markers", name=model, legendgroup=model, showlegend=j == 1,
                                     line={"color": colors.get(model)}), row=1, col=j)
        target = eff.get("target")
        if target is not None:
            fig.add_hline(y=100 * target, line_dash="dash", line_color="#7f7f7f", row=1, col=j)
        fig.update_xaxes(type="log", tickvals=[0.1, 0.25, 0.5, 1.0], ticktext=["10%", "25%", "50%", "100%"],
                         title_text="labelled training pieces", row=1, col=j)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    fig.update_layout(width=320 * max(1, len(tasks)) + 80, height=340, margin={"l": 50, "r": 10, "t": 70, "b": 50},
                      title={"text": "data efficiency (dashed: no pre-training, 100% of the data)"})
    return fig


GROUPING_TITLES = {"register": "pitch register", "metric": "metrical position", "duration": "duration class",
                   "role": "track role (POP909)", "velocity": "velocity bin"}


def masker_class_figure(by_class: Mapping[str, Sequence[Mapping[str, Any]]]):
    """Plotly figure: per note class (one column per grouping of ``analysis["by_class"]``),
    the adversarial masker's mean score (top row) and the frozen share (bottom row); hover
    adds the number of notes and the random model's mean recovery loss."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    groups = [g for g, rows in by_class.items() if rows]
    cols = max(1, len(groups))
    fig = make_subplots(rows=2, cols=cols, shared_yaxes=True, vertical_spacing=0.16, horizontal_spacing=0.03,
                        subplot_titles=[GROUPING_TITLES.get(g, g) for g in groups] + [""] * cols)
    for j, g in enumerate(groups, start=1):
        rows = by_class[g]
        x = [str(r["class"]) for r in rows]
        hover = [f"{r['n']:,} notes; random model's loss {r['random_loss']:.2f}" if r.get("random_loss") is not None
                 else f"{r['n']:,} notes" for r in rows]
        fig.add_trace(go.Bar(x=x, y=[r.get("score") for r in rows], marker_color="#d62728", name="mean score",
                             showlegend=j == 1, legendgroup="score", hovertext=hover), row=1, col=j)
        fig.add_trace(go.Bar(x=x, y=[None if r.get("frozen") is None else 100 * r["frozen"] for r in rows],
                             marker_color="#7f7f7f", name="frozen (%)", showlegend=j == 1, legendgroup="frozen",
                             hovertext=hover), row=2, col=j)
        fig.update_xaxes(tickangle=-40, tickfont={"size": 9}, row=2, col=j)
        fig.update_xaxes(showticklabels=False, row=1, col=j)
    scores = [r["score"] for g in groups for r in by_class[g] if r.get("score") is not None]
    # the score axis starts at 0 (never at the scores' minimum: a weak masker's 0.47 vs 0.49 must
    # not look like a big difference); the values are in the hover
    fig.update_yaxes(range=[0.0, min(1.0, max(0.5, 1.1 * max(scores, default=1.0)))], row=1)
    frozen = [100 * r["frozen"] for g in groups for r in by_class[g] if r.get("frozen") is not None]
    fig.update_yaxes(range=[0, max(1.0, 1.1 * max(frozen, default=100.0))], row=2)
    fig.update_yaxes(title_text="mean masker score", row=1, col=1)
    fig.update_yaxes(title_text="frozen (%)", row=2, col=1)
    # no legend: each row's y-axis title names its bars (a legend ran into the title)
    fig.update_layout(width=230 * cols + 80, height=480, margin={"l": 60, "r": 10, "t": 80, "b": 110},
                      title={"text": "what the masker scores high and freezes, by note class (validation pieces)"},
                      showlegend=False)
    return fig


def freeze_history_sentence(history: Sequence[Mapping[str, Any]], br: str = " ") -> str | None:
    """The freeze book over training in words when the run updated it once (a chart of one point
    says no more: the Study page shows this instead); None with more updates. ``br`` joins the
    two halves (``"<br>"`` in a figure)."""
    if len(history) != 1:
        return None
    h = history[0]
    share = h.get("frozen_frac")
    froze = "" if share is None else f"it froze {100 * share:.0f}% of the training notes;{br}"
    return (f"one freeze-book update in this run (after epoch {h['epoch']}, step {h.get('step', '?')}): "
            f"{froze}no later update to compare it with")


def freeze_history_figure(history: Sequence[Mapping[str, Any]]):
    """Plotly figure: the freeze book over training (``analysis["freeze_history"]``): frozen
    share, Jaccard overlap with the previous update and with the last one, per epoch (one update:
    its point on an axis of that epoch alone, and :func:`freeze_history_sentence`)."""
    import plotly.graph_objects as go

    ep = [h["epoch"] for h in history]
    fig = go.Figure()
    lines = (("frozen_frac", "frozen share of the training notes", "#7f7f7f", None),
             ("jaccard_prev", "Jaccard with the previous update", "#1f77b4", "dot"),
             ("kept_from_prev", "previous frozen notes still frozen", "#2ca02c", "dash"),
             ("jaccard_last", "Jaccard with the last update", "#d62728", "dashdot"))
    xaxis = {"title": {"text": "epoch (freeze-book update)"}, "dtick": 1}
    if len(history) == 1:  # nothing to compare with: the overlaps would be empty or trivially 100%
        lines = lines[:1]
        xaxis.update(range=[ep[0] - 0.5, ep[0] + 0.5], tickvals=ep)  # not epochs -1 to 1
        fig.add_annotation(x=0.5, y=0.9, xref="paper", yref="paper", showarrow=False, font={"size": 11},
                           text=freeze_history_sentence(history, br="<br>"))
    for key, name, color, dash in lines:
        fig.add_trace(go.Scatter(x=ep, y=[None if h.get(key) is None else 100 * h[key] for h in history],
                                 mode="lines+markers", name=name, line={"color": color, "dash": dash}))
    fig.update_layout(width=560, height=320, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      title={"text": "the frozen set over training (adversarial run)"},
                      xaxis=xaxis,
                      yaxis={"title": {"text": "%"}, "range": [0, 105]},
                      legend={"font": {"size": 10}}, showlegend=True)  # also with one line: it names it
    return fig


def spearman_figure(analysis: Mapping[str, Any]):
    """Plotly figure: Spearman correlation of the masker score with the random model's and
    the adversarial model's own per-note recovery loss, per validation source and overall."""
    import plotly.graph_objects as go

    names = list(analysis.get("sources", {})) + ["all"]
    rows = [analysis["sources"][n] for n in names[:-1]] + [analysis]
    fig = go.Figure()
    for key, name, color in (("spearman_random_loss", "with the random model's loss", "#1f77b4"),
                             ("spearman_own_loss", "with the adversarial model's own loss", "#d62728")):
        fig.add_trace(go.Bar(x=names, y=[(r.get(key) or {}).get("rho") for r in rows], name=name,
                             marker_color=color,
                             hovertext=[f"n = {(r.get(key) or {}).get('n')}, p = {(r.get(key) or {}).get('p')}"
                                        for r in rows]))
    fig.update_layout(barmode="group", width=520, height=320, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      title={"text": "does the masker score the notes that are hard to recover?"},
                      yaxis={"title": {"text": "Spearman rho"}, "range": [-1, 1]},
                      legend={"orientation": "h", "y": -0.15, "font": {"size": 10}})
    return fig


def frozen_example_figure(example: Mapping[str, Any]):
    """Small piano roll of one frozen example (``analysis["examples"][i]``): its context notes
    coloured by masker score, frozen notes grey hatched, the example note marked by an arrow."""
    import pandas as pd

    from .. import pianoroll

    ctx = example.get("context", {})
    df = pd.DataFrame(ctx.get("notes", []))
    for col, default in (("velocity", 64), ("track", 0), ("bar", 0), ("beat", 0.0), ("frozen", False),
                         ("picked", False)):
        if col not in df.columns:
            df[col] = default
    names = ctx.get("track_names") or None
    piece = str(example.get("piece", ""))
    short = piece if len(piece) <= 42 else "..." + piece[-39:]  # the file name end, not cut by the frame
    fig = pianoroll.piano_roll(df, bar_starts_q=ctx.get("bar_starts_q") or None, track_names=names,
                           title=f"{short}<br><span style='font-size:10px'>{example.get('source')}, "
                                 f"note {example.get('note')}</span>", height=300)
    # the arrow comes from the middle of the pitch range, so its label stays in the plot: from below for
    # a note in the upper half (from above it ran into the title), from above for one in the lower half
    # (from below its label sat on the bar numbers)
    pitches = df["pitch"] if len(df) else [example["pitch"]]
    upper = example["pitch"] >= (min(pitches) + max(pitches)) / 2
    fig.add_annotation(x=example["onset_q"] + example["duration_q"] / 2, y=example["pitch"], text="frozen",
                       showarrow=True, arrowhead=2, ax=0, ay=30 if upper else -30, font={"size": 10},
                       bgcolor="white")
    fig.update_layout(width=420, showlegend=False, title={"font": {"size": 11}, "x": 0.02, "y": 0.97,
                                                          "yanchor": "top"},
                      coloraxis_showscale=False, margin={"l": 50, "r": 10, "t": 55, "b": 40})
    return fig


def frozen_examples_caption(analysis: Mapping[str, Any]) -> str:
    """What the marks of :func:`frozen_example_figure` mean (the rolls have no legend of their own)."""
    return ("Each roll: the notes around one frozen note (the arrow). Colour: the rank of a note's masker "
            "score in its piece, dark purple low to yellow high. Red outline: picked for masking at "
            f"{float(analysis.get('ratio', 0.15)):.0%} (a short picked note is all outline: solid red). "
            "Grey hatched: frozen, never masked.")


def analysis_figures(analysis: Mapping[str, Any]) -> dict[str, Any]:
    """Every masker-analysis figure by name (empty when there is no analysis): ``spearman``,
    ``by_class``, ``freeze_history`` (when there are snapshots), ``example_<i>``."""
    if not analysis:
        return {}
    figs: dict[str, Any] = {"spearman": spearman_figure(analysis),
                            "by_class": masker_class_figure(analysis.get("by_class", {}))}
    if analysis.get("freeze_history"):
        figs["freeze_history"] = freeze_history_figure(analysis["freeze_history"])
    for i, ex in enumerate(analysis.get("examples", [])):
        figs[f"example_{i + 1}"] = frozen_example_figure(ex)
    return figs


def save_figures(figs: Mapping[str, Any], folder: Path) -> dict[str, list[Path]]:
    """Each figure as ``folder/<name>.png`` when kaleido is installed (all PNGs in one kaleido
    session, so the browser starts once), else ``<name>.html`` (plotly.js from the CDN, so the
    file stays small); always ``<name>.json`` (the figure, for the app). -> {name: paths}."""
    import plotly.io as pio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(figs)
    try:
        import kaleido  # noqa: F401

        pio.write_images([figs[n] for n in names], [str(folder / f"{n}.png") for n in names], scale=1)
        ext = ".png"
    except Exception:  # kaleido missing or unable to start a browser
        for n in names:
            figs[n].write_html(str(folder / f"{n}.html"), include_plotlyjs="cdn", full_html=True)
        ext = ".html"
    for n in names:
        atomic_write_text(folder / f"{n}.json", figs[n].to_json())
    return {n: [folder / f"{n}{ext}", folder / f"{n}.json"] for n in names}
