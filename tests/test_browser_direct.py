"""Every page opened directly by its URL on a freshly started server looks and works as when it is
reached from the home page (issue 27.6, 27.9): the app's navigation (page titles, the About page), not
Streamlit's automatic list of script files, and the wide layout.

The server is started here and its FIRST request is the sub-page's URL.
"""

import os

import pytest
from app_helpers import CHROMIUM, CHROMIUM_ARGS, StreamlitServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def fresh_server(tmp_path):
    env = {"SMU_RUNS_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1", "SMU_NO_WARMUP": "1"}
    with StreamlitServer("app.py", tmp_path, env) as url:
        yield url


PAGES = [("", "Explore a piece"), ("compare", "Compare two models"), ("why", "Why did the model decide?"),
         ("score", "The score"), ("train", "Train a small model"), ("report", "Report"),
         ("study", "Study: does letting a masker choose beat random masking?"), ("home", None)]


@pytest.mark.parametrize("path,heading", PAGES)
def test_a_sub_page_opened_first_by_its_url(fresh_server, path, heading):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); CI installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = b.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{fresh_server}/{path}", wait_until="domcontentloaded")
            nav = page.locator('[data-testid="stSidebarNav"]')
            nav.wait_for(timeout=90_000)
            page.get_by_text("About", exact=True).first.wait_for(timeout=90_000)
            links = nav.inner_text()
            # the app's navigation: its titles, never the script files' names
            assert "Explore" in links and "About" in links, links
            assert "home" not in links.split() and "explore" not in links.split(), links
            if heading:
                page.get_by_role("heading", name=heading).first.wait_for(timeout=90_000)
            if path == "":  # the first screen: the app framed in three lines above Explore
                for words in ("What it shows", "Why it matters", "Headline"):
                    page.get_by_text(words).first.wait_for(timeout=90_000)
            # the wide layout: the main block is wider than Streamlit's centred 736 px column
            width = page.locator('[data-testid="stMainBlockContainer"]').first.bounding_box()["width"]
            assert width > 900, width
        finally:
            b.close()
