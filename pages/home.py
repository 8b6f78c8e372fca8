"""Home: what the app shows, why it matters and the headline result, in three lines; the words it uses.

The router (app.py) runs this script above the first page (``FRAME = True``: the three lines and a
folded glossary, so "/" still opens on Explore's piano roll), and it is a page of its own ("About",
the glossary open). The headline is computed from the models at hand: the Study's results.json and
the demo models' training logs (``verdict.headline_line``), never written by hand.
"""

from pathlib import Path

import streamlit as st

from smu_explain import verdict as V

FRAME = globals().get("FRAME", False)  # set by app.py when it runs this above another page
MODELS = Path(__file__).resolve().parents[1] / "models"
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


GLOSSARY = """
**The notes, as the model reads them** (four attributes per note, in a musician's words):
- **bar**: how many bar lines come between this note and the one before it (0 = same bar, 1 = the next
  bar); it is not the bar number, so a note in bar 11 usually has bar 0 or 1.
- **position**: where in its bar the note starts, counted in sixteenth notes from the bar line
  (0 = on the downbeat; "0.5 q" = half a quarter note, an eighth, after the bar line).
- **pitch**: which key is played (MIDI number; 60 = middle C).
- **duration**: how long the note is held, in thirty-second notes (8 = a quarter note).

**What the app measures**
- **masking / recovery**: hide some notes' attributes behind a MASK token and ask the model to guess them
  back from the notes around them; **recovery accuracy** = the share of guesses that are right.
  **Points** = percentage points of that accuracy.
- **random masks**: a seeded random 15% of the notes hidden, the same notes for every model compared.
- **masker**: a small extra part of the model that scores each note by how hard it expects it to be to
  guess back. **Adversarial** pre-training hides the notes the masker picks; **random** pre-training
  hides a random 15% and never trains the masker (the app then warns that its scores mean nothing).
- **picked**: the notes the masker would hide at the chosen ratio (its highest scores among the notes
  that are not frozen).
- **frozen**: notes the masker kept scoring highest during training (its top 30%): treated as not
  guessable from context and never hidden again (a random tenth are released at each freeze).
- **no-model rule**: a guess that uses no model at all (the most frequent value; copy the nearest
  unhidden neighbour; the most frequent value among the 8 notes either side). A model has learned an
  attribute only where it beats every rule; the charts show the rules as marks.
- **IQR** (interquartile range): how spread out the middle half of the values is (75th minus 25th
  percentile); a masker whose scores have a tiny IQR hardly tells the notes apart.
- **95% interval, no clear difference**: the verdicts resample the notes (or pieces) 2,000 times
  (paired bootstrap); when the interval of the difference includes 0, the app says "no clear difference".
- **fine-tuned head**: a small classifier trained on top of a pre-trained model for one task (e.g. which
  notes are the melody); the Study judges pre-training by these.
"""

st.markdown("**What it shows**: which notes of a piece a BERT-style model of symbolic music finds hard to "
            "guess back when they are hidden, and which notes its *masker* chooses to hide.")
st.markdown("**Why it matters**: adversarial masking (a masker hides the notes it expects to be hardest, "
            "instead of a random 15%) is claimed to pre-train better models of music; here you can check the "
            "claim note by note, and on the Study page over whole tasks.")
st.markdown("**Headline**: " + headline(tuple((str(p), _mtime(p)) for p in [V.study_results_path()]
                                             + [d / f for d in DEMO for f in ("progress.jsonl", "config.json")])))
with st.expander("Words used in this app", expanded=not FRAME):
    st.markdown(GLOSSARY)
if not FRAME:
    st.markdown("**Where to go**: **Explore** a piece (piano roll, masker scores, the model's guesses); "
                "**Compare** two models on a piece or a folder (who recovers more, with an interval); **Why** a "
                "fine-tuned model decided; **Train** a small model; **Report**: one HTML file to share; "
                "**Study**: the reproduction study's result.")
