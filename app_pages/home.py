"""Home: what the app shows, why it matters and the headline result, in three lines; the words it uses.

The router (app.py) runs this script above the first page (``FRAME = True``: the three lines and a
folded glossary, so "/" still opens on Explore's piano roll), and it is a page of its own ("About",
the glossary open). The headline is computed from the models at hand: the Study's results.json and
the demo models' training logs (``verdict.headline_line``), never written by hand.
"""

from pathlib import Path

import streamlit as st

from smu_explain import verdict as V
from smu_explain.report import glossary_markdown

FRAME = globals().get("FRAME", False)  # set by app.py when it runs this above another page
MODELS = Path(__file__).resolve().parents[1] / "models"
PICKS = [Path(__file__).resolve().parents[1] / "docs" / f for f in ("masker_picks.json", "masker_picks_confirm.json")]
DEMO = [MODELS / "demo-adversarial", MODELS / "demo-random"]


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(show_spinner=False, max_entries=8)
def headline(stamp: tuple) -> str:
    """The headline sentence; ``stamp`` (the files' paths and mtimes) keys the cache."""
    from smu_explain.markup import md_escape

    return V.headline_line([d for d in DEMO if (d / "progress.jsonl").is_file()], V.study_facts(V.load_study()),
                           esc=md_escape)


@st.cache_data(show_spinner=False, max_entries=8)
def masker_learned(stamp: tuple) -> str | None:
    """What the demo masker learned, from the pre-registered confirmation on new pieces
    (docs/masker_picks_confirm.json, when it re-tests docs/masker_picks.json's random-head result:
    ``picks_null.confirms``); None when the files are missing, broken or do not match."""
    import json

    from smu_explain.picks_null import confirmed_sentence, confirms

    try:
        data, confirm = (json.loads(p.read_text(encoding="utf-8")) for p in PICKS)
        pieces = ((data.get("results") or {}).get("all") or {}).get("pieces") or []
        if not confirms(confirm, data.get("null"), pieces):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return confirmed_sentence(confirm)


st.markdown("**What it shows**: which notes of a piece a BERT-style model of symbolic music finds hard to "
            "guess back when they are hidden, and which notes its *masker* chooses to hide.")
st.markdown("**Why it matters**: adversarial masking (a masker hides the notes it expects to be hardest, "
            "instead of a random 15%) is claimed to pre-train better models of music. The claim is about "
            "accuracy after fine-tuning: here you can see, note by note, what a masker picks and how two small "
            "demo models guess hidden notes back (which says little about the claim); the Study page tests the "
            "claim itself, on small encoders.")
st.markdown("**Headline**: " + headline(tuple((str(p), _mtime(p)) for p in [V.study_results_path()]
                                             + [d / f for d in DEMO for f in ("progress.jsonl", "config.json")])))
with st.expander("Words used in this app", expanded=not FRAME):
    st.markdown(glossary_markdown())
if not FRAME:
    learned = masker_learned(tuple((str(p), _mtime(p)) for p in PICKS))
    if learned:
        from smu_explain.markup import md_escape

        st.markdown("**What the masker learned, tested**: " + md_escape(learned) + " (Study page; "
                    "docs/MASKER_PICKS_CONFIRM.md)")
    st.markdown("**Where to go**: **Explore** a piece (piano roll, masker scores, the model's guesses); "
                "**Compare** two models on a piece or a folder (who recovers more, with an interval); **Why** a "
                "fine-tuned model decided; **Score**: the chosen bars in notation, the masker's picks in red; "
                "**Train** a small model; **Report**: one HTML file to share; "
                "**Study**: the reproduction study's result.")
