"""Counterfactual edits of a :class:`~smu_explain.piece.Piece`: change the music, then ask
the model again (the "Why" page shows the prediction and the masker scores before and after).

Rules:

- Every edit is pure: it returns a NEW Piece and never changes its input.
- ``notes`` selects notes by index into the piece (any iterable of ints, or a bool mask of
  length N); ``None`` means every note. An index outside ``0..N-1`` raises ``SMUInputError``.
- After an edit the notes are re-sorted by (onset, pitch, track, note_index) like
  ``read_piece``, and the grid fields are recomputed consistently:
  ``bar`` / ``beat`` from ``bar_starts_q``; the bar grid (``bar_starts_q``,
  ``bar_lengths_q``) keeps its bars and metres, is extended with the last bar's metre when
  a note moves past its end, and is cut after the bar holding the last onset (the Piece rule);
  ``start_sec`` / ``end_sec`` are recomputed from the piece's own quarters -> seconds map
  (piecewise linear through the original notes' (onset_q, start_sec) and
  (onset_q + duration_q, end_sec) points; constant tempo of the nearest segment beyond).
- ``transpose``: pitches + ``semitones``; a pitch leaving ``[pitch_min, pitch_max]`` of
  ``config`` (default ``TokenizerConfig()``: 22..107) raises ``SMUInputError`` (nothing is
  dropped silently).
- ``delete_notes``: removes exactly the selected notes; deleting every note is refused.
- ``shift_passage``: the notes whose onset lies in ``[start_q, end_q)`` move by
  ``by_q`` quarter notes (default 1.0 = one beat of a x/4 metre; negative = earlier);
  a note moved before 0 raises ``SMUInputError``.
- ``change_velocity``: ``velocity`` (set), or ``scale`` (multiply) and/or ``add``; results
  are rounded and clipped to 1..127.
- ``to_midi_bytes(piece)``: a standard MIDI file (symusic), one track per source track
  (name and program kept), onsets and durations in ticks of the piece's
  ``ticks_per_quarter`` (so ``read_piece`` gives back the same onsets in quarters),
  tempo events from the seconds map, the piece's time signatures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from .errors import SMUInputError
from .piece import Piece
from .tokenizer_config import TokenizerConfig

__all__ = ["transpose", "delete_notes", "shift_passage", "change_velocity", "to_midi_bytes",
           "select_notes", "notes_in_range"]

_EPS = 1e-9


def select_notes(piece: Piece, notes: Iterable[int] | np.ndarray | None) -> np.ndarray:
    """Bool mask (N,) of the selected notes (``None`` = all); ``SMUInputError`` on bad indices."""
    n = len(piece)
    if notes is None:
        return np.ones(n, dtype=bool)
    arr = np.asarray(list(notes) if not isinstance(notes, np.ndarray) else notes)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise SMUInputError(piece.name, f"a note mask must have {n} entries, got {arr.shape}")
        return arr.copy()
    if arr.size == 0:
        return np.zeros(n, dtype=bool)
    idx = arr.astype(np.int64)
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise SMUInputError(piece.name, f"note {int(bad[0])} is not in the piece (0..{n - 1})")
    out = np.zeros(n, dtype=bool)
    out[idx] = True
    return out


def notes_in_range(piece: Piece, start_q: float, end_q: float) -> np.ndarray:
    """Bool mask of the notes whose onset lies in ``[start_q, end_q)`` (quarters)."""
    on = np.asarray(piece.onset_q, dtype=np.float64)
    return (on >= float(start_q) - _EPS) & (on < float(end_q) - _EPS)


# ----------------------------------------------------------------------------- time maps

def _seconds_map(piece: Piece) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (quarters, seconds) points of the piece's own timing (unique quarters)."""
    q = np.concatenate([piece.onset_q, piece.onset_q + piece.duration_q]).astype(np.float64)
    s = np.concatenate([piece.start_sec, piece.end_sec]).astype(np.float64)
    order = np.argsort(q, kind="stable")
    q, s = q[order], s[order]
    keep = np.ones(len(q), dtype=bool)
    keep[1:] = np.diff(q) > _EPS
    q, s = q[keep], s[keep]
    if len(q) == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 0.5])
    if len(q) == 1:
        return np.array([q[0], q[0] + 1.0]), np.array([s[0], s[0] + 0.5])
    return q, np.maximum.accumulate(s)


def _to_seconds(q_map: np.ndarray, s_map: np.ndarray, q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    out = np.interp(q, q_map, s_map)
    lo_slope = (s_map[1] - s_map[0]) / (q_map[1] - q_map[0])
    hi_slope = (s_map[-1] - s_map[-2]) / (q_map[-1] - q_map[-2])
    lo_slope = lo_slope if lo_slope > 0 else 0.5
    hi_slope = hi_slope if hi_slope > 0 else 0.5
    out = np.where(q < q_map[0], s_map[0] + (q - q_map[0]) * lo_slope, out)
    return np.where(q > q_map[-1], s_map[-1] + (q - q_map[-1]) * hi_slope, out)


# ----------------------------------------------------------------------------- rebuild

def _rebuild(piece: Piece, arrays: dict[str, np.ndarray], keep: np.ndarray | None = None) -> Piece:
    """A new Piece from edited note arrays: re-sorted, grid and seconds recomputed (rules above)."""
    cols = {k: np.asarray(getattr(piece, k)).copy() for k in
            ("pitch", "velocity", "program", "track", "note_index", "onset_q", "duration_q")}
    cols.update({k: np.asarray(v) for k, v in arrays.items()})
    if keep is not None:
        cols = {k: v[keep] for k, v in cols.items()}
    n = len(cols["pitch"])
    if n == 0:
        raise SMUInputError(piece.name, "the edit leaves no notes")
    onset = cols["onset_q"].astype(np.float64)
    if onset.min() < -_EPS:
        raise SMUInputError(piece.name, f"the edit moves a note before the start ({onset.min():g} quarters)")
    onset = np.maximum(onset, 0.0)
    cols["onset_q"] = onset
    order = np.lexsort((cols["note_index"], cols["track"], cols["pitch"], onset))
    cols = {k: v[order] for k, v in cols.items()}
    onset, dur = cols["onset_q"], cols["duration_q"].astype(np.float64)

    q_map, s_map = _seconds_map(piece)
    starts = np.asarray(piece.bar_starts_q, dtype=np.float64)
    lens = np.asarray(piece.bar_lengths_q, dtype=np.float64)
    last = float(onset.max())
    if len(starts) == 0:
        starts, lens = np.array([0.0]), np.array([4.0])
    end = starts[-1] + lens[-1]
    if last >= end - _EPS:  # extend with the last bar's metre
        extra = int(np.floor((last - starts[-1]) / lens[-1] + _EPS))
        starts = np.concatenate([starts, starts[-1] + lens[-1] * np.arange(1, extra + 1)])
        lens = np.concatenate([lens, np.full(extra, lens[-1])])
    bar = np.searchsorted(starts, onset + _EPS, side="right") - 1
    n_bars = int(bar.max()) + 1
    starts, lens = starts[:n_bars], lens[:n_bars]
    ts = [t for t in piece.time_signatures if t[0] <= starts[-1] + _EPS] or list(piece.time_signatures[:1])
    return dataclasses.replace(
        piece,
        pitch=cols["pitch"].astype(np.int16),
        velocity=cols["velocity"].astype(np.int16),
        program=cols["program"].astype(np.int16),
        track=cols["track"].astype(np.int32),
        note_index=cols["note_index"].astype(np.int64),
        onset_q=onset,
        duration_q=dur,
        start_sec=_to_seconds(q_map, s_map, onset),
        end_sec=_to_seconds(q_map, s_map, onset + dur),
        bar=bar.astype(np.int64),
        beat=onset - starts[bar],
        bar_starts_q=starts,
        bar_lengths_q=lens,
        time_signatures=ts,
        stats={**piece.stats, "notes_kept": int(n), "n_bars": int(n_bars), "edited": True},
    )


# ----------------------------------------------------------------------------- edits

def transpose(piece: Piece, semitones: int, notes=None, *, config: TokenizerConfig | None = None) -> Piece:
    """Pitches of the selected notes (default all) + ``semitones``; refuses leaving the range."""
    cfg = config or TokenizerConfig()
    sel = select_notes(piece, notes)
    pitch = np.asarray(piece.pitch, dtype=np.int64).copy()
    pitch[sel] += int(semitones)
    out = sel & ((pitch < cfg.pitch_min) | (pitch > cfg.pitch_max))
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise SMUInputError(piece.name, f"transposing by {int(semitones)} moves note {i} to pitch {int(pitch[i])}, "
                                        f"outside {cfg.pitch_min}..{cfg.pitch_max}")
    return _rebuild(piece, {"pitch": pitch})


def delete_notes(piece: Piece, notes) -> Piece:
    """The piece without the selected notes (exactly those)."""
    sel = select_notes(piece, notes)
    if sel.all():
        raise SMUInputError(piece.name, "cannot delete every note of the piece")
    return _rebuild(piece, {}, keep=~sel)


def shift_passage(piece: Piece, start_q: float, end_q: float, by_q: float = 1.0) -> Piece:
    """Move the notes with onset in ``[start_q, end_q)`` by ``by_q`` quarters (1.0 = one beat)."""
    if not end_q > start_q:
        raise SMUInputError(piece.name, f"empty passage: end {end_q:g} <= start {start_q:g}")
    sel = notes_in_range(piece, start_q, end_q)
    onset = np.asarray(piece.onset_q, dtype=np.float64).copy()
    onset[sel] += float(by_q)
    return _rebuild(piece, {"onset_q": onset})


def change_velocity(piece: Piece, notes=None, *, velocity: int | None = None, scale: float | None = None,
                    add: int | None = None) -> Piece:
    """Set (``velocity``) or scale / offset the velocities of the selected notes (1..127)."""
    if velocity is None and scale is None and add is None:
        raise SMUInputError(piece.name, "change_velocity needs velocity, scale or add")
    sel = select_notes(piece, notes)
    v = np.asarray(piece.velocity, dtype=np.float64).copy()
    if velocity is not None:
        v[sel] = float(velocity)
    if scale is not None:
        v[sel] *= float(scale)
    if add is not None:
        v[sel] += float(add)
    return _rebuild(piece, {"velocity": np.clip(np.round(v), 1, 127).astype(np.int16)})


# ----------------------------------------------------------------------------- MIDI

def to_midi_bytes(piece: Piece) -> bytes:
    """The piece as standard MIDI file bytes (rules above)."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    tpq = int(piece.ticks_per_quarter or 480)
    score = Score(tpq)
    q_map, s_map = _seconds_map(piece)
    # tempo events where the quarters -> seconds slope changes (more than 0.1 %)
    slopes = np.diff(s_map) / np.diff(q_map)
    last = None
    for q, sl in zip(q_map[:-1], slopes, strict=False):
        if sl <= 0:
            continue
        qpm = 60.0 / sl
        if last is None or abs(qpm - last) > 1e-3 * last:
            score.tempos.append(Tempo(0 if last is None else int(round(q * tpq)), qpm=float(qpm)))
            last = qpm
    if last is None:
        score.tempos.append(Tempo(0, qpm=120.0))
    for t, num, den in piece.time_signatures:
        score.time_signatures.append(TimeSignature(int(round(float(t) * tpq)), int(num), int(den)))
    names = list(piece.track_names) or ["track"]
    for tr in np.unique(piece.track):
        sel = np.flatnonzero(piece.track == tr)
        name = names[int(tr)] if 0 <= int(tr) < len(names) else f"track {int(tr)}"
        track = Track(name=str(name), program=int(piece.program[sel[0]]), is_drum=False)
        for i in sel:  # output construction, not a hot path
            track.notes.append(Note(int(round(piece.onset_q[i] * tpq)), int(round(piece.duration_q[i] * tpq)),
                                    int(piece.pitch[i]), int(max(1, min(127, piece.velocity[i])))))
        score.tracks.append(track)
    return bytes(score.dumps_midi())
