"""smu_explain app: the router. Run with ``streamlit run app.py``.

The page scripts live in ``app_pages/``, not ``pages/``: Streamlit reads a ``pages/`` folder as an
automatic list of pages until the router has run once, so a sub-page opened first by its URL on a
fresh server showed the script files' names and a narrow layout (issue 27.6;
tests/test_browser_direct.py).

Pages (``app_pages/``): Explore a piece, Compare two models, Why, Score (notation), Train a small model,
Report (HTML export), Study, About. Each page script also runs on its own (tests use that).
The first screen ("/", Explore) opens under the app's framing: ``app_pages/home.py`` run with
``FRAME = True`` (three lines: what it shows, why it matters, the headline; a folded glossary).
"""

import runpy
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="smu_explain", page_icon=":material/piano:", layout="wide")

HOME = Path(__file__).resolve().parent / "app_pages" / "home.py"
explore = st.Page("app_pages/explore.py", title="Explore", icon=":material/piano:", default=True)
pages = [
    explore,
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("app_pages/why.py", title="Why", icon=":material/psychology_alt:"),
    st.Page("app_pages/score.py", title="Score", icon=":material/music_note:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/report.py", title="Report", icon=":material/description:"),
    st.Page("app_pages/study.py", title="Study", icon=":material/science:"),
    st.Page("app_pages/home.py", title="About", icon=":material/info:"),
]
nav = st.navigation(pages)

# queued training runs start when a slot frees: every page load polls the registry
# (the Train page also polls every second while it is open)
from smu_explain import appstate, appwarmup, appwidgets  # noqa: E402
from smu_explain.markup import md_escape  # noqa: E402
from smu_explain.runs import training_allowed  # noqa: E402

if training_allowed(st.get_option("server.address"))[0]:  # served beyond localhost: nothing starts
    try:
        appstate.get_registry().poll()
    except (OSError, appstate.SMUInputError) as e:  # an unusable runs dir must not take the app down
        st.sidebar.warning(f"Run registry unavailable: {md_escape(e)}")
with st.sidebar:
    st.caption("smu_explain: see which notes a symbolic-music BERT finds hard, "
               "and what its masker decides to hide.")
    appwidgets.preload_plotly()  # the browser compiles Plotly while the page's model loads
try:
    with appwarmup.user_run():  # the background warm-up pauses while a page runs
        if nav.title == explore.title:  # the first screen: the app framed above Explore's roll
            with st.container(border=True):
                runpy.run_path(str(HOME), init_globals={"FRAME": True}, run_name="smu_home_frame")
        nav.run()
finally:
    # after the first page is drawn (never before: the first roll must not wait for it), fill
    # the caches in the background with what the other pages and samples show first
    appwarmup.start_warm_up()
