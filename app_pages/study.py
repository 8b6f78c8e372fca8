"""Study: the reproduction study's results (adversarial vs random masking), read from docs/study/.

Shows the three-line summary, RESULTS.md and the data-efficiency figure once
`smu study` has written them; until then, which stages are done and what each
cost, so a half-finished study is visible as such (nothing here is computed
in the app: the numbers are the study's own JSON files).
"""

from pathlib import Path

import pandas as pd
import streamlit as st

from smu_explain import appwidgets as W
from smu_explain import picks, readable, study
from smu_explain.markup import md_escape

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "docs" / "study"
RESULTS_MD = ROOT / "docs" / "RESULTS.md"

# result figures: no toolbar (it covered their titles; hover still shows the numbers)
STATIC = {"displayModeBar": False, "displaylogo": False}

st.title("Study: does letting a masker choose beat random masking?")
st.caption("Our own measurement, on real data (POP909, ASAP, EMOPIA, Pop1K7), of the paper's claim. "
           "Run it with `smu study --preset cpu`; this page reads what it wrote under docs/study/.")


def show_earlier(preset, entries=None) -> None:
    """Earlier runs of the preset (a preset or its name; dated sections, so their numbers stay
    reachable); ``entries``: those a finished study's results.json already holds."""
    try:
        md = study.earlier_report(preset, entries)
    except Exception as e:  # an unreadable old result must not take the page down
        st.warning(f"The earlier run's results cannot be read ({md_escape(e)}).")
        return
    if md:
        with st.expander("Earlier runs of this study (what changed and why)", expanded=False):
            st.markdown(md)


def recorded_preset() -> str:
    """The preset named by the stage results already written (default: cpu)."""
    for path in sorted(RESULTS_DIR.glob("*.json")):
        try:
            name = study.read_json(path).get("preset")
        except Exception:
            continue
        if name:
            return str(name)
    return "cpu"


PICKS_JSON = ROOT / "docs" / "masker_picks.json"
CONFIRM_JSON = ROOT / "docs" / "masker_picks_confirm.json"  # scripts/masker_picks_confirm.py
#: the sets of docs/masker_picks.json's "results", in the order the selector offers them
PICKS_SETS = {"all": "both sets pooled (POP909 validation + ASAP)", "pop909": "POP909 validation songs",
              "asap": "ASAP scores"}


def show_picks() -> None:
    """What the demo masker picks, in music's words: docs/masker_picks.json (made with
    docs/MASKER_PICKS.md by scripts/masker_picks.py): the generated sentence and the per-class
    table of the chosen set, the untrained control's sentence and whether the model's preferences
    differ from a random read-out of its own encoder (``null``: many random heads; a file from before
    it: ``comparison`` with the control), the chord labels' check. Every
    text from the file is escaped (md_escape); nothing when the file is not there."""
    if not PICKS_JSON.is_file():
        return
    st.subheader("What the masker picks, in music's words")
    try:
        import json

        data = json.loads(PICKS_JSON.read_text(encoding="utf-8"))
        sets = {k: v for k, v in (data.get("results") or {}).items() if isinstance(v, dict)}
        if not sets:
            raise ValueError("no results in it")
    except Exception as e:  # a broken file must not take the page down
        st.warning(f"{md_escape(PICKS_JSON.name)} cannot be read ({md_escape(e)}).")
        return
    order = [k for k in PICKS_SETS if k in sets] + sorted(set(sets) - set(PICKS_SETS))
    which = st.selectbox("Pieces", order, key="study_picks_set",
                         format_func=lambda k: PICKS_SETS.get(k) or md_escape(k))
    res = sets[which]
    st.markdown("> " + md_escape(res.get("sentence", "")))
    ctl = data.get("control")
    if isinstance(ctl, dict) and ctl.get("sentence"):
        st.markdown(f"**Control** ({md_escape(ctl.get('model', 'an untrained masker head'))}, a masker head "
                    f"that was never trained, on {int(ctl.get('n_pieces', 0))} pieces): "
                    + md_escape(ctl["sentence"]))
    # the verdict the doc stands by: against many random heads on the model's own encoder ("null");
    # a file from before it has only the comparison with the one control head
    cmp = next((c for c in (data.get("null"), data.get("comparison")) if isinstance(c, dict) and c.get("sentence")),
               None)
    if cmp is not None:
        st.markdown("**Learned, or a random read-out?** " + md_escape(cmp["sentence"]))
    show_confirmation(data.get("null"), (sets.get("all") or {}).get("pieces") or [])
    st.dataframe(picks.picks_table(res), hide_index=True, key="study_picks_table")
    caption = (f"{int(res.get('n_pieces', 0))} pieces, {int(res.get('n_notes', 0)):,} notes; model "
               f"{md_escape(res.get('model', data.get('model', '?')))}. " + picks.PICKS_CAPTION)
    auto = ((data.get("chord_check") or {}).get("by_unit") or {}).get("auto") or {}
    if auto.get("root_accuracy") is not None:
        caption += (f" Chord labels checked against Pop1K7's chord markers: root accuracy "
                    f"{float(auto['root_accuracy']):.3f} over {int(auto.get('beats', 0)):,} beats.")
    st.caption(caption + " From docs/masker_picks.json; docs/MASKER_PICKS.md has every table.")


def show_confirmation(null, pieces) -> None:
    """The pre-registered confirmatory run on new pieces (docs/masker_picks_confirm.json), when it re-tests
    this random-head result (``picks_null.confirms``); its outcome escaped. Nothing when it is not there or
    checks another run; a warning when it cannot be read."""
    if not CONFIRM_JSON.is_file():
        return
    try:
        import json

        from smu_explain.picks_null import confirms

        confirm = json.loads(CONFIRM_JSON.read_text(encoding="utf-8"))
    except Exception as e:  # a broken file must not take the page down
        st.warning(f"{md_escape(CONFIRM_JSON.name)} cannot be read ({md_escape(e)}).")
        return
    if confirms(confirm, null, pieces):
        st.markdown("**Confirmed on new pieces?** " + md_escape(confirm["outcome"]) + " (hypotheses and rule "
                    "fixed before the run: docs/MASKER_PICKS_CONFIRM.md)")


results_path = RESULTS_DIR / "results.json"
if results_path.is_file():
    try:
        results = study.read_json(results_path)
    except Exception as e:  # a broken file must not take the page down
        st.error(f"Cannot read {md_escape(results_path.name)}: {md_escape(e)}")
        st.stop()
    st.subheader("In three lines")
    for line in results.get("summary") or study.study_summary(results):
        st.markdown(f"- {line}")
    if (pre := study.pretrain_table(results)) is not None:
        st.subheader(study.PRETRAIN_TITLE)
        st.dataframe(pd.DataFrame(pre[1], columns=pre[0]), hide_index=True, key="study_pretrain")
        st.caption(study.PRETRAIN_CAPTION + " " + study.pretrain_verdict_note(results))
    agg = results.get("finetune", {}).get("rows", [])
    if agg:
        st.subheader("Test accuracy (%), mean ± std over seeds")
        h, rows = study.scores_table(results)  # the majority class's rate is the last row
        acc = pd.DataFrame(rows, columns=h)
        st.dataframe(readable.display_table(acc), hide_index=True, key="study_acc")
    if (probe := study.probe_table(results)) is not None:
        st.subheader(study.PROBE_TITLE)
        st.dataframe(pd.DataFrame(probe[1], columns=probe[0]), hide_index=True, key="study_probe")
        st.caption(study.PROBE_CAPTION)
    if results.get("efficiency"):
        st.subheader("Data efficiency")
        st.plotly_chart(study.data_efficiency_figure(results["efficiency"]), key="study_efficiency", config=STATIC)
    figs = W.study_figures(results_path, results)
    if figs:
        ana = results["analysis"]
        st.subheader("What the masker picks and freezes")
        st.caption(f"{ana.get('n_notes', 0):,} notes of validation pieces "
                   f"({', '.join(f'{k} {v}' for k, v in (ana.get('pieces_per_source') or {}).items())}); "
                   f"frozen = the top {ana.get('freeze_top', 0.3):.0%} of a piece's notes by masker score.")
        c1, c2 = st.columns(2)
        with c1:
            st.plotly_chart(figs["spearman"], key="study_spearman", config=STATIC)
        with c2:
            if said := study.freeze_history_sentence(ana.get("freeze_history") or []):  # one point: words
                st.markdown(f"**The frozen set over training**: {md_escape(said)}.")
            elif "freeze_history" in figs:
                st.plotly_chart(figs["freeze_history"], key="study_freeze_history", config=STATIC)
        st.plotly_chart(figs["by_class"], key="study_by_class", config=STATIC)
        examples = [k for k in figs if k.startswith("example_")]
        if examples:
            st.markdown(f"**Frozen notes from real pieces** ({md_escape(ana.get('examples_frozen_by', ''))})")
            st.caption(study.frozen_examples_caption(ana))
            cols = st.columns(min(3, len(examples)))
            for i, k in enumerate(examples):
                with cols[i % len(cols)]:
                    st.plotly_chart(figs[k], key=f"study_{k}", config=STATIC)
    show_picks()
    if RESULTS_MD.is_file():
        with st.expander("Full results (docs/RESULTS.md)", expanded=False):
            st.markdown(RESULTS_MD.read_text(encoding="utf-8"))
    show_earlier(results.get("preset", {}).get("name") or recorded_preset(), results.get("earlier"))
    st.stop()

preset = study.get_preset(recorded_preset())
st.info(f"The study has not finished yet: no docs/study/results.json. Below, the stages of the "
        f"{preset.name} preset and those already done (each stage writes its own JSON; "
        f"`smu study --preset {preset.name}` resumes).")
rows = []
for stage in study.plan_stages(preset):
    path = RESULTS_DIR / f"{stage.name}.json"
    row = {"stage": stage.name, "status": "to do", "estimate (min)": stage.est_min,
           "wall (min)": None, "tokens": None, "peak RSS (MB)": None}
    if path.is_file():
        try:
            cost = study.read_json(path).get("cost") or {}
            row.update({"status": "done", "wall (min)": round(cost.get("wall_s", 0) / 60, 1),
                        "tokens": cost.get("tokens"), "peak RSS (MB)": cost.get("peak_rss_mb")})
        except Exception as e:
            row["status"] = f"unreadable ({e})"
    rows.append(row)
table = pd.DataFrame(rows)
done = int((table["status"] == "done").sum())
table = readable.display_table(table, digits=1)  # "-" for not measured yet, never "None"
st.metric("Stages done", f"{done} of {len(table)}")
st.dataframe(table, hide_index=True, key="study_stages")
try:
    partial = study.partial_report(RESULTS_DIR, preset) if done else ""
except Exception as e:  # a half-written or old-format result must not take the page down
    partial, _ = "", st.warning(f"The finished stages' results cannot be summarised ({md_escape(e)}).")
if partial:
    st.subheader("Results so far")
    st.markdown(partial)
show_earlier(preset)
show_picks()
