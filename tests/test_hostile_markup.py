"""Hostile names never become live markup (issue 28, item 3).

A name a stranger controls (a model or run folder, an uploaded file's name, a MIDI track name,
a class or strategy name in a config.json, the text of an error that quotes one) is planted
where the app shows it, and the output is checked for live markup:

- the downloadable HTML report, parsed with ``html.parser``: only the report's own tags, no
  ``on*`` attribute, the names as text;
- Streamlit pages (``AppTest``): every Markdown text holds the name escaped (``markup.md_escape``)
  and nothing that renders as an image, a link or an HTML tag once the escaped characters
  are taken out.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from app_helpers import make_model, page, run_report, texts
from streamlit.testing.v1 import AppTest

from smu_explain import appstate as A
from smu_explain import readable
from smu_explain.markup import html_escape, md_escape
from smu_explain.report import ReportSection, build_report

IMG = "<img src=x onerror=alert(1)>"
BEACON = "![x](http://host/beacon.png)"
JS_LINK = "[link](javascript:alert(1))"
HOSTILE = [IMG, BEACON, JS_LINK, "<script>alert(1)</script>", "a\n# heading\n- item", "**b** `c` _d_ ~~e~~ $x$"]
# folder names hold no "/": the same kinds of markup without it
FOLDER_NAMES = [IMG, "![x](beacon.png)", JS_LINK]

REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "thead", "tbody",
               "tr", "th", "td", "caption"}


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("SMU_STUDY_RESULTS", str(tmp_path / "no_study" / "results.json"))


# ----------------------------------------------------------------------------- checkers

class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_data(self, data):
        self.text.append(data)


def assert_inert_html(doc: str, names=HOSTILE) -> str:
    """No tag but the report's own, no ``on*`` attribute; returns the document's text."""
    p = _Tags()
    p.feed(doc)
    p.close()
    foreign = sorted({t for t, _ in p.tags} - REPORT_TAGS)
    assert not foreign, f"live tags from user text: {foreign}"
    handlers = [(t, a) for t, attrs in p.tags for a, _ in attrs if a.lower().startswith("on")]
    assert not handlers, handlers
    text = "".join(p.text)
    for name in names:  # the names are there, as text
        assert name.split("\n")[0] in text
    return text


def live_markdown(text: str) -> list[str]:
    """What renders as an image, a link (inline, reference or autolink) or an HTML tag in ``text``
    (Markdown), once the backslash-escaped characters (plain text in CommonMark) are taken out."""
    plain = re.sub(r"\\.", "", text)
    return re.findall(r"!\[|\]\(|\]\[|^\s*\[[^\]]*\]:|<[A-Za-z/!?]", plain, flags=re.M)


def assert_inert_markdown(at, *names: str) -> str:
    """Every Markdown text of an AppTest run is inert, and each name is shown (escaped)."""
    shown = texts(at) + "\n" + "\n".join(str(e.value) for e in at.subheader)
    assert not live_markdown(shown), (live_markdown(shown), shown)
    for name in names:
        assert md_escape(name) in shown, (name, shown)
    return shown


# ----------------------------------------------------------------------------- the escapers

@pytest.mark.parametrize("name", HOSTILE)
def test_md_escape_leaves_no_live_markdown(name):
    out = md_escape(name)
    assert not live_markdown(out)
    assert "\n" not in out
    # what a reader sees (escapes resolved) is the name itself, line breaks as spaces
    assert re.sub(r"\\(.)", r"\1", out) == re.sub(r"[\r\n]+", " ", name)


@pytest.mark.parametrize("name", ["- a", "+ a", "1. a", "12) a", "= a", "# a", "> a"])
def test_md_escape_block_starts(name):
    out = md_escape(name)
    assert out.startswith("\\") or re.match(r"\d+\\[.)]", out), out


def test_md_escape_keeps_ordinary_names():
    for name in ("model-one", "demo adversarial", "tiny (copy)", "Für Elise.mid", "run 2026-12-07"):
        assert md_escape(name) == name
    assert md_escape("a_b") == "a\\_b"


def test_html_escape():
    assert html_escape(IMG) == "&lt;img src=x onerror=alert(1)&gt;"
    assert html_escape('"\'&') == "&quot;&#x27;&amp;"


# ----------------------------------------------------------------------------- the HTML report

def test_report_tables_headers_index_and_cells_are_escaped():
    """Model names as the metrics table's column headers (a Styler: ``to_html`` escapes nothing),
    metric names as its index, a DataFrame with hostile labels, index and column names, cells."""
    metrics = {IMG: {"recovery pitch (piece)": 0.5, BEACON: 0.25}, JS_LINK: {"recovery pitch (piece)": 0.75}}
    styled = readable.metrics_display(readable.metrics_comparison(metrics), clear={"recovery pitch (piece)"})
    frame = pd.DataFrame({IMG: [1.0, 2.0], "file": [BEACON, "<script>alert(1)</script>"]},
                         index=pd.Index([JS_LINK, "b"], name=IMG))
    frame.columns.name = "<script>alert(1)</script>"
    plain_styler = frame.style.set_caption(IMG)
    doc = build_report(IMG, [ReportSection(BEACON, f"{JS_LINK}\n\n{IMG}", tables=[styled, frame, plain_styler])],
                       subtitle=IMG, intro="<script>alert(1)</script>")
    text = assert_inert_html(doc, [IMG, BEACON, JS_LINK, "<script>alert(1)</script>"])
    assert text.count(IMG) >= 6  # title x2, subtitle, text, two column headers, index names, a caption
    # the Styler keeps its formats and colours
    assert "+25.0 points" in text and "background-color: #d9f2d9" in doc


def test_report_figure_json_cannot_close_its_script():
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[1], y=[1], name="</script>" + IMG), layout={"title": {"text": "</script>" + IMG}})
    doc = build_report("t", [ReportSection("h", figures=[fig])])
    body = doc.split("<h2>h</h2>", 1)[1]
    assert "</script><img" not in body
    assert body.count("</script>") == body.count("<script")


# ----------------------------------------------------------------------------- the pages

@pytest.fixture(scope="module")
def hostile_models(tmp_path_factory):
    """Two tiny models in folders named like markup; one says it was trained with a strategy
    whose name is markup (its masker head counts as untrained: the page warns, naming both)."""
    d = tmp_path_factory.mktemp("models")
    return (make_model(d / FOLDER_NAMES[0], seed=1, strategy=BEACON),
            make_model(d / FOLDER_NAMES[2], seed=2, strategy="adversarial"))


def test_explore_track_and_file_names(midi_bytes):
    """An upload whose file name and track name are markup: the earlier-upload caption and the
    note inspector show them as text."""
    data = midi_bytes(tracks=[{"notes": [(i * 240, 240, 60 + i, 80) for i in range(8)], "name": BEACON}])
    name = JS_LINK + IMG + ".mid"
    at = AppTest.from_file(page("explore.py"), default_timeout=60)
    at.session_state[A.K_PIECE] = (name, data)
    at.session_state[A.K_MODEL_A] = "/nonexistent/" + BEACON
    at.run()
    assert not at.exception, at.exception
    shown = assert_inert_markdown(at, name, BEACON)
    assert f"track {md_escape(BEACON)}" in shown


def test_explore_model_folder_strategy_and_errors(hostile_models):
    at = AppTest.from_file(page("explore.py"), default_timeout=60)
    at.session_state[A.K_MODEL_A] = str(hostile_models[0])
    at.run()
    assert not at.exception, at.exception
    assert_inert_markdown(at, FOLDER_NAMES[0], BEACON)  # the untrained-masker warning
    # a typed folder that does not load: the error quotes the path, escaped
    at = AppTest.from_file(page("explore.py"), default_timeout=60)
    at.session_state[A.K_MODEL_A] = str(hostile_models[0].parent / FOLDER_NAMES[1])
    at.run()
    assert not at.exception, at.exception
    assert_inert_markdown(at, FOLDER_NAMES[1])
    assert any("Cannot load the model" in e.value for e in at.error)


def test_empty_and_unreadable_upload_names(midi_bytes):
    for data in (b"not music at all", midi_bytes(notes=[])):
        at = AppTest.from_file(page("explore.py"), default_timeout=60)
        at.session_state[A.K_PIECE] = (IMG + BEACON + ".mid", data)
        at.run()
        assert not at.exception, at.exception
        assert at.error
        assert_inert_markdown(at, IMG + BEACON + ".mid")


def test_compare_and_report_with_hostile_model_names(hostile_models, monkeypatch):
    """Folder names become the Compare page's table headers, captions and bold names, and the
    report's table headers (Styler) and contents list."""
    cmp = AppTest.from_file(page("compare.py"), default_timeout=90)
    cmp.session_state[A.K_MODEL_A] = str(hostile_models[0])
    cmp.session_state[A.K_MODEL_B] = str(hostile_models[1])
    cmp.run()
    assert not cmp.exception, cmp.exception
    assert_inert_markdown(cmp, FOLDER_NAMES[0], FOLDER_NAMES[2])
    headers = list(cmp.table[0].value.columns)
    assert headers == [md_escape(FOLDER_NAMES[0]), md_escape(FOLDER_NAMES[2]), "difference"]
    assert not live_markdown(" ".join(headers))

    rep, made = run_report(monkeypatch, {"smu_compare": cmp.session_state["smu_compare"]}, timeout=90)
    assert not rep.exception, rep.exception
    assert_inert_markdown(rep)
    [doc] = made
    # the piano-roll figure's script is the report's own; the rest is checked as HTML
    tables = re.sub(r"<script.*?</script>", "", doc, flags=re.S)
    tables = re.sub(r"<div.*?</div>", "", tables, flags=re.S)
    assert_inert_html(tables, [FOLDER_NAMES[0], FOLDER_NAMES[2]])
