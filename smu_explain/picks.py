"""What the masker picks, measured per class of note, with bootstrap intervals over pieces.

``measure_picks(model, tokenizer, pieces)`` joins the masker's view of each piece
(``explain.masker_view``: ``score``, ``picked``, ``frozen``) with the music-theory labels of
``harmony.analyze`` and returns a JSON-serialisable dict; ``class_effects(frames)`` is the
same measurement on ready tables (no model); ``summary_sentence(result)`` is the one sentence
for a manager; ``markdown_table(result)`` the table for docs and reports (``picks_table``: its
cells as a DataFrame for the app); ``run_command`` the body of ``smu picks``. ``compare_effects``
/ ``comparison_sentence``: whether a model's preferences differ from a control's (an untrained
masker head) on the same pieces, with a paired bootstrap (rules in their docstrings). Torch is
imported only when a model runs (through ``explain``).

The rules
---------
Per note
    ``score``: the masker score (0..1). ``picked``: 1 when the masker picks it at ``ratio``
    (the top ``ratio`` of the piece's not-frozen notes, ``explain.picks_at``). ``frozen``: 1
    when frozen: from no freeze book, the top-a rule applied once (the top ``freeze_top``, 30%,
    of the piece's notes by score; ``explain.masker_view``), so it is another cut of the score.
Per class (every class of every label column, ``harmony.LABEL_COLUMNS``; booleans read as
``chord tone`` / ``non-chord tone`` and ``repeated`` / ``not repeated``)
    * ``score`` / ``picked`` / ``frozen``: the mean over the class's notes of all pieces
      pooled (mean score, share picked, share frozen);
    * ``*_diff``: that minus the same mean over all other notes (raw difference);
      (``overall``: the same means over all notes, and ``score_sd``, the scores' standard deviation,
      to compare effects between models whose scores spread differently);
    * ``*_adj``: the difference controlled for duration and register: notes are put in
      duration x register bins (``noteclasses.duration_class`` x ``noteclasses.register_class``, 4 x 5);
      in each bin the class's mean minus the mean of the bin's other notes, averaged over the
      bins weighted by the class's notes there (bins without other notes are left out; a
      stratified comparison, like a regression with bin dummies and no interaction, but read
      directly). So a class whose notes are long or high shows no ``*_adj`` effect for that
      reason alone. Not computed for the duration and register columns themselves (None).
Intervals
    Percentile bootstrap over pieces: ``n_boot`` (1,000) resamples of the pieces with
    replacement (``numpy.random.default_rng(seed)``; the same resamples for every column), every
    number above recomputed on each (the bins' means too); the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resamples where it is defined.
    The point estimate is the full sample's. Differences that cannot be computed are None.
    With fewer than ``RESAMPLE_PIECES`` (5) pieces (the app's view of one piece) the resampled units
    are spans of ``BLOCK_BARS`` (4) bars of the pieces instead (a block bootstrap: neighbouring
    notes are not independent, 4-bar spans roughly are); ``result["resampled"]`` says which, and
    ``result["n_groups"]`` how many units. These intervals are not corrected for the number of
    classes (the sentence's are).
The sentence (``summary_sentence``)
    Names a class only when it passes a test corrected for the number of classes tested, so
    that noise names one in at most ``ALPHA`` (5%) of measurements (``significant``):
    the candidates (``candidates``) are the classes with at least ``MIN_NOTES`` notes in at least
    ``min(MIN_PIECES, pieces)`` pieces, each once (the same class under two names, e.g. ``chord
    tone`` of ``harmony`` and of ``chord_tone``, once; of a two-class column, whose effects mirror
    each other, only the smaller class; ``role`` ``other``, "not a POP909 file", never); with
    k candidates, a class is named when its ``score_adj`` interval at ``1 - ALPHA / k`` (Bonferroni)
    lies wholly beyond +-``MIN_EFFECT_SD`` (0.2) standard deviations of the masker's scores over
    the notes measured (``overall.score_sd``): a minimum effect size, Cohen's conventional "small"
    standardised difference, so that a real but tiny dependence (an untrained head's +0.005) is
    not stated as a preference; the whole interval, not only the estimate, must clear it, so chance
    or an effect of at most 0.2 SD names a class in at most ``ALPHA`` of measurements (a one-sided
    minimum-effect test per class at ``ALPHA / 2k``). The total SD, not the SD within duration x
    register bins, is the conservative standardiser (it is the larger). That interval
    (``named_interval``) is read off the table's percentile interval: the bootstrap standard error
    (its width / 2z), times sqrt(n / (n - 1)) for n resampled units
    (the bootstrap's variance over n units is short by that factor), times the Student t quantile
    with n - 1 degrees of freedom (the standard error itself comes from n units). Nothing is named
    when fewer than ``MIN_BLOCKS`` (10) 4-bar blocks were resampled (one short piece): the sentence
    says there is too little music. It names up to three classes above and two below, largest
    first, with their point estimates in score units and in SD, says how many classes were tested,
    the bound, and how many classes it leaves unnamed although their corrected intervals exclude 0;
    the table keeps the uncorrected 95% intervals. When none qualifies it says "no clear pattern
    beyond duration and register", and then names the duration or register class whose raw
    difference is largest, if it passes the same corrected test and bound (the duration and
    register classes count among the k). On noise scores (tests/test_picks.py) a class is named
    in at most about 5% of runs, as intended.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .harmony import HARMONY_ORDER, LABEL_COLUMNS, METRIC_WEIGHTS, ROLE_ORDER, VOICE_POSITIONS, analyze
from .readable import ROLE_LABELS

MEASURES = ("score", "picked", "frozen")
CONTROLS = ("duration", "register")
BOOL_NAMES = {"chord_tone": ("chord tone", "non-chord tone"), "repeated": ("repeated", "not repeated")}
MIN_NOTES = 20
MIN_PIECES = 3
RESAMPLE_PIECES = 5  # fewer pieces than this: resample BLOCK_BARS-bar blocks
#: classes that are no musical class: ``role`` ``other`` = "not a POP909 file"
UNNAMED = {("role", "other")}
BLOCK_BARS = 4
ZERO = 1e-9  # differences smaller than this are rounding, not a difference
#: the sentences name a class only when chance would name one in at most ALPHA of measurements
ALPHA = 0.05
#: one piece (or a few, whose 4-bar blocks are resampled): fewer blocks than this are too little music
MIN_BLOCKS = 10
#: the smallest difference a sentence names, in standard deviations of the masker's scores over the
#: notes measured: Cohen's conventional "small" standardised mean difference (d = 0.2). A class is
#: named only when its whole corrected interval lies beyond it (``significant``)
MIN_EFFECT_SD = 0.2

#: how the sentence names each class (column, class) -> plural noun phrase
PHRASES: dict[tuple[str, str], str] = {
    ("harmony", "chord tone"): "chord tones", ("harmony", "passing"): "passing tones",
    ("harmony", "neighbour"): "neighbour tones",
    ("harmony", "suspension/appoggiatura"): "suspensions and appoggiaturas",
    ("harmony", "pedal"): "pedal notes", ("harmony", "other NCT"): "other non-chord tones",
    ("chord_tone", "chord tone"): "chord tones", ("chord_tone", "non-chord tone"): "non-chord tones",
    ("voice_position", "bass"): "bass notes", ("voice_position", "inner"): "inner-voice notes",
    ("voice_position", "top"): "top-voice notes", ("voice_position", "solo"): "notes sounding alone",
    ("metric", "downbeat"): "downbeat notes", ("metric", "beat"): "notes on a beat other than the downbeat",
    ("metric", "off-beat"): "off-beat notes",
    ("repeated", "repeated"): "repeated notes", ("repeated", "not repeated"): "notes that are not repeats",
    ("role", "melody"): "melody-track notes", ("role", "bridge"): "bridge-track notes",
    ("role", "accompaniment"): "accompaniment-track notes", ("role", "other"): "notes of non-POP909 tracks",
}


def phrase(column: str, cls: str) -> str:
    if (column, cls) in PHRASES:
        return PHRASES[(column, cls)]
    if column == "duration":
        return f"notes of duration {cls}"
    if column == "register":
        return f"notes in register {cls}"
    return f"notes labelled {cls} ({column})"


def class_order(column: str) -> list[str]:
    """The musical order of a label column's classes."""
    from .noteclasses import DURATION_ORDER, REGISTER_EDGES

    return {"harmony": list(HARMONY_ORDER), "voice_position": list(VOICE_POSITIONS), "metric": list(METRIC_WEIGHTS),
            "role": list(ROLE_ORDER), "duration": list(DURATION_ORDER), "register": [e[2] for e in REGISTER_EDGES],
            **{c: list(v) for c, v in BOOL_NAMES.items()}}.get(column, [])


def label_values(df: pd.DataFrame, column: str) -> np.ndarray:
    v = df[column].to_numpy()
    if column in BOOL_NAMES:
        yes, no = BOOL_NAMES[column]
        return np.where(v.astype(bool), yes, no).astype(object)
    return v.astype(str).astype(object)


# --------------------------------------------------------------------------- the measurement

def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _effects(cnt: np.ndarray, sx: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every number of one column for piece weights ``w`` (R, P): cnt (P, C, B), sx (P, C, B, M)."""
    n_cb = np.einsum("rp,pcb->rcb", w, cnt)
    s_cbm = np.einsum("rp,pcbm->rcbm", w, sx)
    n_c, s_cm = n_cb.sum(2), s_cbm.sum(2)
    n_all, s_all = n_c.sum(1, keepdims=True), s_cm.sum(1, keepdims=True)
    mean = safe_ratio(s_cm, n_c[..., None])
    rest = safe_ratio(s_all - s_cm, (n_all - n_c)[..., None])
    n_b, s_bm = n_cb.sum(1, keepdims=True), s_cbm.sum(1, keepdims=True)
    rest_b = safe_ratio(s_bm - s_cbm, (n_b - n_cb)[..., None])  # (R, C, B, M): other notes of the bin
    mean_cb = safe_ratio(s_cbm, n_cb[..., None])
    ok = (n_cb > 0) & (n_b - n_cb > 0)
    wt = np.where(ok, n_cb, 0.0)[..., None]
    gap = np.where(ok[..., None], mean_cb - rest_b, 0.0)
    adj = safe_ratio((wt * gap).sum(2), wt.sum(2))
    return {"mean": mean, "diff": mean - rest, "adj": adj}


stratified_effects = _effects  # public name: picks_null computes many heads' effects with this estimator


def percentile_interval(point: float, boots: np.ndarray, level: float) -> dict[str, Any]:
    b = boots[np.isfinite(boots)]
    if not math.isfinite(point):
        return {"est": None, "lo": None, "hi": None}
    if b.size == 0:
        return {"est": float(point), "lo": None, "hi": None}
    lo, hi = np.quantile(b, [(1 - level) / 2, (1 + level) / 2])
    return {"est": float(point), "lo": float(lo), "hi": float(hi)}


def boot_weights(n_pieces: int, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_pieces, size=(n_boot, n_pieces))
    w = np.zeros((n_boot, n_pieces))
    np.add.at(w, (np.repeat(np.arange(n_boot), n_pieces), draws.ravel()), 1.0)
    return w


def class_effects(frames: Sequence[pd.DataFrame], *, columns: Sequence[str] = LABEL_COLUMNS,
                  n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                  replicates: bool = False) -> dict[str, Any]:
    """The per-class table of several pieces' note tables (each with ``score``, ``picked``,
    ``frozen`` and the label ``columns``; rules in the module docstring). No model needed.
    ``replicates``: the result also holds ``"replicates"`` (numpy arrays, not JSON: pop it before
    writing): ``weights`` (n_boot, units), each resample's count of every unit (piece or block; the
    same for the same ``seed``, ``n_boot`` and number of units), ``score_sd`` (n_boot,) the scores'
    standard deviation on each resample, and per column ``{"classes", "mean", "diff", "adj"}``, each
    (n_boot, classes, ``MEASURES``): every number of the table on every resample."""
    frames = [f for f in frames if len(f)]
    n_real = len(frames)
    by_blocks = 0 < n_real < RESAMPLE_PIECES and all("bar" in f.columns for f in frames)
    out: dict[str, Any] = {"n_pieces": n_real, "n_notes": int(sum(len(f) for f in frames)), "n_boot": int(n_boot),
                           "seed": int(seed), "level": float(level),
                           "resampled": f"{BLOCK_BARS}-bar blocks" if by_blocks else "pieces", "columns": {}}
    if n_real == 0:
        out["overall"] = {**{m: None for m in MEASURES}, "score_sd": None}
        return out
    allf = pd.concat(frames, ignore_index=True)
    real = np.repeat(np.arange(n_real), [len(f) for f in frames])
    if by_blocks:  # too few pieces to resample: resample spans of BLOCK_BARS bars instead
        _, piece = np.unique(np.stack([real, allf["bar"].to_numpy(dtype=np.int64) // BLOCK_BARS]), axis=1,
                             return_inverse=True)
        piece = piece.ravel()
    else:
        piece = real
    P = int(piece.max()) + 1
    out["n_groups"] = P
    x = np.stack([allf[m].to_numpy(dtype=float) for m in MEASURES], axis=1)
    out["overall"] = {**{m: float(x[:, j].mean()) for j, m in enumerate(MEASURES)}, "score_sd": float(x[:, 0].std())}
    reps: dict[str, Any] = {}
    bins = pd.Series(label_values(allf, "duration")).str.cat(pd.Series(label_values(allf, "register")), sep=" | ")
    bin_codes, bin_names = pd.factorize(bins, sort=True)
    B = len(bin_names)
    w_full = np.ones((1, P))
    w_boot = boot_weights(P, n_boot, seed) if n_boot > 0 else np.zeros((0, P))
    if replicates:
        c = x[:, 0] - x[:, 0].mean()  # centred: the same variance, sums of squares without cancellation
        n_r, s_r, q_r = (w_boot @ np.bincount(piece, v, P) for v in (np.ones(len(c)), c, c * c))
        reps = {"weights": w_boot, "score_sd": np.sqrt(np.maximum(safe_ratio(q_r, n_r) - safe_ratio(s_r, n_r) ** 2,
                                                                   0.0)), "columns": {}}
        out["replicates"] = reps
    for col in columns:
        labels = label_values(allf, col)
        present = set(labels)
        classes = [c for c in class_order(col) if c in present] + sorted(present - set(class_order(col)))
        code = {c: i for i, c in enumerate(classes)}
        ci = np.asarray([code[v] for v in labels], dtype=np.int64)
        C = len(classes)
        cnt = np.zeros((P, C, B))
        np.add.at(cnt, (piece, ci, bin_codes), 1.0)
        sx = np.zeros((P, C, B, len(MEASURES)))
        for j in range(len(MEASURES)):
            np.add.at(sx[..., j], (piece, ci, bin_codes), x[:, j])
        full = _effects(cnt, sx, w_full)
        boot = _effects(cnt, sx, w_boot) if n_boot > 0 else {k: np.zeros((0,) + v.shape[1:]) for k, v in full.items()}
        if replicates:
            reps["columns"][col] = {"classes": list(classes), **boot}
        rows = []
        for c_i, c in enumerate(classes):
            row: dict[str, Any] = {"class": c, "n_notes": int(cnt[:, c_i].sum()),
                                   "n_pieces": int(np.unique(real[ci == c_i]).size),
                                   "share_of_notes": float(cnt[:, c_i].sum() / len(allf))}
            for j, m in enumerate(MEASURES):
                row[m] = percentile_interval(full["mean"][0, c_i, j], boot["mean"][:, c_i, j], level)
                row[f"{m}_diff"] = percentile_interval(full["diff"][0, c_i, j], boot["diff"][:, c_i, j], level)
                row[f"{m}_adj"] = (None if col in CONTROLS
                                   else percentile_interval(full["adj"][0, c_i, j], boot["adj"][:, c_i, j], level))
            rows.append(row)
        out["columns"][col] = rows
    return out


def label_table(model, tokenizer, piece, *, ratio: float = 0.15, freeze_top: float = 0.3) -> pd.DataFrame:
    """``explain.masker_view`` of a piece joined with ``harmony.analyze`` (one row per note)."""
    from .explain import masker_view

    view = masker_view(model, tokenizer, piece, ratio, freeze_top=freeze_top)
    labels = analyze(piece)
    keep = [c for c in labels.columns if c not in view.columns]
    return pd.concat([view.reset_index(drop=True), labels[keep].reset_index(drop=True)], axis=1)


def measure_picks(model, tokenizer, pieces: Iterable, *, ratio: float = 0.15, freeze_top: float = 0.3,
                  n_boot: int = 1000, seed: int = 0, level: float = 0.95, model_name: str = "",
                  progress: Callable[[int, str], None] | None = None) -> dict[str, Any]:
    """What ``model``'s masker picks in ``pieces`` (``Piece`` objects), per class, with intervals
    and the sentence: :func:`class_effects` on :func:`label_table` of each piece."""
    frames, names = [], []
    for i, piece in enumerate(pieces):
        frames.append(label_table(model, tokenizer, piece, ratio=ratio, freeze_top=freeze_top))
        names.append(str(getattr(piece, "name", i)))
        if progress is not None:
            progress(i, names[-1])
    res = class_effects(frames, n_boot=n_boot, seed=seed, level=level)
    res.update({"model": model_name, "ratio": float(ratio), "freeze_top": float(freeze_top), "pieces": names,
                "frozen_rule": "top freeze_top of each piece by score (no freeze book)",
                "method": "per class: pooled means; *_diff = minus all other notes; *_adj = within duration x "
                          "register bins minus the bin's other notes, weighted by the class's notes; "
                          "percentile bootstrap over pieces"})
    res["sentence"] = summary_sentence(res)
    return res


def measure_folder(folder, files: Sequence, **kwargs) -> dict[str, Any]:
    """:func:`measure_picks` for the pre-trained checkpoint ``folder`` on music ``files`` (read
    with the checkpoint's tokenizer; ``model_name`` defaults to the folder's name). A file the
    tokenizer refuses, or with more than ``max_notes`` notes (``limits.MAX_NOTES``, the cap of
    ``smu explain`` and the app), is left out and listed in ``result["skipped"]`` as ``[name, reason]``."""
    from .checkpoint import load_checkpoint
    from .errors import SMUInputError
    from .limits import MAX_NOTES

    max_notes = kwargs.pop("max_notes", MAX_NOTES)
    ckpt = load_checkpoint(folder, kind="pretrained")
    model = ckpt.encoder.eval()
    skipped: list[list[str]] = []

    def pieces():
        for f in files:
            try:
                piece = ckpt.tokenizer.read(Path(f), name=Path(f).stem)
            except SMUInputError as exc:
                skipped.append([Path(f).name, str(exc)])
                continue
            if len(piece) > max_notes:
                skipped.append([Path(f).name, f"{len(piece):,} notes: more than the limit of {max_notes:,} per piece"])
                continue
            yield piece

    kwargs.setdefault("model_name", Path(folder).name)
    res = measure_picks(model, ckpt.tokenizer, pieces(), **kwargs)
    res["skipped"] = skipped
    return res


def music_files(inputs: Sequence, max_pieces: int | None = None) -> list[Path]:
    """The music files of ``inputs`` (files, and folders searched recursively for the extensions
    the tokenizer reads), sorted by path within each input; the first ``max_pieces`` when given."""
    from .errors import SMUInputError
    from .musicfile import MIDI_EXTENSIONS, SCORE_EXTENSIONS

    exts = {e.lower() for e in (*MIDI_EXTENSIONS, *SCORE_EXTENSIONS)}
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
        elif p.is_file():
            out.append(p)
        else:
            raise SMUInputError(p, "not found")
    return out[:max_pieces] if max_pieces else out


def run_command(model, inputs: Sequence, *, ratio: float = 0.15, n_boot: int = 1000, seed: int = 0,
                max_pieces: int | None = None, json_out=None, markdown_out=None) -> dict[str, Any]:
    """The body of ``smu picks``: measure ``model`` on the music of ``inputs`` and write the
    result as JSON (``json_out``) and a markdown page (``markdown_out``) when given."""
    import json

    from .errors import SMUInputError
    from .io import atomic_write_text, check_writable

    if not 0 < ratio <= 1:
        raise SMUInputError("--ratio", f"must be in (0, 1], got {ratio}")
    if n_boot < 0:
        raise SMUInputError("--n-boot", f"must be >= 0, got {n_boot}")
    files = music_files(inputs, max_pieces)
    if not files:
        raise SMUInputError(", ".join(map(str, inputs)), "no music files (.mid, .midi, .xml, .musicxml, .mxl, ...)")
    for out in (json_out, markdown_out):
        if out:
            check_writable(out)
    res = measure_folder(model, files, ratio=ratio, n_boot=n_boot, seed=seed)
    if not res.get("n_pieces"):  # every file refused: say so, write nothing (a result of no pieces is no result)
        skipped = res.get("skipped", [])
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped[:3]) + (
            f"; {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise SMUInputError(", ".join(map(str, inputs)), f"none of the {len(files)} music file(s) could be measured"
                            + (f" ({why})" if why else "") + "; nothing written")
    if json_out:
        atomic_write_text(json_out, json.dumps(res, indent=1, allow_nan=False) + "\n")
    if markdown_out:
        atomic_write_text(markdown_out, f"# What {res['model']}'s masker picks\n\n> {res['sentence']}\n\n"
                                        + markdown_table(res))
    return res


# --------------------------------------------------------------------------- words

def excludes_zero(iv: Mapping[str, Any] | None) -> bool:
    """The interval lies above or below 0 (by more than rounding: ``ZERO``)."""
    return bool(iv) and iv.get("lo") is not None and iv.get("hi") is not None and (iv["lo"] > ZERO or iv["hi"] < -ZERO)


def _fmt(iv: Mapping[str, Any]) -> str:
    return f"{iv['est']:+.3f} [{iv['lo']:+.3f}, {iv['hi']:+.3f}]"


def named_interval(iv: Mapping[str, Any] | None, n_units: int, k: int = 1, *, level: float = 0.95,
                   alpha: float = ALPHA) -> dict[str, Any] | None:
    """The interval a sentence decides on, from a table's percentile interval ``iv`` (at ``level``)
    over ``n_units`` resampled units (pieces or 4-bar blocks) when ``k`` differences are tested:
    the bootstrap's standard error (the interval's width / 2z, times sqrt(n / (n - 1)): a bootstrap
    over n units underestimates the variance by that factor) times the Student t quantile with
    n - 1 degrees of freedom at ``1 - alpha / (2k)`` (Bonferroni: chance makes one of the ``k``
    intervals exclude 0 in at most ``alpha`` of measurements). None without an interval or units."""
    if not iv or iv.get("lo") is None or iv.get("hi") is None or n_units < 2 or k < 1:
        return None
    from scipy.special import ndtri, stdtrit  # the normal and t quantiles (scipy.stats: 0.5 s more to import)

    se = (iv["hi"] - iv["lo"]) / (2 * ndtri((1 + level) / 2)) * math.sqrt(n_units / (n_units - 1))
    half = float(stdtrit(n_units - 1, 1 - alpha / (2 * k))) * se
    return {"est": iv["est"], "lo": iv["est"] - half, "hi": iv["est"] + half, "level": 1 - alpha / k}


def too_little_music(result: Mapping[str, Any]) -> bool:
    """Whether ``result`` resampled fewer than ``MIN_BLOCKS`` 4-bar blocks (one short piece, or a few):
    too few units for an interval to be trusted, so the sentence names nothing."""
    return result.get("resampled", "pieces") != "pieces" and int(result.get("n_groups", 0)) < MIN_BLOCKS


def candidates(result: Mapping[str, Any], *, measure: str = "score") -> list[dict[str, Any]]:
    """The classes a sentence may name, each once: ``{column, class, phrase, effect}`` (``effect``:
    the table's interval of ``<measure>_adj``; of ``<measure>_diff`` for the ``CONTROLS``, duration
    and register) with at least ``MIN_NOTES`` notes in ``min(MIN_PIECES, pieces)`` pieces, not
    ``UNNAMED``, of a two-class column only the smaller class (their effects mirror each other),
    one per phrase. Their number is the ``k`` of the correction."""
    need_pieces = min(MIN_PIECES, int(result.get("n_pieces", 0)))  # one piece: its 4-bar blocks were resampled
    found, seen = [], set()
    for col, rows in result.get("columns", {}).items():
        larger = max(rows, key=lambda r: r["n_notes"])["class"] if len(rows) == 2 else None
        key = f"{measure}_diff" if col in CONTROLS else f"{measure}_adj"
        for row in rows:
            ph = phrase(col, row["class"])
            if ((col, row["class"]) in UNNAMED or row["class"] == larger or ph in seen
                    or row["n_notes"] < MIN_NOTES or row["n_pieces"] < need_pieces or not row.get(key)
                    or row[key].get("lo") is None):
                continue
            seen.add(ph)
            found.append({"column": col, "class": row["class"], "phrase": ph, "effect": row[key]})
    return found


def effect_sd(result: Mapping[str, Any], measure: str = "score") -> float | None:
    """The standard deviation the differences of ``measure`` are sized against: of the masker's
    scores over all the notes measured (``overall.score_sd``); of a 0/1 share (``picked``,
    ``frozen``) sqrt(p (1 - p)) for its overall mean p. None when ``result`` holds neither."""
    ov = result.get("overall") or {}
    if measure == "score":
        sd = ov.get("score_sd")
    else:
        p = ov.get(measure)
        sd = None if p is None else math.sqrt(max(p * (1 - p), 0.0))
    return float(sd) if sd is not None and math.isfinite(sd) else None


def beyond(iv: Mapping[str, Any] | None, bound: float) -> bool:
    """The interval lies wholly above ``bound`` or wholly below ``-bound`` (``bound`` 0: :func:`excludes_zero`)."""
    b = max(float(bound), ZERO)
    return bool(iv) and iv.get("lo") is not None and iv.get("hi") is not None and (iv["lo"] > b or iv["hi"] < -b)


def in_sd(iv: Mapping[str, Any] | None, sd: float | None) -> dict[str, Any] | None:
    """``iv``'s estimate and ends divided by ``sd`` (a standardised difference); None without both."""
    if not iv or iv.get("est") is None or not sd or sd <= 0:
        return None
    return {k: (None if iv.get(k) is None else iv[k] / sd) for k in ("est", "lo", "hi")}


def judged(result: Mapping[str, Any], *, measure: str = "score", controls: bool = False,
           min_sd: float = MIN_EFFECT_SD) -> list[dict[str, Any]]:
    """The :func:`candidates` of the label columns (of the ``CONTROLS`` when ``controls``) whose
    interval corrected for the number of all candidates (``named``, :func:`named_interval`)
    excludes 0, largest first, each with ``sd`` (``named`` in standard deviations, :func:`effect_sd`),
    ``bound`` (``min_sd`` SD in the measure's units) and ``clear``: ``named`` lies wholly beyond
    +-``bound``. Without a standard deviation no class is clear (unless ``min_sd`` is 0). None
    when there is too little music (:func:`too_little_music`)."""
    if too_little_music(result):
        return []
    cands = candidates(result, measure=measure)
    units = int(result.get("n_groups", result.get("n_pieces", 0)))
    level = float(result.get("level", 0.95))
    sd = effect_sd(result, measure)
    bound = None if sd is None else min_sd * sd
    if min_sd <= 0:
        bound = 0.0
    found = []
    for c in cands:
        wide = named_interval(c["effect"], units, len(cands), level=level)
        if (c["column"] in CONTROLS) == controls and excludes_zero(wide):
            found.append({**c, "named": wide, "sd": in_sd(wide, sd), "bound": bound,
                          "clear": bound is not None and beyond(wide, bound)})
    found.sort(key=lambda f: (-abs(f["effect"]["est"]), f["column"], f["class"]))
    return found


def significant(result: Mapping[str, Any], *, measure: str = "score", controls: bool = False,
                min_sd: float = MIN_EFFECT_SD) -> list[dict[str, Any]]:
    """The :func:`candidates` a sentence names (of the label columns, or of the ``CONTROLS`` when
    ``controls``), largest first, each with ``named``: its interval corrected for the number of
    all candidates (:func:`named_interval`), which lies wholly beyond +-``min_sd`` standard
    deviations of the scores (``MIN_EFFECT_SD``, Cohen's "small" effect; ``min_sd=0``: excludes
    0, the rule before the bound), and ``sd``: that interval in standard deviations. Nothing when
    the result holds no standard deviation or there is too little music (:func:`judged`)."""
    return [f for f in judged(result, measure=measure, controls=controls, min_sd=min_sd) if f["clear"]]


def and_list(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def correction_text(k: int, units: int, what: str) -> str:
    """How the sentences' intervals were corrected, in words."""
    return (f"{k} class{'es' if k != 1 else ''} tested, so each interval is at {1 - ALPHA / max(k, 1):.1%} "
            f"(Bonferroni: chance names a class in at most {ALPHA:.0%} of measurements), over {units} {what}")


def bound_text(sd: float | None, n_small: int = 0) -> str:
    """The minimum effect size in words: ``MIN_EFFECT_SD`` standard deviations of the scores (``sd``)
    and how many classes (``n_small``) it leaves unnamed although their intervals exclude 0."""
    if sd is None:
        return "the result holds no spread of the scores to size a difference against, so none is named"
    here = (f" (here {n_small} whose intervals exclude zero but reach inside the bound)" if n_small else "")
    return (f"a class is named only when its interval lies beyond ±{MIN_EFFECT_SD:g} SD of its scores "
            f"(±{MIN_EFFECT_SD * sd:.3f}), Cohen's 'small' effect: differences not clearly beyond it are not "
            f"named{here}")


def _sized(f: Mapping[str, Any]) -> str:
    """A named class with its difference, in score units and in standard deviations."""
    d = f"; {f['sd']['est']:+.2f} SD" if f.get("sd") else ""
    return f"{f['phrase']} ({f['effect']['est']:+.3f}{d})"


def summary_sentence(result: Mapping[str, Any]) -> str:
    """One sentence for a manager from the intervals of ``result`` (rules in the module docstring)."""
    who = f"{result['model']}'s masker" if result.get("model") else "The masker"
    n = int(result.get("n_pieces", 0))
    if n == 0:
        return f"{who} was measured on no pieces, so there is no pattern to report."
    units = int(result.get("n_groups", n))
    what = f"piece{'s' if n != 1 else ''}" if result.get("resampled", "pieces") == "pieces" else \
        f"spans of {BLOCK_BARS} bars of {n} piece{'s' if n != 1 else ''}"
    if too_little_music(result):
        return (f"There is too little music to tell what {who[0].lower() + who[1:]} prefers: {n} piece"
                f"{'s' if n != 1 else ''} with {units} spans of {BLOCK_BARS} bars, and at least {MIN_BLOCKS} "
                f"are needed to name a class of note.")
    k = len(candidates(result))
    how = correction_text(k, units, what)
    tested = judged(result)
    sig = [f for f in tested if f["clear"]]
    size = bound_text(effect_sd(result), sum(not f["clear"] for f in tested))
    up = [f for f in sig if f["effect"]["est"] > 0][:3]
    down = [f for f in sig if f["effect"]["est"] < 0][:2]
    if up or down:
        parts = []
        if up:
            parts.append(and_list([_sized(f) for f in up]) + " higher")
        if down:
            parts.append(and_list([_sized(f) for f in down]) + " lower")
        return (f"Beyond duration and register, {'the masker' if who == 'The masker' else who} "
                f"scores {', and '.join(parts)} than notes of the same duration and register "
                f"(mean score differences, and in standard deviations (SD) of its scores; {size}; {how}).")
    tail = ""
    raw = significant(result, controls=True)
    if raw:
        f = raw[0]
        way = "higher" if f["effect"]["est"] > 0 else "lower"
        tail = (f"; what it does separate follows duration and register, e.g. it scores "
                f"{f['phrase']} {way} than the rest ({_fmt(f['named'])}, {f['named']['level']:.1%} interval"
                + (f"; {f['sd']['est']:+.2f} SD)" if f.get("sd") else ")"))
    return (f"{who} shows no clear pattern beyond duration and register: no harmonic, voice, metric or track "
            f"class scores clearly differently from notes of the same duration and register ({size}; {how}){tail}.")


# --------------------------------------------------------------------------- a model against a control

def _same_pieces(frames: Sequence[pd.DataFrame], control: Sequence[pd.DataFrame], columns: Sequence[str]) -> None:
    """ValueError unless ``frames`` and ``control`` are note tables of the same pieces, in the same
    order: as many, each with as many notes and the same labels in ``columns`` (and ``bar``)."""
    if len(frames) != len(control):
        raise ValueError(f"not the same pieces: {len(frames)} and {len(control)} note tables")
    for i, (a, b) in enumerate(zip(frames, control, strict=True)):
        same = len(a) == len(b) and all(np.array_equal(label_values(a, c), label_values(b, c))
                                        for c in (*columns, *CONTROLS, "bar") if c in a.columns and c in b.columns)
        if not same:
            raise ValueError(f"not the same pieces: note table {i} differs in its notes or labels")


def compare_effects(frames: Sequence[pd.DataFrame], control: Sequence[pd.DataFrame], *,
                    columns: Sequence[str] = LABEL_COLUMNS, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                    min_sd: float = MIN_EFFECT_SD, models: Sequence[str] = ("", "")) -> dict[str, Any]:
    """Whether a model's masker prefers a class differently from a control's (an untrained head),
    on the note tables of the same pieces (``frames``, ``control``: same order, same labels; else
    ValueError). Per class a sentence may name (:func:`candidates`, k of them): each model's
    standardised effect (``score_adj``; ``score_diff`` for duration and register; divided by that
    model's score SD) and the difference, model minus control, with a paired bootstrap interval:
    the pieces are resampled once, :func:`class_effects` with the same ``seed`` draws the same
    resamples for both (checked: ``paired``), and each resample's difference is of the two effects
    on that resample, each divided by its own SD on that resample (the standardisers' uncertainty
    counts too). The percentile interval (``diff``, at ``level``) is widened like the sentence's
    (:func:`named_interval` over the k classes: ``named``); ``clear``: ``named`` lies wholly beyond
    +-``min_sd`` SD (:func:`beyond`), the same minimum effect as the sentence's. JSON-serialisable;
    ``classes`` largest difference first; none when there is too little music."""
    _same_pieces(frames, control, columns)
    ra, rb = (class_effects(f, columns=columns, n_boot=n_boot, seed=seed, level=level, replicates=True)
              for f in (frames, control))
    pa, pb = ra.pop("replicates", None), rb.pop("replicates", None)
    paired = bool(pa is not None and pb is not None and np.array_equal(pa["weights"], pb["weights"]))
    if pa is not None and not paired:  # cannot happen for the same pieces and seed: refuse rather than mislead
        raise ValueError("the two measurements did not draw the same resamples")
    sds = [r["overall"].get("score_sd") for r in (ra, rb)]
    cands = [c for c in candidates(ra) if any(c["phrase"] == d["phrase"] for d in candidates(rb))]
    out: dict[str, Any] = {"models": list(models), "n_pieces": ra["n_pieces"], "n_groups": ra.get("n_groups", 0),
                           "resampled": ra["resampled"], "n_boot": int(n_boot), "seed": int(seed),
                           "level": float(level), "k": len(cands), "min_sd": float(min_sd), "paired": paired,
                           "score_sd": sds, "too_little_music": too_little_music(ra), "classes": []}
    if out["too_little_music"] or not paired or not all(sd and sd > 0 for sd in sds):
        return out
    units = int(ra["n_groups"])
    for c in cands:
        col, key = c["column"], ("diff" if c["column"] in CONTROLS else "adj")
        i = pa["columns"][col]["classes"].index(c["class"])
        ests = [next(r for r in res["columns"][col] if r["class"] == c["class"])[f"score_{key}"]["est"]
                for res in (ra, rb)]
        point = ests[0] / sds[0] - ests[1] / sds[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            boots = (pa["columns"][col][key][:, i, 0] / pa["score_sd"]
                     - pb["columns"][col][key][:, i, 0] / pb["score_sd"])
        diff = percentile_interval(point, boots, level)
        named = named_interval(diff, units, len(cands), level=level)
        out["classes"].append({"column": col, "class": c["class"], "phrase": c["phrase"],
                               "vs": "rest" if col in CONTROLS else "same duration x register",
                               "model_sd": float(ests[0] / sds[0]), "control_sd": float(ests[1] / sds[1]),
                               "diff": diff, "named": named and {k: float(v) for k, v in named.items()},
                               "excludes_zero": bool(excludes_zero(named)), "clear": bool(beyond(named, min_sd))})
    out["classes"].sort(key=lambda f: (-abs(f["diff"]["est"]), f["column"], f["class"]))
    return out


def comparison_sentence(cmp: Mapping[str, Any], named: Iterable[tuple[str, str]] = (),
                        control: str | None = None) -> str:
    """Whether the model of :func:`compare_effects` learned its preferences, in words: each class of
    ``named`` (the model's own sentence's, ``(column, class)``) and every other label class whose
    difference from the control is ``clear``, with the verdict: *learned* (the corrected paired
    interval lies beyond +-``min_sd`` SD), a difference that is not clearly that large, or not
    distinguishable from the control; then the largest clear duration or register class, if any.
    ``control``: how to call the control (default: its name's masker head)."""
    a, b = (cmp.get("models") or ["", ""])[:2]
    who, ctl = f"{a}'s masker" if a else "The masker", control or (f"{b}'s masker head" if b else "the control")
    n, k, bound = int(cmp.get("n_pieces", 0)), int(cmp.get("k", 0)), float(cmp.get("min_sd", MIN_EFFECT_SD))
    if cmp.get("too_little_music") or not cmp.get("classes"):
        return (f"There is too little to compare {who[0].lower() + who[1:]} with {ctl} on: "
                f"{n} piece{'s' if n != 1 else ''}, no class of note measured on both.")
    named = list(named)
    labels = [f for f in cmp["classes"] if f["column"] not in CONTROLS]
    shown = ([f for key in named for f in labels if (f["column"], f["class"]) == key]
             + [f for f in labels if f["clear"] and (f["column"], f["class"]) not in named])

    def told(f: Mapping[str, Any], first: bool = False) -> str:
        d, iv = f["diff"]["est"], f["named"]
        verdict = ("learned" if f["clear"] else
                   f"a real difference, but not clearly beyond ±{bound:g} SD, so not called learned"
                   if f["excludes_zero"] else "not distinguishable from a random read-out")
        return (f"{f['phrase']} {abs(d):.2f} SD {'higher' if d > 0 else 'lower'}{' than that head does' if first else ''} "
                f"({f['model_sd']:+.2f} vs {f['control_sd']:+.2f} SD; difference {d:+.2f} SD [{iv['lo']:+.2f}, "
                f"{iv['hi']:+.2f}]): {verdict}")

    lead = (f"Relative to notes of the same duration and register, and compared with {ctl} on the same {n} "
            f"piece{'s' if n != 1 else ''}, {who}")
    if shown:
        body = f"{lead} scores " + "; and ".join(told(f, i == 0) for i, f in enumerate(shown)) + "."
    else:
        body = (f"{lead} scores no class of note clearly differently from that head (no difference whose interval "
                f"lies beyond ±{bound:g} SD).")
    dur = [f for f in cmp["classes"] if f["column"] in CONTROLS and f["clear"]]
    if dur:
        body += f" Not controlled for duration and register, it scores {told(dur[0], True)}."
    return (f"{body} (Differences of the two heads' effects, each in standard deviations of its own scores; "
            f"paired bootstrap over the same pieces, resampled once for both; a difference is called learned only "
            f"when its interval, corrected for the {k} classes compared ({1 - ALPHA / max(k, 1):.1%}, Bonferroni), "
            f"lies wholly beyond ±{bound:g} SD. One untrained head: the interval covers the choice of pieces, "
            f"not the draw of the head.)")


def interval_text(iv: Mapping[str, Any] | None, *, pct: bool = False, signed: bool = False,
                  missing: str = "—") -> str:
    """An estimate with its interval as text: ``0.312 [0.280, 0.345]`` (``pct``: in percent with
    one decimal; ``signed``: a difference, ``+``/``-`` shown and `` *`` when the interval excludes 0);
    ``missing`` when there is no estimate, the estimate alone when there is no interval."""
    if not iv or iv.get("est") is None:
        return missing
    k = 100 if pct else 1
    f = ("{:+.1f}" if signed else "{:.1f}") if pct else ("{:+.3f}" if signed else "{:.3f}")
    if iv.get("lo") is None:
        return f.format(iv["est"] * k)
    mark = " *" if signed and excludes_zero(iv) else ""
    return f"{f.format(iv['est'] * k)} [{f.format(iv['lo'] * k)}, {f.format(iv['hi'] * k)}]{mark}"


def markdown_table(result: Mapping[str, Any], *, columns: Sequence[str] | None = None) -> str:
    """The per-class table as markdown: notes, mean score, share picked, share frozen, and the
    differences controlled for duration and register, each with its interval."""
    def cell(iv, pct=False):
        return interval_text(iv, pct=pct)

    def diff(iv, pct=False):
        return interval_text(iv, pct=pct, signed=True)

    lines = ["| label | class | notes | pieces | mean score | picked % | frozen % | score vs rest | "
             "score vs same duration x register | picked % vs same duration x register |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for col, rows in result.get("columns", {}).items():
        if columns is not None and col not in columns:
            continue
        for row in rows:
            lines.append(f"| {col} | {row['class']} | {row['n_notes']} | {row['n_pieces']} | {cell(row['score'])} | "
                         f"{cell(row['picked'], True)} | {cell(row['frozen'], True)} | {diff(row['score_diff'])} | "
                         f"{diff(row.get('score_adj'))} | {diff(row.get('picked_adj'), True)} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the table for the app

#: the label columns of a "What it picks" table, readable (``picks.class_effects``' columns)
PICKS_LABELS = {**ROLE_LABELS, "harmony": "harmony"}


def picks_table(result: Mapping, *, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The per-class table of a ``picks.class_effects`` / ``picks.measure_picks`` result as text
    cells, one row per class: notes, pieces, mean score, picked %, frozen % (each with its
    interval), the score's difference from all other notes and from notes of the same duration x
    register, and the picked share's controlled difference; ``*`` = the interval excludes 0 (the
    cells of ``picks.markdown_table``). ``columns``: the label columns to keep (default all)."""
    def cell(iv, pct=False):
        return interval_text(iv, pct=pct, missing="-")

    def diff(iv, pct=False):
        return interval_text(iv, pct=pct, signed=True, missing="-")

    rows = []
    for col, classes in (result.get("columns") or {}).items():
        if columns is not None and col not in columns:
            continue
        for r in classes:
            rows.append({"label": PICKS_LABELS.get(col, col.replace("_", " ")), "class": str(r["class"]),
                         "notes": int(r["n_notes"]), "pieces": int(r["n_pieces"]),
                         "mean score": cell(r.get("score")), "picked %": cell(r.get("picked"), True),
                         "frozen %": cell(r.get("frozen"), True), "score vs rest": diff(r.get("score_diff")),
                         "score vs same duration x register": diff(r.get("score_adj")),
                         "picked % vs same duration x register": diff(r.get("picked_adj"), True)})
    cols = ["label", "class", "notes", "pieces", "mean score", "picked %", "frozen %", "score vs rest",
            "score vs same duration x register", "picked % vs same duration x register"]
    return pd.DataFrame(rows, columns=cols)


PICKS_CAPTION = ("Per class of note: mean masker score (0-1), share picked at the ratio, share frozen; then the "
                 "score's difference from all other notes and from notes of the same duration x register (what "
                 "is left once duration and register are accounted for). Brackets: 95% bootstrap intervals "
                 "(over pieces; one piece: over its 4-bar spans), not corrected for the number of classes; "
                 "* = the interval excludes 0. With about 10 classes, one such * in two measurements is "
                 "chance, and a * can mark a real but tiny difference: the sentence names a class only when its "
                 "interval corrected for the classes tested (Bonferroni; the sentence says how many) lies beyond "
                 f"±{MIN_EFFECT_SD:g} standard deviations of the masker's scores (Cohen's 'small' effect; "
                 "differences not clearly beyond it are not named), and none with fewer than "
                 f"{MIN_BLOCKS} spans of 4 bars.")
