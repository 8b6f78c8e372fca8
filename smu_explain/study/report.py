"""The study's report: the summary lines (``study_summary``) and RESULTS.md (``render_results_md``,
one function per section; ``partial_report`` / ``earlier_report`` for the sections available
while a study runs), rendered from what ``results.build_results`` gathers into results.json.

Text only (no torch, no figures): imports ``plan``, ``stats`` and ``results``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .plan import PUBLISHED, PUBLISHED_MATCH, StudyPaths, StudyPreset
from .results import build_results, earlier_runs
from .stats import format_crossing, format_mean_std, markdown_table, published_table, results_table, row_label

# ============================================================================ summary + RESULTS.md

def _best_row(rows: Sequence[Mapping[str, Any]], model: str, mask: bool, task: str) -> Mapping[str, Any] | None:
    for r in rows:
        if r["model"] == model and r["mask_ft"] == mask and r["task"] == task and abs(r["fraction"] - 1) < 1e-9:
            return r
    return None


def _fmt_minutes(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.2f} h"


def _task_means(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str], model: str, other: str
                ) -> list[tuple[str, float]]:
    """(task, test accuracy of ``model`` minus ``other``) for the tasks where both have a mean
    (full data, mask fine-tuning on)."""
    out = []
    for t in tasks:
        a, b = _best_row(rows, model, True, t), _best_row(rows, other, True, t)
        if a and b and a["test_acc"]["mean"] is not None and b["test_acc"]["mean"] is not None:
            out.append((t, a["test_acc"]["mean"] - b["test_acc"]["mean"]))
    return out


def _probe_means(results: Mapping[str, Any]) -> dict[str, float]:
    """Mean test accuracy of the linear probe per model (strategy, variants left out; 'none' =
    the randomly initialised encoder) over the tasks and pre-training seeds."""
    per: dict[str, list[float]] = {}
    variants = set((results.get("preset") or {}).get("variants") or {})
    for task in results.get("probe", {}).values():
        by_model: dict[str, list[float]] = {}
        for enc, rec in (task.get("probes") or {}).items():
            if enc in variants or rec.get("test_acc") is None:
                continue
            by_model.setdefault(rec["model"], []).append(float(rec["test_acc"]))
        for m, accs in by_model.items():
            per.setdefault(m, []).append(float(np.mean(accs)))
    return {m: float(np.mean(v)) for m, v in per.items() if v}


def study_summary(results: Mapping[str, Any]) -> list[str]:
    """Three lines a manager can read, answering: does adversarial masking help here, by how
    much, at what cost.

    ``results`` = the dict of ``results.json``. Line 1: the verdict, from the paired test of
    adversarial against random masking (mean test accuracy over tasks; pairs of task,
    pre-training seed, fine-tuning seed and mask setting). Line 2: by how much, per task
    against random masks, both against no pre-training, and the linear probe on the frozen
    encoders. Line 3: the cost, a pre-training step of each strategy measured side by side
    (the analysis stage), the steps and tokens per encoder, the whole study's wall time and
    peak memory. Where the fine-tuned models still err: :func:`errors_note`.
    """
    agg = results.get("finetune", {}).get("rows", [])
    tasks = list(results.get("tasks", []))
    vs_rand = _task_means(agg, tasks, "adversarial", "random")
    paired = results.get("paired", {})
    pt = paired.get("overall", {}) or {}
    seeds = paired.get("by_pretrain_seed")  # the claim's independent units (older results: the pairs' test)
    if vs_rand:
        mean_rand = float(np.mean([d for _, d in vs_rand]))
        p = pt.get("t_p")
        verdict = {"helped": "Yes", "hurt": "No, it does worse", "not": "Not measurably"}[_effect(paired, mean_rand)]
        line1 = (f"Does adversarial masking help here? {verdict}: fine-tuned encoders pre-trained with it score "
                 f"{100 * mean_rand:+.1f} points of test accuracy against random masking, averaged over "
                 f"{len(vs_rand)} task{'s' if len(vs_rand) != 1 else ''}")
        if seeds:
            line1 += f" ({seed_interval_text(seeds)}"
            line1 += (f"; the {pt['n']} task x fine-tuning-seed pairs share those encoders, so their paired t-test "
                      f"(p = {p:.2g}) would overstate the evidence)." if pt.get("n") and p is not None else ").")
        elif pt.get("n"):
            sig = "significant" if pt.get("significant") else "not significant"
            line1 += (f" (paired test over {pt['n']} pairs of task, pre-training seed and fine-tuning seed: {sig}"
                      + (f", p = {p:.2g})." if p is not None else ")."))
        else:
            line1 += "."
    else:
        line1 = "Does adversarial masking help here? No comparable fine-tuning results yet."
    parts = []
    if vs_rand:
        parts.append("against random masks " + ", ".join(f"{t} {100 * d:+.1f}" for t, d in vs_rand))
    for m in ("adversarial", "random"):
        vs_none = _task_means(agg, tasks, m, "none")
        if vs_none:
            unit = (paired.get("vs_none") or {}).get(m)
            parts.append(f"{m} over no pre-training {100 * float(np.mean([d for _, d in vs_none])):+.1f} on average"
                         + (f" ({seed_interval_text(unit, short=True)})" if unit else ""))
    probe = _probe_means(results)
    if "adversarial" in probe and "random" in probe:
        parts.append(f"a linear probe on the frozen encoders: adversarial {100 * probe['adversarial']:.1f}% vs "
                     f"random {100 * probe['random']:.1f}%"
                     + (f" (random init {100 * probe['none']:.1f}%)" if "none" in probe else "")
                     + f" (no test: {_count(pretrain_seed_count(results), 'encoder')} per strategy)")
    line2 = ("By how much (test accuracy points): " + "; ".join(parts) + ".") if parts else \
        "By how much: no results yet."
    b = results.get("budget", {})
    steps, tokens = b.get("pretrain_steps"), b.get("pretrain_tokens_per_model")
    wall, peak = b.get("total_wall_s"), b.get("peak_rss_mb")
    cost = (results.get("analysis", {}) or {}).get("step_cost") or {}
    ratio = (cost.get("over_random") or {}).get("adversarial")
    line3 = "At what cost: "
    if ratio:
        ms = cost["step_s"]
        line3 += (f"an adversarial pre-training step takes {ratio:.2f}x a random-mask step ({1000 * ms['adversarial']:.0f}"
                  f" vs {1000 * ms['random']:.0f} ms, measured side by side: a clean pass and the masker come on "
                  "top); ")
    line3 += (f"{steps or 0:,} pre-training steps ({(tokens or 0) / 1e6:.1f} M tokens) per encoder; the whole study "
              f"{_fmt_minutes(wall)} of {b.get('machine_short', 'this machine')}, peak memory "
              f"{peak / 1024 if peak else 0:.1f} GiB"
              + (f" (GPU {b['cuda_peak_mb'] / 1024:.1f} GiB)" if b.get("cuda_peak_mb") else "") + ".")
    return [line1, line2, line3]


def _effect(paired: Mapping[str, Any], fallback: float | None = None) -> str:
    """``verdict.study_effect`` of the adversarial-vs-random comparison: decided over pre-training
    seeds when the results have them (``by_pretrain_seed``), else by the pairs' test."""
    from ..verdict import study_effect

    seeds, ov = paired.get("by_pretrain_seed"), paired.get("overall") or {}
    clear, diff = (seeds["excludes_zero"], seeds["mean_diff"]) if seeds else (ov.get("significant"), ov.get("mean_diff"))
    return study_effect({"significant": clear, "mean_diff": diff or fallback})


def seed_interval_text(u: Mapping[str, Any], short: bool = False) -> str:
    """A difference over pre-training seeds in words (``stats.unit_interval``): each seed's value and
    the 95% interval over the seeds, the unit of a claim about pre-training; ``short`` for a clause."""
    per = " and ".join(f"{100 * v:+.1f}" for v in u["unit_diffs"].values())
    n = u["n_units"]
    if u.get("lo") is None:
        return f"{per} with {n} pre-training seed{'s' if n != 1 else ''}: too few for an interval"
    iv = f"95% interval over {n} pre-training seeds {100 * u['lo']:+.1f} to {100 * u['hi']:+.1f}"
    if short:
        return f"{per} per seed; {iv}"
    tells = "which excludes 0" if u["excludes_zero"] else f"so {n} seeds cannot tell"
    return f"{per} points per pre-training seed, the unit of the claim; {iv} points, {tells}"


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' if n != 1 else ''}"


def pretrain_seed_count(results: Mapping[str, Any]) -> int:
    """The pre-training seeds per strategy (the encoders of one strategy)."""
    return len((results.get("preset") or {}).get("pretrain_seeds") or []) or 1


def errors_note(results: Mapping[str, Any]) -> str | None:
    """Where the fine-tuned models still err: the weakest task (adversarial model, else no
    pre-training), its most frequent confusion, and the note class the masker scores highest."""
    agg = results.get("finetune", {}).get("rows", [])
    worst = None
    for t in results.get("tasks", []):
        a = _best_row(agg, "adversarial", True, t) or _best_row(agg, "none", True, t)
        if a and a["test_acc"]["mean"] is not None and (worst is None or a["test_acc"]["mean"] < worst[1]):
            worst = (t, a["test_acc"]["mean"], a)
    if worst is None:
        return None
    t, acc, row = worst
    conf = results.get("finetune", {}).get("confusion", {}).get(t, {}).get(row["model"])
    classes = results.get("finetune", {}).get("classes", {}).get(t, [])
    major = ((results.get("finetune", {}).get("majority") or {}).get(t) or {}).get("rate")
    out = (f"Weakest task {t} ({100 * acc:.1f}% with the {row['model']} model"
           + (f"; the most frequent class alone: {100 * major:.1f}%)" if major is not None else ")"))
    if conf and classes:
        c = np.asarray(conf, dtype=np.float64)
        off = c.copy()
        np.fill_diagonal(off, 0)
        if off.sum() > 0:
            i, j = np.unravel_index(int(off.argmax()), off.shape)
            share = off[i, j] / max(c[i].sum(), 1)
            out += f"; most frequent confusion: true {classes[i]} predicted as {classes[j]} ({share:.0%} of {classes[i]})"
    hi = results.get("analysis", {}).get("highlights", {}).get("highest_score_class")
    if hi:
        out += f"; the masker scores {hi['grouping']} class '{hi['class']}' notes highest (mean score {hi['score']:.2f})"
    return out + "."


def render_results_md(results: Mapping[str, Any]) -> str:
    """RESULTS.md from ``results.json`` (every number comes from ``results``), one part per section."""
    L: list[str] = []
    for part in _MD_PARTS:
        L += part(results)
    return "\n".join(L)


def _md_header(results: Mapping[str, Any]) -> list[str]:
    """Title and provenance line."""
    preset = results.get("preset", {})
    L: list[str] = []
    L.append("# Reproduction study: adversarial vs random MLM pre-training")
    L.append("")
    L.append(f"Generated by `smu study --preset {preset.get('name')}` on {results.get('generated')} "
             "(smu_explain/study/); do not edit by hand: re-run the study. All numbers: "
             "`docs/study/results.json`; schemas: `docs/study/README.md`.")
    L.append("")
    return L


def _md_summary(results: Mapping[str, Any]) -> list[str]:
    """The summary lines."""
    L: list[str] = []
    L.append("## Summary")
    L.append("")
    L += [f"- {s}" for s in results.get("summary", [])]
    L.append("")
    if note := errors_note(results):
        L += [f"Where the models still err: {note[0].lower()}{note[1:]}", ""]
    return L


def _md_setup(results: Mapping[str, Any]) -> list[str]:
    """Setup: machine, model, budgets, wall time, the data table, the preset's trims."""
    b = results.get("budget", {})
    preset = results.get("preset", {})
    L: list[str] = []
    L.append("## Setup")
    L.append("")
    m = results.get("model", {})
    mach = results.get("machine", {})
    L.append(f"- Machine: {mach.get('cpu')} ({mach.get('cpu_count')} logical CPUs, torch {mach.get('torch')}, "
             f"{mach.get('torch_threads')} threads, GPU: {mach.get('gpu') or 'none'}).")
    L.append(f"- Model: {m.get('n_layers')} layers x {m.get('d_model')} (heads {m.get('n_heads')}, "
             f"FF {m.get('d_ff')}, {m.get('emb_dim')}-d embedding per attribute), "
             f"{(m.get('n_params') or 0) / 1e6:.2f} M parameters, windows of {m.get('max_len')} notes; "
             f"tokens: compound words {m.get('attributes')} (no velocity input). "
             "The paper: 12 x 768, 115 M parameters, sequence 1024.")
    L.append(f"- Pre-training budget per strategy: {b.get('pretrain_steps', 0):,} steps x batch "
             f"{b.get('pretrain_batch')} windows = {b.get('pretrain_tokens_per_model', 0) / 1e6:.1f} M real tokens "
             f"(~{b.get('pretrain_epochs', 0):.1f} epochs), lr {preset.get('pretrain_lr')}, "
             f"masking ratio {preset.get('mask_ratio')}, freeze every {preset.get('freeze_every')} epoch(s) "
             f"(top {preset.get('freeze_top')}, unfreeze {preset.get('unfreeze_frac')}), "
             + (f"pre-training seeds {tuple(preset['pretrain_seeds'])} per strategy"
                if len(preset.get("pretrain_seeds") or ()) > 1
                else f"one run per strategy (seed {preset.get('pretrain_seed')})")
             + (f"; strategy settings {preset['strategy_settings']}" if preset.get("strategy_settings") else "")
             + (f"; ablation encoders {preset['variants']}" if preset.get("variants") else "") + ".")
    val_note = (f", on at most {preset['ft_val_windows']} validation windows of whole pieces balanced over "
                "classes" if preset.get("ft_val_windows") else "")
    budgets = results.get("finetune", {}).get("budget_steps") or {}
    steps_txt = (", ".join(f"{t} {n}" for t, n in budgets.items()) + " steps (read off the learning curves)"
                 if budgets else f"{preset.get('ft_steps')} steps")
    L.append(f"- Fine-tuning: {steps_txt} x batch {preset.get('ft_batch')}, "
             f"lr {preset.get('ft_lr')}, early stopping on validation accuracy (patience "
             f"{preset.get('ft_patience')} evaluations every "
             f"{'budget / 5 (at most ' + str(preset.get('ft_eval_every')) + ')' if budgets else preset.get('ft_eval_every')}"
             f" steps{val_note}); "
             f"seeds {preset.get('seeds')}; mask fine-tuning = 15% of the input tokens masked during training "
             "only (no masking at evaluation).")
    L.append(f"- Wall time of the whole study: {_fmt_minutes(b.get('total_wall_s'))} "
             f"(pre-training {_fmt_minutes(b.get('pretrain_wall_s'))}); peak memory "
             f"{(b.get('peak_rss_mb') or 0) / 1024:.2f} GiB RSS"
             + (f", GPU {b['cuda_peak_mb'] / 1024:.2f} GiB" if b.get("cuda_peak_mb") else "") + ".")
    est = results.get("estimate_minutes", {})
    if est:
        L.append(f"- The preset's estimate was {est.get('total', 0):.0f} min in all "
                 f"(pre-training {est.get('pretrain', 0):.0f} min) on {preset.get('machine')}.")
    L.append("")
    L.append("### Data")
    L.append("")
    data = results.get("data", {})
    rows = []
    for task, d in data.get("tasks", {}).items():
        sp = d.get("splits", {})
        rows.append([task] + [f"{sp.get(s, {}).get('pieces', 0)} / {sp.get(s, {}).get('notes', 0):,}"
                              for s in ("train", "val", "test")] + [d.get("split_info", "")])
    L.append(markdown_table(["task", "train pieces / notes", "val", "test", "split"], rows))
    L.append("")
    L.append("Composer classification uses ASAP's 8 most-performed composers, split by work: a stand-in "
             "for Pianist8 (not available), so its numbers do not compare directly with the published ones. "
             "EMOPIA is split by song; POP909 by song. Pre-training data: Pop1K7 + POP909 + ASAP + EMOPIA "
             "without any fine-tuning validation or test piece, with random transposition.")
    L.append("")
    if preset.get("notes"):
        L.append("### What this preset trims")
        L.append("")
        L += [f"- {n}" for n in preset["notes"]]
        L.append("")
    return L


def scores_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Test accuracy (%) per model and task, mean ± std over seeds, with the majority class's
    rate as the last row (header, rows)."""
    tasks = list(results.get("tasks", []))
    h, r = results_table(results.get("finetune", {}).get("rows", []), "test_acc", tasks)
    maj = results.get("finetune", {}).get("majority") or {}
    if maj:
        r = r + [["majority class (no model)"] + [f"{100 * maj[t]['rate']:.1f}" if t in maj and
                                                  maj[t].get("rate") is not None else "—" for t in tasks]]
    return h, r


def _md_scores(results: Mapping[str, Any]) -> list[str]:
    """Test accuracy and macro-F1 tables (mean ± std over seeds)."""
    tasks = list(results.get("tasks", []))
    agg = results.get("finetune", {}).get("rows", [])
    preset = results.get("preset", {})
    L: list[str] = []
    for metric, title in (("test_acc", "Test accuracy (%)"), ("test_macro_f1", "Test macro-F1 (%)")):
        n_ft, n_pre = len(preset.get("seeds", [])), pretrain_seed_count(results)
        L.append(f"## {title}, mean ± std over runs ({n_pre} pre-training x {n_ft} fine-tuning seeds = "
                 f"{n_pre * n_ft} runs per pre-trained row; {n_ft} for no pre-training)")
        L.append("")
        h, r = scores_table(results) if metric == "test_acc" else results_table(agg, metric, tasks)
        L.append(markdown_table(h, r))
        L.append("")
    runs = results.get("finetune", {}).get("runs", [])
    if any(r.get("pretrain_seed") is not None for r in runs):
        L.append("Each pre-trained row pools its pre-training seeds x fine-tuning seeds; the majority row is the "
                 "share of the test set's most frequent class in the scoring unit (notes or pieces).")
        L.append("")
    return L


PRETRAIN_TITLE = "Did the encoders learn? Pre-training recovery vs the no-model rules"
PRETRAIN_CAPTION = ("Recovery accuracy of a seeded random 15% of the pre-training validation notes replaced by "
                    "MASK (the same notes for every row; the most frequent value is counted on the evaluated "
                    "windows).")
PROBE_TITLE = "Linear probe on the frozen encoders (test accuracy %)"
PROBE_CAPTION = ("A logistic regression on the encoder's final hidden states (notes: per token; pieces: mean "
                 "over a window, window probabilities averaged per piece), L2 chosen on validation; the "
                 "encoder is not trained. It measures what pre-training put into the representation.")


def _md_pretrain(results: Mapping[str, Any]) -> list[str]:
    """Pre-training recovery per encoder beside the no-model rules (docs/METHOD.md 9)."""
    t = pretrain_table(results, bold=True)
    if t is None:
        return []
    return _md_section(PRETRAIN_TITLE, *t, PRETRAIN_CAPTION + " Bold: above every rule on that attribute. "
                       + pretrain_verdict_note(results))


def learned_attributes(v: Mapping[str, Any]) -> dict[str, bool] | None:
    """{attribute: learned} of one pre-training result: above every rule and the 95% interval of the
    lead over the best rule (``lead_interval``, a paired bootstrap over pieces) excluding 0; None
    for results stored before the interval was (then only the numbers say it: ``beats_rules``)."""
    from ..baselines import lead_word

    iv = v.get("lead_interval")
    if not iv or not iv.get("unit"):
        return None
    leads = iv.get("leads") or {}
    return {a: lead_word(bool(b), leads.get(a)) == "learned" for a, b in (v.get("beats_rules") or {}).items()}


def pretrain_verdict_note(results: Mapping[str, Any]) -> str:
    """What the last column of the pre-training table rests on (an interval, or only the numbers)."""
    pre = (results.get("pretrain") or {}).values()
    if pre and all(learned_attributes(v) is not None for v in pre):
        return ("Last column: above every rule with the 95% interval of the lead over the best rule (a paired "
                "bootstrap over validation pieces) excluding 0.")
    return ("Last column: above every rule by the numbers only; these results were stored before the study kept "
            "an interval for the lead (new runs keep one, and then say 'learned' only where it excludes 0).")


def pretrain_table(results: Mapping[str, Any], bold: bool = False
                   ) -> tuple[list[str], list[list[str]]] | None:
    """Recovery per attribute of every encoder below the no-model rules' (header, rows); the
    last column says whether it beats every rule. ``bold``: markdown bold where a value
    beats every rule. None when no pre-training result has the rules."""
    pre = results.get("pretrain") or {}
    if not any(v.get("rules") for v in pre.values()):
        return None
    attrs = list(next(iter(v["recovery_accuracy"] for v in pre.values() if v.get("recovery_accuracy")), {}))
    rows = []
    rules = next(v["rules"] for v in pre.values() if v.get("rules"))
    names = {"most_frequent": "rule: most frequent value", "copy_neighbour": "rule: copy the nearest neighbour",
             "window_mode": "rule: most frequent among 16 neighbours"}
    for rule, acc in rules.items():
        rows.append([names.get(rule, rule)] + [_f3(acc.get(a)) for a in attrs] + [""])
    for name, v in pre.items():
        ra = v.get("recovery_accuracy") or {}
        beats = learned_attributes(v) or v.get("beats_rules") or {}
        ok = bool(beats) and all(beats.values())
        rows.append([f"{name} (step {(v.get('total') or {}).get('steps', '?')})"]
                    + [("**" + _f3(ra.get(a)) + "**") if bold and beats.get(a) else _f3(ra.get(a)) for a in attrs]
                    + ["yes" if ok else "no: " + ", ".join(a for a, b in beats.items() if not b)])
    return ["encoder"] + attrs + ["beats every rule"], rows


def _md_section(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str) -> list[str]:
    """A RESULTS.md section: heading, one table, one caption paragraph."""
    return [f"## {title}", "", markdown_table(header, rows), "", caption, ""]


def _md_curves(results: Mapping[str, Any]) -> list[str]:
    """Fine-tuning learning curves and the budget read off them."""
    curves = results.get("curves") or {}
    if not curves:
        return []
    rows = []
    for t, c in curves.items():
        for m, cv in c.get("curves", {}).items():
            pts = cv.get("points", [])
            show = pts[:: max(1, len(pts) // 6)] + ([pts[-1]] if pts and pts[-1] not in pts[:: max(1, len(pts) // 6)]
                                                     else [])
            rows.append([t, m, " ".join(f"{q['step']}:{100 * q['val_acc']:.0f}" for q in show),
                         _pct(cv.get("best_val_acc")), cv.get("plateau_step"), f"{cv.get('epochs', 0):.1f}"])
        if (maj := c.get("majority_val") or {}).get("rate") is not None:
            rows.append([t, "majority class (no model)", "the most frequent validation class, always", _pct(maj["rate"]),
                         "", ""])
        rows.append([t, "**budget**", c.get("rule", ""), "", f"**{c.get('budget_steps')}**", ""])
    return _md_section("Fine-tuning learning curves: where validation accuracy stops rising",
                       ["task", "model", "validation accuracy % at step", "best", "plateau step", "epochs"], rows,
                       "One fine-tuning run per model (seed 0, mask fine-tuning on, no early stopping) on the "
                       "validation windows used for early stopping. The fine-tuning runs below get the budget "
                       "(with early stopping).")


def _md_probe(results: Mapping[str, Any]) -> list[str]:
    """The linear probe on the frozen encoders."""
    t = probe_table(results)
    return _md_section(PROBE_TITLE, *t, PROBE_CAPTION) if t else []


def probe_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Linear-probe test accuracy (%) per encoder and task, the majority class last (header,
    rows); None when no probe ran."""
    probe = results.get("probe") or {}
    if not probe:
        return None
    tasks = [t for t in results.get("tasks", []) if t in probe]
    encs: list[str] = []
    for t in tasks:
        encs += [e for e in probe[t]["probes"] if e not in encs]
    rows = []
    for e in encs:
        label = "random init (no pre-training)" if e == "none" else e
        rows.append([label] + [_pct1(probe[t]["probes"].get(e, {}).get("test_acc")) for t in tasks])
    rows.append(["majority class (no model)"] + [_pct1((probe[t].get("majority") or {}).get("rate")) for t in tasks])
    return ["encoder"] + tasks, rows


def _md_earlier(results: Mapping[str, Any]) -> list[str]:
    """Earlier runs of the study, as dated sections (their numbers stay reachable)."""
    L: list[str] = []
    for e in results.get("earlier") or []:
        L += [f"## Earlier run: {e.get('date')} (preset {e.get('preset')})", ""]
        L.append(f"Replaced because {e.get('why')}. Full report: `{e.get('results_md')}`; numbers: "
                 f"`{e.get('results')}`.")
        L.append("")
        if e.get("summary"):
            L += [f"- {x}" for x in e["summary"]]
            L.append("")
        if (t := earlier_table(e)) is not None:
            L.append("Its test accuracy (%), mean ± std over 3 fine-tuning seeds of one pre-training run:")
            L.append("")
            L.append(markdown_table(*t))
            L.append("")
    return L


def earlier_table(earlier: Mapping[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """An earlier run's test accuracy table (header, rows), from an ``earlier_runs`` entry;
    None when its results were not found."""
    if not earlier.get("rows"):
        return None
    return results_table(earlier["rows"], "test_acc", list(earlier.get("tasks", [])))


def _md_published(results: Mapping[str, Any]) -> list[str]:
    """The published numbers and ours beside them."""
    tasks = list(results.get("tasks", []))
    agg = results.get("finetune", {}).get("rows", [])
    L: list[str] = []
    L.append("## Published numbers (accuracy %, docs/METHOD.md section 8)")
    L.append("")
    h, r = published_table(tasks)
    L.append(markdown_table(h, r))
    L.append("")
    L.append("Ours beside theirs (test accuracy %, our mean over seeds; theirs from the paper's Table 3):")
    L.append("")
    rows = []
    paper = next(iter(PUBLISHED.values()))
    for (model, mask), pub in PUBLISHED_MATCH.items():
        ours = []
        for t in tasks:
            rr = _best_row(agg, model, mask, t)
            theirs = paper[pub].get(t)
            ours.append(f"{format_mean_std(rr['test_acc']) if rr else '—'} / "
                        f"{'—' if theirs is None else f'{theirs:.2f}'}")
        rows.append([row_label(model, mask), pub.strip()] + ours)
    L.append(markdown_table(["ours", "paper row"] + [f"{t} (ours / paper)" for t in tasks], rows))
    L.append("")
    L.append("Not comparable cell by cell: the paper's velocity task is GiantMIDI (ours POP909), its composer task "
             "Pianist8 (ours an ASAP stand-in), its models 115 M parameters on 1,024-token Octuple sequences (ours "
             "0.9 M, compound words), and the authors' code masks inputs at evaluation time (ours does not); the "
             "table shows orders of magnitude, not agreement or disagreement.")
    L.append("")
    return L


def _md_paired(results: Mapping[str, Any]) -> list[str]:
    """Adversarial vs random: the paired tests and the verdict."""
    L: list[str] = []
    L.append("## Does adversarial beat random masking at this scale?")
    L.append("")
    paired = results.get("paired", {})
    ov = paired.get("overall")
    if ov:
        L.append(f"Paired over tasks x seeds x mask settings (n = {ov['n']} pairs of test accuracies, "
                 f"adversarial - random): mean difference {100 * (ov['mean_diff'] or 0):+.2f} points, "
                 f"{ov['wins']} wins / {ov['losses']} losses / {ov['ties']} ties, paired t-test p = "
                 f"{_p(ov.get('t_p'))}, Wilcoxon p = {_p(ov.get('wilcoxon_p'))}.")
        L.append("")
        seeds = paired.get("by_pretrain_seed")
        if seeds:  # the claim's unit: the pairs of one pre-training seed share its encoder
            L.append(f"Over the pre-training seeds, the independent units of a claim about pre-training: "
                     f"{seed_interval_text(seeds)}. The t-test above counts every pair as independent; it is "
                     "shown for reference.")
            L.append("")
        verdict = {"helped": "**Yes**: adversarial pre-training is better than random masking here.",
                   "hurt": "**No**: adversarial pre-training is worse than random masking here.",
                   "not": "**Not shown**: at this scale the difference between adversarial and random masking is "
                          "not measurable."}[_effect(paired)]
        n_pre = int(paired.get("pretrain_seeds") or 1)
        L.append(verdict + (f" Pairs span {n_pre} pre-training seeds per strategy and the fine-tuning seeds, so "
                            "the test covers pre-training variance too (with few pre-training runs it is still weak "
                            "evidence about it)." if n_pre > 1 else
                            " The seeds are fine-tuning seeds of one pre-training run per strategy, so this "
                            "tests fine-tuning variance only."))
        L.append("")
        rows = [[t, pt["n"], f"{100 * (pt['mean_diff'] or 0):+.2f}", _p(pt.get("t_p")), _p(pt.get("wilcoxon_p")),
                 "yes" if pt["significant"] else "no"] for t, pt in paired.get("per_task", {}).items()]
        L.append(markdown_table(["task", "pairs", "mean diff (points)", "t-test p", "Wilcoxon p",
                                 "p < 0.05 (pairs not independent)"], rows))
        if any(pt["n"] < 6 for pt in paired.get("per_task", {}).values()):
            L.append("")
            L.append("Significant: t-test p < 0.05 and, from 6 pairs on, Wilcoxon p < 0.05 too. With fewer than 6 "
                     "pairs Wilcoxon's smallest possible p is above 0.05 (0.125 with 4), so the t-test decides "
                     "alone; a task's pairs share " + (f"{n_pre} pre-training runs per strategy, so a per-task 'yes' "
                                                       "is weak evidence." if n_pre > 1 else
                                                       "one pre-training run per strategy."))
    else:
        L.append("No paired comparison (the adversarial or the random model is missing).")
    L.append("")
    return L


def _md_efficiency(results: Mapping[str, Any]) -> list[str]:
    """Data efficiency: accuracy per fraction of the labelled data, crossings, figure."""
    L: list[str] = []
    L.append("## Data efficiency")
    L.append("")
    eff = results.get("efficiency", {})
    if eff:
        fr = sorted({p["fraction"] for e in eff.values() for c in e["curves"].values() for p in c})
        rows = []
        for t, e in eff.items():
            for model, pts in e["curves"].items():
                byf = {p["fraction"]: p for p in pts}
                rows.append([t, model] + [format_mean_std(byf.get(f)) for f in fr]
                            + [format_crossing(e["crossing"].get(model, {})) if model != "none" else "—"])
        L.append(markdown_table(["task", "model"] + [f"{f:.0%}" for f in fr]
                                + ["matches no-pre-training @100%"], rows))
        L.append("")
        L.append("Test accuracy (%) with a fraction of the labelled training pieces (mask fine-tuning on, same "
                 "steps and seeds). Last column: the fraction at which the model reaches the no-pre-training "
                 "model's mean accuracy with 100% of the data (linear interpolation between measured fractions).")
        img = _md_image(results, "data_efficiency", "data efficiency")
        if img:
            L.append("")
            L.append(img)
    else:
        L.append("Not run.")
    L.append("")
    return L


def _md_costs(results: Mapping[str, Any]) -> list[str]:
    """Cost of every stage."""
    L: list[str] = []
    L.append("## Cost of every stage")
    L.append("")
    def load(c: Mapping[str, Any]) -> str:
        xs = [x for x in c.get("load_1min") or [] if x is not None]
        return " → ".join(f"{x:.1f}" for x in xs) if xs else "—"

    def cpu(c: Mapping[str, Any]) -> str:
        if not c.get("cpu_s"):
            return "—"
        return f"{c['cpu_s'] / 60:.1f} min" + (" (last sitting)" if c.get("resumed_runs") else "")

    rows = [[s + (" (resumed)" if c.get("resumed_runs") else ""), _fmt_minutes(c.get("wall_s")), cpu(c), load(c),
             f"{c.get('steps', 0):,}", f"{(c.get('tokens') or 0) / 1e6:.2f} M",
             f"{(c.get('peak_rss_mb') or 0):.0f}", f"{c['cuda_peak_mb']:.0f}" if c.get("cuda_peak_mb") else "—"]
            for s, c in results.get("cost", {}).items()]
    L.append(markdown_table(["stage", "wall", "CPU", "load (1 min, start → end)", "steps", "tokens",
                             "peak RSS (MiB)", "CUDA peak (MiB)"], rows))
    L.append("")
    L.append("Peak RSS: " + (results.get("cost_note") or "per stage") + ". Wall times include whatever else the "
             "machine ran at the time (CPU and load are recorded from this run on; stages before show —): compare "
             "strategies by the side-by-side step cost of the summary, not by these. A stage marked resumed ran in two "
             "or more sittings: its wall time counts the runs finished in every sitting; its CPU time and load are "
             "the last sitting's.")
    L.append("")
    return L


def _md_masker(results: Mapping[str, Any]) -> list[str]:
    """Masker analysis: correlations, classes, freeze history, examples."""
    L: list[str] = []
    L.append("## Masker analysis")
    L.append("")
    ana = results.get("analysis", {})
    if ana:
        pps = ", ".join(f"{k} {v}" for k, v in (ana.get("pieces_per_source") or {}).items())
        L.append(f"Validation pieces per source: {pps}. Frozen here = the top "
                 f"{ana.get('freeze_top', 0.3):.0%} of a piece's notes by masker score (the freeze rule applied "
                 "once; the freeze book itself covers training pieces only).")
        L.append("")
        rows = [[src, _fmt_rho(s.get("spearman_random_loss")), _fmt_rho(s.get("spearman_own_loss")), s.get("n_notes")]
                for src, s in ana.get("sources", {}).items()]
        rows.append(["all", _fmt_rho(ana.get("spearman_random_loss")), _fmt_rho(ana.get("spearman_own_loss")),
                     ana.get("n_notes")])
        L.append(markdown_table(["source", "Spearman(score, random model's recovery loss)",
                                 "Spearman(score, adversarial model's own loss)", "notes"], rows))
        L.append("")
        L.append(f"The p-values treat every note as independent; the notes of one piece are not (they share it), so "
                 f"they overstate the evidence: what supports the correlations is that they hold in each source "
                 f"({pps} pieces). The class tables below are descriptive (means, no intervals, not controlled for "
                 "duration and register; `smu picks` gives those).")
        L.append("")
        for g, rowsg in ana.get("by_class", {}).items():
            if not rowsg:
                continue
            L.append(f"By {g}:")
            L.append("")
            L.append(markdown_table(["class", "notes", "mean score", "frozen", "random model's loss"],
                                    [[r["class"], r["n"], _f3(r.get("score")), _pct(r.get("frozen")),
                                      _f2(r.get("random_loss"))] for r in rowsg]))
            L.append("")
        hist = ana.get("freeze_history", [])
        if hist:
            L.append("Freeze book over training (adversarial run, training pieces):")
            L.append("")
            L.append(markdown_table(["epoch", "step", "frozen", "Jaccard with previous", "kept from previous",
                                     "Jaccard with last"],
                                    [[h["epoch"], h["step"], _pct(h["frozen_frac"]), _f2(h["jaccard_prev"]),
                                      _pct(h["kept_from_prev"]), _f2(h["jaccard_last"])] for h in hist]))
            L.append("")
        for name, alt in (("masker_spearman", "Spearman correlations"), ("masker_by_class", "score and frozen "
                          "share by note class"), ("masker_freeze_history", "frozen set over training")):
            img = _md_image(results, name, alt)
            if img:
                L.append(img)
                L.append("")
        ex = ana.get("examples", [])
        if ex:
            L.append(f"Frozen notes from real pieces ({ana.get('examples_frozen_by')}):")
            L.append("")
            L.append(markdown_table(["piece", "note", "pitch", "onset (quarters)", "duration (q)", "score"],
                                    [[e["piece"], e["note"], e["pitch"], _f2(e["onset_q"]), _f2(e["duration_q"]),
                                      _f3(e["score"])] for e in ex]))
            L.append("")
            imgs = [_md_image(results, f"masker_example_{i + 1}", f"frozen note {i + 1}") for i in range(len(ex))]
            if any(imgs):
                L.append(" ".join(img for img in imgs if img))
                L.append("")
                L.append("Each roll: the example's neighbourhood, notes coloured by masker score, frozen notes grey "
                         "hatched, the notes the masker would pick at 15% outlined red; the arrow marks the example.")
                L.append("")
    else:
        L.append("Not run.")
    L.append("")
    return L


_MD_PARTS = (_md_header, _md_summary, _md_setup, _md_pretrain, _md_curves, _md_scores, _md_probe, _md_published,
             _md_paired, _md_efficiency, _md_costs, _md_masker, _md_earlier)


def _md_image(results: Mapping[str, Any], name: str, alt: str) -> str | None:
    """The figure ``name`` in RESULTS.md (in docs/): its PNG as an image, else a link to its
    interactive HTML (markdown cannot show an HTML page as an image); None without either."""
    files = results.get("figures", {}).get(name, [])
    for ext in (".png", ".html"):
        for f in files:
            if f.endswith(ext):
                rel = f[len("docs/"):] if f.startswith("docs/") else f
                return f"![{alt}]({rel})" if ext == ".png" else f"[{alt} (interactive figure)]({rel})"
    return None


def _p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


def _f2(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _f3(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _fmt_rho(s: Mapping[str, Any] | None) -> str:
    """rho over notes; its p treats the notes as independent (they are not: notes of one piece share
    it), so it is printed as a bound, never as 0."""
    if not s or s.get("rho") is None:
        return "—"
    p = s.get("p")
    return f"{s['rho']:+.3f} (n = {s['n']} notes" + ("" if p is None else f", note-level p {_p_bound(p)}") + ")"


def _p_bound(p: float) -> str:
    return "< 1e-300" if p < 1e-300 else f"= {p:.2g}"


def _pct1(x: float | None) -> str:
    """A share as percent with one decimal ("—" when missing)."""
    return "—" if x is None else f"{100 * x:.1f}"


def partial_report(results_dir, preset: StudyPreset | str) -> str:
    """Markdown of the sections that finished stages already allow while the study runs
    (pre-training recovery vs the rules, learning curves, the fine-tuning tasks done so far,
    probes); "" when none."""
    from pathlib import Path

    from .plan import get_preset, plan_stages

    p = get_preset(preset)
    d = Path(results_dir)
    res = build_results(StudyPaths(d, d, d / "RESULTS.md"), p, plan_stages(p))
    scores = _md_scores(res) if res.get("finetune", {}).get("rows") else []
    return "\n".join(_md_pretrain(res) + _md_curves(res) + scores + _md_probe(res))


def earlier_report(preset: StudyPreset | str, entries: Sequence[Mapping[str, Any]] | None = None) -> str:
    """Markdown of the preset's earlier runs (dated sections); "" when it has none. ``entries``:
    the runs already read (``results.json``'s ``earlier``), else they are read for ``preset``."""
    from .plan import get_preset

    if entries is None:
        entries = earlier_runs(get_preset(preset))
    return "\n".join(_md_earlier({"earlier": entries}))
