"""Compare: two models on the same piece and on a folder of pieces, under the same seeded masks."""

from pathlib import Path

import numpy as np
import streamlit as st

from smu_explain import appstate as A
from smu_explain import appwidgets as W
from smu_explain import charts, pianoroll, readable, rollaxes
from smu_explain import verdict as V
from smu_explain.checkpoint import task_heads
from smu_explain.markup import md_escape

st.title("Compare two models")
st.caption("Both models see the same piece and the same seeded random masks, so differences in "
           "recovery come from the models, not the draw.",
           help="**Recovery**: hide a note's attributes behind a MASK token and ask the model to guess them "
                "from the notes around it; recovery accuracy = the share of guesses that are right. "
                "**Masker**: a small head of the model that scores how hard each note would be to recover; "
                "adversarial pre-training hides the notes it picks. **Picked** notes: its top-scored notes "
                "at the masking ratio. **Frozen** notes: the top 30% by score, kept unmasked.")

c1, c2 = st.columns(2)
with c1:
    path_a = W.model_picker("Model A", "compare_a", A.K_MODEL_A, "demo adversarial")
with c2:
    path_b = W.model_picker("Model B", "compare_b", A.K_MODEL_B, "demo random")
c3, c4 = st.columns([3, 2])
with c3:
    choice = W.piece_picker("compare")
with c4:
    ratio = W.ratio_slider("compare_ratio")
    seed = int(st.number_input("Mask seed", 0, 10_000, 0, key="compare_seed"))

if not (path_a and path_b):
    st.info("Choose two models that load to compare them.")
    st.stop()


def short(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.name == "out" else p.name


name_a, name_b = short(path_a), short(path_b)
if name_a == name_b:
    name_a, name_b = f"A: {name_a}", f"B: {name_b}"
models = {name_a: path_a, name_b: path_b}
# the same model in both pickers: said once here; each warning once, and no verdict (nothing to compare)
same = A.model_key(path_a) == A.model_key(path_b)
if same:
    st.info(f"Model A and model B are the same model ({md_escape(short(path_a))}): both sides below show it, so "
            "there is no difference to find. Choose another model for A or B to compare two models.")


@st.cache_data(show_spinner="Bootstrapping the difference...", max_entries=64)
def verdicts(key: tuple, names: tuple, trained: tuple, unit: str | None, _a, _b) -> dict:
    """Both verdicts (random masks, masker's picks) of two paired explain tables, cached by ``key``
    (models, piece or folder, mask groups, seed, ratio): the bootstrap runs once per setting."""
    return V.both_verdicts(_a, _b, list(names), list(trained), unit=unit)


def show_verdicts(vs: dict, where: str) -> None:
    """The verdict sentences, then how the compared models differ from the Study's."""
    for line in V.verdict_lines(vs, esc=md_escape, strong="**{}**".format):
        st.markdown(line)
    st.caption(f"{where} 95% intervals from a paired bootstrap ({V.N_BOOT:,} draws, seed 0); "
               "'no clear difference' when the interval includes 0; no verdict from fewer than "
               f"{V.MIN_UNITS['note']} notes or {V.MIN_UNITS['piece']} pieces. Under the masker's picks, each picked note "
               "is still masked with a random share of its window, as under random masks.")
    st.caption(context)


facts = []
for n, p in models.items():
    f = V.model_facts(p)
    f["name"] = n
    facts.append(f)
study_facts = V.study_facts(V.load_study())
context = V.context_sentence(facts, study_facts, esc=md_escape)


def trained(names) -> tuple:
    """Whether each model's masker head was trained (adversarial pre-training; loads the models)."""
    return tuple(A.untrained_masker_note(models[n]) is None for n in names)


def show_rules(accs: dict, rules_by: dict, title: str, key: str, lead: str, leads_by: dict | None = None) -> dict:
    """The recovery chart with the no-model rules' marks and each model's rules sentence. Models that
    read music into the same tokens share one set of rules; models whose tokens differ (an imported
    Octuple model beside a compound-word one) are each drawn against the rules on their own tokens.
    Returns what the report needs: ``rules`` (the shared set, or None), ``rules_by_model``, ``rules_text``."""
    first = next(iter(rules_by.values()))
    text = {n: A.rules_verdict(a, rules_by[n], (leads_by or {}).get(n)) for n, a in accs.items()}
    if all(r == first for r in rules_by.values()):
        st.plotly_chart(charts.rules_figure(accs, first, title=title), key=key)
        st.caption(lead + " " + " ".join(f"**{md_escape(n)}**: {t}" for n, t in text.items()))
        return {"rules": first, "rules_by_model": rules_by, "rules_text": text}
    for i, (col, (n, a)) in enumerate(zip(st.columns(len(accs)), accs.items(), strict=True)):
        with col:
            st.plotly_chart(charts.rules_figure({n: a}, rules_by[n], title=f"{n}: {title}"), key=f"{key}_{i}")
    st.caption(lead + " The two models read music into different tokens, so each is judged against the rules "
               "on its own tokens. " + " ".join(f"**{md_escape(n)}**: {t}" for n, t in text.items()))
    return {"rules": None, "rules_by_model": rules_by, "rules_text": text}


piece = W.load_piece(choice)
comp: dict = {"models": {n: str(p) for n, p in models.items()}, "ratio": ratio, "seed": seed,
              "facts": facts, "study_facts": study_facts}
tab_piece, tab_folder = st.tabs(["This piece", "A dataset folder"])

with tab_piece:
    if piece is None:
        if choice is None and st.session_state.get("compare_upload") is None:  # else an error above says why
            st.info("Pick a piece above.")
    else:
        name, data = choice
        comp["piece"] = name

        def per_model(fn, *args, among: dict | None = None) -> dict:
            """{model name: fn(path, data, piece, *args)}; {} after a plain error (never a traceback)."""
            try:
                return {n: fn(p, data, piece, *args) for n, p in (models if among is None else among).items()}
            except A.SMUInputError as e:
                st.error(f"A model cannot read this piece: {md_escape(e.reason)}")
            except Exception as e:  # keep the page alive whatever a model does
                st.error(f"A model failed on this piece: {type(e).__name__}: {md_escape(e)}")
            return {}

        # the rolls need the masker's view only (one cached clean pass per model; a new ratio re-derives
        # the picks): they are drawn before the recovery passes of a new ratio run
        answer = st.container()  # the verdict goes first, though it is known only after the recovery passes
        overlays = per_model(A.overlay, ratio)
        if overlays:
            faded = [not t for t in trained(list(overlays.keys()))]  # an untrained masker's overlay, faded
            fig = A.figure(("compare rolls", tuple((n, *A.model_key(p)) for n, p in models.items()),
                            A.piece_key(data), A.ratio_key(ratio), tuple(faded)),
                           lambda: pianoroll.side_by_side_rolls(list(overlays.values()), list(overlays.keys()),
                                                            bar_starts_q=piece.bar_starts_q,
                                                            track_names=piece.track_names, height=480,
                                                            faded=faded))
            st.plotly_chart(fig, key="compare_rolls", config={"displaylogo": False, "scrollZoom": True})
            st.caption(rollaxes.opening_text(len(piece.bar_starts_q), "either roll")
                       + "Colour = the rank of each model's masker score within the piece (100% = its "
                       f"highest); red outline = the notes it would mask at {ratio:.0%} of its notes that "
                       "are not frozen (grey hatched: its top 30% by score, never masked). "
                       + " ".join(f"{md_escape(n)}: {pianoroll.score_spread_text(t['score'])}."
                                  for n, t in overlays.items()))
            for warn in dict.fromkeys(w for p in models.values() if (w := A.untrained_masker_note(p))):
                st.warning(warn)
                comp.setdefault("warnings", []).append(warn)
        # a published encoder imported without recovery heads cannot guess notes: said, and left out
        no_recovery = {n: note for n, p in models.items() if (note := A.recovery_note(p))}
        for note in dict.fromkeys(no_recovery.values()):
            st.info(note)
            comp.setdefault("warnings", []).append(note)
        recovering = {n: p for n, p in models.items() if n not in no_recovery}
        tables = per_model(A.explain, ratio, seed, among=recovering) if overlays and recovering else {}
        params = {n: A.load_model(p)[0].num_parameters() / 1e6 for n, p in recovering.items()} if tables else {}
        if overlays and len(recovering) < 2:
            with answer:
                st.info("No verdict on recovery: only a model that can guess masked notes can be compared "
                        "(see the note below).")
        if len(tables) == 2 and not same:
            tn = tuple(tables)
            vs = verdicts(("piece", tuple(A.model_key(models[n]) for n in tn), A.piece_key(data),
                           A.mask_groups(ratio), int(seed), A.ratio_key(ratio)),
                          tn, trained(tn), None, tables[tn[0]], tables[tn[1]])
            with answer:
                st.subheader("Who recovers more")
                show_verdicts(vs, "Units: the notes of this piece (notes of one piece are not independent, so "
                                  "read its interval as a rough guide; the folder tab's, over pieces, is sturdier).")
            comp["verdicts"] = vs
        if tables:
            st.subheader("Recovery accuracy under the same random masks")
            st.caption(f"Every note is masked once, together with a seeded random {ratio:.0%} of its "
                       f"window (seed {seed}): the same masks for both models.")
            accs = {n: A.accuracy_of(t) for n, t in tables.items()}
            n_masked = len(next(iter(tables.values())))
            comp.update(show_rules(accs, {n: A.rules(recovering[n], data, piece, ratio, seed) for n in accs},
                                   f"per attribute ({n_masked} notes)", "compare_acc",
                                   "Marks = rules that use no model, on the same masked notes (a model must beat "
                                   "copying the neighbour).",
                                   {n: A.rule_leads(recovering[n], data, piece, ratio, seed, tables[n]) for n in accs}))

            st.subheader("Bias view")
            st.caption("Where does each model fail? Recovery accuracy of the masked notes by pitch "
                       "register, metrical position and duration class (n = notes behind each bar).")
            attrs = list(next(iter(accs.values())).keys())
            b1, b2 = st.columns(2)
            by = b1.selectbox("Group notes by", ["register", "metric", "duration"], key="compare_by",
                              format_func={"register": "pitch register", "metric": "metrical position",
                                           "duration": "duration class"}.get)
            attr = b2.selectbox("Attribute", attrs, index=attrs.index("pitch") if "pitch" in attrs else 0,
                                key="compare_attr")
            bias = {n: charts.bias_table(t, by) for n, t in tables.items()}
            st.plotly_chart(charts.bias_figure(bias, attr, by_label=by), key="compare_bias")
            comp["bias_all"] = {k: {n: charts.bias_table(t, k) for n, t in tables.items()}
                                for k in ("register", "metric", "duration")}

            st.subheader("Downstream predictions")
            any_head = False
            for n, p in models.items():
                for head in task_heads(p):
                    any_head = True
                    try:
                        res = A.downstream(head, data, piece)
                    except (A.SMUInputError, ValueError, RuntimeError) as e:
                        st.error(f"{md_escape(n)}: cannot run the fine-tuned model {md_escape(head.name)}: "
                                 f"{md_escape(e)}")
                        continue
                    what = ("predicted class (probability, mean over windows)" if res["level"] == "sequence"
                            else "share of notes per predicted class")
                    st.markdown(f"**{md_escape(n)}** - task **{md_escape(res['task'])}** ({md_escape(head.name)}): "
                                f"{what}")
                    st.plotly_chart(charts.prediction_bars(res["classes"][:6]),
                                    key=f"compare_head_{n}_{head.name}", config={"displayModeBar": False})
                    if res["level"] == "note":
                        st.caption(f"mean confidence {res['notes']['confidence'].mean():.0%}")
            if not any_head:
                st.info("Neither model folder holds a fine-tuned task head, so there are no "
                        "downstream predictions to show.")

            metrics = {}
            for n in tables:
                t = tables[n]
                m = {f"recovery {a} (piece)": v for a, v in accs[n].items()}
                if accs[n]:
                    m["recovery mean (piece)"] = float(np.mean(list(accs[n].values())))
                m["masker score mean"] = float(t["score"].mean())
                m["masker score of picked notes"] = float(t.loc[t["picked"], "score"].mean()) if t["picked"].any() else np.nan
                m["frozen notes"] = float(t["frozen"].sum())
                m["parameters (M)"] = params[n]
                metrics[n] = m
            comp.update(tables=tables, accs=accs, metrics=metrics, n_masked=n_masked,
                        bar_starts_q=list(map(float, piece.bar_starts_q)),
                        track_names=list(piece.track_names))

with tab_folder:
    default_folder = st.session_state.get("compare_folder_value", str(A.SAMPLE_DIR))
    folder = st.text_input("Folder of MIDI / MusicXML files (a dataset split)", value=default_folder,
                           key="compare_folder")
    max_files = int(st.number_input("At most this many files", 1, 500, 40, key="compare_max_files"))
    if st.button("Evaluate both models on the folder", key="compare_eval"):
        st.session_state["compare_folder_value"] = folder
        st.session_state["compare_folder_run"] = (folder, max_files, ratio, seed, tuple(models.values()))
    if st.session_state.get("compare_folder_run") == (folder, max_files, ratio, seed, tuple(models.values())):
        try:
            results = {n: A.folder_explain(p, folder, ratio, seed, max_files) for n, p in models.items()}
        except A.SMUInputError as e:
            st.error(f"Cannot evaluate on this folder: {md_escape(e)}")
            results = {}
        if results:
            frames = {n: r[0] for n, r in results.items()}
            skipped = next(iter(results.values()))[1]
            if skipped:
                st.warning(f"{len(skipped)} file(s) skipped: " +
                           "; ".join(f"{md_escape(f)}: {md_escape(why)}" for f, why in skipped[:5]))
            if all(len(f) for f in frames.values()):
                n_files = next(iter(frames.values()))["file"].nunique()
                st.subheader(f"Recovery over {n_files} files" if same else f"Who recovers more over {n_files} files")
                fvs = None
                if not same:
                    stamp = tuple((f.name, f.stat().st_mtime) for f in A.folder_files(folder, max_files))
                    fvs = verdicts(("folder", tuple(A.model_key(p) for p in models.values()),
                                    str(Path(folder).resolve()), stamp, A.mask_groups(ratio), int(seed),
                                    A.ratio_key(ratio)),
                                   tuple(models), trained(models), "file", *frames.values())
                    show_verdicts(fvs, "Units: the files (a piece's notes are drawn together).")
                facc = {n: A.accuracy_of(f) for n, f in frames.items()}
                frules = show_rules(facc, {n: A.folder_rules(models[n], folder, ratio, seed, max_files)
                                           for n in facc},
                                    f"recovery over {n_files} files (seeded random masks, {ratio:.0%})",
                                    "compare_folder_acc", "Marks = the no-model rules on the same masked notes.",
                                    {n: A.folder_rule_leads(models[n], folder, ratio, seed, max_files, frames[n])
                                     for n in facc})
                fby = st.selectbox("Group notes by", ["register", "metric", "duration"],
                                   key="compare_folder_by")
                fattrs = list(next(iter(facc.values())).keys())
                fattr = st.selectbox("Attribute", fattrs, key="compare_folder_attr")
                fbias = {n: charts.bias_table(f, fby) for n, f in frames.items()}
                st.plotly_chart(charts.bias_figure(fbias, fattr, by_label=fby), key="compare_folder_bias")
                comp["folder"] = {"path": folder, "n_files": int(n_files), "accs": facc, **frules,
                                  "verdicts": fvs}
                for n in models:
                    comp.setdefault("metrics", {}).setdefault(n, {}).update(
                        {f"recovery {a} (folder)": v for a, v in facc[n].items()})
            else:
                st.error("No file of this folder could be read.")

if comp.get("metrics"):
    st.subheader("Metrics")
    table = readable.metrics_comparison(comp["metrics"])
    # a static table: every row visible (no inner scrolling), each row in its own format
    # st.table renders Markdown in headers and cells: the model names (column headers) escaped
    clear = readable.clear_rows(comp)
    st.table(readable.metrics_display(table.rename(columns=lambda c: c if c == "difference" else md_escape(c)),
                                      clear=clear))
    st.caption("difference = B - A (on the recovery rows in percentage points; coloured only where the verdict's "
               "95% interval for that row excludes 0: green where B recovers more, red where less; a masker score "
               "or a count is not better for being higher: left uncoloured).")
    comp["metrics_table"] = table
    st.session_state["smu_compare"] = comp
    st.caption("Export this comparison as a self-contained HTML file on the Report page.")
