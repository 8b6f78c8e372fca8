"""The colours of every figure: note states, tracks, the masker-score and value colour scales,
the recovery figures' palette (rules, demo models, other models) and :func:`scale_colours`, the
colour Plotly draws for a number on a scale (notes carry colours as strings: see pianoroll.py).

Owns colours only; imports numpy (and ``plotly.colors`` when a scale is first read) and no other
module of the package, so every figure module can import it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

# One colour family per state. Score-coloured notes use SCORE_COLORSCALE.
STATE_COLORS = {
    "note": "#4c78a8",  # plain notes when no model is loaded
    "picked_outline": "#d62728",  # outline of the notes the masker would pick
    "frozen": "#9e9e9e",  # frozen (never masked) notes: grey, hatched
    "frozen_outline": "#424242",
    "ghost": "rgba(255, 127, 14, 0.45)",  # reconstruction of masked notes
    "ghost_outline": "#ff7f0e",
    "masked": "#d62728",  # masked notes in a concrete draw
    "bar_line": "rgba(60, 60, 60, 0.55)",
    "beat_line": "rgba(150, 150, 150, 0.25)",
}
TRACK_PALETTE = [
    "#4c78a8", "#54a24b", "#b279a2", "#e45756", "#72b7b2",
    "#eeca3b", "#ff9da6", "#9d755d", "#bab0ac", "#f58518",
]
SCORE_COLORSCALE = "Viridis"
#: The colours of the recovery figures on every page (Explore, Compare, the report): the no-model
#: rules' marks, the demo models' bars (a model keeps its colour from page to page, whichever side
#: of a comparison it is on) and the colours other models take in turn. One palette, used by
#: :func:`accuracy_bars`, :func:`add_rule_marks` and :func:`bias_figure` (via :func:`model_colours`).
PALETTE = {
    "rules": {"most_frequent": "#7f7f7f", "copy_neighbour": "#000000", "window_mode": "#8c564b"},
    "models": {"demo adversarial": "#e45756", "demo random": "#4c78a8"},
    "others": ["#54a24b", "#b279a2", "#72b7b2", "#eeca3b", "#9d755d", "#f58518", "#ff9da6", "#bab0ac"],
}
#: opacity of a score overlay whose masker head is untrained (its scores carry no information)
FADED_OPACITY = 0.3
SCORE_SCALE = {"colorscale": SCORE_COLORSCALE, "cmin": 0.0, "cmax": 100.0}  # rank in piece, 0-100 %
#: the Why page's value rolls (valueroll.py): attributions diverge around 0, attention runs up from 0
ATTRIBUTION_COLORSCALE = "RdBu_r"
ATTENTION_COLORSCALE = "Oranges"
RULE_MARK_COLOURS = PALETTE["rules"]  # the no-model rules' marks (the one palette, above)


def model_colours(names: Iterable[str]) -> dict[str, str]:
    """Each model's bar colour (``PALETTE``): a demo model its own, others the next unused colour
    of ``PALETTE["others"]`` in order. The same name gets the same colour on every page."""
    names = list(dict.fromkeys(names))
    out = {n: PALETTE["models"][n] for n in names if n in PALETTE["models"]}
    free = [c for c in PALETTE["others"] if c not in out.values()]
    for i, n in enumerate(n for n in names if n not in out):
        out[n] = free[i % len(free)]
    return out


@functools.lru_cache(maxsize=16)
def _scale_stops(colorscale: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions 0..1, RGB rows) of a named Plotly colour scale."""
    from plotly.colors import convert_colors_to_same_type, get_colorscale, unlabel_rgb

    scale = get_colorscale(colorscale)
    pos = np.array([float(p) for p, _ in scale])
    rgb = np.array([unlabel_rgb(convert_colors_to_same_type(c, "rgb")[0][0]) for _, c in scale], dtype=float)
    return pos, rgb


def scale_colours(values, colorscale: str, cmin: float, cmax: float, *, nan_colour: str = "#444") -> list[str]:
    """The colour Plotly draws for each value on ``colorscale`` from ``cmin`` to ``cmax`` (values
    outside clamped, linear RGB interpolation between the stops, channels rounded as plotly.js
    rounds them), as ``"#rrggbb"`` strings; NaN gets ``nan_colour`` (Plotly's default line
    colour, what it draws for a missing number)."""
    v = np.asarray(values, dtype=float).reshape(-1)
    pos, rgb = _scale_stops(colorscale)
    span = float(cmax) - float(cmin)
    t = np.clip((v - float(cmin)) / span, 0.0, 1.0) if span > 0 else np.zeros_like(v)
    ok = np.isfinite(t)
    chans = np.zeros((len(v), 3), dtype=np.int64)
    if ok.any():
        chans[ok] = np.floor(np.stack([np.interp(t[ok], pos, rgb[:, k]) for k in range(3)], axis=1) + 0.5)
    return [f"#{r:02x}{g:02x}{b:02x}" if good else nan_colour for (r, g, b), good in zip(chans.tolist(), ok.tolist(), strict=False)]
