"""Why: explanations of single decisions, note by note.

Tabs: Attributions (which notes pushed a fine-tuned model to its prediction: integrated
gradients and occlusion), Attention (which notes a selected note looks at), Counterfactuals
(edit the piece and see the prediction and the masker scores change; download the edit as
MIDI), Masker (why the masker scores a note as it does). Every error is shown as a message,
never as a traceback.
"""

from datetime import datetime
from pathlib import Path

import numpy as np
import streamlit as st

from smu_explain import appstate as A
from smu_explain import plots
from smu_explain.checkpoint import task_heads, user_folder
from smu_explain.errors import SMUCheckpointError, SMUInputError
from smu_explain.explain import fast_precision
from smu_explain.markup import html_escape, md_escape

K_WHY = "smu_why"  # the views shown last, for the HTML export
FT_HELP = ("No fine-tuned model found. Make one with `smu finetune`, e.g. "
           "`smu finetune --task emotion --from models/demo-adversarial --out models/emotion-ft` "
           "(or `--task composer`, or `--task folder --folder MY_MIDIS --labels labels.csv`), then pick "
           "the folder here: every folder under models/ holding a fine-tuned config.json is listed.")

st.title("Why did the model decide?")
st.caption("Explanations of single decisions, note by note: which notes pushed a fine-tuned model to "
           "its prediction, where a note looks, what changes when you edit the music, and why the "
           "masker scores a note as it does.")

c1, c2 = st.columns([3, 3])
with c1:
    choice = A.piece_picker("why")
with c2:
    model_path = A.model_picker("Model (masker and attention)", "why_model", A.K_MODEL_A, "demo adversarial")

piece = A.piece_or_stop(choice)
name, data = choice
views = st.session_state.setdefault(K_WHY, {})
views.clear()
views["piece"] = name


def guarded(fn, *args, **kw):
    """Call a library function; show a plain error (never a traceback) and return None on failure."""
    try:
        return fn(*args, **kw)
    except SMUCheckpointError as e:
        st.error(A.model_error(e))
    except SMUInputError as e:
        st.error(f"Cannot explain this: {md_escape(e.reason)}")
    except ValueError as e:
        st.error(f"The model cannot read this piece: {md_escape(e)}")
    except Exception as e:  # keep the page alive whatever the model does
        st.error(f"The explanation failed: {type(e).__name__}: {md_escape(e)}")
    return None


# ----------------------------------------------------------------------------- models and caches

def finetuned_choices() -> dict[str, Path]:
    """Fine-tuned folders: those kept with the chosen model, and every folder (and sub-folder)
    under models/ with a fine-tuned config.json."""
    out: dict[str, Path] = {}
    if model_path:
        for d in task_heads(model_path):
            out[str(d)] = d
    if A.MODELS_DIR.is_dir():
        for d in sorted(A.MODELS_DIR.iterdir()):
            if not d.is_dir():
                continue
            for cand in task_heads(d):  # the folder, its sub-folders and d/finetuned/*
                out.setdefault(f"models/{cand.relative_to(A.MODELS_DIR)}", cand)
    return out


@st.cache_data(show_spinner="Computing integrated gradients and occlusion...", max_entries=16)
def attributions_cached(path: str, mtime: float, key: str, target, cls: int | None, steps: int,
                        occlusion_notes: int | None, precision: str, _piece):
    from smu_explain.explain import attribution_agreement

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
row = notes_df.iloc[note]
st.markdown(f"Note {note}: **{plots.pitch_name(int(row['pitch']))}** at "
            f"{plots.bar_beat_label(row['bar'], row['beat'])}, {plots.fmt_quarters(row['duration_q'])} long.")

ft_choices = finetuned_choices()
# the open tab reruns the page when it changes: a figure is sent only with its tab open (a closed
# tab's figures were drawn by the browser on every run, then again when their tab was opened); the
# views are still computed for every tab (cached), for the HTML export
tab_attr, tab_att, tab_cf, tab_mask = st.tabs(["Attributions", "Attention", "Counterfactuals", "Masker"],
                                              key="why_tab", on_change="rerun")


def chart(tab, fig, key: str) -> None:
    """``st.plotly_chart`` of ``fig`` in ``tab`` when the tab is open (or its state unknown), else an
    empty slot: the elements after it keep their places, so the browser does not rebuild them."""
    slot = st.empty()
    if getattr(tab, "open", None) is not False:
        slot.plotly_chart(fig, key=key, config={"displaylogo": False})


# ----------------------------------------------------------------------------- attributions
ft_path = None
with tab_attr:
    st.caption("Which notes pushed the fine-tuned model towards its prediction. Integrated gradients "
               "(on the notes' input embeddings, from a baseline where every note is the MASK token) "
               "and occlusion (each note replaced by MASK in turn) explain the same class probability; "
               "red = for the class, blue = against. Long pieces: each window is explained and the "
               "attributions are averaged over the windows, as the fine-tuner averages their probabilities.")
    labels = list(ft_choices) + [A.OTHER_FOLDER]
    ft_choice = st.selectbox("Fine-tuned model", labels, key="why_ft_choice")
    if ft_choice == A.OTHER_FOLDER:
        txt = st.text_input("Fine-tuned model folder", value="", key="why_ft_path")
        if txt.strip():
            ft_path = guarded(user_folder, txt)
        elif not ft_choices:
            st.info(FT_HELP)
        else:
            st.info("Type the path of a fine-tuned model folder.")
    else:
        ft_path = ft_choices[ft_choice]
    ft = guarded(A.load_task_model, ft_path) if ft_path else None
    if ft is not None:
        ft_model, ft_tok = ft
        st.caption(f"Task **{md_escape(ft_model.task)}** ({md_escape(ft_model.level)} level), classes: "
                   f"{md_escape(', '.join(map(str, ft_model.classes)))}.")
        a1, a2, a3 = st.columns(3)
        with a1:
            steps = int(st.select_slider("Integration steps", [8, 16, 32, 64], value=16, key="why_steps"))
        with a2:
            cls_label = st.selectbox("Class to explain", ["the prediction"] + ft_model.classes, key="why_cls")
        with a3:
            occ_label = st.selectbox("Occlusion check on", list(OCCLUSION_CHOICES), key="why_occ_notes",
                                     help="Occlusion runs the model once per occluded note; a seeded random "
                                          "sample checks IG at a fraction of the cost.")
        occ_notes = OCCLUSION_CHOICES[occ_label]
        precision = "bf16" if st.toggle("bf16 IG passes (about 2x faster on CPUs with bf16 units; "
                                        "the completeness gap shows the error)",
                                        value=fast_precision(next(ft_model.parameters()).device) == "bf16",
                                        key="why_bf16") else "fp32"
        cls = None if cls_label == "the prediction" else ft_model.classes.index(cls_label)
        target = note if ft_model.level == "note" else None
        run_key = (str(ft_path), A.piece_key(data), target, cls, steps, occ_notes, precision)
        if st.button("Explain the prediction", key="why_attr_go", type="primary"):
            st.session_state["why_attr_for"] = run_key
        if st.session_state.get("why_attr_for") == run_key:
            res = guarded(attributions_cached, str(Path(ft_path).resolve()), A._weights_mtime(Path(ft_path)),
                          A.piece_key(data), target, cls, steps, occ_notes, precision, piece)
            if res is not None:
                ig, occ = res["ig"], res["occlusion"]
                what = f"note {target}" if target is not None else "the piece"
                m1, m2, m3 = st.columns(3)
                m1.metric("Explained class", res["class"])
                m2.metric("Probability", f"{ig.attrs['value']:.3f}",
                          help="piece level: mean over the windows")
                m3.metric("IG vs occlusion (Spearman)",
                          "-" if np.isnan(res["spearman"]) else f"{res['spearman']:.2f}")
                fig_ig = plots.attribution_roll(ig, bar_starts_q=piece.bar_starts_q, track_names=piece.track_names,
                                                title=f"integrated gradients: why {what} is {html_escape(res['class'])}")
                chart(tab_attr, fig_ig, "why_ig_roll")
                fig_occ = plots.attribution_roll(occ, bar_starts_q=piece.bar_starts_q,
                                                 track_names=piece.track_names,
                                                 title=f"occlusion: why {what} is {html_escape(res['class'])}")
                chart(tab_attr, fig_occ, "why_occ_roll")
                fig_sc = plots.attribution_scatter(ig, occ, title="IG against occlusion, one dot per note")
                chart(tab_attr, fig_sc, "why_scatter")
                st.caption(f"IG completeness: the attributions sum to {ig['attribution'].sum():.4f}; "
                           f"f(piece) - f(all MASK) = {ig.attrs['value'] - ig.attrs['baseline_value']:.4f} "
                           f"({steps} steps, {precision}). Occlusion measured {occ.attrs['n_measured']} of "
                           f"{int(occ['in_window'].sum())} notes; Spearman over {res['n']} notes.")
                top = ig.assign(occlusion=occ["attribution"]).reindex(
                    ig["attribution"].abs().sort_values(ascending=False).index).head(12)
                top = plots.readable_notes(top, ["attribution", "occlusion"], digits=4).rename(
                    columns={"attribution": "IG"})
                st.dataframe(top, hide_index=True, key="why_attr_table")
                views["attributions"] = {
                    "text": f"Task {ft_model.task}; explained class {res['class']} for {what} "
                            f"(probability {ig.attrs['value']:.3f}); {steps} IG steps ({precision}), MASK "
                            f"baseline; occlusion on {occ.attrs['n_measured']} notes; "
                            f"Spearman IG vs occlusion {res['spearman']:.2f} over {res['n']} notes.",
                    "figures": [fig_ig, fig_occ, fig_sc], "tables": [top]}
        else:
            st.info("Press **Explain the prediction** (IG and occlusion run the model many times).")

# the masker / attention model
mt = guarded(A.load_model, model_path) if model_path else None

# ----------------------------------------------------------------------------- attention
with tab_att:
    st.caption("Which notes the selected note looks at: the attention weights of one layer and head "
               "(or their mean), or attention rollout through all layers. Computed in the note's "
               "window; darker = more attention; lines = the most attended notes.")
    if mt is None:
        st.info("Choose a model above to see its attention.")
    else:
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
                lambda: plots.attention_roll(notes_df, w, note, arcs=8, bar_starts_q=piece.bar_starts_q,
                                             track_names=piece.track_names,
                                             title=f"note {note}: {layer_opt}, {head_opt if not rollout else ''}"))
            chart(tab_att, fig_att, "why_att_roll")
            order = np.argsort(-w, kind="stable")[:10]
            att_top = plots.readable_notes(notes_df.iloc[order].assign(attention=w[order]), ["attention"])
            st.dataframe(att_top, hide_index=True, key="why_att_table")
            views["attention"] = {"text": f"Note {note}; {layer_opt}; {'' if rollout else head_opt}.",
                                  "figures": [fig_att], "tables": [att_top]}

# ----------------------------------------------------------------------------- counterfactuals
with tab_cf:
    from smu_explain import counterfactual as cf

    st.caption("Edit the piece and ask again: the masker's view (and the fine-tuned prediction, when "
               "one is chosen on the Attributions tab) before and after, side by side.")
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
                               key="why_cf_download")
            st.caption(f"{len(piece)} notes before, {len(edited)} after.")
            cf_figs = []
            if model_path and mt is not None:
                before = guarded(A.overlay, model_path, data, piece, ratio)
                after = guarded(A.overlay, model_path, edited_bytes, edited, ratio)
                if before is not None and after is not None:
                    fig_cf = A.figure(
                        ("why counterfactual", *A.model_key(model_path), A.piece_key(data),
                         A.piece_key(edited_bytes), A.ratio_key(ratio)),
                        lambda: plots.side_by_side_rolls([before, after], ["before", "after the edit"],
                                                         bar_starts_q=None, track_names=piece.track_names,
                                                         height=460))
                    chart(tab_cf, fig_cf, "why_cf_rolls")
                    cf_figs.append(fig_cf)
                    d1, d2 = st.columns(2)
                    d1.metric("Mean masker score before", f"{before['score'].mean():.3f}")
                    d2.metric("after", f"{after['score'].mean():.3f}",
                              delta=f"{after['score'].mean() - before['score'].mean():+.3f}")
            else:
                st.info("Choose a model above to see the masker's view before and after.")
            if ft_path is not None and ft is not None:
                pb = guarded(A.downstream, ft_path, data, piece)
                pa = guarded(A.downstream, ft_path, edited_bytes, edited)
                if pb is not None and pa is not None:
                    unit = "probability" if pb["level"] == "sequence" else "share of notes"
                    fig_pred = plots.before_after_bars(pb["classes"], pa["classes"],
                                                       title=f"{html_escape(pb['task'])} prediction", value_label=unit)
                    chart(tab_cf, fig_pred, "why_cf_pred")
                    cf_figs.append(fig_pred)
                    st.caption(f"Prediction before: **{md_escape(pb['classes'][0][0])}**, "
                               f"after: **{md_escape(pa['classes'][0][0])}**.")
            else:
                st.caption("Choose a fine-tuned model on the Attributions tab to see its prediction change too.")
            if cf_figs:
                views["counterfactual"] = {"text": f"Edit: {kind}.", "figures": cf_figs}

# ----------------------------------------------------------------------------- masker
with tab_mask:
    st.caption("Why the masker scores the selected note as it does: its score, the notes whose "
               "masking changes that score most (occlusion on the masker), and how hard the note is "
               "for the recoverer under seeded random masks that include it (a high loss is what the "
               "masker is trained to find: it picks or freezes such notes).")
    if mt is None:
        st.info("Choose a model above to explain its masker.")
    else:
        k1, k2 = st.columns(2)
        n_masks = int(k1.number_input("Random masks", 1, 64, A.WHY_DEFAULTS["n_masks"], key="why_n_masks"))
        seed = int(k2.number_input("Seed", 0, 10_000, A.WHY_DEFAULTS["seed"], key="why_seed"))
        res = guarded(A.masker_note, model_path, data, piece, note, n_masks, ratio, seed)
        if res is not None:
            m1, m2 = st.columns(2)
            m1.metric("Masker score", f"{res['score']:.3f}")
            m2.metric("Recoverer loss (mean over masks)", f"{res['mean_loss']:.3f}",
                      help="cross-entropy summed over the note's attributes; per-attribute columns below")
            occ = res["occlusion"]
            fig_m = A.figure(  # the occlusion: by model, piece and note (not the masks)
                ("why masker", *A.model_key(model_path), A.piece_key(data), note),
                lambda: plots.value_roll(occ, occ["change"].to_numpy(float), label="score change", diverging=True,
                                         selected=note, in_window=occ["in_window"].to_numpy(bool), arcs=6,
                                         bar_starts_q=piece.bar_starts_q, track_names=piece.track_names,
                                         title=f"note {note}: change of its masker score when each note is masked"))
            chart(tab_mask, fig_m, "why_mask_roll")
            top_m = plots.readable_notes(res["top"], ["change"]).rename(columns={"change": "score change"})
            st.dataframe(top_m, hide_index=True, key="why_mask_top")
            losses = plots.readable_table(res["losses"]).rename(columns={"n masked": "notes masked"})
            st.dataframe(losses, hide_index=True, key="why_mask_losses")
            views["masker"] = {"text": f"Note {note}: masker score {res['score']:.3f}; recoverer loss "
                                       f"{res['mean_loss']:.3f} (mean of {n_masks} random masks at ratio "
                                       f"{ratio:.0%}, seed {seed}).",
                               "figures": [fig_m], "tables": [top_m, losses]}

# ----------------------------------------------------------------------------- export
st.subheader("Export")
shown = [k for k in ("attributions", "attention", "counterfactual", "masker") if k in views]
if shown:
    from smu_explain.report import build_report, why_sections

    html = build_report(f"Why: {name}", why_sections(views), subtitle=f"piece: {name}; note {note}")
    st.download_button("Download these explanations (HTML)", data=html.encode("utf-8"),
                       file_name=f"smu_why_{datetime.now().strftime('%Y%m%d-%H%M')}.html", mime="text/html",
                       key="why_report")
    st.caption("Included: " + ", ".join(shown) + ".")
else:
    st.caption("Nothing to export yet.")
