"""Score: the selected bars in notation (Verovio), the masker's picked notes red and its frozen notes marked."""

import streamlit as st

from smu_explain import appstate as A
from smu_explain import appwidgets as W
from smu_explain import notation
from smu_explain.markup import html_escape, md_escape

st.title("The score")
st.caption("The bars around the note you chose on Explore, in notation: which notes the masker would hide "
           "(red) and which it never hides (grey, in parentheses).")

choice, model_path, ratio, _ = W.piece_model_ratio("score")

piece = W.piece_or_stop(choice)
name, data = choice
key = A.piece_key(data)

over = W.run_model(A.overlay, model_path, data, piece, ratio) if model_path else None

selected = A.chosen_note(key, len(piece))  # the note chosen on Explore in this piece (typed or clicked)
n_bars = len(piece.bar_starts_q)
# the range starts around Explore's note; a new piece or a new note on Explore moves it there again.
# "score_range" keeps the range as a plain key: the two inputs' own keys are dropped when another page opens
range_for = (key, selected)
if st.session_state.get("score_range_for") != range_for:
    first, stop = notation.bar_range_around(piece, selected)
    st.session_state["score_range_for"] = range_for
    st.session_state["score_range"] = (first + 1, stop - first)
    st.session_state["score_first"], st.session_state["score_count"] = st.session_state["score_range"]
for k, v in zip(("score_first", "score_count"), st.session_state["score_range"], strict=False):
    if k not in st.session_state:
        st.session_state[k] = v

r1, r2, r3 = st.columns([2, 2, 3])
with r1:
    first_bar = int(st.number_input(f"First bar (1-{n_bars:,})", 1, n_bars, key="score_first"))
with r2:
    count = int(st.number_input("Bars to show", 1, 32, key="score_count"))
with r3:
    shade = st.toggle("Shade the other notes by masker score", value=False, key="score_shade",
                      disabled=over is None,
                      help="Blue, darker for a higher score (the note's rank in the piece). Off: black.")

st.session_state["score_range"] = (first_bar, count)
first, stop = notation.clip_bar_range(piece, first_bar - 1, first_bar - 1 + count)
try:
    view = notation.score_view(piece, over, first, stop, selected=selected, shade=shade and over is not None)
except Exception as e:  # the engraver must not take the page down
    st.error(f"The score of bars {first + 1}-{stop} could not be drawn: {type(e).__name__}: {md_escape(e)}")
    st.stop()

if selected is not None:
    where = "shown with a blue ring" if first <= int(piece.bar[selected]) < stop else "outside these bars"
    st.markdown(f"Note **{selected}** (selected on Explore, bar {int(piece.bar[selected]) + 1}) is {where}.")
else:
    st.caption("No note selected on Explore for this piece, so the range opened on bar 1.")

st.html('<div class="smu-score" style="background:#fff;padding:4px">'
        + view.html(f"{name}, bars {first + 1}-{stop}") + "</div>")

legend = notation.legend_items(shade=shade and over is not None)
if over is None:
    legend = [item for item in legend if item[0] in ("other", "selected")]
st.html("<div style='font-size:0.9em'>" + " &nbsp; ".join(
    f"<span style='color:{c};font-weight:bold'>&#9679;</span> {html_escape(words)}" for _, c, words in legend)
    + "</div>")
if over is None:
    st.caption("No model loaded: every note is black. Choose a model to see the masker's picks on the score.")
else:
    n_sel = len(view.notes)
    picked = int(over["picked"].to_numpy(dtype=bool)[view.notes].sum()) if n_sel else 0
    frozen = int(over["frozen"].fillna(False).to_numpy(dtype=bool)[view.notes].sum()) if n_sel else 0
    st.caption(f"In bars {first + 1}-{stop}: {n_sel:,} notes, {picked:,} picked by the masker at {ratio:.0%}, "
               f"{frozen:,} frozen (the top 30% by score, never masked).")
st.caption(md_escape(view.caption) + f" Drawn in {1000 * sum(view.seconds.values()):.0f} ms.")
with st.expander("MusicXML of these bars"):
    st.download_button("Download MusicXML", view.musicxml.encode("utf-8"), file_name="score_excerpt.musicxml",
                       mime="application/vnd.recordare.musicxml+xml", key="score_download", on_click="ignore")
