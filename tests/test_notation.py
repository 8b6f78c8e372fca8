"""The score view (smu_explain/notation.py) and the Score page (app_pages/score.py)."""

import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from app_helpers import ROOT, make_model, page, texts
from conftest import midi_bytes

from smu_explain import notation as N
from smu_explain.readable import pitch_name
from smu_explain.reading import read_piece

TPQ = 480
Q = TPQ  # one quarter in ticks


def piece_of(notes, ts=((0, 4, 4),)):
    return read_piece(midi_bytes(notes, time_signatures=ts, tpq=TPQ), name="t")


def overlay(piece, picked=(), frozen=()):
    t = piece.notes_table()
    t["score"] = np.linspace(0, 1, len(t))
    t["picked"] = np.isin(np.arange(len(t)), list(picked))
    t["frozen"] = np.isin(np.arange(len(t)), list(frozen))
    return t


def notes_of(xml: str):
    return ET.fromstring(xml.split("\n", 1)[1]).iter("note")


def by_id(xml: str) -> dict:
    return {n.get("id"): n for n in notes_of(xml) if n.get("id")}


def check_measures_add_up(xml: str, piece, first: int):
    """Every voice of every measure fills the bar exactly (rests, notes, forwards; backups between voices)."""
    root = ET.fromstring(xml.split("\n", 1)[1])
    for m in root.iter("measure"):
        bar = int(m.get("number")) - 1
        L = round(piece.bar_lengths_q[bar] * N.GRID_PER_QUARTER)
        t = 0
        for el in m:
            if el.tag == "backup":
                assert t == L, (bar, t, L)
                t -= int(el.findtext("duration"))
                assert t == 0
            elif el.tag == "forward" or (el.tag == "note" and el.find("chord") is None):
                t += int(el.findtext("duration"))
        assert t == L, (bar, t, L)


def test_one_note_per_piece_note_coloured_by_state():
    notes = [(i * Q, Q, 60 + (i % 12)) for i in range(16)] + [(i * 2 * Q, 2 * Q, 40 + i % 5) for i in range(8)]
    p = piece_of(notes)
    over = overlay(p, picked=[1, 5], frozen=[2, 7, 20])
    xml, ids, idx, quant = N.build_musicxml(p, over, 0, 4)
    assert list(idx) == list(range(len(p)))
    els = by_id(xml)
    starts = [k for k in els if "-" not in k]
    assert sorted(starts) == sorted(N.note_id(i) for i in range(len(p)))  # one <note> per piece note
    for i in range(len(p)):
        el = els[N.note_id(i)]
        state = "frozen" if i in (2, 7, 20) else "picked" if i in (1, 5) else "other"
        assert el.get("color") == N.COLORS[state], i
        assert (el.find("notehead") is not None) == (state == "frozen")
        step = el.find("pitch/step").text + (el.findtext("pitch/alter") or "")
        midi = p.pitch[i]
        assert N.SPELLING[midi % 12][0] == step[0]
        assert el.findtext("staff") == ("1" if midi >= 60 else "2")
    assert quant == {"onsets_moved": 0, "ends_moved": 0, "lengthened": 0, "cut_at_range_end": 0}
    check_measures_add_up(xml, p, 0)


def test_rests_ties_and_accidentals():
    # bar 1: C4 at beat 1 (a quarter), rest, F#4 from beat 4 for two quarters (tied over the bar line)
    # bar 2: F#4 again after the tie: no sharp on the continuation, a sharp on the new note
    p = piece_of([(0, Q, 60), (3 * Q, 2 * Q, 66), (6 * Q, Q, 66)])
    xml, ids, _, _ = N.build_musicxml(p, overlay(p, picked=[1]), 0, 2)
    assert ids[1] == ["n1", "n1-1"]
    els = by_id(xml)
    assert [t.get("type") for t in els["n1"].findall("tie")] == ["start"]
    assert [t.get("type") for t in els["n1-1"].findall("tie")] == ["stop"]
    assert els["n1"].get("color") == els["n1-1"].get("color") == N.COLORS["picked"]
    assert els["n1"].findtext("accidental") == "sharp" and els["n1-1"].find("accidental") is None
    assert els["n2"].findtext("accidental") == "sharp"  # new bar: the sharp again
    rests = [n for n in notes_of(xml) if n.find("rest") is not None]
    assert rests and all(r.get("color") is None for r in rests)
    # an empty bass staff: a whole-bar rest in each bar
    assert sum(r.find("rest").get("measure") == "yes" for r in rests) == 2
    check_measures_add_up(xml, p, 0)
    # a length no single value writes (5 sixteenths) is two tied values
    p = piece_of([(0, 5 * Q // 4, 72)])
    xml, ids, _, _ = N.build_musicxml(p, None, 0, 1)
    assert len(ids[0]) == 2 and [by_id(xml)[i].findtext("type") for i in ids[0]] == ["quarter", "16th"]


def test_bar_range_clips_and_only_those_bars_are_built():
    p = piece_of([(i * Q, Q, 60 + i % 7) for i in range(80)])  # 20 bars of 4/4
    xml, ids, idx, _ = N.build_musicxml(p, None, 4, 8)
    assert set(p.bar[idx]) == {4, 5, 6, 7} and len(idx) == 16
    assert [m.get("number") for m in ET.fromstring(xml.split("\n", 1)[1]).iter("measure")] == ["5", "6", "7", "8"]
    assert N.clip_bar_range(p, 18, 40) == (18, 20)
    assert N.clip_bar_range(p, -3, 0) == (0, 1)
    assert N.bar_range_around(p, None) == (0, 8)
    assert N.bar_range_around(p, 4 * 10) == (9, 17)  # the note's bar second
    assert N.bar_range_around(p, 79) == (12, 20)
    # a note sounding past the range is cut at its end, and said so
    p = piece_of([(0, 12 * Q, 60), (8 * Q, Q, 72)])  # 3 bars
    xml, ids, _, quant = N.build_musicxml(p, None, 0, 2)
    assert quant["cut_at_range_end"] == 1 and len(ids[0]) == 2
    assert "cut at the end of bar 2" in N.quantise_words(quant, 1, 0, 2)


@pytest.mark.parametrize("ts,bar_q", [((5, 8), 2.5), ((3, 4), 3.0)])
def test_odd_metres(ts, bar_q):
    n = int(bar_q * 2)  # eighth notes
    notes = [(i * Q // 2, Q // 2, 62 + i % 5) for i in range(3 * n)] + [(0, int(bar_q * Q), 48)]
    p = piece_of(notes, ts=((0, *ts),))
    assert p.bar_lengths_q[0] == bar_q
    xml, ids, idx, _ = N.build_musicxml(p, overlay(p, picked=[0]), 0, 3)
    root = ET.fromstring(xml.split("\n", 1)[1])
    assert (root.findtext(".//time/beats"), root.findtext(".//time/beat-type")) == (str(ts[0]), str(ts[1]))
    assert len(root.findall(".//time")) == 1  # written once
    assert len(idx) == len(p) and all(ids[i][0] == N.note_id(i) for i in range(len(p)))
    # the whole-bar bass note: one value (a dotted half) in 3/4, a half tied to an eighth in 5/8
    assert [by_id(xml)[k].findtext("type") for k in ids[0]] == (["half", "eighth"] if ts == (5, 8) else ["half"])
    check_measures_add_up(xml, p, 0)
    view = N.score_view(p, overlay(p, picked=[0]), 0, 3)
    assert f'id="{N.note_id(0)}"' in view.svg


def test_quantisation_is_stated_and_counted():
    # an onset 1/32 late, a triplet eighth, a 64th note
    p = piece_of([(Q // 8, Q, 60), (Q + Q // 3, Q // 3, 64), (3 * Q, Q // 16, 67)])
    xml, ids, _, quant = N.build_musicxml(p, None, 0, 1)
    assert quant["onsets_moved"] == 2 and quant["lengthened"] == 1
    els = by_id(xml)
    assert els["n2"].findtext("type") == "16th"  # shortest value: a 16th
    words = N.quantise_words(quant, 3, 0, 1)
    assert "nearest 16th note" in words and "2 onsets" in words and "shorter than a 16th" in words
    check_measures_add_up(xml, p, 0)


def test_musicxml_input():
    import music21

    s = music21.stream.Stream()
    s.append(music21.meter.TimeSignature("3/4"))
    for name, ql in [("C4", 1.0), ("E4", 0.5), ("G4", 0.5), ("C5", 1.0), ("B3", 2.0), ("D4", 1.0)]:
        s.append(music21.note.Note(name, quarterLength=ql))
    path = music21.converter.subConverters.ConverterMusicXML().write(s, "musicxml")
    p = read_piece(path, name="score")
    assert p.time_signatures[0][1:] == (3, 4)
    view = N.score_view(p, overlay(p, picked=[3], frozen=[0]), 0, 2, selected=3)
    els = by_id(view.musicxml)
    assert {k for k in els if "-" not in k} == {N.note_id(i) for i in range(len(p))}
    assert els["n3"].get("color") == N.COLORS["picked"] and els["n0"].get("color") == N.COLORS["frozen"]
    assert [els[N.note_id(i)].findtext("type") for i in range(len(p))] == [
        "quarter", "eighth", "eighth", "quarter", "half", "quarter"]
    assert view.quantised["onsets_moved"] == view.quantised["ends_moved"] == 0
    # Verovio keeps the ids and draws the colours; the selected note gets its ring
    assert f'id="n3" class="note" color="{N.COLORS["picked"]}"' in view.svg
    assert 'g[id="n3"] .notehead use' in view.svg


def test_beams_group_short_values_within_a_beat():
    # 4/4: four 16ths (beat 1), an 8th + an 8th rest (beat 2), two 8ths (beat 3), a quarter
    p = piece_of([(i * Q // 4, Q // 4, 72) for i in range(4)] + [(Q, Q // 2, 74), (2 * Q, Q // 2, 76),
                                                                  (2 * Q + Q // 2, Q // 2, 77), (3 * Q, Q, 79)])
    xml, *_ = N.build_musicxml(p, None, 0, 1)
    els = by_id(xml)
    assert [els[N.note_id(i)].findtext("beam") for i in range(8)] == [
        "begin", "continue", "continue", "end", None, "begin", "end", None]
    # 6/8: beamed by dotted quarters
    p = piece_of([(i * Q // 2, Q // 2, 72) for i in range(6)], ts=((0, 6, 8),))
    xml, *_ = N.build_musicxml(p, None, 0, 1)
    assert [by_id(xml)[N.note_id(i)].findtext("beam") for i in range(6)] == ["begin", "continue", "end"] * 2


def test_html_embeds_the_pages_and_escapes_the_label():
    p = piece_of([(0, Q, 60)])
    view = N.score_view(p, None, 0, 1)
    html = view.html('x" onerror="alert(1)')
    assert html.count("<img ") == len(view.pages) >= 1 and 'onerror="' not in html
    assert "data:image/svg+xml;base64," in html


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "sample_midi").glob("*.mid")))
def test_every_sample_engraves_every_note(name):
    p = read_piece(ROOT / "sample_midi" / name)
    over = overlay(p, picked=range(0, len(p), 3), frozen=range(1, len(p), 4))
    first, stop = N.clip_bar_range(p, len(p.bar_starts_q) // 2, len(p.bar_starts_q) // 2 + 8)
    view = N.score_view(p, over, first, stop)
    check_measures_add_up(view.musicxml, p, first)
    assert list(view.notes) == list(np.flatnonzero((p.bar >= first) & (p.bar < stop)))
    for i in view.notes:  # Verovio drew every part of every note, in its state's colour
        want = N.COLORS["frozen" if i % 4 == 1 else "picked" if i % 3 == 0 else "other"]
        for k in view.note_ids[int(i)]:
            assert f'id="{k}" class="note" color="{want}"' in view.svg, (i, k)


def test_bars_without_notes_are_whole_bar_rests():
    p = piece_of([(0, Q, 60), (12 * Q, Q, 48)])  # notes in bars 1 and 4 only
    xml, ids, idx, _ = N.build_musicxml(p, overlay(p), 1, 3)
    assert len(idx) == 0 and ids == {}
    rests = [n.find("rest").get("measure") for n in notes_of(xml)]
    assert rests == ["yes"] * 4  # two staves, two bars
    assert N.score_view(p, None, 1, 3).svg.count("<svg") >= 1


def test_overlay_must_match_the_piece():
    p = piece_of([(0, Q, 60), (Q, Q, 62)])
    with pytest.raises(ValueError, match="overlay has 1 rows"):
        N.build_musicxml(p, overlay(p).iloc[:1], 0, 1)


def test_shading_by_score_and_legend():
    p = piece_of([(i * Q, Q, 60 + i) for i in range(4)])
    xml, *_ = N.build_musicxml(p, overlay(p), 0, 1, shade=True)
    cols = [by_id(xml)[N.note_id(i)].get("color") for i in range(4)]
    assert cols[0] == N.shade_color(0.0) and cols[3] == N.shade_color(1.0) and len(set(cols)) == 4
    assert [s for s, *_ in N.legend_items()] == ["picked", "frozen", "other", "selected"]


def test_a_long_piece_renders_only_its_selected_bars_fast():
    notes = [(i * Q // 2, Q // 2, 55 + (i * 5) % 24) for i in range(8 * 1000)] + [
        (i * 4 * Q, 4 * Q, 36 + i % 12) for i in range(1000)]
    p = piece_of(notes)
    assert len(p.bar_starts_q) == 1000
    over = overlay(p, picked=range(0, len(p), 7), frozen=range(3, len(p), 5))
    N.score_view(p, over, 0, 8)  # the toolkit's first start is not what is timed
    t0 = time.perf_counter()
    view = N.score_view(p, over, 500, 508)
    took = time.perf_counter() - t0
    assert view.bars == (500, 508) and len(view.notes) == 8 * 9
    assert took < 5.0, took  # ~0.1 s on the 2-core dev machine


# ----------------------------------------------------------------------------- the page (AppTest)

SAMPLE = sorted(p.name for p in (ROOT / "sample_midi").glob("*.mid"))[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("models") / "tiny-score", seed=1)


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMU_RUNS_DIR", str(tmp_path / "runs"))


def run_page(**state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(page("score.py"), default_timeout=60)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def svg_of(at) -> str:
    """The page's HTML with every SVG data URI decoded in place."""
    import base64
    import re

    body = "\n".join(h.proto.body for h in at.get("html"))
    return re.sub(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)",
                  lambda m: base64.b64decode(m[1]).decode("utf-8"), body)


def other_page(at) -> dict:
    """The session state the next page starts with: ``at``'s less its widgets' keys, which Streamlit drops
    when the page that draws them is not run (docs STREAMLIT.md; AppTest runs one page, so this is the
    page change)."""
    widget_keys = set(at.session_state._state._state._key_id_mapper._key_id_mapping)
    return {k: v for k, v in at.session_state.items() if k not in widget_keys}


def run_explore(state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(page("explore.py"), default_timeout=120)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def test_note_typed_on_explore_is_the_one_score_shows_and_explore_keeps(model_dir):
    """Audit S1 + E3: Score, then Explore (type a note number), then Score: the typed note, ringed, its bars
    around it; back on Explore the box still holds it. Only plain keys cross a page change."""
    from smu_explain import appstate as A

    data = (ROOT / "sample_midi" / SAMPLE).read_bytes()
    piece = read_piece(ROOT / "sample_midi" / SAMPLE)
    note = int(np.flatnonzero(piece.bar == 10)[0])
    at = run_page(**{A.K_MODEL_A: str(model_dir), A.K_PIECE: (SAMPLE, data)})
    assert "No note selected on Explore" in texts(at)
    at = run_explore(other_page(at))
    assert not at.exception, at.exception
    at.number_input(key="explore_note").set_value(note).run()
    at = run_page(**other_page(at))
    assert not at.exception, at.exception
    assert f"Note **{note}** (selected on Explore, bar 11)" in texts(at) and f'g[id="n{note}"]' in svg_of(at)
    assert at.number_input(key="score_first").value == 10  # bars 10-17: the note's bar (11) second
    assert "nearest 16th note" in texts(at)
    at.number_input(key="score_first").set_value(1).run()
    assert not at.exception and 'id="n0"' in svg_of(at)
    assert at.session_state["score_range"] == (1, 8)  # the plain copy the inputs come back from
    at = run_explore(other_page(at))
    assert at.number_input(key="explore_note").value == note
    assert f"**{pitch_name(int(piece.pitch[note]))}** at bar 11" in texts(at)


def test_note_clicked_in_explores_roll_is_the_one_score_shows(model_dir, monkeypatch):
    """A click in the roll (the selection's note: AppTest cannot click a Plotly chart) selects the note in
    the box and on Score; the Chromium test below clicks for real."""
    from smu_explain import appstate as A
    from smu_explain import pianoroll

    data = (ROOT / "sample_midi" / SAMPLE).read_bytes()
    piece = read_piece(ROOT / "sample_midi" / SAMPLE)
    note = int(np.flatnonzero(piece.bar == 6)[0])
    monkeypatch.setattr(pianoroll, "note_from_selection", lambda fig, selection: [note])
    at = run_explore({A.K_MODEL_A: str(model_dir), A.K_PIECE: (SAMPLE, data)})
    assert not at.exception, at.exception
    assert at.number_input(key="explore_note").value == note
    at = run_page(**other_page(at))
    assert at.number_input(key="score_first").value == 6 and f'g[id="n{note}"]' in svg_of(at)
    assert f"Note **{note}** (selected on Explore, bar 7)" in texts(at)


def test_page_without_model_draws_black_notes():
    from smu_explain import appwidgets as W

    at = run_page(score_model_choice=W.OTHER_FOLDER)  # no folder typed: no model
    assert not at.exception, at.exception
    html = svg_of(at)
    assert "<svg" in html and N.COLORS["picked"] not in html
    assert "No model loaded" in texts(at)


# ----------------------------------------------------------------------------- the page in Chromium

ROUTER = """
import streamlit as st
st.set_page_config(page_title="score test", layout="wide")
st.navigation([st.Page({explore!r}, title="Explore", default=True),
               st.Page({score!r}, title="Score", icon=":material/music_note:")]).run()
"""


@pytest.mark.browser
@pytest.mark.slow
def test_score_page_in_chromium(tmp_path):
    """In headless Chromium, through st.navigation as app.py runs pages (a router of Explore and Score
    written here): a click on a note in Explore's piano roll, then Score opens on the bars around that
    note, engraved (an image that loaded), the note ringed; another first bar redraws; back on Explore the
    note is still chosen. Screenshot docs/screenshots/score.png."""
    from pathlib import Path

    from app_helpers import CHROMIUM, CHROMIUM_ARGS, StreamlitServer

    chromium = CHROMIUM
    if not Path(chromium).exists():
        pytest.skip(f"{chromium} is missing (apt-get install chromium); CI installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    router = tmp_path / "router.py"
    router.write_text(ROUTER.format(explore=str(ROOT / "app_pages" / "explore.py"),
                                    score=str(ROOT / "app_pages" / "score.py")))
    with (
        StreamlitServer(router, tmp_path, {"SMU_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}) as url,
        sync_api.sync_playwright() as p,
    ):
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 1250})
        page.goto(url)
        if not (ROOT / "models" / "demo-adversarial" / "model.safetensors").is_file():
            model = make_model(tmp_path / "tiny", seed=1)  # a tiny random model through "other folder..."
            page.get_by_role("combobox", name="Model", exact=True).click(timeout=90_000)
            page.get_by_role("option", name="other folder...", exact=True).first.click()
            box = page.get_by_label("Model folder (holds config.json and model.safetensors)")
            box.fill(str(model))
            box.press("Enter")
        note_box = page.get_by_label("Note number (or click a note in the roll)")
        note_box.wait_for(timeout=120_000)
        before = note_box.input_value()
        bars = page.locator(".js-plotly-plot").first.locator(".barlayer .trace").first.locator("path")
        bars.nth(min(40, bars.count() - 1)).click(force=True)
        deadline = time.time() + 60
        while note_box.input_value() == before and time.time() < deadline:
            page.wait_for_timeout(100)
        note = int(note_box.input_value())
        assert note != int(before), "clicking a note in the roll did not select it"
        page.get_by_role("link", name="Score").click()
        page.get_by_text("(selected on Explore, bar ").wait_for(timeout=60_000)
        first, stop = N.bar_range_around(read_piece(ROOT / "sample_midi" / SAMPLE), note)
        img = page.locator(f'[data-testid="stHtml"] img[alt$="bars {first + 1}-{stop}"]')
        img.first.wait_for(timeout=60_000)
        assert img.first.evaluate("e => e.complete && e.naturalWidth > 0")
        assert page.get_by_text(f"Note {note} (selected on Explore").count() == 1
        page.get_by_text("picked by the masker (would be masked at this ratio)").wait_for()
        first_box = page.get_by_label("First bar", exact=False)
        first_box.fill("1")
        first_box.press("Enter")
        page.locator('[data-testid="stHtml"] img[alt$="bars 1-8"]').first.wait_for(timeout=60_000)
        first_box.fill(str(first + 1))
        first_box.press("Enter")
        img.first.wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        shots = ROOT / "docs" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "score.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.get_by_role("link", name="Explore").click()  # back on Explore, the clicked note is still chosen
        note_box.wait_for(timeout=60_000)
        assert int(note_box.input_value()) == note
        b.close()
