"""Statistics of the study: mean/std, aggregation, tables, paired tests, crossings."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .plan import PUBLISHED

# ============================================================================ statistics

def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample std (ddof=1; None with one value) and n of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(float(x))], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size)}


def format_mean_std(stats: Mapping[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    """``"85.2 ± 1.3"`` (percent by default); ``"—"`` when there is no value."""
    if not stats or stats.get("mean") is None:
        return "—"
    m = f"{stats['mean'] * scale:.{digits}f}"
    if stats.get("std") is None:
        return m
    return f"{m} ± {stats['std'] * scale:.{digits}f}"


def row_label(model: str, mask_ft: bool) -> str:
    names = {"adversarial": "adversarial", "random": "random masks", "bar": "bar masks",
             "none": "no pre-training"}
    return f"{names.get(model, model)}, mask-FT {'on' if mask_ft else 'off'}"


def aggregate_runs(runs: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("test_acc", "test_macro_f1")
                   ) -> list[dict[str, Any]]:
    """Group fine-tuning runs by (task, model, mask_ft, fraction) -> mean ± std over seeds.

    Each run needs ``task``, ``model``, ``mask_ft``, ``seed`` and the ``metrics``;
    ``fraction`` defaults to 1.0. Rows come out sorted by task, model, mask (on first), fraction.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in runs:
        key = (r["task"], r["model"], bool(r["mask_ft"]), float(r.get("fraction", 1.0)))
        groups.setdefault(key, []).append(r)
    out = []
    for (task, model, mask, frac), rs in groups.items():
        row = {"task": task, "model": model, "mask_ft": mask, "fraction": frac,
               "seeds": sorted(int(r["seed"]) for r in rs)}
        for m in metrics:
            row[m] = mean_std(r.get(m) for r in rs)
            row[m]["values"] = [r.get(m) for r in sorted(rs, key=lambda x: int(x["seed"]))]
        out.append(row)
    order = {"adversarial": 0, "random": 1, "bar": 2, "none": 3}
    out.sort(key=lambda r: (r["task"], order.get(r["model"], 9), not r["mask_ft"], r["fraction"]))
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells converted with ``str``; ``|`` escaped)."""
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(agg: Sequence[Mapping[str, Any]], metric: str, tasks: Sequence[str],
                  fraction: float = 1.0) -> tuple[list[str], list[list[str]]]:
    """Rows = (model, mask-FT) in the study's order, columns = tasks, cells ``mean ± std`` (%)."""
    rows_by: dict[tuple[str, bool], dict[str, Mapping[str, Any]]] = {}
    for r in agg:
        if abs(float(r["fraction"]) - fraction) > 1e-9:
            continue
        rows_by.setdefault((r["model"], r["mask_ft"]), {})[r["task"]] = r[metric]
    header = ["model"] + list(tasks)
    rows = [[row_label(m, mk)] + [format_mean_std(cells.get(t)) for t in tasks]
            for (m, mk), cells in rows_by.items()]
    return header, rows


def published_table(tasks: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The published accuracies (METHOD.md 8) in the layout of ``results_table``."""
    header = ["source", "model"] + list(tasks)
    rows = []
    for src, models in PUBLISHED.items():
        for model, accs in models.items():
            rows.append([src, model.strip()] + [f"{accs[t]:.2f}" if t in accs else "—" for t in tasks])
    return header, rows


def unit_interval(diffs_by_unit: Mapping[Any, Sequence[float]], level: float = 0.95) -> dict[str, Any]:
    """A difference measured over independent units (pre-training seeds: the pairs of one seed
    share its encoder, so they are not independent): each unit's mean difference, their mean
    and a t interval over the units (``n_units - 1`` degrees of freedom; none below 2 units).
    ``excludes_zero``: the interval lies above or below 0."""
    from scipy import stats as st

    units = {str(u): float(np.mean(v)) for u, v in diffs_by_unit.items() if len(v)}
    d = np.asarray(list(units.values()), dtype=np.float64)
    out: dict[str, Any] = {"n_units": int(d.size), "unit_diffs": units,
                           "mean_diff": float(d.mean()) if d.size else None, "lo": None, "hi": None,
                           "level": level, "excludes_zero": False}
    if d.size >= 2:
        half = float(st.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
        out["lo"], out["hi"] = float(d.mean() - half), float(d.mean() + half)
        out["excludes_zero"] = bool(out["lo"] > 0 or out["hi"] < 0)
    return out


def paired_test(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """Paired comparison of ``a`` against ``b`` (same length, paired by index).

    Reports the mean difference (a - b), the paired t-test and the Wilcoxon
    signed-rank test (two-sided, scipy). ``significant`` = t-test p < ``alpha``
    (and the Wilcoxon p too when it is defined); ``verdict`` says in words whether
    ``a`` beats ``b``. All-equal differences: p = 0 if they are non-zero, else 1.
    Fewer than 2 pairs: no test (p = None, not significant).
    """
    from scipy import stats as st

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired_test needs equal lengths, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    d = x - y
    out: dict[str, Any] = {"n": int(d.size), "mean_a": float(x.mean()) if d.size else None,
                           "mean_b": float(y.mean()) if d.size else None,
                           "mean_diff": float(d.mean()) if d.size else None,
                           "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum()),
                           "t_stat": None, "t_p": None, "wilcoxon_stat": None, "wilcoxon_p": None,
                           "alpha": alpha}
    if d.size >= 2:
        if np.allclose(d, d[0]):
            out["t_p"] = 0.0 if d[0] != 0 else 1.0
            out["t_stat"] = math.copysign(math.inf, d[0]) if d[0] != 0 else 0.0
        else:
            t = st.ttest_rel(x, y)
            out["t_stat"], out["t_p"] = float(t.statistic), float(t.pvalue)
        nz = d[d != 0]
        if nz.size >= 1:
            try:
                w = st.wilcoxon(x, y)
                out["wilcoxon_stat"], out["wilcoxon_p"] = float(w.statistic), float(w.pvalue)
            except ValueError:
                pass
        elif d.size:
            out["wilcoxon_p"] = 1.0
    sig = out["t_p"] is not None and out["t_p"] < alpha and (out["wilcoxon_p"] is None or out["wilcoxon_p"] < alpha
                                                             or d.size < 6)
    # Wilcoxon's smallest two-sided p with n < 6 pairs is >= 0.0625: it cannot reject at 0.05,
    # so with so few pairs the t-test decides alone.
    out["significant"] = bool(sig)
    if d.size < 2:
        out["verdict"] = "too few pairs for a test"
    elif sig:
        out["verdict"] = ("a is better than b" if out["mean_diff"] > 0 else "a is worse than b") + \
            f" (paired t-test p = {out['t_p']:.3g})"
    else:
        out["verdict"] = f"no significant difference (paired t-test p = {out['t_p']:.3g})"
    return out


def crossing_fraction(fractions: Sequence[float], accs: Sequence[float | None], target: float
                      ) -> dict[str, Any]:
    """The smallest labelled fraction at which ``accs`` reaches ``target``.

    Points are sorted by fraction; the first point with acc >= target is found and
    the fraction is interpolated linearly between it and the point before (which is
    below the target). Returns ``{"fraction": f or None, "status": "reached" |
    "at or below the smallest fraction" | "not reached"}``.
    """
    pts = sorted((float(f), float(a)) for f, a in zip(fractions, accs, strict=False) if a is not None and math.isfinite(float(a)))
    if not pts or target is None:
        return {"fraction": None, "status": "not reached"}
    for i, (f, a) in enumerate(pts):
        if a >= target:
            if i == 0:
                return {"fraction": f, "status": "at or below the smallest fraction"}
            f0, a0 = pts[i - 1]
            frac = f0 + (target - a0) * (f - f0) / (a - a0)
            return {"fraction": float(frac), "status": "reached"}
    return {"fraction": None, "status": "not reached"}


def format_crossing(c: Mapping[str, Any]) -> str:
    if c.get("fraction") is None:
        return "not reached"
    if c["status"] == "reached":
        return f"{c['fraction']:.0%}"
    return f"≤ {c['fraction']:.0%}"


def efficiency_summary(runs: Sequence[Mapping[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """Curves (mean ± std test accuracy per fraction and model), the target (no-pre-training
    mean accuracy at 100%) and each pre-trained model's crossing fraction."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for m in models:
        pts = []
        for f in sorted({float(r["fraction"]) for r in runs if r["model"] == m}):
            vals = [r["test_acc"] for r in runs if r["model"] == m and abs(float(r["fraction"]) - f) < 1e-9]
            pts.append({"fraction": f, **mean_std(vals), "values": vals})
        curves[m] = pts
    none_full = [p for p in curves.get("none", []) if abs(p["fraction"] - 1.0) < 1e-9]
    target = none_full[0]["mean"] if none_full else None
    crossing = {m: crossing_fraction([q["fraction"] for q in pts], [q["mean"] for q in pts], target)
                for m, pts in curves.items() if m != "none"}
    return {"curves": curves, "target": target, "crossing": crossing}
