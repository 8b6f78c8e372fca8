"""Classes of notes by register, metrical position and duration: the study's classes, the
bias view's groups and two of ``harmony.analyze``'s labels (``duration``, ``register``).

Music facts, no figures: imports numpy and pandas only, so ``harmony``, ``picks``,
``study.analysis`` and ``charts`` all import it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGISTER_EDGES = [(None, 48, "low (< C3)"), (48, 60, "C3-B3"), (60, 72, "C4-B4"),
                  (72, 84, "C5-B5"), (84, None, "high (>= C6)")]
METRIC_ORDER = ["downbeat", "on beat", "8th off-beat", "other"]
DURATION_ORDER = ["< 1/8 (<0.5 q)", "1/8-1/4 (0.5-1 q)", "1/4-1/2 (1-2 q)", ">= 1/2 (>= 2 q)"]


def register_class(pitch: np.ndarray) -> np.ndarray:
    """Pitch register class per note (see ``REGISTER_EDGES``; C4 = MIDI 60)."""
    pitch = np.asarray(pitch)
    out = np.empty(len(pitch), dtype=object)
    for lo, hi, label in REGISTER_EDGES:
        m = np.ones(len(pitch), dtype=bool)
        if lo is not None:
            m &= pitch >= lo
        if hi is not None:
            m &= pitch < hi
        out[m] = label
    return out


def metric_class(beat: np.ndarray) -> np.ndarray:
    """Metrical position class from the float beat in bar (beats = quarter notes).

    ``downbeat`` (beat 0), ``on beat`` (whole beat), ``8th off-beat`` (x.5),
    ``other`` (16ths, triplets...). Tolerance 1e-3 beat.
    """
    beat = np.asarray(beat, dtype=float)
    frac = beat - np.floor(beat + 1e-3)
    out = np.full(len(beat), "other", dtype=object)
    out[np.abs(frac - 0.5) < 1e-3] = "8th off-beat"
    on = np.abs(frac) < 1e-3
    out[on] = "on beat"
    out[on & (np.abs(beat) < 1e-3)] = "downbeat"
    return out


def duration_class(duration_q: np.ndarray) -> np.ndarray:
    """Duration class from the duration in quarter notes (see ``DURATION_ORDER``)."""
    d = np.asarray(duration_q, dtype=float)
    return np.select([d < 0.5, d < 1.0, d < 2.0], DURATION_ORDER[:3], DURATION_ORDER[3]).astype(object)


CLASSIFIERS = {
    "register": ("pitch", register_class, [e[2] for e in REGISTER_EDGES]),
    "metric": ("beat", metric_class, METRIC_ORDER),
    "duration": ("duration_q", duration_class, DURATION_ORDER),
}


def metric_beats(df: pd.DataFrame) -> np.ndarray:
    """The beat in bar that ``metric_class`` should read: the tokenizer's quantised position
    (``true_position`` of an explain table: quarters after the token bar's start, what the
    model sees) when present, else the raw ``beat`` (performed or offset MIDI, e.g. POP909's
    notes 1/12 quarter after the grid, would otherwise all read as ``other``)."""
    if "true_position" in df.columns:
        pos = pd.to_numeric(df["true_position"], errors="coerce").to_numpy(dtype=float)
        if np.isfinite(pos).all():
            return pos
    return df["beat"].to_numpy(dtype=float)
