"""Explore: one piece, one model. Piano roll with the masker's view of every note."""

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from smu_explain import appstate as A
from smu_explain import appwidgets as W
from smu_explain import charts, pianoroll, picks, picks_draw, readable, rollaxes
from smu_explain.markup import html_escape, md_escape

st.title("Explore a piece")
st.caption("Which notes does the masker find hard to recover, which would it hide, and what "
           "does the model put back?")

choice, model_path, ratio, c3 = W.piece_model_ratio("explore")
seed = int(c3.number_input("Seed", 0, 10_000, 0, key="explore_seed"))

piece = W.piece_or_stop(choice)

name, data = choice
# the model's name on this page's charts: the picker's label (a demo model keeps its colour on every
# page, palette.PALETTE), or the folder's name
model_label = st.session_state.get("explore_model_choice") or "this model"
if model_label == W.OTHER_FOLDER:
    model_label = Path(model_path).name if model_path else "this model"


@st.cache_data(show_spinner="Putting back the hidden notes...", max_entries=32)
def _draw_outcome(path: str, mtime: float, key: str, ratio_k: float, draw_seed: int, _piece, _picked, _frozen,
                  _random) -> dict:
    """A draw's outcome (cached by model, piece, ratio and draw seed: they fix both masks): what the
    model recovers under each mask (picks_draw.mask_recovery), the difference with its interval over the
    piece's 4-bar spans (picks_draw.recovery_difference) and what the picks have in common
    (picks_draw.pick_profile on harmony.analyze's labels, against the notes that are not frozen)."""
    from smu_explain.harmony import analyze

    model, tokenizer = A.load_model(path)
    rec = picks_draw.mask_recovery(model, tokenizer, _piece, {"random": _random, "masker": _picked})
    labels = analyze(_piece)
    return {"recovery": rec, "difference": picks_draw.recovery_difference(rec, labels, seed=draw_seed),
            "profile": picks_draw.pick_profile(labels, _picked, ~_frozen, seed=draw_seed)}


def draw_outcome(path, data, piece, ratio, draw_seed, picked, frozen, rnd) -> dict:
    p = Path(path)
    return _draw_outcome(str(p.resolve()), A._weights_mtime(p), A.piece_key(data), A.ratio_key(ratio),
                         int(draw_seed), piece, picked, frozen, rnd)


def untrained_head(path) -> bool:
    """Whether the masker head of the model at ``path`` was never trained (not pre-trained adversarially,
    or imported without one), read from its config.json: no model load, so the first roll, drawn from
    stored scores, needs no torch. ``A.untrained_masker_note`` words it once the model is loaded."""
    from smu_explain.checkpoint import read_config

    try:
        meta = read_config(path)
    except A.SMUInputError:
        return False
    imported = meta.get("imported")
    if isinstance(imported, dict) and imported.get("has_masker") is False:
        return True
    strategy = meta.get("strategy")
    return not (isinstance(strategy, dict) and strategy.get("name") == "adversarial")


def draw_table(rec: dict) -> pd.DataFrame:
    """Per attribute and on average: recovery under the random draw, the masker's pick, the
    difference (of the shown values, picks_draw.shown_points)."""
    attrs = list(rec["random"]["accuracy"])
    rows = [picks_draw.shown_points({k: {"mean": rec[k]["accuracy"][a]} for k in ("random", "masker")}) for a in attrs]
    rows.append(picks_draw.shown_points(rec))
    return pd.DataFrame({"attribute": [*attrs, "mean"],
                         "random draw": [f"{r[0]:.1f}%" for r in rows],
                         "masker's pick": [f"{r[1]:.1f}%" for r in rows],
                         "difference (points)": [f"{r[2]:+.1f}" for r in rows]})


def profile_table(profile: dict) -> pd.DataFrame:
    """Per kind of note: its share of the picks, the share expected from the passages (4-bar spans) they
    are in (picks_draw.pick_profile's share_expected), its share of the notes the draw picks from, the
    picks' difference from the expected share (with its bootstrap interval over the spans) and whether
    the sentence names it."""
    rows = []
    for col, classes in profile.get("columns", {}).items():
        for r in classes:
            iv = r["diff"]
            span = "" if iv["lo"] is None else f" [{100 * iv['lo']:+.0f}, {100 * iv['hi']:+.0f}]"
            rows.append({"label": col.replace("_", " "), "kind of note": r["class"],
                         "share of the picks": f"{r['share_picked']:.0%}",
                         "expected from their passages": f"{r.get('share_expected', r['share_pool']):.0%}",
                         "share of the notes": f"{r['share_pool']:.0%}",
                         "difference from expected (points, 95% interval)": f"{100 * iv['est']:+.0f}{span}",
                         "clear": "yes" if r["clear"] else ""})
    return pd.DataFrame(rows)


#: the "Colour notes by" choices: "score" = the masker score (the track without a model), else a label
#: column of harmony.analyze (readable.ROLE_LABELS). Not None: a selectbox whose value is None shows
#: its empty placeholder when it comes back after a run that did not draw it (an upload's first run).
SCORE = "score"
COLOUR_BY = {SCORE: "masker score", "chord_tone": "chord or non-chord tone",
             "harmony": "kind of non-chord tone", "voice_position": "voice position (bass, inner, top)",
             "metric": "metric weight (downbeat, beat, off-beat)", "repeated": "repeated note",
             "duration": "duration", "register": "register", "role": "POP909 track role"}


@st.cache_data(show_spinner="Analysing the harmony...", max_entries=32)
def _labels(key: str, _piece) -> pd.DataFrame:
    """harmony.analyze's labels of a piece (cached by the piece's key; no model)."""
    from smu_explain.harmony import analyze

    return analyze(_piece)


def with_labels(notes: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The notes table with the label columns (harmony.LABEL_COLUMNS) of the same notes."""
    from smu_explain.harmony import LABEL_COLUMNS

    return notes.assign(**{c: labels[c].to_numpy() for c in LABEL_COLUMNS if c not in notes.columns})


@st.cache_data(show_spinner="Measuring what the masker picks in this piece...", max_entries=32)
def _piece_picks(model: tuple, key: str, ratio_k: float, model_name: str, _table) -> dict:
    """What the masker picks in one piece (picks.class_effects on the masker view joined with the
    labels: intervals from a block bootstrap over the piece's 4-bar spans) and its sentence; cached
    by model, piece, ratio and the name the sentence gives the model."""
    res = picks.class_effects([_table])
    res.update(model=model_name, ratio=float(ratio_k))
    res["sentence"] = picks.summary_sentence(res)
    return res


def show_picks(res: dict, key: str, untrained_note: bool, scope: str) -> None:
    """The sentence and the table of a picks result (``scope``: "in this piece", "over the folder")."""
    lead = (f"**What it picks {scope}.** " if not untrained_note else
            f"**What it picks {scope}** (an untrained masker: its picks are close to arbitrary). ")
    st.markdown(lead + md_escape(res["sentence"]))
    with st.expander("The table: every class of note", expanded=False):
        st.dataframe(picks.picks_table(res), hide_index=True, key=key)
        st.caption(picks.PICKS_CAPTION + f" Masking ratio {res.get('ratio', 0):.0%}; frozen = the top 30% "
                   "of each piece by score. Labels: a chord and voice analysis of the notes (no model).")


# first view: the masker overlay from one clean pass (fast); the full explain table
# (every note masked once: predictions, reconstruction) comes after the roll is drawn
over = W.run_model(A.overlay, model_path, data, piece, ratio) if model_path else None
notes = over if over is not None else piece.notes_table()

m1, m2, m3, m4 = st.columns(4)
m1.metric("Notes", f"{len(notes):,}")
m2.metric("Bars", f"{len(piece.bar_starts_q):,}")
m3.metric("Length", f"{float(piece.end_sec.max()):.0f} s")
if over is not None:
    n_frozen = int(over["frozen"].sum())
    n_free = len(over) - n_frozen
    m4.metric("Picked by the masker", f"{int(over['picked'].sum()):,}",
              help=f"{ratio:.0%} of the {n_free:,} notes that are not frozen. The {n_frozen:,} frozen notes "
                   "(the top 30% by masker score) are never masked, so the masker picks fewer notes than "
                   f"{ratio:.0%} of the whole piece.")
if unpaired := int(piece.dropped.get("unpaired_note_ons", 0)):
    st.caption(f"The file has {unpaired} more note-on(s) than notes read: note-ons the MIDI reader could not "
               "make notes of (never closed, or, in a file over 2 MiB, a pitch opened again while it sounds).")

# The model's guesses (inspector, ghost layer, accuracy, reconstruction) need every note masked
# once: a model pass per group of notes. The masks depend on the ratio only through the number of
# groups (A.mask_groups); a ratio with another number keeps the default ratio's guesses (cached,
# warmed up) with the picks of the new ratio, unless the guesses are asked for at this ratio.
same_masks = A.mask_groups(ratio) == A.mask_groups(A.DEFAULT_RATIO)
context = ratio
# the toggle comes and goes with the ratio: it gets a slot that is always there, since the browser
# rebuilds every element after one that appears or goes (the roll, the charts: twice the drawing)
exact_slot = st.empty()
if over is not None and not same_masks:
    exact = exact_slot.toggle(f"Re-run the model's guesses with {ratio:.0%} of the notes masked",
                      value=False, key="explore_exact",
                      help=f"Below, the model's guesses, the ghost layer, the accuracy and the reconstruction "
                           f"come from masks of {A.DEFAULT_RATIO:.0%} of the notes around each note (ready at "
                           f"once). Switch on to run the model again with {ratio:.0%} masked: a few "
                           "seconds on a long piece.")
    context = ratio if exact else A.DEFAULT_RATIO
show_ghost = False
table = None
no_recovery = A.recovery_note(model_path) if over is not None else None
untrained = over is not None and untrained_head(model_path)
if no_recovery:
    st.info(no_recovery)
# the ghost layer belongs to one piece and model: another piece (an upload) or model starts with it
# off, so the toggle and the roll never disagree
ghost_for = (A.piece_key(data), model_path)
if st.session_state.get("explore_ghost_for") != ghost_for:
    st.session_state["explore_ghost_for"] = ghost_for
    st.session_state["explore_ghost"] = False
if over is not None and not no_recovery:
    show_ghost = st.toggle("Show the model's reconstruction of the picked notes (ghost layer)",
                           value=False, key="explore_ghost")
    if show_ghost:
        table = W.run_model(A.explain, model_path, data, piece, ratio, seed, context)
colour_col, _ = st.columns([2, 3])
colour_by = colour_col.selectbox("Colour notes by", list(COLOUR_BY), key="explore_colour_by",
                         format_func=lambda c: COLOUR_BY[c] if c != SCORE or over is not None else "track",
                         help="The masker's score, or the role of each note from a chord and voice analysis "
                              "of the piece (no model): chord or non-chord tone, voice, beat, duration, "
                              "register. Picked notes keep their red outline, frozen notes their hatching.")
colour_by = None if colour_by == SCORE else colour_by  # None: the masker score (or the track)
labels = _labels(A.piece_key(data), piece) if colour_by else None
roll_key = ("explore roll", name, A.piece_key(data),
            (*A.model_key(model_path), A.ratio_key(ratio)) if over is not None else None,
            (seed, A.mask_groups(context)) if table is not None else None, bool(untrained), colour_by)
fig = A.figure(roll_key, lambda: pianoroll.piano_roll(
    with_labels(notes, labels) if colour_by else notes, bar_starts_q=piece.bar_starts_q,
    track_names=piece.track_names, ghost=pianoroll.reconstruction_frame(table) if table is not None else None,
    title=html_escape(name) + (f" - notes by {COLOUR_BY[colour_by]}" if colour_by else
                               " - masker overlay" + (" (untrained masker, faded)" if untrained else "")
                               if over is not None else ""),
    height=520, faded=bool(untrained), color_by=colour_by))
event = st.plotly_chart(fig, key="explore_roll", on_select="rerun", selection_mode="points",
                        config={"scrollZoom": True, "displaylogo": False})
if over is not None and table is None and not no_recovery:
    table = W.run_model(A.explain, model_path, data, piece, ratio, seed, context)
if over is not None and (warn := A.untrained_masker_note(model_path)):
    st.warning(warn + " The overlay above is drawn faded.")
view = rollaxes.opening_text(len(piece.bar_starts_q))
if colour_by:
    st.caption(view + f"Colour = {COLOUR_BY[colour_by]}, from a chord and voice analysis of the piece (chord "
               "templates per half bar or beat, voices followed within each track; no model)"
               + (". Red outline = the notes the masker would mask at this ratio; hatched = frozen notes"
                  if over is not None else "") + ". Click a note to inspect it.")
elif over is None:
    st.caption(view + "No model loaded: notes are coloured by track. Choose a model to see the masker overlay.")
else:
    st.caption(view + "Colour = how high the masker scores a note compared with the rest of the piece "
               "(its rank: 100% = the highest score; high = hard to recover from context). Red outline = "
               f"the notes it would mask at this ratio: {ratio:.0%} of the {n_free:,} notes that are not "
               f"frozen, {int(over['picked'].sum()):,} notes. Grey hatched = the {n_frozen:,} frozen notes "
               "(the top 30% by score, never masked). Click a note to inspect it; drag to zoom, "
               "double-click to reset.")
    spread = pianoroll.score_spread_text(over["score"])
    st.caption(spread[:1].upper() + spread[1:] + ".")

if table is not None:  # did the model learn? its recovery next to the no-model rules (METHOD.md 9)
    acc, rules = A.accuracy_of(table), A.rules(model_path, data, piece, context, seed)
    masks = "" if same_masks or context == ratio else f" (with {context:.0%} of the notes masked)"
    leads = A.rule_leads(model_path, data, piece, context, seed, table)  # 'learned' only beyond chance
    st.caption(f"**Did this model learn{masks}?** " + A.rules_verdict(acc, rules, leads))
    with st.expander("Recovery accuracy vs the no-model rules (same masked notes)"):
        st.plotly_chart(charts.rules_figure({model_label: acc}, rules), key="explore_rules")

# ----------------------------------------------------------------------------- what it picks
picks_state = st.session_state.setdefault("smu_picks", {})
if over is not None:
    st.subheader("What it picks")
    st.caption("Which kinds of note the masker scores higher or lower than notes of the same duration and "
               "register, in this piece and (below) over a folder of pieces.")
    mkey = A.model_key(model_path)
    table_p = with_labels(over, labels if labels is not None else _labels(A.piece_key(data), piece))
    res_p = _piece_picks(mkey, A.piece_key(data), A.ratio_key(ratio), model_label, table_p)
    show_picks(res_p, "explore_picks_table", untrained, "in this piece")
    picks_state["piece"] = {"where": f"the piece {name}", "model": model_label, "ratio": float(ratio),
                            "result": res_p, "untrained": bool(untrained)}
    with st.expander("Over a folder of pieces", expanded=bool(st.session_state.get("explore_picks_run"))):
        folder = st.text_input("Folder of MIDI / MusicXML files", key="explore_picks_folder",
                               value=st.session_state.get("explore_picks_folder_value", str(A.SAMPLE_DIR)))
        max_files = int(st.number_input("At most this many files", 1, 200, 40, key="explore_picks_max"))
        if st.button("Measure what it picks over the folder", key="explore_picks_go"):
            st.session_state["explore_picks_folder_value"] = folder
            st.session_state["explore_picks_run"] = (folder, max_files)
        if st.session_state.get("explore_picks_run") == (folder, max_files):
            try:
                files = A.folder_files(folder, max_files)
                stamp = tuple((f.name, f.stat().st_mtime) for f in files)
                res_f = A.folder_picks_cached(mkey[0], mkey[1], str(Path(folder).resolve()), stamp,
                                              A.ratio_key(ratio), model_label)
            except A.SMUInputError as e:
                st.error(f"Cannot measure on this folder: {md_escape(e)}")
                res_f = None
            except Exception as e:  # keep the page alive whatever the model does
                st.error(f"The model failed on this folder: {type(e).__name__}: {md_escape(e)}")
                res_f = None
            if res_f is not None:
                if res_f.get("skipped"):
                    st.warning(f"{len(res_f['skipped'])} file(s) skipped: " + "; ".join(
                        f"{md_escape(f)}: {md_escape(why)}" for f, why in res_f["skipped"][:5]))
                if res_f["n_pieces"]:
                    st.caption(f"{res_f['n_pieces']} pieces, {res_f['n_notes']:,} notes; intervals resample "
                               f"{md_escape(res_f['resampled'])}.")
                    show_picks(res_f, "explore_picks_folder_table", untrained, "over the folder")
                    picks_state["folder"] = {"where": f"the folder {folder} ({res_f['n_pieces']} pieces)",
                                             "model": model_label, "ratio": float(ratio), "result": res_f,
                                             "untrained": bool(untrained)}
                else:
                    st.error("No file of this folder could be read.")
    st.caption("The study's table over 60 pieces (POP909 and ASAP) is on the Study page; the Report page "
               "exports these sentences and tables.")

# ----------------------------------------------------------------------------- note inspector
st.subheader("Inspect a note")
# the note chosen (typed or clicked) lives in a plain key per piece (A.K_NOTES), which Score reads too and
# which outlives the box's own key (dropped when another page opens); none chosen: the masker's first pick
piece_k = A.piece_key(data)
selected = pianoroll.note_from_selection(fig, getattr(event, "selection", None) if event else None)
sel_sig = tuple(selected)
if selected and st.session_state.get("explore_last_sel") != sel_sig:
    A.choose_note(piece_k, selected[0])
st.session_state["explore_last_sel"] = sel_sig  # a click on the same note after the roll was redrawn counts
note_idx = A.chosen_note(piece_k, len(notes))
if note_idx is None:
    note_idx = (int(np.flatnonzero(over["picked"].to_numpy(dtype=bool))[0])
                if over is not None and over["picked"].any() else 0)
st.session_state["explore_note"] = note_idx
st.number_input("Note number (or click a note in the roll)", 0, len(notes) - 1, key="explore_note",
                on_change=lambda: A.choose_note(piece_k, st.session_state["explore_note"]))
row = (table if table is not None else notes).iloc[note_idx]
track_label = (piece.track_names[int(row["track"])] if 0 <= int(row["track"]) < len(piece.track_names)
               else str(int(row["track"])))
info = (f"**{readable.pitch_name(int(row['pitch']))}** at "
        f"{readable.bar_beat_label(row['bar'], row['beat'])}, {readable.fmt_quarters(row['duration_q'])} long, "
        f"velocity {int(row['velocity'])}, track {md_escape(track_label)}")
st.markdown(info)
if table is not None:
    state = "frozen (never masked)" if bool(row.get("frozen", False)) else (
        "picked by the masker at this ratio" if bool(row["picked"]) else "not picked at this ratio")
    rank = float((table["score"] < float(row["score"])).mean())
    st.markdown(f"Masker score **{float(row['score']):.3f}** (higher than {rank:.0%} of the piece) - {state}.")
    attrs = [c[len("topk_"):] for c in table.columns if c.startswith("topk_")]
    truth = {a: readable.value_label(a, row.get(f"true_{a}")) for a in attrs}  # the true token, decoded
    st.caption(f"The model's top guesses for each attribute of this note when it is masked "
               f"(together with a random {context:.0%} of its neighbours); green = the true value.")
    cols = st.columns(max(1, len(attrs)))
    has_any = False
    for col, a in zip(cols, attrs, strict=False):
        topk = row.get(f"topk_{a}")
        with col:
            if isinstance(topk, (list, tuple)) and len(topk):
                has_any = True
                ok = row.get(f"correct_{a}")
                verdict = "" if ok is None or (isinstance(ok, float) and np.isnan(ok)) else (
                    " - correct" if bool(ok) else " - wrong")
                named = [(readable.value_label(a, v), p) for v, p in topk]  # note names, rounded values
                st.plotly_chart(charts.prediction_bars(named, title=f"{a}{verdict}", truth=truth.get(a)),
                                key=f"explore_pred_{a}", config={"displayModeBar": False})
    if not has_any:
        st.info("No predictions for this note.")

    # ------------------------------------------------------------------------- one masking draw
    st.subheader("Draw a masking")
    st.caption("One concrete draw at this ratio: a uniform random draw (left, the MidiBERT baseline) "
               "against the masker's pick of as many notes (right). Frozen notes are never masked. Each "
               "draw hides its notes all at once and asks the model to put them back. Which was harder is "
               "said only when the 95% interval of the difference (resampling the piece's 4-bar spans, both "
               "masks together, and never narrower than shuffling the two masks' notes within each span) "
               "excludes zero; it is one draw of one piece, not the masker in general.")
    if st.button("Draw a masking", key="explore_draw"):
        st.session_state["explore_draw_n"] = st.session_state.get("explore_draw_n", 0) + 1
    draws = st.session_state.get("explore_draw_n", 0)
    if draws:
        draw_seed = seed * 1000 + draws
        frozen = table["frozen"].fillna(False).to_numpy(dtype=bool)
        picked = table["picked"].to_numpy(dtype=bool)
        rnd = picks_draw.random_like(picked, ~frozen, draw_seed)
        outcome = W.run_model(draw_outcome, model_path, data, piece, ratio, draw_seed, picked, frozen, rnd)
        titles = None
        if outcome is not None and outcome["recovery"]["masker"]["mean"] is not None:
            rec = outcome["recovery"]
            shown = picks_draw.shown_points(rec)
            titles = [f"random draw: {shown[0]:.1f}% put back ({rec['random']['n']} notes)",
                      f"masker's pick: {shown[1]:.1f}% put back ({rec['masker']['n']} notes)"]
        fig_draw = A.figure(  # built once per draw: later reruns of the page (another note, audio) reuse it
            ("explore draw", *A.model_key(model_path), A.piece_key(data), A.ratio_key(ratio), seed,
             A.mask_groups(context), draw_seed, tuple(titles or ())),
            lambda: pianoroll.masking_draw_figure(table, rnd, picked, bar_starts_q=piece.bar_starts_q,
                                                  track_names=piece.track_names, titles=titles))
        st.plotly_chart(fig_draw, key="explore_draw_fig", config={"displaylogo": False})
        if outcome is not None:
            rec = outcome["recovery"]
            st.markdown("**What the model put back.** " + picks_draw.recovery_sentence(rec, outcome["difference"]))
            if rec["masker"]["mean"] is not None:  # then ``shown`` is the titles' (above)
                d1, d2, d3 = st.columns(3)
                d1.metric("Recovered, random draw", f"{shown[0]:.1f}%",
                          help="Share of the hidden notes' attributes (bar, position, pitch, duration) "
                               "the model guessed right, averaged over the attributes.")
                d2.metric("Recovered, masker's pick", f"{shown[1]:.1f}%", delta=f"{shown[2]:+.1f} points",
                          delta_color="off", help="One draw: the sentence above says whether the difference's "
                                                  "interval excludes zero.")
                d3.metric("Notes hidden in each", f"{rec['masker']['n']:,}")
                st.dataframe(draw_table(rec), hide_index=True, key="explore_draw_table")
            who = ("**What the picked notes have in common.** " if not untrained else
                   "**What the picked notes have in common** (an untrained masker: its picks are "
                   "close to arbitrary). ")
            st.markdown(who + picks_draw.pick_sentence(outcome["profile"]))
            with st.expander("The picks' share of each kind of note against the share expected from their passages"):
                st.dataframe(profile_table(outcome["profile"]), hide_index=True, key="explore_draw_profile")
                st.caption("Labels from a chord and voice analysis of the piece (chord or non-chord tone, "
                           "voice, beat, duration, register, repeated note). Expected: the share random notes "
                           "would have, drawn in each 4-bar span as many as the masker picked there, so a "
                           "masker that only favours some passages comes out as expected. Brackets: 95% "
                           "intervals of the difference from expected (resampling the piece's 4-bar spans), not "
                           "corrected for the number of kinds tested "
                           f"({outcome['profile'].get('n_tested', 0)}). A kind of note is named above (clear) only "
                           "when the difference from expected is at least 5 points and random draws of as many "
                           "notes within the same spans gave one as unlikely, in any kind tested, in at most 5% "
                           f"of {outcome['profile'].get('n_draws', picks_draw.DRAW_SHUFFLES):,} draws, and none "
                           f"in a piece of fewer than {picks.MIN_BLOCKS} spans of 4 bars. So a named kind is a "
                           "preference among the notes of the passages the masker picks from; which passages "
                           "it favours is another matter (compare the expected share with the notes').")
        st.caption(f"Draw #{draws}: random mask seed {draw_seed}.")

# ----------------------------------------------------------------------------- listening
st.subheader("Listen")
if st.button("Render audio", key="explore_audio"):
    st.session_state["explore_audio_for"] = (A.piece_key(data), model_path, ratio, seed, context)
if st.session_state.get("explore_audio_for") == (A.piece_key(data), model_path, ratio, seed, context):
    original = A.render_audio(notes[["pitch", "velocity", "start_sec", "end_sec", "program", "track"]])
    a1, a2 = st.columns(2)
    with a1:
        st.markdown("**Original**")
        st.audio(original.wav, format="audio/wav")
    if table is not None:
        recon = pianoroll.reconstruction_frame(table, full=True)
        rec_audio = A.render_audio(recon[["pitch", "velocity", "start_sec", "end_sec", "program", "track"]])
        with a2:
            st.markdown("**Reconstruction** (picked notes replaced by the model's top guesses)")
            st.audio(rec_audio.wav, format="audio/wav")
    st.caption(f"Played with: {original.engine}; first {A.AUDIO_SECONDS:.0f} s.")
