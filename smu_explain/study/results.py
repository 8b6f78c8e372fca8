"""The study's ``results.json``: ``build_results`` gathers every finished stage's result file
(cost, model and budget, pre-training, fine-tuning rows and confusions, curves, probes, the
paired adversarial-vs-random test, data efficiency, the masker analysis) and the earlier runs
kept beside this one (``earlier_runs``). Schema: docs/study/README.md.

Reads JSON only (no torch): imports ``plan`` and ``stats``; ``report`` renders what it builds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .plan import (
    RESULT_FORMAT,
    Stage,
    StudyPaths,
    StudyPreset,
    estimate_minutes,
    machine_info,
    now_iso,
    pretrain_stage_names,
    read_json,
)
from .stats import aggregate_runs, paired_test, unit_interval


def _resumed_cost(stage_result: Mapping[str, Any]) -> dict[str, Any]:
    """The stage's cost, with the runs of an earlier sitting counted in its wall time.

    A fine-tuning stage stopped and resumed keeps its finished runs; since the cost meter
    counts them (``resumed_runs``) nothing changes. A stage written before it did (no
    ``resumed_runs``) whose runs' own wall times add up to more than its measured wall time
    was resumed: its wall becomes the sum of its runs' (the data loading of its sittings is
    left out) and ``resumed_runs`` is marked unknown (``-1``)."""
    c = dict(stage_result["cost"])
    runs = (stage_result.get("result") or {}).get("runs") or []
    if "resumed_runs" not in c and runs:
        runs_wall = sum(float(x.get("wall_s") or 0.0) for x in runs)
        if runs_wall > 1.02 * float(c.get("wall_s") or 0.0):
            c["resumed_wall_s"] = None
            c["resumed_runs"] = -1
            c["wall_s_last_sitting"] = c["wall_s"]
            c["wall_s"] = runs_wall
    return c


def build_results(paths: StudyPaths, preset: StudyPreset, stages: Sequence[Stage]) -> dict[str, Any]:
    """Everything in ``results.json`` from the stage results present (schema: docs/study/README.md)."""
    def res(name: str) -> dict[str, Any] | None:
        f = paths.result(name)
        return read_json(f) if f.is_file() else None

    results: dict[str, Any] = {"format": RESULT_FORMAT, "generated": now_iso(), "preset": preset.to_dict(),
                               "tasks": list(preset.tasks), "estimate_minutes": estimate_minutes(preset),
                               "machine": machine_info()}
    data = res("data")
    results["data"] = (data.get("result") or {}) if data else {}
    # cost of every stage
    cost, machines = {}, {}
    for st in stages:
        r = res(st.name)
        if r and st.kind != "report" and "cost" in r:
            cost[st.name] = _resumed_cost(r)
            machines[st.name] = r.get("machine", {})
    results["cost"] = cost
    srcs = {c.get("peak_rss_source") for c in cost.values()}
    results["cost_note"] = ", ".join(sorted(s for s in srcs if s)) or "n/a"
    first = next(iter(machines.values()), None)
    if first:
        results["machine"] = first
    # model + budget
    pre_final = {}
    for enc in preset.encoders():
        r = res(pretrain_stage_names(preset, enc.name)[-1])
        if r:
            pre_final[enc.name] = r["result"]
    tok_attrs = results["data"].get("attributes", [])
    n_params = next((r.get("n_params") for r in pre_final.values() if r.get("n_params")), None)
    results["model"] = {**preset.model, "max_len": preset.max_len, "n_params": n_params, "attributes": tok_attrs}
    results["pretrain"] = {s: {"strategy": r.get("strategy", s), "seed": r.get("seed"),
                               "settings": r.get("settings", {}), "total": r.get("total"),
                               "recovery_accuracy": r.get("recovery_accuracy"), "rules": r.get("rules"),
                               "beats_rules": r.get("beats_rules"), "lead_interval": r.get("lead_interval"),
                               "val_metrics": r.get("val_metrics"),
                               "freeze_events": r.get("freeze_events")}
                           for s, r in pre_final.items()}
    totals = [r.get("total") or {} for r in pre_final.values()]
    pre_wall = sum(c["wall_s"] for n, c in cost.items() if n.startswith("pretrain-"))
    all_peak = [c.get("peak_rss_mb") for c in cost.values() if c.get("peak_rss_mb") is not None]
    all_cuda = [c.get("cuda_peak_mb") for c in cost.values() if c.get("cuda_peak_mb") is not None]
    mach = results["machine"]
    results["budget"] = {
        "pretrain_steps": preset.pretrain_steps, "pretrain_batch": preset.pretrain_batch,
        "pretrain_runs": len(pre_final),
        "pretrain_tokens_per_model": max((t.get("tokens", 0) for t in totals), default=0),
        "pretrain_epochs": max((t.get("epochs", 0) for t in totals), default=0),
        "pretrain_wall_s": pre_wall, "total_wall_s": sum(c["wall_s"] for c in cost.values()),
        "finetune_tokens": sum(c.get("tokens", 0) for n, c in cost.items() if not n.startswith("pretrain-")),
        "peak_rss_mb": max(all_peak) if all_peak else None, "cuda_peak_mb": max(all_cuda) if all_cuda else None,
        "machine_short": (f"{mach.get('gpu')}" if mach.get("gpu") else f"{mach.get('cpu_count')}-CPU "
                                                                     f"{mach.get('cpu')}"),
    }
    # fine-tuning
    all_runs, classes, confusion, majority, budgets = [], {}, {}, {}, {}
    for t in preset.tasks:
        r = res(f"finetune-{t}")
        if not r:
            continue
        all_runs += r["result"]["runs"]
        classes[t] = r["result"]["classes"]
        if r["result"].get("majority"):
            majority[t] = r["result"]["majority"]
        if r["result"].get("budget_steps"):
            budgets[t] = r["result"]["budget_steps"]
        confusion[t] = {}
        for m in preset.ft_models:
            mats = [np.asarray(x["test_confusion"]) for x in r["result"]["runs"]
                    if x["model"] == m and x["mask_ft"] and x.get("test_confusion") is not None]
            if mats:
                confusion[t][m] = np.sum(mats, axis=0).tolist()
    results["finetune"] = {"rows": aggregate_runs(all_runs), "runs": all_runs, "classes": classes,
                           "confusion": confusion, "majority": majority, "budget_steps": budgets}
    results["curves"] = {t: r["result"] for t in preset.tasks if (r := res(f"curve-{t}"))}
    results["probe"] = {t: r["result"] for t in preset.tasks if (r := res(f"probe-{t}"))}
    # paired comparison adversarial vs random (pairs: task, pre-training seed, fine-tuning seed, mask)
    paired: dict[str, Any] = {}
    if "adversarial" in preset.strategies and "random" in preset.strategies and all_runs:
        key = lambda r: (r["task"], r.get("pretrain_seed"), r["seed"], r["mask_ft"])  # noqa: E731
        adv = {key(r): r["test_acc"] for r in all_runs if r["model"] == "adversarial"}
        rnd = {key(r): r["test_acc"] for r in all_runs if r["model"] == "random"}
        common = sorted(set(adv) & set(rnd), key=str)
        if common:
            paired["overall"] = paired_test([adv[k] for k in common], [rnd[k] for k in common])
            paired["per_task"] = {}
            for t in preset.tasks:
                ks = [k for k in common if k[0] == t]
                if ks:
                    paired["per_task"][t] = paired_test([adv[k] for k in ks], [rnd[k] for k in ks])
            paired["pairs"] = ("test accuracy of adversarial vs random, paired by (task, pre-training seed, "
                               "fine-tuning seed, mask-FT)")
            paired["pretrain_seeds"] = len(preset.seeds_pretrain)
            # the claim is about pre-training: its independent units are the pre-training seeds
            paired["by_pretrain_seed"] = unit_interval(_by_seed({k: _diff(adv[k], rnd[k]) for k in common}))
        none = {(r["task"], r["seed"], r["mask_ft"]): r["test_acc"] for r in all_runs if r["model"] == "none"}
        paired["vs_none"] = {m: unit_interval(_by_seed({k: _diff(acc, none.get((k[0], k[2], k[3])))
                                                        for k, acc in runs.items()}))
                             for m, runs in (("adversarial", adv), ("random", rnd)) if none}
    results["paired"] = paired
    # efficiency
    eff = {}
    for t in preset.efficiency_tasks:
        r = res(f"efficiency-{t}")
        if r:
            eff[t] = {k: r["result"][k] for k in ("curves", "target", "crossing")}
    results["efficiency"] = eff
    ana = res("analysis")
    results["analysis"] = ana["result"] if ana else {}
    results["earlier"] = earlier_runs(preset)
    return results


def earlier_runs(preset: StudyPreset) -> list[dict[str, Any]]:
    """Earlier runs kept beside this one (``preset.earlier``): date, folder, why it was
    replaced, and its headline numbers read from its own results.json (when present)."""
    from .plan import REPO_ROOT

    out = []
    for e in preset.earlier:
        d = dict(e)
        f = REPO_ROOT / e["results"]
        if f.is_file():
            old = read_json(f)
            d["summary"] = old.get("summary", [])
            d["rows"] = old.get("finetune", {}).get("rows", [])
            d["tasks"] = old.get("tasks", [])
            d["pretrain"] = {s: v.get("recovery_accuracy") for s, v in (old.get("pretrain") or {}).items()}
        out.append(d)
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def _by_seed(diffs: Mapping[tuple, float | None]) -> dict[Any, list[float]]:
    """Differences keyed (task, pre-training seed, fine-tuning seed, mask-FT), grouped by the
    pre-training seed (non-finite ones left out)."""
    out: dict[Any, list[float]] = {}
    for k, d in diffs.items():
        if d is not None and math.isfinite(d):
            out.setdefault(k[1], []).append(float(d))
    return out
