"""HTML report: self-contained (plotly.js inline once, no external resources), escaped text, tables."""

import re

import pandas as pd
import plotly.graph_objects as go
import pytest

from smu_explain import plots
from smu_explain.report import ReportSection, build_report


def test_report_is_self_contained_with_figures_and_tables():
    f1 = go.Figure(go.Bar(x=["pitch"], y=[0.5], name="adv"))
    f2 = plots.accuracy_bars({"a": {"pitch": 0.4}, "b": {"pitch": 0.6}})
    table = plots.metrics_comparison({"a": {"pitch acc": 0.4}, "b": {"pitch acc": 0.6}})
    html = build_report("Compare <adv> & random", [
        ReportSection("Recovery", "Same seeded masks.\n\nSecond paragraph.", figures=[f1, f2], tables=[table]),
        ReportSection("More", figures=[f2]),
    ], subtitle="piece: bach.mid")
    assert html.startswith("<!DOCTYPE html>")
    # plotly.js embedded exactly once, three figures drawn
    assert html.count("Plotly.newPlot") == 3
    assert len(re.findall(r"plotly\.js v\d", html)) == 1
    assert len(html) > 3_000_000 // 2  # the library itself is inline
    # no external resource of any kind
    assert not re.search(r'<script[^>]+src=', html)
    assert not re.search(r'<link[^>]+href=["\']https?:', html)
    # (plotly.js holds a default topojson URL for geo maps; no map is drawn, nothing is fetched)
    # escaped title, both paragraphs, the table with its difference column
    assert "Compare &lt;adv&gt; &amp; random" in html and "<adv>" not in html
    assert "<p>Second paragraph.</p>" in html
    assert "difference" in html and "pitch acc" in html


def test_report_accepts_styler_and_rejects_other_tables():
    df = pd.DataFrame({"x": [1.0, -1.0]})
    styled = df.style.map(lambda v: "background: #d9f2d9" if v > 0 else "")
    html = build_report("t", [ReportSection("s", tables=[styled])])
    assert "#d9f2d9" in html
    with pytest.raises(TypeError):
        build_report("t", [ReportSection("s", tables=[[1, 2]])])


def test_report_without_figures_has_no_plotly():
    html = build_report("t", [ReportSection("only text", "hello")])
    assert "Plotly" not in html and "<h2>only text</h2>" in html
