"""Who recovers more? A verdict on two models' recovery, with a paired bootstrap interval (torch-free).

The pages (Compare, Report, the home page) turn numbers into one sentence with this module; it
imports neither torch nor streamlit.

Rules:

- Input: the explain tables of two models on the same notes under the same seeded masks
  (``explain.explain_piece``; every note masked once, together with a seeded random share of its
  window). A note's ``correct_<attr>`` of model A and model B form one pair.
- Units of the bootstrap: notes for one piece, pieces for a folder (``unit="file"``: the notes
  of a piece move together, since notes of one piece are not independent). Each replicate draws
  as many units as there are, with replacement, from ``numpy.random.default_rng(seed)``: the
  same seed gives the same interval on any machine.
- Statistic: the pooled accuracy difference B - A per attribute (summed differences over summed
  notes in the drawn units: on a folder it is exactly the difference of the accuracies the
  page's chart shows), and their mean over the attributes ("on average"); one set of draws for
  every attribute and the mean. A pair with a missing value on an attribute counts for no note
  there.
- Interval: the 2.5th and 97.5th percentiles of the replicates (95%), widened if needed to
  hold the point estimate (a percentile interval of a skewed ratio may miss it by a hair).
- Verdict: "B recovers more" when the interval lies above 0, "A recovers more" when below,
  "no clear difference" when it includes 0.
- Two note sets: every note (**random masks**), and the **masker's picks**: the notes the trained
  masker(s) among the two would hide at the page's ratio (the union when both maskers are
  trained; none when neither is, since an untrained head's picks are arbitrary). Both models are
  scored on that one common set, each note still masked with a random share of its window.
- Text: :func:`verdict_sentence` builds plain sentences; model names go through the ``esc``
  callable it is given (``markup.md_escape`` on a page, nothing for the HTML report, which
  escapes every text itself).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["paired_bootstrap", "unit_differences", "compare_tables", "pick_set", "verdict_sentence",
           "model_facts", "study_facts", "study_effect", "study_result_text", "context_sentence", "headline",
           "last_recovery", "study_results_path", "load_study", "both_verdicts", "verdict_lines", "headline_line", "winner_interval", "N_BOOT", "LEVEL",
           "MIN_UNITS"]

N_BOOT = 2000
LEVEL = 0.95
# below this many units a bootstrap interval does not measure the uncertainty (one unit: zero width;
# a few: far too narrow), so no winner is named
MIN_UNITS = {"note": 20, "piece": 5}
_CHUNK = 200  # replicates per block (memory: _CHUNK x units counts)


def _attrs_of(table: pd.DataFrame) -> list[str]:
    return [c[len("correct_"):] for c in table.columns if c.startswith("correct_")]


def paired_bootstrap(diff_sums: np.ndarray, counts: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0,
                     level: float = LEVEL) -> dict[str, np.ndarray | float]:
    """Paired bootstrap over units of a pooled difference per column.

    ``diff_sums[u, a]``: the summed difference (B - A) of unit ``u`` on column ``a``;
    ``counts[u, a]``: how many pairs it sums. Returns ``estimate``, ``lo``, ``hi`` (arrays, one
    per column: summed differences over summed counts) and ``mean_estimate``, ``mean_lo``,
    ``mean_hi`` (the mean over the columns, from the same draws). NaN where no pair exists.
    """
    d = np.asarray(diff_sums, dtype=float)
    n = np.asarray(counts, dtype=float)
    if d.ndim == 1:
        d, n = d[:, None], n[:, None]
    if d.shape != n.shape:
        raise ValueError(f"diff_sums {d.shape} and counts {n.shape} differ in shape")
    U, A = d.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        est = d.sum(0) / n.sum(0)
    est = np.where(n.sum(0) > 0, est, np.nan)
    mean_est = float(np.nanmean(est)) if np.isfinite(est).any() else float("nan")
    if U == 0 or n_boot < 1:  # nothing to draw from, or no draws asked for: no interval
        nan = np.full(A, np.nan)
        return {"estimate": est, "lo": nan, "hi": nan.copy(), "mean_estimate": mean_est,
                "mean_lo": float("nan"), "mean_hi": float("nan"), "n_units": int(U), "n_boot": int(n_boot)}
    rng = np.random.default_rng(int(seed))
    reps, mean_reps = [], []
    done = 0
    while done < n_boot:
        b = min(_CHUNK, n_boot - done)
        idx = rng.integers(0, U, size=(b, U))
        w = np.bincount((idx + np.arange(b)[:, None] * U).ravel(), minlength=b * U).reshape(b, U).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (w @ d) / (w @ n)
        r[~np.isfinite(r)] = np.nan
        reps.append(r)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(est)  # the mean over the attributes the estimate has
            mean_reps.append(np.nanmean(r[:, ok], axis=1) if ok.any() else np.full(b, np.nan))
        done += b
    reps_a = np.concatenate(reps)
    mean_a = np.concatenate(mean_reps)
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)

    def interval(x: np.ndarray, e: float) -> tuple[float, float]:
        x = x[np.isfinite(x)]
        if not len(x) or not np.isfinite(e):
            return float("nan"), float("nan")
        lo, hi = np.percentile(x, q)
        return float(min(lo, e)), float(max(hi, e))

    los, his = zip(*(interval(reps_a[:, j], est[j]) for j in range(A)), strict=False) if A else ((), ())
    mlo, mhi = interval(mean_a, mean_est)
    return {"estimate": est, "lo": np.array(los, dtype=float), "hi": np.array(his, dtype=float),
            "mean_estimate": mean_est, "mean_lo": mlo, "mean_hi": mhi, "n_units": int(U), "n_boot": int(n_boot)}


def _paired(table_a: pd.DataFrame, table_b: pd.DataFrame) -> str | None:
    """Why two explain tables cannot be paired note by note (None when they can)."""
    if len(table_a) != len(table_b):
        return (f"the two models read the notes differently ({len(table_a)} vs {len(table_b)} notes: "
                "different tokenizers), so their notes cannot be paired")
    for col in ("file", "pitch", "onset_q"):
        if (col in table_a.columns and col in table_b.columns
                and not np.array_equal(table_a[col].to_numpy(), table_b[col].to_numpy())):
            return "the two models read the notes differently (different tokenizers), so they cannot be paired"
    return None


def unit_differences(table_a: pd.DataFrame, table_b: pd.DataFrame, attrs: Sequence[str], *,
                     unit: str | None = None, notes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(diff_sums, counts), each (units, attributes): per unit the summed ``correct_<attr>`` of B
    minus A over the pairs where both are known, and how many such pairs. ``unit=None``: every
    note is a unit; ``unit="file"``: the notes of one file are (files in order of appearance,
    also those with no note in ``notes``). ``notes``: a boolean mask of the notes to use."""
    keep = np.ones(len(table_a), dtype=bool) if notes is None else np.asarray(notes, dtype=bool)
    cols_d, cols_n = [], []
    for a in attrs:
        xa = pd.to_numeric(table_a[f"correct_{a}"], errors="coerce").to_numpy(dtype=float)
        xb = pd.to_numeric(table_b[f"correct_{a}"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(xa) & np.isfinite(xb) & keep
        cols_d.append(np.where(ok, xb - xa, 0.0))
        cols_n.append(ok.astype(float))
    d = np.stack(cols_d, axis=1) if attrs else np.zeros((len(table_a), 0))
    n = np.stack(cols_n, axis=1) if attrs else np.zeros((len(table_a), 0))
    if unit is None:
        rows = keep
        return d[rows], n[rows]
    codes, uniques = pd.factorize(table_a[unit], sort=False)
    U = len(uniques)
    ds = np.zeros((U, d.shape[1]))
    ns = np.zeros((U, d.shape[1]))
    np.add.at(ds, codes, d)
    np.add.at(ns, codes, n)
    return ds, ns


def compare_tables(table_a: pd.DataFrame, table_b: pd.DataFrame, names: Sequence[str], *,
                   unit: str | None = None, notes: np.ndarray | None = None, n_boot: int = N_BOOT,
                   seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """The verdict dict of model B against model A on paired explain tables.

    Keys: ``names`` [A, B], ``unit`` ("note" / "piece"), ``n_units``, ``n_notes`` (notes used),
    ``undecided`` (why no winner can be named however large the difference: fewer units than
    :data:`MIN_UNITS`, or no bootstrap draws; else None), ``left_out`` (attributes with no pair),
    ``attributes`` {attr: {acc_a, acc_b, diff, lo, hi, winner}}, ``mean`` {acc_a, acc_b, diff, lo,
    hi, winner}, ``winner`` (the average's), ``level``, ``n_boot``, ``seed``, and ``problem`` (a
    reason, or None) when the tables cannot be compared. ``diff`` = accuracy of B - accuracy of
    A (a fraction); ``winner``: a name, or None for "no clear difference"."""
    name_a, name_b = str(names[0]), str(names[1])
    out: dict[str, Any] = {"names": [name_a, name_b], "unit": "piece" if unit else "note", "n_units": 0,
                           "n_notes": 0, "attributes": {}, "mean": None, "winner": None, "level": level,
                           "n_boot": int(n_boot), "seed": int(seed), "problem": None, "undecided": None,
                           "left_out": []}
    if (why := _paired(table_a, table_b)) is not None:
        out["problem"] = why
        return out
    attrs = [a for a in _attrs_of(table_a) if f"correct_{a}" in table_b.columns]
    keep = np.ones(len(table_a), dtype=bool) if notes is None else np.asarray(notes, dtype=bool)
    if not attrs or not keep.any():
        out["problem"] = "no masked note to compare" if attrs else "the tables hold no recovery columns"
        return out
    d, n = unit_differences(table_a, table_b, attrs, unit=unit, notes=keep)
    boot = paired_bootstrap(d, n, n_boot=n_boot, seed=seed, level=level)
    least = MIN_UNITS[out["unit"]]
    if boot["n_units"] < least:
        out["undecided"] = (f"too few {out['unit']}s to tell ({boot['n_units']:,}; a verdict needs at least {least}, "
                            "since an interval over fewer does not measure the uncertainty)")
    elif n_boot < 1:
        out["undecided"] = "no interval was computed (no bootstrap draws), so nothing can be named"

    def accs(table: pd.DataFrame, a: str) -> float:
        x = pd.to_numeric(table[f"correct_{a}"], errors="coerce").to_numpy(dtype=float)
        other = pd.to_numeric((table_b if table is table_a else table_a)[f"correct_{a}"],
                              errors="coerce").to_numpy(dtype=float)
        ok = keep & np.isfinite(x) & np.isfinite(other)
        return float(x[ok].mean()) if ok.any() else float("nan")

    def winner(lo: float, hi: float) -> str | None:
        if out["undecided"] or not (np.isfinite(lo) and np.isfinite(hi)):
            return None
        return name_b if lo > 0 else name_a if hi < 0 else None

    for j, a in enumerate(attrs):
        if not np.isfinite(boot["estimate"][j]):
            out["left_out"].append(a)
            continue
        lo, hi = float(boot["lo"][j]), float(boot["hi"][j])
        out["attributes"][a] = {"acc_a": accs(table_a, a), "acc_b": accs(table_b, a),
                                "diff": float(boot["estimate"][j]), "lo": lo, "hi": hi, "winner": winner(lo, hi)}
    if out["attributes"]:
        ma = float(np.mean([v["acc_a"] for v in out["attributes"].values()]))
        mb = float(np.mean([v["acc_b"] for v in out["attributes"].values()]))
        out["mean"] = {"acc_a": ma, "acc_b": mb, "diff": boot["mean_estimate"], "lo": boot["mean_lo"],
                       "hi": boot["mean_hi"], "winner": winner(boot["mean_lo"], boot["mean_hi"])}
        out["winner"] = out["mean"]["winner"]
    out["n_units"] = int(boot["n_units"])
    out["n_notes"] = int(keep.sum())
    return out


def pick_set(table_a: pd.DataFrame, table_b: pd.DataFrame, names: Sequence[str],
             trained: Sequence[bool]) -> tuple[np.ndarray | None, str]:
    """(mask of the common pick set, what it is in words) from the ``picked`` columns: the notes
    the trained masker(s) would hide (the union when both are trained); (None, why) when neither
    masker is trained or the tables lack ``picked``."""
    if "picked" not in table_a.columns or "picked" not in table_b.columns or len(table_a) != len(table_b):
        return None, "the tables do not say which notes the maskers pick"
    pa = table_a["picked"].fillna(False).to_numpy(dtype=bool)
    pb = table_b["picked"].fillna(False).to_numpy(dtype=bool)
    ta, tb = bool(trained[0]), bool(trained[1])
    if ta and tb:
        return pa | pb, "the notes that {a}'s or {b}'s masker would hide"
    if ta:
        return pa, "the notes {a}'s masker would hide: those it expects to be hardest"
    if tb:
        return pb, "the notes {b}'s masker would hide: those it expects to be hardest"
    return None, "neither model's masker head was trained (only adversarial pre-training trains it), so there are no masker picks to judge on"


# ----------------------------------------------------------------------------- text

def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _interval(v: dict[str, float], level: float) -> str:
    return f"{level:.0%} interval {_pts(v['lo'])} to {_pts(v['hi'])}"


def winner_interval(v: dict[str, Any]) -> tuple[str, str, float, float]:
    """(winner, loser, lo, hi) of a verdict dict whose average has a winner: the interval of
    the winner's lead (winner minus loser, a fraction; both ends above 0)."""
    m = v["mean"]
    sign = 1.0 if m["winner"] == v["names"][1] else -1.0
    win, lose = (v["names"][1], v["names"][0]) if sign > 0 else tuple(v["names"])
    lo, hi = sorted((sign * m["lo"], sign * m["hi"]))
    return win, lose, lo, hi


def verdict_sentence(v: dict[str, Any], *, label: str = "Under random masks", esc: Callable[[object], str] = str,
                     set_text: str = "") -> str:
    """One sentence (then the attributes) of a verdict dict (:func:`compare_tables`): who
    recovers more, by how many points of accuracy on average and per attribute, with the paired
    bootstrap interval, or "no clear difference" when it includes 0. ``set_text`` says which
    notes (with ``{a}`` / ``{b}`` for the model names). Names go through ``esc``."""
    a, b = (esc(x) for x in v["names"])
    where = f" ({set_text.format(a=a, b=b)})" if set_text else ""
    if v.get("problem"):
        return f"{label}{where}: no verdict: {v['problem']}."
    m = v.get("mean")
    if not m:
        return f"{label}{where}: no verdict: no attribute to compare."
    pct = f"{v.get('level', LEVEL):.0%}"
    units = f"{v['n_units']:,} {v['unit']}{'s' if v['n_units'] != 1 else ''}"
    units += f", {v['n_notes']:,} notes" if v["unit"] == "piece" else ""
    how = f"paired bootstrap over {units}"
    left = (f" Left out: {', '.join(esc(x) for x in v['left_out'])} (no note where both models' guesses are known)."
            if v.get("left_out") else "")
    if v.get("undecided"):
        return (f"{label}{where}: no verdict: {v['undecided']}. {b} minus {a}: {_pts(m['diff'])} points of accuracy "
                f"on average over {units}, with no interval." + left)
    if m["winner"] is None:
        ahead = [f"{esc(x['winner'])} on {esc(attr)}" for attr, x in v["attributes"].items() if x["winner"]]
        head = (f"{label}{where}: no clear difference between {a} and {b} on average ({b} minus {a}: "
                f"{_pts(m['diff'])} points of accuracy, {pct} interval {_pts(m['lo'])} to {_pts(m['hi'])}, which "
                f"includes 0; {how})" + (f"; yet clearly ahead per attribute: {', '.join(ahead)}" if ahead else ""))
    else:
        win, lose, lo, hi = winner_interval(v)
        head = (f"{label}{where}: {esc(win)} recovers more than {esc(lose)}, by {abs(100 * m['diff']):.1f} points of "
                f"accuracy on average ({pct} interval {100 * lo:.1f} to {100 * hi:.1f}; {how})")
    parts = []
    for attr, x in v["attributes"].items():
        tag = f"{esc(x['winner'])} ahead" if x["winner"] is not None else "no clear difference"
        parts.append(f"{esc(attr)} {_pts(x['diff'])} ({_pts(x['lo'])} to {_pts(x['hi'])}, {tag})")
    return head + f". Per attribute, {b} minus {a} in points: " + "; ".join(parts) + "." + left


# ----------------------------------------------------------------------------- which models

_MAX_HEADER = 16 * 1024 * 1024


def _safetensors_parameters(path: Path) -> int | None:
    """The number of values in a safetensors file, read from its JSON header only (no torch)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                return None
            (size,) = struct.unpack("<Q", raw)
            if size > _MAX_HEADER:
                return None
            header = json.loads(f.read(size).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    total = 0
    for k, t in header.items():
        if k == "__metadata__" or not isinstance(t, dict) or not isinstance(t.get("shape"), list):
            continue
        n = 1
        for s in t["shape"]:
            n *= int(s) if isinstance(s, int) else 0
        total += n
    return total


def model_facts(folder: str | Path) -> dict[str, Any]:
    """What a model folder says about itself, torch-free: ``name``, ``strategy``, ``steps``,
    ``epochs``, ``params`` (from the weights' header), ``layers``, ``width``, ``train_files``.
    Missing facts are None; an unreadable folder gives only ``name``."""
    p = Path(folder)
    name = p.parent.name if p.name == "out" else p.name
    out: dict[str, Any] = {"name": name, "strategy": None, "steps": None, "epochs": None, "params": None,
                           "layers": None, "width": None, "train_files": None}
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return out
    if not isinstance(cfg, dict):
        return out

    def get(d: Any, *keys: str) -> Any:
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    strategy = get(cfg, "strategy", "name")
    out["strategy"] = strategy if isinstance(strategy, str) else None
    for key, path in (("steps", ("training", "step")), ("epochs", ("training", "epoch")),
                      ("layers", ("model", "n_layers")), ("width", ("model", "d_model"))):
        val = get(cfg, *path)
        out[key] = int(val) if isinstance(val, (int, float)) and not isinstance(val, bool) else None
    paths = get(cfg, "training_data", "paths")
    out["train_files"] = len(paths) if isinstance(paths, list) else None
    out["params"] = _safetensors_parameters(p / "model.safetensors")
    return out


def study_facts(results: dict[str, Any]) -> dict[str, Any] | None:
    """The study's models and result from its ``results.json`` dict: ``params``, ``layers``,
    ``width``, ``steps``, ``seeds`` (pre-training seeds per strategy), ``tasks``, ``mean_diff``
    (fine-tuned test accuracy, adversarial - random), ``p``, ``n_pairs``, ``significant``,
    ``preset``; with the interval over pre-training seeds (the claim's independent units,
    ``paired.by_pretrain_seed``) ``lo`` / ``hi`` / ``n_units``, and then ``significant`` is
    whether that interval excludes 0 and ``p`` (of pairs that share encoders) is left out.
    None when the dict lacks the paired test."""
    if not isinstance(results, dict):
        return None
    paired = results.get("paired", {})
    overall = paired.get("overall") if isinstance(paired, dict) else None
    if not isinstance(overall, dict) or "mean_diff" not in overall:
        return None
    model = results.get("model") if isinstance(results.get("model"), dict) else {}
    budget = results.get("budget") if isinstance(results.get("budget"), dict) else {}
    preset = results.get("preset") if isinstance(results.get("preset"), dict) else {}
    seeds = paired.get("pretrain_seeds")
    if not isinstance(seeds, int):
        seeds = preset.get("pretrain_seeds")
        seeds = len(seeds) if isinstance(seeds, list) else None
    return {"params": model.get("n_params"), "layers": model.get("n_layers"), "width": model.get("d_model"),
            "steps": budget.get("pretrain_steps") or preset.get("pretrain_steps"),
            "seeds": seeds,
            "tasks": list(results.get("tasks") or []), "mean_diff": float(overall["mean_diff"]),
            "p": overall.get("t_p"), "n_pairs": overall.get("n"), "significant": bool(overall.get("significant")),
            "preset": preset.get("name"), **_seed_level(paired.get("by_pretrain_seed"))}


def _seed_level(u: Any) -> dict[str, Any]:
    """The study facts the interval over pre-training seeds replaces (empty without one)."""
    if not (isinstance(u, dict) and isinstance(u.get("lo"), (int, float)) and isinstance(u.get("hi"), (int, float))):
        return {}
    return {"mean_diff": float(u["mean_diff"]), "lo": float(u["lo"]), "hi": float(u["hi"]),
            "n_units": u.get("n_units"), "significant": bool(u.get("excludes_zero")), "p": None}


def _millions(n: Any) -> str:
    return f"{n / 1e6:.1f} M" if isinstance(n, (int, float)) and n else "?"


def _describe(f: dict[str, Any], esc: Callable[[object], str]) -> str:
    bits = [f"{_millions(f.get('params'))} parameters"]
    if f.get("layers") and f.get("width"):
        bits.append(f"{f['layers']} layers x {f['width']}")
    bits.append(f"{esc(f['strategy'])} masking" if f.get("strategy") else "strategy unknown")
    if f.get("steps") is not None:
        bits.append(f"{f['steps']:,} steps")
    if f.get("train_files"):
        bits.append(f"{f['train_files']:,} training files")
    return f"{esc(f['name'])} ({', '.join(bits)})"


def study_effect(s: dict[str, Any]) -> str:
    """Which way the Study's paired test went (the rule of ``study.study_summary``'s first line):
    'helped' (significant and adversarial ahead), 'hurt' (significant and behind) or 'not'
    (not significant, or a zero difference)."""
    if not s.get("significant") or not s.get("mean_diff"):
        return "not"
    return "helped" if s["mean_diff"] > 0 else "hurt"


def _p_text(s: dict[str, Any]) -> str:
    """The uncertainty of the Study's result: its interval over pre-training seeds, else its p."""
    if isinstance(s.get("lo"), float):
        return (f", 95% interval over {s.get('n_units') or '?'} pre-training seeds {_pts(s['lo'])} to "
                f"{_pts(s['hi'])}")
    return f", p = {s['p']:.2g}" if isinstance(s.get("p"), (int, float)) else ""


def study_result_text(s: dict[str, Any]) -> str:
    """The study's headline in words: 'not measurably: +0.4 points, p = 0.72', 'measurably
    better: ...' or 'measurably worse: ...' (the sign of the test, :func:`study_effect`)."""
    how = {"helped": "measurably better", "hurt": "measurably worse", "not": "not measurably"}[study_effect(s)]
    return f"{how}: {_pts(s['mean_diff'])} points{_p_text(s)}"


def context_sentence(facts: Sequence[dict[str, Any]], study: dict[str, Any] | None, *,
                     esc: Callable[[object], str] = str) -> str:
    """Which models the Study page's result is about and how they differ from ``facts`` (the
    models compared, :func:`model_facts`), and why a lead under random masks does not contradict
    it. Model names go through ``esc``."""
    compared = "; ".join(_describe(f, esc) for f in facts)
    out = [f"Compared here, one training run each: {compared}; judged by recovery of masked notes."]
    if study:
        tasks = ", ".join(study.get("tasks") or []) or "its tasks"
        out.append(
            f"The Study page's result (adversarial vs random pre-training: {study_result_text(study)}) is about "
            f"other models: {_millions(study.get('params'))}-parameter encoders ({study.get('layers', '?')} layers x "
            f"{study.get('width', '?')}, {study['steps']:,} pre-training steps, "
            f"{study.get('seeds') or '?'} seeds per strategy), judged by fine-tuned test accuracy on {tasks} "
            f"over {study.get('n_pairs') or '?'} pairs of runs."
            if isinstance(study.get("steps"), int) else
            f"The Study page's result (adversarial vs random pre-training: {study_result_text(study)}) is about "
            f"other models, judged by fine-tuned test accuracy on {tasks}.")
    steps = {f["name"]: f["steps"] for f in facts if isinstance(f.get("steps"), int)}
    if len(set(steps.values())) > 1:
        most = max(steps, key=steps.get)
        out.append(f"{esc(most)} was trained longest ({steps[most]:,} steps against "
                   f"{', '.join(f'{v:,}' for k, v in steps.items() if k != most)}), which alone favours it.")
    strategies = {f.get("strategy") for f in facts}
    if "random" in strategies and "adversarial" in strategies:
        out.append("Recovery under random masks is the random-trained model's home ground: it was trained on "
                   "exactly that task, so a lead there says little about the claim, which is about fine-tuning; "
                   "the masker's picks are nearer the adversarial model's own training task.")
    return " ".join(out)


def headline(curves: dict[str, dict[str, float]], *, esc: Callable[[object], str] = str) -> str | None:
    """'demo-random recovers 2.8 points more than demo-adversarial on average (bar +0.3, ...)'
    from each model's last validation recovery (``{name: {attr: accuracy}}``, two models);
    None without two models that share attributes."""
    if len(curves) != 2:
        return None
    (na, a), (nb, b) = curves.items()
    attrs = [k for k in a if k in b]
    if not attrs:
        return None
    diffs = {k: b[k] - a[k] for k in attrs}
    mean = float(np.mean(list(diffs.values())))
    win, lose = (nb, na) if mean >= 0 else (na, nb)
    sign = 1 if mean >= 0 else -1
    per = ", ".join(f"{k} {_pts(sign * v)}" for k, v in diffs.items())
    if round(100 * mean, 1) == 0:  # a tie at the shown precision names no winner
        return f"{esc(na)} and {esc(nb)} recover the same share on average ({per})"
    return f"{esc(win)} recovers {abs(100 * mean):.1f} points more than {esc(lose)} on average ({per})"


def last_recovery(folder: str | Path) -> dict[str, float] | None:
    """A model's last validation recovery per attribute from its ``progress.jsonl`` (the run's
    own held-out notes: ``val_acc_<attr>`` of the last ``eval`` event); None when there is none."""
    from .io import read_jsonl

    for event in reversed(read_jsonl(Path(folder) / "progress.jsonl")):
        metrics = event.get("metrics") if event.get("event") == "eval" else None
        if isinstance(metrics, dict):
            out = {k[len("val_acc_"):]: float(v) for k, v in metrics.items()
                   if k.startswith("val_acc_") and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if out:
                return out
    return None


def study_results_path() -> Path:
    """The study's ``results.json``: ``SMU_STUDY_RESULTS``, else ``docs/study/results.json`` of the repository."""
    import os

    env = os.environ.get("SMU_STUDY_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "docs" / "study" / "results.json"


def load_study(path: str | Path | None = None) -> dict[str, Any]:
    """The study's results dict ({} when absent or unreadable: the pages then leave it out)."""
    p = Path(path) if path is not None else study_results_path()
    try:
        if not p.is_file() or p.stat().st_size > 64 * 1024 * 1024:
            return {}
        out = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # not JSON, too many digits, too deep
        return {}
    return out if isinstance(out, dict) else {}


def both_verdicts(table_a: pd.DataFrame, table_b: pd.DataFrame, names: Sequence[str], trained: Sequence[bool], *,
                  unit: str | None = None, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """The two verdicts of a comparison: ``random`` (every note, under the seeded random masks)
    and ``picks`` (the common pick set of :func:`pick_set`, or None), with ``picks_text`` (which
    notes, ``{a}`` / ``{b}`` for the names) or, without picks, ``picks_why``."""
    out: dict[str, Any] = {"random": compare_tables(table_a, table_b, names, unit=unit, n_boot=n_boot, seed=seed),
                           "picks": None, "picks_text": "", "picks_why": ""}
    mask, text = pick_set(table_a, table_b, names, trained)
    if mask is None:
        out["picks_why"] = text
    else:
        out["picks"] = compare_tables(table_a, table_b, names, unit=unit, notes=mask, n_boot=n_boot, seed=seed)
        out["picks_text"] = text
    return out


def verdict_lines(vs: dict[str, Any], *, esc: Callable[[object], str] = str,
                  strong: Callable[[str], str] = str) -> list[str]:
    """The sentences of :func:`both_verdicts`: under random masks, then under the masker's picks;
    ``strong`` formats the two labels (e.g. Markdown bold on a page)."""
    lines = [verdict_sentence(vs["random"], label=strong("Under random masks"), esc=esc)]
    if vs.get("picks") is not None:
        lines.append(verdict_sentence(vs["picks"], label=strong("Under the masker's picks"), esc=esc,
                                      set_text=vs.get("picks_text", "")))
    elif vs.get("picks_why"):
        lines.append(f"{strong('Under the masker' + chr(39) + 's picks')}: no verdict: {vs['picks_why']}.")
    return lines


def headline_line(folders: Sequence[str | Path], study: dict[str, Any] | None, *,
                  esc: Callable[[object], str] = str) -> str:
    """The first screen's headline from the models at hand: the Study's result (which models,
    how judged), then how the demo models in ``folders`` compare on their last validation
    recovery (their own held-out notes) and what differs between them besides the masking.
    Computed from ``results.json`` and the folders' ``progress.jsonl`` / ``config.json``."""
    out = []
    if study:
        out.append(f"in the Study ({_millions(study.get('params'))}-parameter encoders, {study.get('seeds') or '?'} "
                   f"seeds per strategy, {len(study.get('tasks') or [])} tasks), letting a masker choose the notes "
                   + {"helped": "did measurably help", "hurt": "measurably hurt (random masking did better)",
                      "not": "did not measurably help"}[study_effect(study)]
                   + f" after fine-tuning ({_pts(study['mean_diff'])} points of test accuracy against random "
                   f"masking{_p_text(study)})")
    facts = {}
    curves = {}
    for f in folders:
        facts_f = model_facts(f)
        rec = last_recovery(f)
        if rec:
            curves[facts_f["name"]] = rec
            facts[facts_f["name"]] = facts_f
    if len(curves) == 2:
        (na, a), (nb, b) = curves.items()
        attrs = [k for k in a if k in b]
        extra = []
        steps = {n: facts[n].get("steps") for n in (na, nb)}
        if all(isinstance(v, int) for v in steps.values()) and steps[na] != steps[nb]:
            extra.append(f"{esc(na)} trained {steps[na]:,} steps, {esc(nb)} {steps[nb]:,}")
        if {"random", "adversarial"} <= {f.get("strategy") for f in facts.values()}:
            extra.append("hiding random notes is what the random model was trained on")
        if attrs:
            # one run each, each scored on its own held-out notes: no paired difference, no interval here
            out.append(f"of the two demo models here, the training logs end with {esc(na)} guessing back "
                       f"{np.mean([a[k] for k in attrs]):.1%} and {esc(nb)} {np.mean([b[k] for k in attrs]):.1%} of "
                       "the hidden notes of their held-out songs on average (one run each, each scored on its own notes: "
                       "not a paired comparison and no interval; Compare tests the difference on the same notes)"
                       + (f"; note that {' and '.join(extra)}" if extra else ""))
    if not out:
        return "no study results and no demo models with a training log are at hand"
    return ". ".join(x[0].upper() + x[1:] for x in out) + "."
