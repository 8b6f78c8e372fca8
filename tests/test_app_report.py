"""Report page (AppTest): asks for a comparison first, then offers the HTML download."""

import re

import pytest
from app_helpers import make_model, page, run_report, texts
from streamlit.testing.v1 import AppTest

from smu_explain import appstate as A


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("SMU_STUDY_RESULTS", str(tmp_path / "no_study" / "results.json"))


def test_no_comparison_yet():
    at = AppTest.from_file(page("report.py"), default_timeout=60).run()
    assert not at.exception
    assert any("No comparison yet" in i.value for i in at.info)
    assert len(at.get("download_button")) == 0


def test_download_after_compare(tmp_path, monkeypatch):
    """The report opens with a summary (the verdicts), then the verdicts in full and every warning
    the Compare page showed; its recovery figure carries the no-model rules' marks."""

    a = make_model(tmp_path / "adv", seed=1, strategy="adversarial")
    b = make_model(tmp_path / "rnd", seed=2, strategy="random")
    cmp = AppTest.from_file(page("compare.py"), default_timeout=60)
    cmp.session_state[A.K_MODEL_A] = str(a)
    cmp.session_state[A.K_MODEL_B] = str(b)
    cmp.run()
    assert not cmp.exception
    rep, made = run_report(monkeypatch, {"smu_compare": cmp.session_state["smu_compare"]})
    assert not rep.exception, rep.exception
    assert rep.text_input(key="report_title").value == "adv vs rnd"
    t = texts(rep)
    assert [h.value for h in rep.subheader][0] == "Summary"
    assert re.search(r"- On [^\n]+: under random masks (no clear difference|\w+ recovers more than)", t)
    assert "under the masker's picks" in t
    assert any("masker head was never trained" in w.value for w in rep.warning)
    assert ("**Contents**\n\n- Verdict: who recovers more\n- Warnings about these models\n"
            "- What each masker picks") in t
    assert "Bias view" in t and "Metrics" in t and "- Metrics\n- Words used in this report" in t
    [btn] = rep.get("download_button")
    assert "Download the HTML report" in btn.proto.label
    [doc] = made
    # the summary comes first, then the verdicts, then the warnings, then the figures
    i_sum, i_ver, i_warn, i_fig = (doc.index(x) for x in ('<div class="summary">', "<h2>Verdict: who recovers more",
                                                          "<h2>Warnings about these models", "<h2>What each masker"))
    assert i_sum < i_ver < i_warn < i_fig
    assert "Under random masks: " in doc and "Under the masker&#x27;s picks (the notes adv&#x27;s masker" in doc
    assert "rnd was pre-trained with the random strategy: its masker head was never trained" in doc
    assert "with the no-model rules" in doc and "Marks = rules that use no model" in doc


def test_why_views_alone_make_a_report():
    """The Why page's last views are exported even without a comparison."""
    import plotly.graph_objects as go

    rep = AppTest.from_file(page("report.py"), default_timeout=60)
    rep.session_state["smu_why"] = {
        "piece": "x.mid",
        "masker": {"text": "Note 3: masker score 0.7", "figures": [go.Figure()]},
    }
    rep.run()
    assert not rep.exception, rep.exception
    assert "Why the masker scores a note as it does" in texts(rep)
    assert not any("No comparison yet" in i.value for i in rep.info)
    [btn] = rep.get("download_button")
    assert "Download the HTML report" in btn.proto.label


def test_study_section_in_the_report(tiny_study, monkeypatch):
    """With the study's results.json present, the export includes the Study sections."""
    from smu_explain.report import STUDY_HEADING, build_report, study_sections
    from smu_explain.study import read_json

    path = tiny_study["paths"].results_dir / "results.json"
    monkeypatch.setenv("SMU_STUDY_RESULTS", str(path))
    rep = AppTest.from_file(page("report.py"), default_timeout=60).run()
    assert not rep.exception, rep.exception
    assert rep.checkbox(key="report_study").value is True
    t = texts(rep)
    assert STUDY_HEADING in t and "Study: what the masker picks and freezes" in t
    [btn] = rep.get("download_button")
    # the HTML itself: the summary lines, the accuracy table, every masker figure
    results = read_json(path)
    secs = study_sections(results)
    html = build_report("study", secs)
    for line in results["summary"]:
        assert line.replace("'", "&#x27;") in html
    from smu_explain.study import frozen_examples_caption

    assert frozen_examples_caption(results["analysis"]).replace("'", "&#x27;") in html  # the rolls' marks explained
    n_figs = sum(len(s.figures) for s in secs)
    assert n_figs == 1 + 3 + len(results["analysis"]["examples"])
    assert html.count('class="plotly-graph-div"') == n_figs
    assert study_sections({}) == []


def test_what_it_picks_goes_into_the_report(tmp_path, monkeypatch):
    """Explore's "What it picks" (the piece's sentence and table) alone makes a report; text from
    the views (a folder's path, the model's name) is escaped in the HTML."""
    import smu_explain.report as R

    a = make_model(tmp_path / "adv", seed=1)
    exp = AppTest.from_file(page("explore.py"), default_timeout=60)
    exp.session_state[A.K_MODEL_A] = str(a)
    exp.run()
    assert not exp.exception, exp.exception
    views = dict(exp.session_state["smu_picks"])
    sentence = views["piece"]["result"]["sentence"]
    views["folder"] = {**views["piece"], "where": "the folder <script>alert(1)</script>", "model": "m & <b>"}
    rep, made = run_report(monkeypatch, {"smu_picks": views})
    assert not rep.exception, rep.exception
    assert not any("No comparison yet" in i.value for i in rep.info)
    assert rep.text_input(key="report_title").value == "What the masker picks"
    t = texts(rep)
    assert "- What the masker picks in the piece " in t and "- What the masker picks in the folder" in t
    [doc] = made
    assert R.html_escape(sentence) in doc
    assert "score vs same duration x register" in doc and "<td>chord or non-chord tone</td>" in doc
    assert R.PICKS_UNTRAINED in doc  # the tiny model's masker head was never trained
    assert "<script>alert(1)" not in doc and "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    assert "m &amp; &lt;b&gt;" in doc
    [btn] = rep.get("download_button")
    assert "Download the HTML report" in btn.proto.label
