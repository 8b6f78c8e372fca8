"""HTML report: self-contained (plotly.js inline once, no external resources), escaped text, tables."""

import re

import pandas as pd
import plotly.graph_objects as go
import pytest

from smu_explain import charts, readable
from smu_explain.report import ReportSection, build_report


def test_report_is_self_contained_with_figures_and_tables():
    f1 = go.Figure(go.Bar(x=["pitch"], y=[0.5], name="adv"))
    f2 = charts.accuracy_bars({"a": {"pitch": 0.4}, "b": {"pitch": 0.6}})
    table = readable.metrics_comparison({"a": {"pitch acc": 0.4}, "b": {"pitch acc": 0.6}})
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


def test_report_tables_give_each_float_column_one_format():
    """'0' beside '0.038' and '2.57' beside '2.367' (Why's loss table) read as different precisions."""
    import pandas as pd

    html = build_report("t", [ReportSection("s", tables=[pd.DataFrame(
        {"note": [3, 4, 5], "bar loss": [0.0, 0.038, float("nan")], "loss": [2.57, 2.367, 3.91]})])])
    for cell in ("0.000", "0.038", "—", "2.570", "2.367", "3.910"):
        assert f"<td>{cell}</td>" in html, cell
    assert "<td>3</td>" in html  # whole numbers stay whole


def test_report_without_figures_has_no_plotly():
    html = build_report("t", [ReportSection("only text", "hello")])
    assert "Plotly" not in html and "<h2>only text</h2>" in html


def _comp(names=("adv", "rnd")):
    """A comparison as the Compare page stores it, with synthetic paired tables."""
    import numpy as np

    from smu_explain import verdict as V

    rng = np.random.default_rng(0)
    n = 300
    a = pd.DataFrame({"correct_pitch": rng.random(n) < 0.3, "picked": np.arange(n) < 40})
    b = pd.DataFrame({"correct_pitch": rng.random(n) < 0.7, "picked": False})
    vs = V.both_verdicts(a, b, list(names), [True, False], n_boot=200)
    facts = [dict(name=names[0], strategy="adversarial", steps=100, params=10**6, layers=2, width=64, train_files=3),
             dict(name=names[1], strategy="random", steps=200, params=10**6, layers=2, width=64, train_files=3)]
    study = {"params": 896384, "layers": 4, "width": 128, "steps": 3000, "seeds": 2, "tasks": ["melody"],
             "mean_diff": 0.004, "p": 0.72, "n_pairs": 16, "significant": False}
    return {"models": dict(zip(names, ("/a", "/b"), strict=False)), "piece": "x.mid", "verdicts": vs, "facts": facts,
            "study_facts": study, "warnings": [f"{names[1]} was pre-trained with the random strategy: its masker "
                                               "head was never trained"]}


def test_report_opens_with_summary_verdicts_and_warnings():
    from smu_explain.report import summary_lines, verdict_sections

    comp = _comp()
    summary = summary_lines(comp)
    assert summary[0].startswith("On x.mid: under random masks rnd recovers more than adv by ")
    assert "under the masker's picks" in summary[0]
    assert "not measurably: +0.4 points, p = 0.72" in summary[1] and "1 warning" in summary[2]
    secs = verdict_sections(comp)
    assert [s.heading for s in secs] == ["Verdict: who recovers more", "Warnings about these models"]
    assert "0.9 M-parameter encoders" in secs[0].text and "home ground" in secs[0].text
    html = build_report("t", secs + [ReportSection("Figures")], summary=summary)
    assert html.index('class="summary"') < html.index("<h2>Verdict") < html.index("<h2>Warnings") < html.index(
        "<h2>Figures")
    assert '<p class="warn">rnd was pre-trained with the random strategy' in html


def test_summary_and_verdicts_escape_hostile_model_names():
    from smu_explain.markup import md_escape
    from smu_explain.report import md_unescape, summary_lines, verdict_sections

    bad = ("<img src=x onerror=alert(1)>", "[x](javascript:alert(1))*_")
    comp = _comp(bad)
    comp["warnings"] = [f"{md_escape(bad[1])} was pre-trained with **the** random strategy"]
    html = build_report("t", verdict_sections(comp), summary=summary_lines(comp))
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "[x](javascript:alert(1))*_ was pre-trained with the random strategy" in html  # as the reader saw it
    md = "\n".join(summary_lines(comp, esc=md_escape))
    assert "<img" not in md.replace("\\<img", "") and "\\[x\\](javascript:alert(1))\\*\\_" in md
    assert md_unescape(md_escape(bad[1])) == bad[1]


def test_glossary_defines_every_term_for_the_report_and_the_first_screen():
    from smu_explain.report import GLOSSARY_HEADING, glossary_markdown, glossary_section

    md = glossary_markdown()
    sec = glossary_section()
    for term in ("bar", "position", "pitch", "duration", "masker", "picked", "frozen", "no-model rule", "IQR",
                 "recovery accuracy", "no clear difference"):
        assert f"**{term}" in md or term in md, term
        assert term in sec.text, term
    html = build_report("t", [sec])
    assert f"<h2>{GLOSSARY_HEADING}</h2>" in html and "<p>IQR: interquartile range" in html


def test_metrics_difference_is_coloured_only_where_higher_is_better():
    """Issue 27.8: green / red on the recovery rows only; a masker-score difference stays plain."""
    import pandas as pd

    from smu_explain import readable

    table = pd.DataFrame({"A": [0.5, 0.30, 10.0], "B": [0.6, 0.45, 12.0]},
                         index=["recovery pitch (piece)", "masker score mean", "frozen notes"])
    table["difference"] = table["B"] - table["A"]
    html = readable.metrics_display(table, clear=set(table.index)).to_html()
    assert html.count("#d9f2d9") == 1 and "#f8d7d7" not in html


def test_metrics_difference_is_coloured_only_where_the_verdict_is_clear():
    """A colour is a claim: the difference is coloured only on the rows whose verdict interval
    excludes 0 (clear_rows of the comparison), never from the sign alone (audit F12)."""
    import numpy as np

    from smu_explain import readable
    from smu_explain import verdict as V

    rng = np.random.default_rng(0)
    n = 400
    a = pd.DataFrame({"correct_pitch": (rng.random(n) < 0.3).astype(float),
                      "correct_bar": (rng.random(n) < 0.9).astype(float), "picked": False})
    b = a.copy()
    b["correct_pitch"] = (rng.random(n) < 0.8).astype(float)  # clearly ahead on pitch
    b.loc[:0, "correct_bar"] = 1.0 - b.loc[:0, "correct_bar"]  # one note flipped: no clear difference on bar
    comp = {"verdicts": V.both_verdicts(a, b, ["A", "B"], [False, False], n_boot=200)}
    assert comp["verdicts"]["random"]["attributes"]["bar"]["winner"] is None
    assert readable.clear_rows(comp) >= {"recovery pitch (piece)"}
    assert "recovery bar (piece)" not in readable.clear_rows(comp)
    table = readable.metrics_comparison({m: {f"recovery {k} (piece)": float(t[f"correct_{k}"].mean())
                                             for k in ("pitch", "bar")} for m, t in (("A", a), ("B", b))})
    html = readable.metrics_display(table, clear=readable.clear_rows(comp)).to_html()
    assert html.count("background-color: #") == 1  # pitch only, though bar's difference is not 0 either
    assert "background-color: #" not in readable.metrics_display(table).to_html()
    assert readable.clear_rows({}) == set()


def test_summary_names_no_winner_from_too_few_notes():
    """Three notes, B right on all and A on none: the summary says there are too few to tell, with
    no interval and no winner (audit F4)."""
    from smu_explain import verdict as V
    from smu_explain.report import summary_lines

    a = pd.DataFrame({"correct_pitch": [0.0] * 3, "picked": [False] * 3})
    b = pd.DataFrame({"correct_pitch": [1.0] * 3, "picked": [False] * 3})
    [line] = summary_lines({"piece": "x.mid", "verdicts": V.both_verdicts(a, b, ["A", "B"], [False, False])})
    assert line == "On x.mid: under random masks no verdict: too few notes to tell (+100.0 points over 3 notes)."


def test_summary_prints_the_winners_lead_with_the_verdicts_sign():
    """A recovers more than B: the summary's interval is A's lead (both ends positive), as in the
    verdict sentence, never B minus A after 'A recovers more' (audit F14)."""
    import re

    import numpy as np

    from smu_explain import verdict as V
    from smu_explain.report import summary_lines

    rng = np.random.default_rng(0)
    a = pd.DataFrame({"correct_pitch": (rng.random(400) < 0.9).astype(float), "picked": False})
    b = pd.DataFrame({"correct_pitch": (rng.random(400) < 0.3).astype(float), "picked": False})
    vs = V.both_verdicts(a, b, ["A", "B"], [False, False], n_boot=200)
    [line] = summary_lines({"piece": "x.mid", "verdicts": vs})
    lo, hi = map(float, re.search(r"interval (\S+) to ([^)]+)\)", line).groups())
    assert "A recovers more than B" in line and 0 < lo <= hi
    assert f"interval {lo:.1f} to {hi:.1f}" in V.verdict_sentence(vs["random"])
