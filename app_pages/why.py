"""Why: explanations of single decisions, note by note.

The page first says which model and which fine-tuned head it explains (and why, when the head
was fine-tuned from another model than the page's). Tabs: Attributions (the head's prediction
for the note in plain words; on request, which notes pushed it there, with the method's details
- integrated gradients, occlusion, precision, completeness - folded away), Attention (which notes
a selected note looks at), Counterfactuals (edit the piece and see the prediction and the masker
scores change; download the edit as MIDI), Masker (why the masker scores a note as it does).
Only the open tab is computed, and every explanation is cached by model, piece, note and
settings, so another note costs what its open tab costs and a note seen before comes back at
once. Every error is shown as a message, never as a traceback.
"""

from datetime import datetime
from pathlib import Path

import numpy as np
import streamlit as st

from smu_explain import appstate as A
from smu_explain import appwidgets as W
from smu_explain import charts, pianoroll, readable, rollaxes, valueroll
from smu_explain.checkpoint import read_config, task_heads, user_folder
from smu_explain.errors import SMUCheckpointError, SMUInputError
from smu_explain.markup import html_escape, md_code, md_escape
from smu_explain.precision import fast_precision

K_WHY = "smu_why"  # the views shown last, for the HTML export
FT_HELP = ("No fine-tuned model found. Make one with `smu finetune`, e.g. "
           "`smu finetune --task emotion --from models/demo-adversarial --out models/emotion-ft` "
           "(or `--task composer`, or `--task folder --folder MY_MIDIS --labels labels.csv`), then pick "
           "the folder here: every folder under models/ holding a fine-tuned config.json is listed.")

st.title("Why did the model decide?")
st.caption("Explanations of single decisions, note by note: what a fine-tuned model says about a note "
           "and which notes pushed it there, where a note looks, what changes when you edit the music, "
           "and why the masker scores a note as it does.")

c1, c2, c3 = st.columns([3, 3, 3])
with c1:
    choice = W.piece_picker("why")
with c2:
    model_path = W.model_picker("Model (masker and attention)", "why_model", A.K_MODEL_A, "demo adversarial")



def guarded(fn, *args, **kw):
    """Call a library function; show a plain error (never a traceback) and return None on failure."""
    try:
        return fn(*args, **kw)
    except SMUCheckpointError as e:
        st.error(W.model_error(e))
    except SMUInputError as e:
        st.error(f"Cannot explain this: {md_escape(e.reason)}")
    except ValueError as e:
        st.error(f"The model cannot read this piece: {md_escape(e)}")
    except Exception as e:  # keep the page alive whatever the model does
        st.error(f"The explanation failed: {type(e).__name__}: {md_escape(e)}")
    return None


# ----------------------------------------------------------------------------- models and caches

def folder_label(d: Path) -> str:
    """``models/...`` for a folder under models/, else its path."""
    try:
        return f"models/{Path(d).resolve().relative_to(A.MODELS_DIR.resolve())}"
    except ValueError:
        return str(d)


def finetuned_choices() -> dict[str, Path]:
    """Fine-tuned folders: those kept with the chosen model first, then every folder (and
    sub-folder) under models/ with a fine-tuned config.json; each folder once."""
    out: dict[str, Path] = {}
    seen: set[Path] = set()

    def add(d: Path) -> None:
        r = Path(d).resolve()
        if r not in seen:
            seen.add(r)
            out[folder_label(d)] = Path(d)

    if model_path:
        for d in task_heads(model_path):
            add(d)
    if A.MODELS_DIR.is_dir():
        for d in sorted(A.MODELS_DIR.iterdir()):
            if d.is_dir():
                for cand in task_heads(d):  # the folder, its sub-folders and d/finetuned/*
                    add(cand)
    return out


def model_label(path) -> str:
    """A model folder as people know it: its name in the model picker, else ``models/...`` or its path."""
    r = Path(path).resolve()
    for label, p in A.model_choices().items():
        if Path(p).resolve() == r:
            return label
    return folder_label(Path(path))


def head_source(head: Path) -> dict:
    """What a fine-tuned folder is: its task, level and classes, and the encoder it was fine-tuned
    from (``pretrained`` in its config.json; ``<repo>/`` is this repository), None when unknown."""
    meta = read_config(head)
    enc = meta.get("pretrained") or (meta.get("finetune") or {}).get("pretrained")
    encoder = None
    if isinstance(enc, str) and enc not in ("", "none"):
        encoder = A.REPO_ROOT / enc[len("<repo>/"):] if enc.startswith("<repo>/") else Path(enc)
    return {"task": str(meta.get("task", "?")), "level": str(meta.get("level", "?")),
            "classes": [str(c) for c in meta.get("classes", [])], "encoder": encoder}


def same_folder(a, b) -> bool:
    try:
        return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def who_is_explained(page_model: str | None, head: Path | None, own_heads: list[Path],
                     loaded: bool = True) -> str:
    """The sentence that opens the page: which model and head each view explains, and why the head
    comes from another model than the page's when it does (Markdown, names escaped); ``loaded``:
    whether the head could be loaded (a head that could not explains nothing)."""
    name = md_escape(model_label(page_model)) if page_model else None
    views = (f"Attention, counterfactual masker scores and the masker: **{name}**." if name
             else "Attention and the masker need a model: choose one above.")
    if head is None:
        return f"{views} No fine-tuned head is chosen, so there are no predictions to explain."
    try:
        src = head_source(head) if loaded else None
    except SMUInputError:
        src = None
    if src is None:
        return (f"{views} The fine-tuned folder {md_code(folder_label(head))} cannot be loaded (the reason is "
                "shown above), so there are no predictions to explain.")
    enc = src["encoder"]
    enc_name = md_escape(model_label(enc)) if enc is not None else "an unknown model"
    what = (f"the **{md_escape(src['task'])}** head fine-tuned on **{enc_name}** "
            f"({md_code(folder_label(head))}; classes {md_escape(', '.join(src['classes']))})")
    if page_model is None or same_folder(enc, page_model):
        return f"Predictions and attributions: {what}. {views}"
    if own_heads:
        why = (f"because it is the head chosen above (**{name}**'s own: "
               + ", ".join(md_code(folder_label(h)) for h in own_heads) + ")")
    else:
        why = f"because **{name}** has no fine-tuned head"
    return (f"**Predictions and attributions come from another model than the page's:** {what}, {why}. "
            f"{views}")


@st.cache_data(show_spinner="Computing integrated gradients and occlusion...", max_entries=64)
def attributions_cached(path: str, mtime: float, key: str, target, cls: int | None, steps: int,
                        occlusion_notes: int | None, precision: str, _piece):
    from smu_explain.attribution import attribution_agreement

    model, tok = A.load_task_model(path)
    return attribution_agreement(model, tok, _piece, target, steps=steps, cls=cls,
                                 occlusion_notes=occlusion_notes, precision=precision)


OCCLUSION_CHOICES = {"a sample of 64 notes (fast)": 64, "a sample of 256 notes": 256,
                     "every note (slow: one pass per note)": None}


def parse_notes(text: str, n: int) -> list[int] | None:
    """'3, 5-9' -> [3, 5, 6, 7, 8, 9]; empty -> None (all notes). SMUInputError on bad text."""
    text = text.strip()
    if not text:
        return None
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                out += list(range(min(a, b), max(a, b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise SMUInputError("notes", f"cannot read {part!r}: write note numbers like 3, 5-9") from None
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise SMUInputError("notes", f"note {bad[0]} is not in the piece (0..{n - 1})")
    return sorted(set(out))


# ----------------------------------------------------------------------------- shared controls

# the fine-tuned head: the page model's own first (the choice follows a new page model)
ft_choices = finetuned_choices()
own_heads = task_heads(model_path) if model_path else []
if st.session_state.get("why_ft_for") != model_path:
    st.session_state["why_ft_for"] = model_path
    st.session_state.pop("why_ft_choice", None)
ft_path = None
with c3:
    ft_choice = st.selectbox("Fine-tuned model", list(ft_choices) + [W.OTHER_FOLDER],
                             key="why_ft_choice",
                             help="The head whose predictions and attributions are explained: a pre-trained model trained further on a labelled task (here: which "
                                  "notes are melody, bridge or piano accompaniment). The page model's own heads "
                                  "come first.")
    if ft_choice == W.OTHER_FOLDER:
        txt = st.text_input("Fine-tuned model folder", value="", key="why_ft_path")
        if txt.strip():
            ft_path = guarded(user_folder, txt)
        elif not ft_choices:
            st.info(FT_HELP)
        else:
            st.info("Type the path of a fine-tuned model folder.")
    else:
        ft_path = ft_choices[ft_choice]

piece = W.piece_or_stop(choice)
name, data = choice
ft = guarded(A.load_task_model, ft_path) if ft_path else None  # an error here is shown above the sentence
st.info(who_is_explained(model_path, ft_path, own_heads, loaded=ft is not None))

notes_df = piece.notes_table()
n_notes = len(notes_df)
ratio = float(st.session_state.get(A.K_RATIO, 0.15))
# the note: the middle of a new piece, else the one chosen last, also after a visit to another page
# (Streamlit drops a widget's state when its page is left: "why_note_value" keeps it)
if (st.session_state.get("why_note_for") != A.piece_key(data)
        or not 0 <= st.session_state.get("why_note_value", 0) < n_notes):
    st.session_state["why_note_value"] = A.why_default_note(n_notes)
    st.session_state["why_note_for"] = A.piece_key(data)
    st.session_state.pop("why_note", None)
if not 0 <= st.session_state.get("why_note", -1) < n_notes:
    st.session_state["why_note"] = st.session_state["why_note_value"]
note = int(st.number_input("Note to explain (its number; attention, masker and note tasks use it)",
                           0, n_notes - 1, key="why_note"))
st.session_state["why_note_value"] = note
# the views shown for this piece, note and models, kept while they stay the same: each tab adds its
# view when it is opened, and the export holds every view seen
views = st.session_state.setdefault(K_WHY, {})
views_for = (A.piece_key(data), note, model_path, str(ft_path) if ft_path else None)
if st.session_state.get("why_views_for") != views_for:
    st.session_state["why_views_for"] = views_for
    views.clear()
views["piece"] = name
row = notes_df.iloc[note]
note_words = (f"**{readable.pitch_name(int(row['pitch']))}** at {readable.bar_beat_label(row['bar'], row['beat'])}, "
              f"{readable.fmt_quarters(row['duration_q'])} long")
st.markdown(f"Note {note}: {note_words}.")

# the open tab reruns the page when it changes: only the open tab's views are computed (another note
# costs what the open tab costs; each view is cached by model, piece, note and settings, so a note
# seen before comes back at once) and a figure is sent only with its tab open
tab_attr, tab_att, tab_cf, tab_mask = st.tabs(["Attributions", "Attention", "Counterfactuals", "Masker"],
                                              key="why_tab", on_change="rerun")


def is_open(tab) -> bool:
    """Whether ``tab`` is the open one (True when its state is unknown)."""
    return getattr(tab, "open", None) is not False


def chart(tab, fig, key: str) -> None:
    """``st.plotly_chart`` of ``fig`` in ``tab`` when the tab is open (or its state unknown), else an
    empty slot: the elements after it keep their places, so the browser does not rebuild them."""
    slot = st.empty()
    if is_open(tab):
        slot.plotly_chart(fig, key=key, config={"displaylogo": False})


def table(df, key: str, digits: int = 3) -> None:
    """``st.dataframe`` of ``df`` with each float column in one format, ``digits`` fixed decimals
    (a plain table drops trailing zeros: 0 beside 0.038, 2.57 beside 2.367); numbers stay numbers."""
    fmt = {c: st.column_config.NumberColumn(format=f"%.{digits}f") for c in df.columns
           if df[c].dtype.kind == "f"}
    st.dataframe(df, hide_index=True, key=key, column_config=fmt)


def top_notes(frame, n: int = 3) -> str:
    """'note 12 (E4 at bar 3, beat 1), ...' for the rows of ``frame``."""
    return ", ".join(f"note {int(r['note'])} ({readable.pitch_name(int(r['pitch']))} at "
                     f"{readable.bar_beat_label(r['bar'], r['beat'])})" for _, r in frame.head(n).iterrows())


# ----------------------------------------------------------------------------- attributions
with tab_attr:
    if ft is None:
        if ft_path is None and not ft_choices:
            st.info(FT_HELP)
    elif is_open(tab_attr):
        ft_model, ft_tok = ft
        target = note if ft_model.level == "note" else None
        # the answer first: the head's prediction for this note (one pass per window of the piece,
        # cached per piece: another note is a look-up)
        pred = guarded(A.downstream, ft_path, data, piece)
        if pred is not None:
            if pred["level"] == "note":
                probs = pred["probs"][note]
                order = np.argsort(-probs)
                said = md_escape(ft_model.classes[int(order[0])])
                rest = ", ".join(f"{md_escape(ft_model.classes[int(i)])} {probs[int(i)]:.0%}" for i in order[1:])
                st.markdown(f"The **{md_escape(ft_model.task)}** head says note {note} is **{said}** "
                            f"({probs[int(order[0])]:.0%} sure; {rest}).")
            else:
                best, p = pred["classes"][0]
                st.markdown(f"The **{md_escape(ft_model.task)}** head says the piece is **{md_escape(best)}** "
                            f"({p:.0%} sure).")
        cls_label = st.selectbox("Explain the push towards", ["the prediction"] + ft_model.classes, key="why_cls",
                                 help="Which class's probability the notes are credited for.")
        with st.expander("Method settings"):
            a1, a2 = st.columns(2)
            with a1:
                steps = int(st.select_slider("Integration steps", [8, 16, 32, 64], value=16, key="why_steps",
                                             help="More steps: attributions that add up more exactly "
                                                  "(the completeness gap below), slower."))
            with a2:
                occ_label = st.selectbox("Occlusion check on", list(OCCLUSION_CHOICES), key="why_occ_notes",
                                         help="Occlusion runs the model once per occluded note; a seeded random "
                                              "sample checks IG at a fraction of the cost.")
            precision = "bf16" if st.toggle("bf16 IG passes (about 2x faster on CPUs with bf16 units; "
                                            "the completeness gap shows the error)",
                                            value=fast_precision(next(ft_model.parameters()).device) == "bf16",
                                            key="why_bf16") else "fp32"
        occ_notes = OCCLUSION_CHOICES[occ_label]
        cls = None if cls_label == "the prediction" else ft_model.classes.index(cls_label)
        run_key = (str(ft_path), A.piece_key(data), target, cls, steps, occ_notes, precision)
        done = st.session_state.setdefault("why_attr_done", [])  # every explanation asked for (cached)
        if st.button("Explain the prediction", key="why_attr_go", type="primary",
                     help="Which notes pushed the head to this answer: the model runs many times "
                          "(seconds). A note explained before comes back at once.") and run_key not in done:
            done.append(run_key)
        if run_key in done:
            res = guarded(attributions_cached, str(Path(ft_path).resolve()), A._weights_mtime(Path(ft_path)),
                          A.piece_key(data), target, cls, steps, occ_notes, precision, piece)
            if res is not None:
                ig, occ = res["ig"], res["occlusion"]
                what = f"note {target}" if target is not None else "the piece"
                klass = md_escape(res["class"])
                others = ig.drop(index=[target]) if target is not None and target in ig.index else ig
                pro = others[others["attribution"] > 0].sort_values("attribution", ascending=False)
                con = others[others["attribution"] < 0].sort_values("attribution")
                words = [f"**Why {what} is {klass}** (probability {ig.attrs['value']:.0%}):"]
                words.append(f"the notes that pushed most towards {klass} are {top_notes(pro)}" if len(pro)
                             else f"no other note pushed towards {klass}")
                if len(con):
                    words.append(f"; most against: {top_notes(con, 2)}")
                st.markdown(" ".join(words[:2]) + "".join(words[2:]) + ". Red = pushed towards it, blue = against.")
                fig_ig = valueroll.attribution_roll(ig, bar_starts_q=piece.bar_starts_q, track_names=piece.track_names,
                                                title=f"why {what} is {html_escape(res['class'])} (integrated gradients)")
                chart(tab_attr, fig_ig, "why_ig_roll")
                with st.expander("How this was computed (integrated gradients, occlusion, precision, completeness)"):
                    st.caption("Integrated gradients (IG) credit each note for the class probability by "
                               "following the model from a baseline where every note is the MASK token to the "
                               "piece, on the notes' input embeddings; occlusion replaces each note by MASK in "
                               "turn and measures the change. The two explain the same probability; where they "
                               "agree (Spearman below) the explanation is more trustworthy. Long pieces: each "
                               "window is explained and the attributions averaged over the windows, as the "
                               "fine-tuner averages their probabilities.")
                    m1, m2, m3 = st.columns(3)
                    m1.metric("Explained class", res["class"])
                    m2.metric("Probability", f"{ig.attrs['value']:.3f}",
                              help="piece level: mean over the windows")
                    m3.metric("IG vs occlusion (Spearman)",
                              "-" if np.isnan(res["spearman"]) else f"{res['spearman']:.2f}")
                    fig_occ = valueroll.attribution_roll(occ, bar_starts_q=piece.bar_starts_q,
                                                     track_names=piece.track_names,
                                                     title=f"occlusion: why {what} is {html_escape(res['class'])}")
                    chart(tab_attr, fig_occ, "why_occ_roll")
                    fig_sc = charts.attribution_scatter(ig, occ, title="IG against occlusion, one dot per note")
                    chart(tab_attr, fig_sc, "why_scatter")
                    st.caption(f"IG completeness: the attributions sum to {ig['attribution'].sum():.4f}; "
                               f"f(piece) - f(all MASK) = {ig.attrs['value'] - ig.attrs['baseline_value']:.4f} "
                               f"(the completeness gap is their difference; {steps} steps, {precision}). "
                               f"Occlusion measured {occ.attrs['n_measured']} of {int(occ['in_window'].sum())} "
                               f"notes; Spearman over {res['n']} notes.")
                    top = ig.assign(occlusion=occ["attribution"]).reindex(
                        ig["attribution"].abs().sort_values(ascending=False).index).head(12)
                    top = readable.readable_notes(top, ["attribution", "occlusion"], digits=4).rename(
                        columns={"attribution": "IG"})
                    table(top, "why_attr_table", digits=4)
                views["attributions"] = {
                    "text": f"Task {ft_model.task}; explained class {res['class']} for {what} "
                            f"(probability {ig.attrs['value']:.3f}); {steps} IG steps ({precision}), MASK "
                            f"baseline; occlusion on {occ.attrs['n_measured']} notes; "
                            f"Spearman IG vs occlusion {res['spearman']:.2f} over {res['n']} notes.",
                    "figures": [fig_ig, fig_occ, fig_sc], "tables": [top]}
        else:
            st.caption("Press **Explain the prediction** to see which notes pushed the head to its answer (the model "
                       "runs many times; a note explained before comes back at once).")

# the masker / attention model
mt = guarded(A.load_model, model_path) if model_path else None

# ----------------------------------------------------------------------------- attention
with tab_att:
    st.caption("Which notes the selected note looks at: the attention weights of one layer and head "
               "(or their mean), or attention rollout through all layers. Computed in the note's "
               "window; darker = more attention; lines = the most attended notes.")
    if mt is None:
        st.info("Choose a model above to see its attention.")
    elif is_open(tab_att):
        model, tok = mt
        L, H = model.config.n_layers, model.config.n_heads
        b1, b2 = st.columns(2)
        with b1:
            layer_opt = st.selectbox("Layer", ["rollout (all layers)"] + [f"layer {i + 1}" for i in range(L)],
                                     index=L, key="why_layer")
        with b2:
            head_opt = st.selectbox("Head", ["mean of the heads"] + [f"head {h + 1}" for h in range(H)],
                                    key="why_head", disabled=layer_opt.startswith("rollout"))
        rollout = layer_opt.startswith("rollout")
        layer = None if rollout else int(layer_opt.split()[1]) - 1
        head = None if rollout or head_opt.startswith("mean") else int(head_opt.split()[1]) - 1
        w = guarded(A.attention, model_path, data, piece, note, layer, head, rollout)
        if w is not None:
            fig_att = A.figure(
                ("why attention", *A.model_key(model_path), A.piece_key(data), note, layer, head, rollout, layer_opt,
                 head_opt),
                lambda: valueroll.attention_roll(notes_df, w, note, arcs=8, bar_starts_q=piece.bar_starts_q,
                                             track_names=piece.track_names,
                                             title=f"note {note}: {layer_opt}, {head_opt if not rollout else ''}"))
            chart(tab_att, fig_att, "why_att_roll")
            order = np.argsort(-w, kind="stable")[:10]
            att_top = readable.readable_notes(notes_df.iloc[order].assign(attention=w[order]), ["attention"])
            table(att_top, "why_att_table")
            views["attention"] = {"text": f"Note {note}; {layer_opt}; {'' if rollout else head_opt}.",
                                  "figures": [fig_att], "tables": [att_top]}

# ----------------------------------------------------------------------------- counterfactuals
with tab_cf:
    if is_open(tab_cf):
        from smu_explain import counterfactual as cf

        st.caption("Edit the piece and ask again: the masker's view (and the fine-tuned prediction, when "
                   "a head is chosen above) before and after, side by side.")
        e1, e2 = st.columns([2, 3])
        with e1:
            kind = st.selectbox("Edit", ["transpose", "delete notes", "shift a passage", "change velocity"],
                                key="why_cf_kind")
        edited = None
        with e2:
            if kind == "shift a passage":
                s1, s2, s3 = st.columns(3)
                end_q = float(np.ceil(piece.onset_q.max() + 1e-9))
                start_q = s1.number_input("From quarter", 0.0, end_q, 0.0, step=1.0, key="why_cf_from")
                stop_q = s2.number_input("To quarter", 0.0, end_q + 1.0, min(4.0, end_q + 1.0), step=1.0,
                                         key="why_cf_to")
                by_q = s3.number_input("Move by (quarters)", -8.0, 8.0, 1.0, step=0.5, key="why_cf_by")
                edited = guarded(cf.shift_passage, piece, start_q, stop_q, by_q)
            else:
                sel_text = st.text_input("Notes (e.g. 3, 5-9; empty = all notes)", value=str(note),
                                         key="why_cf_notes")
                sel = guarded(parse_notes, sel_text, n_notes)
                if sel is not None or not sel_text.strip():
                    cfg = mt[1].config if mt is not None else None
                    if kind == "transpose":
                        semis = int(st.number_input("Semitones", -24, 24, A.WHY_DEFAULTS["semitones"],
                                                    key="why_cf_semis"))
                        edited = guarded(cf.transpose, piece, semis, sel, config=cfg)
                    elif kind == "delete notes":
                        edited = guarded(cf.delete_notes, piece, sel if sel is not None else range(n_notes))
                    else:
                        vel = int(st.number_input("New velocity", 1, 127, 40, key="why_cf_vel"))
                        edited = guarded(cf.change_velocity, piece, sel, velocity=vel)
        if edited is not None:
            edited_bytes = guarded(cf.to_midi_bytes, edited)
            if edited_bytes is not None:
                st.download_button("Download the edited piece (MIDI)", data=edited_bytes,
                                   file_name=f"{Path(name).stem}_edited.mid", mime="audio/midi",
                                   key="why_cf_download", on_click="ignore")
                st.caption(f"{len(piece)} notes before, {len(edited)} after.")
                cf_figs = []
                if model_path and mt is not None:
                    before = guarded(A.overlay, model_path, data, piece, ratio)
                    after = guarded(A.overlay, model_path, edited_bytes, edited, ratio)
                    if before is not None and after is not None:
                        fig_cf = A.figure(
                            ("why counterfactual", *A.model_key(model_path), A.piece_key(data),
                             A.piece_key(edited_bytes), A.ratio_key(ratio)),
                            lambda: pianoroll.side_by_side_rolls([before, after], ["before", "after the edit"],
                                                             bar_starts_q=None, track_names=piece.track_names,
                                                             height=460))
                        chart(tab_cf, fig_cf, "why_cf_rolls")
                        if opening := rollaxes.opening_text(len(piece.bar_starts_q), "either roll"):
                            st.caption(opening)
                        cf_figs.append(fig_cf)
                        d1, d2 = st.columns(2)
                        # the delta of the values as shown (0.223 -> 0.222 is -0.001, not "-0.000"), none
                        # when they read the same; grey: a lower score is neither good nor bad
                        shown = [f"{f['score'].mean():.3f}" for f in (before, after)]
                        d1.metric("Mean masker score before", shown[0])
                        d2.metric("after", shown[1], delta_color="off", delta=None if shown[0] == shown[1]
                                  else f"{float(shown[1]) - float(shown[0]):+.3f}")
                else:
                    st.info("Choose a model above to see the masker's view before and after.")
                if ft_path is not None and ft is not None:
                    pb = guarded(A.downstream, ft_path, data, piece)
                    pa = guarded(A.downstream, ft_path, edited_bytes, edited)
                    if pb is not None and pa is not None:
                        unit = "probability" if pb["level"] == "sequence" else "share of notes"
                        fig_pred = charts.before_after_bars(pb["classes"], pa["classes"],
                                                           title=f"{html_escape(pb['task'])} prediction", value_label=unit)
                        chart(tab_cf, fig_pred, "why_cf_pred")
                        cf_figs.append(fig_pred)
                        st.caption(f"Prediction before: **{md_escape(pb['classes'][0][0])}**, "
                                   f"after: **{md_escape(pa['classes'][0][0])}**.")
                else:
                    st.caption("Choose a fine-tuned head above to see its prediction change too.")
                if cf_figs:
                    views["counterfactual"] = {"text": f"Edit: {kind}.", "figures": cf_figs}

# ----------------------------------------------------------------------------- masker
with tab_mask:
    st.caption("Why the masker scores the selected note as it does: its score, how hard the note is for "
               "the recoverer under seeded random masks that include it (a high loss is what the masker is "
               "trained to find: it picks or freezes such notes) and, on request, the notes whose masking "
               "changes that score most (occlusion on the masker).")
    if mt is None:
        st.info("Choose a model above to explain its masker.")
    elif is_open(tab_mask):
        from smu_explain.masker_note import masker_note_summary

        k1, k2 = st.columns(2)
        n_masks = int(k1.number_input("Random masks", 1, 64, A.WHY_DEFAULTS["n_masks"], key="why_n_masks"))
        seed = int(k2.number_input("Seed", 0, 10_000, A.WHY_DEFAULTS["seed"], key="why_seed"))
        mp = Path(model_path)
        margs = (str(mp.resolve()), A._weights_mtime(mp), A.piece_key(data), note)
        # the answer first (the piece's masker view, cached per piece; the note's masks: one batch)
        mview = guarded(A.overlay, model_path, data, piece, ratio)
        loss_df = guarded(A.masker_losses_cached, *margs, n_masks, A.ratio_key(ratio), seed, piece)
        if mview is not None and loss_df is not None:
            score = float(mview["score"].iloc[note])
            rank = float((mview["score"] < score).mean())
            state = ("frozen: never masked" if bool(mview["frozen"].iloc[note]) else
                     f"picked at {ratio:.0%}" if bool(mview["picked"].iloc[note]) else f"not picked at {ratio:.0%}")
            mean_loss = float(loss_df["loss"].mean())
            st.markdown(f"The masker scores note {note} **{score:.2f}**, higher than {rank:.0%} of the piece "
                        f"({state}): {'it expects it to be hard' if rank >= 0.5 else 'it expects it to be easy'} "
                        f"to put back. Hidden with a random {ratio:.0%} of its window, the recoverer's loss on it "
                        f"is {mean_loss:.2f} on average over {n_masks} masks.")
            m1, m2 = st.columns(2)
            m1.metric("Masker score", f"{score:.3f}")
            m2.metric("Recoverer loss (mean over masks)", f"{mean_loss:.3f}",
                      help="cross-entropy summed over the note's attributes; per-attribute columns below")
            losses = readable.readable_table(loss_df).rename(columns={"n masked": "notes masked"})
            table(losses, "why_mask_losses")
            figs, tables = [], [losses]
            done_m = st.session_state.setdefault("why_mask_done", [])
            occ_key = (*margs[:3], note)
            if st.button("Which notes drive this score?", key="why_mask_go",
                         help="Masks each note of the window in turn and measures the change of this note's "
                              "score (one model pass per note: seconds). A note asked before comes back "
                              "at once.") and occ_key not in done_m:
                done_m.append(occ_key)
            if occ_key in done_m:
                occ = guarded(A.masker_occlusion_cached, *margs, piece)
                if occ is not None:
                    res = masker_note_summary(occ, loss_df, note)
                    fig_m = A.figure(  # the occlusion: by model, piece and note (not the masks)
                        ("why masker", *A.model_key(model_path), A.piece_key(data), note),
                        lambda: valueroll.value_roll(occ, occ["change"].to_numpy(float), label="score change",
                                                 diverging=True, selected=note,
                                                 in_window=occ["in_window"].to_numpy(bool), arcs=6,
                                                 bar_starts_q=piece.bar_starts_q, track_names=piece.track_names,
                                                 title=f"note {note}: change of its masker score when each "
                                                       "note is masked"))
                    chart(tab_mask, fig_m, "why_mask_roll")
                    top_m = readable.readable_notes(res["top"], ["change"]).rename(columns={"change": "score change"})
                    table(top_m, "why_mask_top")
                    figs, tables = [fig_m], [top_m, losses]
            views["masker"] = {"text": f"Note {note}: masker score {score:.3f}; recoverer loss "
                                       f"{mean_loss:.3f} (mean of {n_masks} random masks at ratio "
                                       f"{ratio:.0%}, seed {seed}).",
                               "figures": figs, "tables": tables}

# ----------------------------------------------------------------------------- export
st.subheader("Export")
shown = [k for k in ("attributions", "attention", "counterfactual", "masker") if k in views]
if shown:
    from smu_explain.report import build_report, why_sections

    html = build_report(f"Why: {name}", why_sections(views), subtitle=f"piece: {name}; note {note}")
    st.download_button("Download these explanations (HTML)", data=html.encode("utf-8"),
                       file_name=f"smu_why_{datetime.now().strftime('%Y%m%d-%H%M')}.html", mime="text/html",
                       key="why_report", on_click="ignore")
    st.caption("Included: " + ", ".join(shown) + ".")
else:
    st.caption("Nothing to export yet.")
