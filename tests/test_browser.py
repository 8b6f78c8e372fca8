"""End to end in real headless Chromium against `streamlit run app.py`.

Opens the app, picks a sample, sees the piano roll with the masker overlay,
opens Compare and sees the comparison, starts a tiny training run on Train and
sees its loss curve update. Screenshots go to docs/screenshots/ (explore.png,
compare.png, train.png).

Models: the demo models when models/demo-adversarial and models/demo-random
exist, else two tiny random models made here (chosen through "other folder...").
The training run uses the real CLI (``python -m smu_explain.cli``; ``$SMU_CLI``
overrides it).
"""

import importlib.util
import os
import re
import time
from pathlib import Path

import pytest
from app_helpers import CHROMIUM_ARGS, ROOT, StreamlitServer, make_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "screenshots"
DEMO_A, DEMO_B = ROOT / "models" / "demo-adversarial", ROOT / "models" / "demo-random"
FOLDER_LABEL = "Model folder (holds config.json and model.safetensors)"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); CI installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    runs = tmp / "runs"
    env = {"SMU_RUNS_DIR": str(runs), "SMU_MAX_RUNS": "1", "OMP_NUM_THREADS": "1"}
    with StreamlitServer("app.py", tmp, env) as url:
        demo = (DEMO_A / "model.safetensors").is_file() and (DEMO_B / "model.safetensors").is_file()
        models = (None, None) if demo else (make_model(tmp / "tiny-adv", seed=1),
                                             make_model(tmp / "tiny-rnd", seed=2))
        yield {"url": url, "runs": runs, "models": models}
        from smu_explain.runs import RunRegistry

        for r in RunRegistry(runs).list():
            if r.status in ("running", "queued"):
                RunRegistry(runs).cancel(r.id, grace_s=3)


def choose(page, select_label: str, option: str):
    """Pick ``option`` in the Streamlit selectbox labelled ``select_label`` (a combobox)."""
    page.get_by_role("combobox", name=select_label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).first.click()


def wait_idle(page, timeout=60_000):
    """Wait until Streamlit has finished the current run: no running-status widget and
    no stale (greyed-out) element left from the previous run, stable for 0.5 s."""
    deadline = time.time() + timeout / 1000
    calm_since = None
    while time.time() < deadline:
        busy = (page.locator('[data-testid="stStatusWidget"]').count() > 0
                or page.locator('[data-stale="true"]').count() > 0)
        if busy:
            calm_since = None
        elif calm_since is None:
            calm_since = time.time()
        elif time.time() - calm_since > 0.5:
            return
        page.wait_for_timeout(100)
    raise AssertionError("the app did not finish its run in time")


def use_folder(page, select_label: str, path: Path, nth: int = 0):
    choose(page, select_label, "other folder...")
    box = page.get_by_label(FOLDER_LABEL).nth(nth)
    box.fill(str(path))
    box.press("Enter")
    wait_idle(page)


def open_app(browser, server, height: int, timeout: int = 120_000, title: str | None = None):
    """A new 1500-pixel-wide page on the app, idle, on page ``title`` when given."""
    page = browser.new_page(viewport={"width": 1500, "height": height})
    page.set_default_timeout(timeout)
    page.goto(server["url"])
    wait_idle(page)
    if title:
        nav(page, title)
    return page


def nav(page, title: str):
    page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=title).first.click()
    wait_idle(page)


def full_shot(page, path: Path, width: int = 1500):
    """Screenshot of the whole page: Streamlit scrolls inside its main block, so a full-page
    shot only shows the viewport; grow the viewport to the content for the shot, then restore."""
    size = page.viewport_size
    h = page.evaluate("() => Math.max(document.body.scrollHeight, ...[...document.querySelectorAll("
                      "'[data-testid=stMain], [data-testid=stAppViewContainer], section.main')]"
                      ".map(e => e.scrollHeight))")
    page.set_viewport_size({"width": width, "height": min(int(h) + 40, 9000)})
    page.wait_for_timeout(800)  # Plotly re-lays out its charts on resize
    wait_idle(page)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def boxes_overlap(a, b) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def assert_legend_clear(plot):
    """The legend of a Plotly chart overlaps neither a plot area nor an x-axis title."""
    legend = plot.locator("g.legend").first.bounding_box()
    assert legend is not None
    for i in range(plot.locator(".nsewdrag").count()):  # one drag rectangle per plot area
        assert not boxes_overlap(legend, plot.locator(".nsewdrag").nth(i).bounding_box()), "legend on a plot"
    for i in range(plot.locator(".g-xtitle text, .g-x2title text").count()):
        title = plot.locator(".g-xtitle text, .g-x2title text").nth(i).bounding_box()
        assert not boxes_overlap(legend, title), "legend on an axis title"


def test_explore_compare_train(browser, server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1500, "height": 1900})
    page.set_default_timeout(60_000)
    page.goto(server["url"])
    page.get_by_text("Explore a piece").first.wait_for()
    wait_idle(page)
    model_a, model_b = server["models"]
    if model_a is not None:
        use_folder(page, "Model", model_a)
    sample = "mozart_k545_mvt1_exposition.mid"
    if (ROOT / "sample_midi" / sample).exists():
        choose(page, "Sample piece", sample)
        wait_idle(page)
    roll = page.locator(".js-plotly-plot").first
    roll.wait_for()
    # the masker overlay: score colour bar and the picked / frozen legend entries
    page.locator(".js-plotly-plot .legendtext").filter(has_text="picked by masker").first.wait_for()
    page.locator(".js-plotly-plot .cbtitle").filter(has_text="masker score").first.wait_for()
    assert roll.locator(".barlayer path").count() > 50
    # below the roll: the full explain table feeds the note inspector
    wait_idle(page)
    page.get_by_text("The model's top guesses for each attribute").wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0
    assert_legend_clear(roll)
    # words: "bar N, beat B" (one form), note names, the score spread, why "picked" < ratio
    body = page.locator("section.main, [data-testid='stMain']").first.inner_text()
    assert "bar.beat" not in body and re.search(r"at bar \d+, beat \d", body)
    assert "raw masker scores" in body.lower() and "not frozen" in body
    pitch_chart = page.locator(".js-plotly-plot").filter(has_text="pitch -").first
    labels = pitch_chart.locator(".ytick text").all_text_contents()  # SVG text: no innerText
    assert labels and all(re.fullmatch(r"[A-G]#?-?\d", t) for t in labels), labels
    page.screenshot(path=str(SHOTS / "explore.png"))
    # clicking a note in the roll selects it in the inspector
    note_box = page.get_by_label("Note number (or click a note in the roll)")
    before = note_box.input_value()
    bars = roll.locator(".barlayer .trace").first.locator("path")
    bars.nth(min(10, bars.count() - 1)).click(force=True)
    wait_idle(page)
    assert note_box.input_value() != before, "clicking a note did not select it"

    nav(page, "Compare")
    page.get_by_text("Compare two models").first.wait_for()
    if model_b is not None:
        use_folder(page, "Model B", model_b, nth=1)
    page.get_by_text("Recovery accuracy under the same random masks").wait_for()
    # the answer first (issue 27.2): the verdict sentence, with its interval, above the rolls
    page.get_by_text("Who recovers more").first.wait_for()
    verdict = page.locator("[data-testid='stMain']").first.inner_text()
    assert re.search(r"95%", verdict) and ("no clear difference" in verdict or "recovers more" in verdict)
    page.get_by_text("Bias view").wait_for()
    page.locator('[data-testid="stTable"]').first.wait_for()  # the metrics table (st.table, every row)
    wait_idle(page)
    assert page.locator(".js-plotly-plot").count() >= 3
    assert page.locator('[data-testid="stException"]').count() == 0
    assert_legend_clear(page.locator(".js-plotly-plot").first)  # the two-panel rolls
    # the metrics table shows every row (no inner scrolling), numbers rounded, no "None"
    table = page.locator('[data-testid="stTable"]').first
    table.scroll_into_view_if_needed()
    assert table.evaluate("e => [e, ...e.querySelectorAll('*')].every(x => x.scrollHeight <= x.clientHeight + 1"
                          " || getComputedStyle(x).overflowY === 'visible')"), "the table scrolls inside"
    text = table.inner_text()
    assert "frozen notes" in text and "None" not in text and not re.search(r"\d\.\d{4}", text)
    assert not re.search(r"frozen notes\s+\d+\.\d", text)  # a count, not "68.000"
    full_shot(page, SHOTS / "compare.png")

    nav(page, "Report")
    page.get_by_role("button", name="Download the HTML report").wait_for()
    with page.expect_download() as dl:  # the report opens with the summary and the verdicts (27.7)
        page.get_by_role("button", name="Download the HTML report").click()
    html = Path(dl.value.path()).read_text(encoding="utf-8")
    assert "Who recovers more" in html or "verdict" in html.lower()
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(SHOTS / "report.png"))

    nav(page, "Train")
    page.get_by_text("Train a small model").first.wait_for()
    if not os.environ.get("SMU_CLI") and importlib.util.find_spec("smu_explain.cli") is None:
        pytest.skip("smu_explain.cli is not there yet: cannot start a real training run")
    steps = page.get_by_label("Steps", exact=True)
    steps.fill("60")
    steps.press("Tab")
    page.get_by_role("button", name="Start run").click()
    page.get_by_text("Started run").wait_for()
    # the fragment polls every second: the progress text must advance
    prog = page.get_by_text(re.compile(r"step \d+ / 60"))
    prog.first.wait_for(timeout=120_000)
    first = int(re.search(r"step (\d+)", prog.first.inner_text()).group(1))
    deadline = time.time() + 120
    later = first
    while time.time() < deadline and later <= first:
        page.wait_for_timeout(500)
        txt = prog.first.inner_text() if prog.count() else ""
        m = re.search(r"step (\d+)", txt)
        later = int(m.group(1)) if m else later
    assert later > first, "the training curve did not update"
    curve = page.locator(".js-plotly-plot").filter(has_text="training loss").first
    assert curve.locator(".scatterlayer path.js-line").count() >= 1
    assert "None" not in page.locator('[data-testid="stDataFrame"]').first.inner_text()
    page.screenshot(path=str(SHOTS / "train.png"))
    page.close()


def test_huge_upload_is_refused_in_the_browser(browser, server, tmp_path):
    """A 100,000-note upload ends in a plain refusal within 60 s, never a silent spinner."""
    from conftest import midi_bytes

    big = tmp_path / "huge_100k.mid"
    big.write_bytes(midi_bytes([(i * 60, 50, 48 + (i * 7) % 36) for i in range(100_000)]))
    page = open_app(browser, server, 1000)
    page.get_by_text("upload MIDI / MusicXML").first.click()
    wait_idle(page)
    t0 = time.time()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(big))
    page.get_by_text("shorter excerpts").first.wait_for(timeout=60_000)
    assert time.time() - t0 < 60
    assert "100,000 notes" in page.locator('[data-testid="stAlert"]').first.inner_text()
    page.close()


def test_why_page(browser, server, tmp_path):
    """The Why page in the browser: attributions of a fine-tuned model (made here from the
    model in use, or ``$SMU_E2E_FINETUNED``: a real fine-tuned folder, e.g. the study's
    composer model; ``$SMU_E2E_MODEL``: the masker/attention model), attention, counterfactuals
    and masker tabs; screenshots why_*.png (why_*-<folder name>.png with ``$SMU_E2E_FINETUNED``)."""
    from smu_explain.checkpoint import save_checkpoint
    from smu_explain.finetune import build_model

    SHOTS.mkdir(parents=True, exist_ok=True)
    model_a, _ = server["models"]
    encoder = model_a if model_a is not None else DEMO_A
    given = os.environ.get("SMU_E2E_FINETUNED")
    suffix = f"-{Path(given).name}" if given else ""
    ft_dir = Path(given) if given else save_checkpoint(tmp_path / "emotion-ft", build_model(
        "emotion", ["Q1", "Q2", "Q3", "Q4"], pretrained=encoder, seed=0))
    page = open_app(browser, server, 1700, title="Why")
    page.get_by_text("Why did the model decide?").first.wait_for()
    masker_model = os.environ.get("SMU_E2E_MODEL") or model_a  # e.g. the study's adversarial encoder
    if masker_model is not None:
        use_folder(page, "Model (masker and attention)", Path(masker_model))
    sample = "bach_bwv66_6.mid"
    if (ROOT / "sample_midi" / sample).exists():
        choose(page, "Sample piece", sample)
        wait_idle(page)
    choose(page, "Fine-tuned model", "other folder...")
    box = page.get_by_label("Fine-tuned model folder")
    box.fill(str(ft_dir))
    box.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Explain the prediction").click()
    wait_idle(page)
    # the method's details are folded away under the plain answer (issue 27.4)
    page.get_by_text("How this was computed", exact=False).first.click()
    page.get_by_text("IG completeness").wait_for()
    wait_idle(page)
    ig_plot = page.locator(".js-plotly-plot").filter(has_text="integrated gradients")
    ig_plot.first.wait_for(state="visible")  # Plotly draws after Streamlit goes idle
    assert ig_plot.count() >= 1
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(SHOTS / f"why_attributions{suffix}.png"))
    for tab, shot, text in (("Attention", f"why_attention{suffix}.png", "attention"),
                            ("Counterfactuals", f"why_counterfactual{suffix}.png", "after the edit"),
                            ("Masker", f"why_masker{suffix}.png", "score change")):
        page.get_by_role("tab", name=tab).click()
        wait_idle(page)
        if tab == "Masker":  # the masker's occlusion runs on request (one pass per note)
            page.get_by_role("button", name="Which notes drive this score?").click()
            wait_idle(page)
        page.locator(".js-plotly-plot").filter(has_text=text).first.wait_for(state="visible")
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(SHOTS / shot))
    page.close()


def test_study_page(browser, server):
    """The Study page in the browser: the three-line summary and, once the study has
    finished (docs/study/results.json), its figures; screenshot study.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = open_app(browser, server, 2600, title="Study")
    page.get_by_text("does letting a masker choose beat random masking?").first.wait_for()
    wait_idle(page)
    if (ROOT / "docs" / "study" / "results.json").is_file():
        page.get_by_text("In three lines").first.wait_for()
        page.get_by_text("Did the encoders learn?").first.wait_for()  # recovery beside the no-model rules
        page.locator(".js-plotly-plot").filter(has_text="masker").first.wait_for(state="visible")
    else:
        page.get_by_text("has not finished yet").first.wait_for()
        page.get_by_text("Stages done").first.wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(SHOTS / "study.png"), full_page=True)
    page.close()
