"""Notes, numbers and tables as people read them, for the app, the report and the figures.

Note names (``C4``), moments (``bar 13, beat 1``), rounded numbers, training statistics and
columns by human names, the names of the note-label columns (``ROLE_LABELS``) and of the
no-model rules (``RULE_LABELS``), and small tables turned into text cells or a styled
comparison. Imports numpy and pandas only (no plotly, no torch, no other module of the
package): figure builders and computation modules (``baselines``, ``picks``) both import it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def pitch_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI pitch: 60 -> ``C4``, 61 -> ``C#4``, 21 -> ``A0``."""
    p = int(pitch)
    return f"{NOTE_NAMES[p % 12]}{p // 12 - 1}"


def bar_beat_label(bar: float, beat: float) -> str:
    """The one way the app names a moment: ``bar 13, beat 1`` (1-based) from a 0-based bar
    index and a float beat in the bar (quarter notes from the bar line). An off-beat onset
    keeps its fraction of a beat, rounded: half-way through beat 3 of bar 1 is
    ``bar 1, beat 3.5``; a triplet onset ``beat 1.33``."""
    b = int(bar) + 1
    x = round(float(beat) + 1.0, 2)
    return f"bar {b}, beat {fmt_number(x)}"


def fmt_number(x: float, digits: int = 2) -> str:
    """A number rounded for reading: at most ``digits`` decimals, no trailing zeros
    (0.167956 -> ``0.17``, 68.0 -> ``68``, 1,234.5 -> ``1,234.5``); NaN/None -> ``-``."""
    if x is None:
        return "-"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not np.isfinite(v):
        return "-"
    v = round(v, digits)
    if v == int(v):
        return f"{int(v):,}"
    return f"{v:,.{digits}f}".rstrip("0").rstrip(".")


def fmt_quarters(q: float) -> str:
    """A duration in quarter notes for reading: ``1 quarter``, ``0.17 quarters``."""
    return f"{fmt_number(q)} quarter" + ("" if fmt_number(q) == "1" else "s")


def value_label(attribute: str, value) -> str:
    """A decoded token value as a person reads it: pitch as a note name (67 -> ``G4``),
    duration in quarters (``0.5 q``), bar skips and positions rounded; others as numbers."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(v) or v < 0:
        return "-"
    if attribute == "pitch":
        return pitch_name(int(round(v)))
    if attribute in ("duration", "position"):
        return f"{fmt_number(v)} q"
    return fmt_number(v)


STAT_LABELS = {
    "loss": "total", "recovery_loss": "recovery", "masker_loss": "masker loss",
    "score_mean": "mean masker score", "frozen_in_batch": "frozen notes per batch",
    "n_picked": "picked notes per batch", "n_labelled": "labelled notes per batch",
}


def stat_label(column: str) -> str:
    """A human label for a training statistic (``masker_loss`` -> ``masker loss``,
    ``ce_pitch`` / ``loss_pitch`` -> ``pitch``, ``acc_bar`` -> ``bar accuracy``)."""
    if column in STAT_LABELS:
        return STAT_LABELS[column]
    for pre, fmt in (("ce_", "{}"), ("loss_", "{}"), ("acc_", "{} accuracy"), ("w_", "{} weight")):
        if column.startswith(pre):
            return fmt.format(column[len(pre):])
    return column.replace("_", " ")


#: the note labels of ``harmony.analyze`` a piano roll can colour by: column -> what a person reads
ROLE_LABELS = {
    "harmony": "chord tone or kind of non-chord tone",
    "chord_tone": "chord or non-chord tone",
    "voice_position": "voice position",
    "metric": "metric weight",
    "repeated": "repeated note",
    "duration": "duration",
    "register": "register",
    "role": "POP909 track role",
}


#: the no-model rules of ``baselines`` (``baselines.RULES``) as a person reads them
RULE_LABELS = {"most_frequent": "most frequent value", "copy_neighbour": "copy the neighbour",
               "window_mode": "mode of the 16 neighbours"}


def metrics_comparison(metrics: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Table of metrics (rows) x models (columns) plus ``difference`` (2nd - 1st).

    With exactly two models, ``difference`` = second minus first; with other
    counts no difference column is added. Missing values stay NaN.
    """
    names = list(metrics.keys())
    keys: list[str] = []
    for m in metrics.values():
        for k in m:
            if k not in keys:
                keys.append(k)
    table = pd.DataFrame({n: [metrics[n].get(k, np.nan) for k in keys] for n in names},
                         index=pd.Index(keys, name="metric"), dtype=float)
    if len(names) == 2:
        table["difference"] = table[names[1]] - table[names[0]]
    return table


def _is_share(metric: str) -> bool:
    """Whether a metric is a share (a recovery or an accuracy), shown as a percentage."""
    m = metric.lower()
    return m.startswith("recovery") or "accuracy" in m


def _metric_format(metric: str):
    m = metric.lower()
    if _is_share(m):
        return lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.1%}"
    if m.startswith("frozen notes") or m.startswith("picked notes") or m.startswith("notes"):
        return lambda v: "-" if v is None or not np.isfinite(v) else f"{v:,.0f}"
    if "parameters" in m:
        return lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.2f}"
    return lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _difference_format(metric: str, fmt):
    """The ``difference`` cell of a metric shown by ``fmt``: signed; a difference of two shares in
    percentage points ("+3.2 points"), since "+3.2%" would read as a relative change."""
    if _is_share(metric):
        return lambda v: "-" if v is None or not np.isfinite(v) else f"{100 * v:+.1f} points"
    return lambda v: ("+" if v is not None and np.isfinite(v) and v > 0 else "") + fmt(v)


def clear_rows(comp: Mapping[str, Any]) -> set[str]:
    """The recovery rows of a comparison's :func:`metrics_comparison` table whose difference a
    verdict holds clear (its 95% interval excludes 0): from the Compare page's ``comp`` (the
    piece's ``verdicts`` and the folder's, ``verdict.both_verdicts`` dicts), the random-mask
    verdict's attributes (``recovery pitch (piece)``) and its average (``recovery mean (piece)``)."""
    rows = set()
    for scope, vs in (("piece", comp.get("verdicts")), ("folder", (comp.get("folder") or {}).get("verdicts"))):
        v = (vs or {}).get("random") or {}
        rows |= {f"recovery {a} ({scope})" for a, x in (v.get("attributes") or {}).items() if x.get("winner")}
        if (v.get("mean") or {}).get("winner"):
            rows.add(f"recovery mean ({scope})")
    return rows


def metrics_display(table: pd.DataFrame, *, clear: Collection[str] = (), highlight: bool = True):
    """A :func:`metrics_comparison` table ready to show: every row in its own format
    (recoveries as percentages and their differences in percentage points, counts of notes as whole
    numbers, scores with 3 decimals), ``-`` for missing values, the ``difference`` column green where the
    second model recovers more and red where less - only on the recovery rows named in ``clear``
    (:func:`clear_rows`: those a verdict's interval holds clear; a colour is a claim, so without an
    interval excluding 0 there is none); a masker score, a count of notes or a size is not better
    for being higher, so its difference is never coloured. Returns a pandas ``Styler``."""
    def colour(v):
        if not isinstance(v, (int, float)) or np.isnan(v) or abs(v) < 1e-12:
            return ""
        return "background-color: #d9f2d9" if v > 0 else "background-color: #f8d7d7"

    styled = table.style
    plain = [c for c in table.columns if c != "difference"]
    for metric in table.index:
        fmt = _metric_format(str(metric))
        if plain:
            styled = styled.format(fmt, subset=pd.IndexSlice[[metric], plain])
        if "difference" in table.columns:
            styled = styled.format(_difference_format(str(metric), fmt), subset=pd.IndexSlice[[metric], ["difference"]])
    clear = set(clear)
    better = [m for m in table.index if str(m).startswith("recovery") and m in clear]
    if highlight and "difference" in table.columns and better:
        styled = styled.map(colour, subset=pd.IndexSlice[better, ["difference"]])
    return styled


def display_table(df: pd.DataFrame, *, digits: int = 2) -> pd.DataFrame:
    """A table of mixed values as text for showing: numbers rounded (:func:`fmt_number`),
    ``-`` for a missing value (never ``None`` / ``nan``), everything else as it reads."""
    def cell(v):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "-"
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (int, float, np.integer, np.floating)):
            return fmt_number(v, digits)
        return str(v)

    return df.astype(object).map(cell)


def readable_notes(df: pd.DataFrame, values: Sequence[str] = (), *, digits: int = 3) -> pd.DataFrame:
    """A notes table for people: ``note`` (its number), ``pitch`` as a note name, ``when``
    (``bar 13, beat 1``), then the ``values`` columns rounded to ``digits`` decimals, named
    by :func:`stat_label` when they are training-style names (``loss_bar`` -> ``bar loss``)."""
    out = pd.DataFrame(index=df.index)
    if "note" in df.columns:
        out["note"] = df["note"].to_numpy()
    if "pitch" in df.columns:
        out["pitch"] = [pitch_name(int(p)) for p in df["pitch"].to_numpy()]
    if "bar" in df.columns and "beat" in df.columns:
        out["when"] = [bar_beat_label(b, t) for b, t in zip(df["bar"].to_numpy(), df["beat"].to_numpy(), strict=False)]
    for c in values:
        if c in df.columns:
            out[readable_column(c)] = pd.to_numeric(df[c], errors="coerce").round(digits)
    return out.reset_index(drop=True)


def readable_column(column: str) -> str:
    """A column name for people: ``loss_pitch`` -> ``pitch loss``, ``loss`` -> ``loss (all
    attributes)``, ``mask`` -> ``random mask``; other names with spaces for underscores."""
    if column == "loss":
        return "loss (all attributes)"
    if column.startswith("loss_"):
        return f"{column[len('loss_'):]} loss"
    return {"mask": "random mask"}.get(column, column.replace("_", " "))


def readable_table(df: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """Any small numeric table for people: :func:`readable_column` names, floats rounded."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(digits)
    return out.rename(columns={c: readable_column(str(c)) for c in out.columns})
