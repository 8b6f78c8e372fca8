"""Report: export the last comparison as one self-contained HTML file."""

import os
from datetime import datetime
from pathlib import Path

import streamlit as st

from smu_explain import appwidgets as W
from smu_explain import charts, pianoroll, readable, study
from smu_explain.markup import md_escape
from smu_explain.report import (
    ReportSection,
    build_report,
    glossary_section,
    picks_sections,
    study_sections,
    summary_lines,
    verdict_sections,
    why_sections,
)

# the study's results.json (SMU_STUDY_RESULTS overrides the path, e.g. for a study run elsewhere)
STUDY_RESULTS = Path(os.environ.get("SMU_STUDY_RESULTS")
                     or Path(__file__).resolve().parents[1] / "docs" / "study" / "results.json")

st.title("Report")
st.caption("One HTML file with the comparison's figures and tables (plotly.js embedded, no "
           "internet needed to open it): for people who do not run the app.")

comp = st.session_state.get("smu_compare")
# The Why page's latest views (attributions, attention, counterfactual, masker), if any.
why = why_sections(st.session_state.get("smu_why") or {})
# The Explore page's "What it picks" (the piece's and the folder's sentence and table), if computed.
picks_part = picks_sections(st.session_state.get("smu_picks") or {})
# The reproduction study (docs/study/results.json), when `smu study` has written it.
study_results = {}
if STUDY_RESULTS.is_file():
    try:
        study_results = study.read_json(STUDY_RESULTS)
    except Exception as e:  # a broken file must not take the page down
        st.warning(f"The study's results cannot be read ({md_escape(e)}); the report leaves them out.")
include_study = bool(study_results) and st.checkbox("Include the reproduction study (docs/study/results.json)",
                                                    value=True, key="report_study")
study_part = study_sections(study_results, W.study_figures(STUDY_RESULTS, study_results)) if include_study else []
if (not comp or not comp.get("metrics")) and not why and not picks_part and not study_part:
    st.info("No comparison yet. Open the Compare page, choose two models and a piece (and, "
            "optionally, the Why page's views or Explore's \"What it picks\"); then come back here to export it.")
    st.stop()
if not comp or not comp.get("metrics"):
    comp = None
else:
    # every warning the app shows for these models, whether or not the Compare page got to draw it
    from smu_explain import appstate as A

    comp = dict(comp)
    warns = list(comp.get("warnings") or [])
    for p in comp["models"].values():
        try:
            found = [A.untrained_masker_note(p), A.recovery_note(p)]
        except Exception:  # a model folder gone since the comparison: its warnings stay as recorded
            found = []
        warns += [w for w in found if w and w not in warns]
    comp["warnings"] = warns

names = list(comp["models"].keys()) if comp else ["Why", "explanations"]
default_title = (f"{names[0]} vs {names[1]}" if comp else "Why the model decided" if why
                 else "What the masker picks" if picks_part
                 else "Adversarial vs random masking: the reproduction study")
title = st.text_input("Report title", value=default_title, key="report_title")
notes_text = st.text_area("Notes for the reader (optional)", value="", key="report_notes")


def build_sections(comp: dict) -> list[ReportSection]:
    sections = []
    ratio, seed = comp["ratio"], comp["seed"]
    models_text = "; ".join(f"{n}: {p}" for n, p in comp["models"].items())
    if comp.get("tables"):
        fig = pianoroll.side_by_side_rolls(list(comp["tables"].values()), list(comp["tables"].keys()),
                                       bar_starts_q=comp.get("bar_starts_q"),
                                       track_names=comp.get("track_names"), height=460)
        sections.append(ReportSection(
            f"What each masker picks on {comp.get('piece', 'the piece')}",
            f"Colour = masker score (high = the model finds the note hard to recover from context); "
            f"outlined = the {ratio:.0%} of notes it would mask. Models: {models_text}.",
            figures=[fig]))
    rule_marks = ("Marks = rules that use no model, on the same masked notes (the most frequent value, copying "
                  "the nearest unmasked neighbour, the most frequent value among the neighbours): a model has "
                  "learned an attribute only where its bar rises above every mark.")

    def with_rules(text: str, part: dict, accs: dict, title: str) -> tuple[str, list]:
        """The recovery figure(s) with the no-model rules: one shared set, or (models reading music
        into different tokens) one figure per model against the rules on its own tokens."""
        by_model = part.get("rules_by_model") or {}
        said = "".join(f"\n\n{n}: {t}" for n, t in (part.get("rules_text") or {}).items())
        if part.get("rules"):
            return text + "\n\n" + rule_marks + said, [charts.rules_figure(accs, part["rules"], title=title)]
        if by_model and set(by_model) == set(accs):
            return (text + "\n\n" + rule_marks + " The two models read music into different tokens, so each is "
                    "judged against the rules on its own tokens." + said,
                    [charts.rules_figure({n: accs[n]}, by_model[n], title=f"{n}: {title}") for n in accs])
        return text, [charts.accuracy_bars(accs)]

    if comp.get("accs"):
        text = (f"Each of the {comp.get('n_masked', '?')} notes of the piece is masked once, together with a "
                f"seeded random {ratio:.0%} of its window (seed {seed}): the same masks for both models. "
                "Each model guesses every attribute of each masked note.")
        text, figs = with_rules(text, comp, comp["accs"], "per attribute, with the no-model rules")
        sections.append(ReportSection("Recovery accuracy under the same random masks", text, figures=figs))
    if comp.get("bias_all"):
        figs = []
        attr = "pitch" if any("pitch" in a for a in comp["accs"].values()) else None
        for by, label in (("register", "pitch register"), ("metric", "metrical position"),
                          ("duration", "duration class")):
            tables = comp["bias_all"][by]
            a = attr or next(iter(next(iter(tables.values()))["attribute"]), None)
            if a is not None:
                figs.append(charts.bias_figure(tables, a, by_label=label))
        sections.append(ReportSection(
            "Bias view", "Recovery accuracy of the masked notes by class of note; "
            "n = number of masked notes behind each bar (small n = noisy).", figures=figs))
    if comp.get("folder"):
        f = comp["folder"]
        text = f"Folder: {f['path']}."
        text, figs = with_rules(text, f, f["accs"], f"recovery over {f['n_files']} files, with the no-model rules")
        sections.append(ReportSection(f"Recovery over a folder ({f['n_files']} files)", text, figures=figs))
    table = readable.metrics_comparison(comp["metrics"])
    clear = readable.clear_rows(comp)
    styled = readable.metrics_display(table, clear=clear)
    sections.append(ReportSection("Metrics", "difference = second model - first model; coloured only where "
                                  "the verdict's 95% interval for that row excludes 0.",
                                  tables=[styled]))
    return sections


sections = (verdict_sections(comp) + build_sections(comp) if comp else []) + picks_part + why + study_part
sections.append(glossary_section())  # the reader has no app to hover over
summary = summary_lines(comp) if comp else []
if comp and summary:
    st.subheader("Summary")
    st.caption("The report opens with this summary, then the verdicts in full and every warning the app showed "
               "for these models.")
    st.markdown("\n".join(f"- {line}" for line in summary_lines(comp, esc=md_escape)))
    for w in comp.get("warnings") or []:
        st.warning(w)
st.markdown("**Contents**\n" + "".join(f"\n- {md_escape(s.heading)}" for s in sections))
subtitle = (f"piece: {comp.get('piece', '-')}; masking ratio {comp['ratio']:.0%}; seed {comp['seed']}"
            if comp else f"piece: {(st.session_state.get('smu_why') or {}).get('piece', '-')}" if why
            else "; ".join(f"{v.get('model', '?')} on {v.get('where', k)}" for k, v in
                           (st.session_state.get("smu_picks") or {}).items() if isinstance(v, dict)) if picks_part
            else f"smu study --preset {study_results.get('preset', {}).get('name', '?')}")
html = build_report(title, sections, subtitle=subtitle, intro=notes_text, summary=summary)
stamp = datetime.now().strftime("%Y%m%d-%H%M")
st.download_button("Download the HTML report", data=html.encode("utf-8"),
                   file_name=f"smu_report_{stamp}.html", mime="text/html", type="primary",
                   key="report_download", on_click="ignore")  # no rerun: a rerun at a minute's turn made
                   # a new file (the stamp) and dropped the one the browser was still downloading
st.caption(f"{len(html) / 1e6:.1f} MB, opens offline in any browser.")
