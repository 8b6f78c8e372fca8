"""A self-contained HTML report of a model comparison (for people who do not run the app).

Rules:

- One HTML file, no external resource: plotly.js is embedded inline exactly
  once (with the first figure), later figures reuse it; no MathJax, no CDN,
  no web fonts.
- Content is a title, an optional subtitle / intro paragraph, then sections in
  the order given; each section has a heading, an optional text paragraph and
  any number of figures (``plotly.graph_objects.Figure``) and tables
  (``pandas.DataFrame``, or a pandas ``Styler`` to keep highlighting).
- A comparison's report opens with a summary (:func:`summary_lines`: the verdicts in one line each,
  the warnings' count), then the verdicts in full with the models' and the Study's facts
  (:func:`verdict_sections`), then every warning the app showed for those models, then the
  figures (recovery with the no-model rules' marks, as on the page).
- All user-supplied text is HTML-escaped (``markup.html_escape``): title, headings, text,
  and in tables the column and index labels and names, text cells and captions (a DataFrame by
  ``to_html(escape=True)``, a Styler by :func:`_escaped_styler`, since ``Styler.to_html`` escapes
  nothing).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from .markup import html_escape

__all__ = ["ReportSection", "build_report"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .sub { color: #666; margin-top: 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.pos { background: #d9f2d9; } .neg { background: #f8d7d7; }
.footer { color: #888; font-size: 0.85em; margin-top: 3em; }
.summary { background: #f5f8fc; border: 1px solid #cfdcec; padding: 0.4em 1.2em; margin: 1em 0; }
.summary h2 { border: none; margin-top: 0.5em; } .warn { background: #fff4e0; padding: 0.4em 0.8em; }
"""


@dataclass
class ReportSection:
    """A heading with text, warnings, figures and tables (shown in that order)."""

    heading: str
    text: str = ""
    figures: Sequence[Any] = field(default_factory=list)
    tables: Sequence[Any] = field(default_factory=list)
    warnings: Sequence[str] = field(default_factory=list)  # shown after the text, highlighted


def _table_html(table: Any) -> str:
    """A table's HTML; every float column in one fixed-decimal format (not '0' beside '0.038')."""
    if isinstance(table, pd.DataFrame):
        floats = {c: "{:.3f}".format for c in table.columns if pd.api.types.is_float_dtype(table[c])}
        return table.to_html(formatters=floats, na_rep="—", border=0, escape=True)
    if type(table).__name__ == "Styler" and hasattr(table, "to_html"):  # pandas Styler (needs jinja2)
        return _escaped_styler(table).to_html()
    raise TypeError(f"tables must be DataFrames or Stylers, got {type(table).__name__}")


def _changes(values: Any) -> bool:
    """Whether any of ``values`` reads differently once HTML-escaped (text with ``& < > " '``)."""
    return any(isinstance(v, str) and html_escape(v) != v for v in values)


def _escaped_styler(styler: Any) -> Any:
    """A copy of ``styler`` whose text from the data is HTML-escaped: column and index labels
    (every level), the index and column names, text cells and the caption. ``Styler.to_html``
    escapes none of them. Only labels and columns that hold such characters get the escaping
    formatter (which replaces a formatter set on them); the others keep theirs."""
    s = copy.deepcopy(styler)
    data = styler.data
    for axis, labels in ((0, data.index), (1, data.columns)):
        for level in range(labels.nlevels):
            if _changes(labels.get_level_values(level)):
                s = s.format_index(escape="html", axis=axis, level=level)
        if _changes(labels.names):
            if hasattr(s, "format_index_names"):  # pandas >= 3.0
                s = s.format_index_names(escape="html", axis=axis)
            else:  # no way to escape the names: leave them out
                s = s.hide(names=True, axis=axis)
    text_cols = [c for i, c in enumerate(data.columns) if _changes(data.iloc[:, i].tolist())]
    if text_cols:
        s = s.format(escape="html", subset=text_cols)
    if isinstance(s.caption, str) and _changes([s.caption]):
        s = s.set_caption(html_escape(s.caption))
    return s


def build_report(title: str, sections: Sequence[ReportSection], *, subtitle: str = "",
                 intro: str = "", summary: Sequence[str] = ()) -> str:
    """The report as one HTML string (see the module rules); ``summary``: the bullet lines of a
    box at the top, before the sections."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html_escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html_escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<p class="sub">{html_escape(subtitle)}</p>')
    if summary:
        parts.append('<div class="summary"><h2>Summary</h2><ul>'
                     + "".join(f"<li>{html_escape(line)}</li>" for line in summary) + "</ul></div>")
    if intro:
        parts.append(f"<p>{html_escape(intro)}</p>")
    js_done = False
    for sec in sections:
        parts.append(f"<h2>{html_escape(sec.heading)}</h2>")
        if sec.text:
            for para in str(sec.text).split("\n\n"):
                parts.append(f"<p>{html_escape(para)}</p>")
        for warning in sec.warnings:
            parts.append(f'<p class="warn">{html_escape(warning)}</p>')
        for fig in sec.figures:
            parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if not js_done else False,
                                     include_mathjax=False, config={"displaylogo": False}))
            js_done = True
        for table in sec.tables:
            parts.append(_table_html(table))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<p class="footer">Generated by smu_explain on {stamp}.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- why views (issue 6)

WHY_HEADINGS = {
    "attributions": "Why the fine-tuned model decided: note attributions",
    "attention": "Where a note looks: attention",
    "counterfactual": "Counterfactual: the piece edited, before and after",
    "masker": "Why the masker scores a note as it does",
}


def why_sections(views: dict[str, dict[str, Any]]) -> list[ReportSection]:
    """Report sections of the Why page's views, in the order of ``WHY_HEADINGS``.

    ``views[name]`` (name in ``WHY_HEADINGS``; others are ignored) holds ``text`` (str),
    ``figures`` and ``tables`` (as in :class:`ReportSection`); missing views are skipped.
    """
    out = []
    for name, heading in WHY_HEADINGS.items():
        v = views.get(name)
        if not v:
            continue
        out.append(ReportSection(heading, str(v.get("text", "")), figures=list(v.get("figures", [])),
                                 tables=list(v.get("tables", []))))
    return out


__all__ += ["why_sections", "WHY_HEADINGS"]


# ----------------------------------------------------------------------------- what the masker picks (issue 21)

PICKS_HEADING = "What the masker picks"
PICKS_UNTRAINED = "This masker head was never trained: its picks are close to arbitrary."


def picks_sections(views: dict[str, Any]) -> list[ReportSection]:
    """Report sections of the Explore page's "What it picks" views (the piece, then the folder):
    ``views["piece"]`` / ``views["folder"]`` = {``where`` (what was measured), ``model``, ``ratio``,
    ``untrained``, ``result``: ``picks.class_effects`` with its ``sentence``}; each section gives
    the sentence, then the per-class table (``picks.picks_table``). Missing or empty views are skipped."""
    from .picks import PICKS_CAPTION, picks_table

    out = []
    for name in ("piece", "folder"):
        v = views.get(name) if isinstance(views, dict) else None
        res = v.get("result") if isinstance(v, dict) else None
        if not isinstance(res, dict) or not res.get("n_pieces"):
            continue
        paras = [str(res.get("sentence", ""))]
        if v.get("untrained"):
            paras.append(PICKS_UNTRAINED)
        paras.append(f"Model: {v.get('model', '?')}; masking ratio {float(v.get('ratio', 0)):.0%}; "
                     f"{int(res['n_pieces'])} piece(s), {int(res.get('n_notes', 0)):,} notes. " + PICKS_CAPTION)
        out.append(ReportSection(f"{PICKS_HEADING} in {v.get('where', name)}", "\n\n".join(paras),
                                 tables=[picks_table(res)]))
    return out


__all__ += ["picks_sections", "PICKS_HEADING"]


# ----------------------------------------------------------------------------- the study (issue 5)

STUDY_HEADING = "Study: does letting a masker choose beat random masking?"


def study_sections(results: dict[str, Any], figures: dict | None = None) -> list[ReportSection]:
    """Report sections of the reproduction study from its ``results.json`` dict: the three-line
    summary, the accuracy table (mean ± std over seeds), data efficiency and the masker
    analysis, with the Study page's own figure builders (``figures``: the masker analysis's, when
    the caller has them built already). Empty when ``results`` is empty."""
    from . import study

    if not results:
        return []
    agg = results.get("finetune", {}).get("rows", [])
    out = [ReportSection(STUDY_HEADING, "\n\n".join(results.get("summary") or study.study_summary(results)))]
    if (pre := study.pretrain_table(results)) is not None:
        out.append(ReportSection("Study: " + study.PRETRAIN_TITLE,
                                 study.PRETRAIN_CAPTION + " " + study.pretrain_verdict_note(results),
                                 tables=[pd.DataFrame(pre[1], columns=pre[0])]))
    if agg:
        h, rows = study.scores_table(results)
        out.append(ReportSection("Study: test accuracy (%), mean ± std over seeds",
                                 "Our own fine-tuning runs on our splits, beside the majority class (docs/RESULTS.md "
                                 "has macro-F1, the learning curves, the published numbers and the paired test).",
                                 tables=[pd.DataFrame(rows, columns=h)]))
    if (probe := study.probe_table(results)) is not None:
        out.append(ReportSection("Study: " + study.PROBE_TITLE, study.PROBE_CAPTION,
                                 tables=[pd.DataFrame(probe[1], columns=probe[0])]))
    if results.get("efficiency"):
        out.append(ReportSection("Study: data efficiency",
                                 "Test accuracy with 10-100% of the labelled training pieces.",
                                 figures=[study.data_efficiency_figure(results["efficiency"])]))
    ana = results.get("analysis", {})
    figs = study.analysis_figures(ana) if figures is None else figures
    if figs:  # the example rolls have no legend of their own: their caption says what the marks mean
        out.append(ReportSection("Study: what the masker picks and freezes",
                                 "Masker scores and frozen notes on validation pieces of POP909, ASAP and "
                                 "EMOPIA; the freeze book over training; frozen notes from real pieces."
                                 + (" " + study.frozen_examples_caption(ana) if ana.get("examples") else ""),
                                 figures=list(figs.values())))
    for e in results.get("earlier") or []:
        if (t := study.earlier_table(e)) is not None:
            h, rows = t
            out.append(ReportSection(f"Study: earlier run of {e.get('date', '?')} ({e.get('preset', '')})",
                                     f"Replaced because {e.get('why', 'of the reasons in docs/RESULTS.md')}. "
                                     f"Its test accuracy (%), mean ± std over seeds; full report: "
                                     f"{e.get('results_md') or e.get('results', '')}.",
                                     tables=[pd.DataFrame(rows, columns=h)]))
    return out


__all__ += ["study_sections", "STUDY_HEADING"]


# ----------------------------------------------------------------------------- verdicts (issue 27)

VERDICT_HEADING = "Verdict: who recovers more"
WARNINGS_HEADING = "Warnings about these models"
_MD_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")


def md_unescape(text: object) -> str:
    """Markdown text (the app's warnings, whose names went through ``markup.md_escape``) as the
    reader saw it: every backslash-escaped ASCII punctuation character back to itself, ``**``
    bold marks dropped. The HTML report escapes it again (``html_escape``)."""
    s = str(text).replace("\\\\", "\x00")
    s = re.sub(r"(?<!\\)\*\*", "", s)
    return _MD_ESCAPED.sub(r"\1", s).replace("\x00", "\\")


def _verdicts_of(comp: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    if comp.get("verdicts"):
        out.append((f"On {comp.get('piece', 'the piece')}", comp["verdicts"]))
    folder = comp.get("folder") or {}
    if folder.get("verdicts"):
        out.append((f"Over the folder {folder.get('path', '')} ({folder.get('n_files', '?')} files)",
                    folder["verdicts"]))
    return out


def warnings_of(comp: dict[str, Any]) -> list[str]:
    """Every warning the Compare page showed for the compared models (plain text, in order, once)."""
    seen: list[str] = []
    for w in list(comp.get("warnings") or []) + list((comp.get("folder") or {}).get("warnings") or []):
        t = md_unescape(w)
        if t not in seen:
            seen.append(t)
    return seen


def summary_lines(comp: dict[str, Any], *, esc=str) -> list[str]:
    """The summary at the top of a comparison's report: one line per verdict (where, then who
    recovers more or 'no clear difference', under random masks and under the masker's picks),
    the Study's result and which models it is about, and how many warnings follow."""
    from . import verdict as V

    lines = []
    for where, vs in _verdicts_of(comp):
        bits = []
        for label, v in (("random masks", vs.get("random")), ("the masker's picks", vs.get("picks"))):
            if not v or v.get("problem") or not v.get("mean"):
                continue
            m = v["mean"]
            pct = f"{v.get('level', V.LEVEL):.0%}"
            if v.get("undecided"):
                bits.append(f"under {label} no verdict: {v['undecided'].split(' (')[0]} ({100 * m['diff']:+.1f} "
                            f"points over {v['n_units']:,} {v['unit']}{'s' if v['n_units'] != 1 else ''})")
            elif m["winner"] is None:
                bits.append(f"under {label} no clear difference ({100 * m['diff']:+.1f} points, "
                            f"{pct} interval {100 * m['lo']:+.1f} to {100 * m['hi']:+.1f})")
            else:
                win, lose, lo, hi = V.winner_interval(v)  # the verdict's sign: the winner's lead
                bits.append(f"under {label} {esc(win)} recovers more than {esc(lose)} by "
                            f"{abs(100 * m['diff']):.1f} points ({pct} interval {100 * lo:.1f} to {100 * hi:.1f})")
        if bits:
            lines.append(f"{esc(where)}: " + "; ".join(bits) + ".")
    if comp.get("study_facts"):
        sp = comp["study_facts"].get("params")
        ours = [f.get("params") for f in comp.get("facts") or [] if isinstance(f.get("params"), (int, float))]
        size = ("smaller " if ours and isinstance(sp, (int, float)) and sp < min(ours) else
                "larger " if ours and isinstance(sp, (int, float)) and sp > max(ours) else "")
        lines.append(f"The Study page (adversarial vs random pre-training: {V.study_result_text(comp['study_facts'])}) "
                     f"is about other, {size}models judged after fine-tuning: see the verdict below.")
    n = len(warnings_of(comp))
    if n:
        lines.append(f"{n} warning{'s' if n != 1 else ''} about these models follow{'s' if n == 1 else ''} the verdict.")
    return lines


def verdict_sections(comp: dict[str, Any]) -> list[ReportSection]:
    """The report's opening sections of a comparison: the verdicts in full with the compared
    models' and the Study's facts; then every warning the app showed for those models."""
    from . import verdict as V

    out = []
    paras = []
    for where, vs in _verdicts_of(comp):
        paras.append(f"{where}.")
        paras += V.verdict_lines(vs)
    if paras:
        paras.append("95% intervals from a paired bootstrap (seeded) over the notes of a piece or the pieces of a "
                     "folder; 'no clear difference' when the interval includes 0. The notes of one piece are not "
                     "independent, so a piece's interval is a rough guide; a folder's, over pieces, is sturdier. Under "
                     "the masker's picks each picked note is still masked with a random share of its window.")
    if comp.get("facts"):
        paras.append(V.context_sentence(comp["facts"], comp.get("study_facts")))
    if paras:
        out.append(ReportSection(VERDICT_HEADING, "\n\n".join(paras)))
    warns = warnings_of(comp)
    if warns:
        out.append(ReportSection(WARNINGS_HEADING, "What the app warned about these models, as it showed it.",
                                 warnings=warns))
    return out


__all__ += ["summary_lines", "verdict_sections", "warnings_of", "md_unescape", "VERDICT_HEADING",
            "WARNINGS_HEADING"]


# ----------------------------------------------------------------------------- words (issue 27)

# (group, [(term, definition)]): every term the app and the report use, in plain words; the first
# screen (app_pages/home.py) shows it as Markdown, the report as its last section
GLOSSARY: list[tuple[str, list[tuple[str, str]]]] = [
    ("The notes, as the model reads them (four attributes per note, in a musician's words)", [
        ("bar", "how many bar lines come between this note and the one before it (0 = same bar, 1 = the next "
                "bar); it is not the bar number, so a note in bar 11 usually has bar 0 or 1."),
        ("position", "where in its bar the note starts, counted in sixteenth notes from the bar line (0 = on the "
                     "downbeat); '0.5 q' = half a quarter note, an eighth, after the bar line."),
        ("pitch", "which key is played (MIDI number; 60 = middle C)."),
        ("duration", "how long the note is held, in thirty-second notes (8 = a quarter note)."),
    ]),
    ("What the app measures", [
        ("masking, recovery accuracy", "hide some notes' attributes behind a MASK token and ask the model to guess "
                                       "them back from the notes around them; recovery accuracy = the share of "
                                       "guesses that are right. Points = percentage points of that accuracy."),
        ("random masks", "a seeded random 15% of the notes hidden: the same notes for every model compared."),
        ("masker", "a small extra part of the model that scores each note by how hard it expects it to be to guess "
                   "back. Adversarial pre-training hides the notes the masker picks; random pre-training hides a "
                   "random 15% and never trains the masker (the app then warns that its scores mean nothing)."),
        ("picked", "the notes the masker would hide at the chosen ratio: its highest scores among the notes that "
                   "are not frozen."),
        ("frozen", "the notes the masker scores highest (its top 30% in a piece). In training such notes are "
                   "treated as not guessable from context and no longer hidden (a random tenth are released at "
                   "each freeze); the app leaves them out of the picks."),
        ("no-model rule", "a guess that uses no model at all: the most frequent value; copying the nearest unhidden "
                          "neighbour; the most frequent value among the 8 notes either side. A model has learned an "
                          "attribute only where it beats every rule; the charts show the rules as marks."),
        ("IQR", "interquartile range: how spread out the middle half of the values is (75th minus 25th "
                "percentile); a masker whose scores have a tiny IQR hardly tells the notes apart."),
        ("95% interval, no clear difference", "the verdicts resample the notes of a piece (or the pieces of a "
                                              "folder) 2,000 times (paired bootstrap); when the interval of the "
                                              "difference includes 0 they say 'no clear difference'."),
        ("fine-tuned head", "a small classifier trained on top of a pre-trained model for one task (e.g. which "
                            "notes are the melody); the Study judges pre-training by these."),
    ]),
]
GLOSSARY_HEADING = "Words used in this report"


def glossary_markdown() -> str:
    """The glossary as Markdown (the first screen's expander)."""
    out = []
    for group, terms in GLOSSARY:
        out.append(f"**{group}**")
        out += [f"- **{term}**: {text}" for term, text in terms]
        out.append("")
    return "\n".join(out)


def glossary_section() -> ReportSection:
    """The glossary as the report's last section (plain text, one paragraph per term)."""
    paras = []
    for group, terms in GLOSSARY:
        paras.append(group + ":")
        paras += [f"{term}: {text}" for term, text in terms]
    return ReportSection(GLOSSARY_HEADING, "\n\n".join(paras))


__all__ += ["GLOSSARY", "GLOSSARY_HEADING", "glossary_markdown", "glossary_section"]
