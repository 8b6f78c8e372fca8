"""ASAP performances re-timed onto their annotated beats (the composer task's performances).

:func:`retime_performance` reads an ASAP ``*_annotations.txt`` (:func:`read_beat_annotations`),
gives every annotated beat its quarter position (:func:`beat_quarters`) and writes the
performance as MIDI bytes on that beat grid, so the tokenizer's bars and beats are the
performer's. Imports ``errors`` and ``musicfile`` (symusic lazily).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import SMUInputError


def read_beat_annotations(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, int]]]:
    """ASAP ``*_annotations.txt``: (beat times s, is_downbeat, {beat index: (num, den)}).

    Each line: ``time<TAB>time<TAB>kind[,timesig[,key]]`` with kind ``b``/``bR``
    (beat) or ``db`` (downbeat). Beat times must increase.
    """
    times, down, sigs = [], [], {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SMUInputError(path, f"cannot read beat annotations ({e.strerror})") from None
    for ln, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 3:
            raise SMUInputError(path, f"line {ln}: expected 3 tab-separated columns")
        try:
            t = float(cols[0])
        except ValueError:
            raise SMUInputError(path, f"line {ln}: bad time {cols[0]!r}") from None
        parts = cols[2].strip().split(",")
        times.append(t)
        down.append(parts[0].startswith("db"))
        if len(parts) > 1 and parts[1].strip():
            try:
                num, den = (int(x) for x in parts[1].strip().split("/"))
            except ValueError:
                raise SMUInputError(path, f"line {ln}: bad time signature {parts[1]!r}") from None
            sigs[len(times) - 1] = (num, den)
    if len(times) < 2:
        raise SMUInputError(path, "fewer than 2 annotated beats")
    t = np.asarray(times)
    if (np.diff(t) <= 0).any():
        raise SMUInputError(path, "beat times do not increase")
    return t, np.asarray(down, dtype=bool), sigs


def beat_quarters(down: np.ndarray, sigs: Mapping[int, tuple[int, int]]) -> tuple[np.ndarray, list[tuple[float, int, int]]]:
    """Quarter-note position of every annotated beat, and (quarter, num, den) time signatures.

    Rule: bars run from downbeat to downbeat and last ``4*num/den`` quarters of
    the time signature in force; the beats inside a bar divide it evenly (so an
    irregular beat count still fills the bar). The last bar uses the beat length
    of the bar before when the metre is unchanged, else its metre's default beat
    (numerator beats; numerator/3 for compound x/8 and x/16 metres). Beats before the first downbeat
    (a pickup) get the first bar's beat length and end at the first downbeat,
    which is put at a whole bar (0 when there is no pickup) so positions are >= 0.
    """
    n = len(down)
    db = np.flatnonzero(down)
    if db.size == 0:  # no downbeat at all: treat every beat as a quarter in 4/4 from beat 0
        return np.arange(n, dtype=float), [(0.0, 4, 4)]
    sig = (4, 4)
    for i in sorted(sigs):
        if i <= db[0]:
            sig = sigs[i]
    first_sig = sig
    q = np.zeros(n)
    ts_events: list[tuple[float, int, int]] = []
    pos = 0.0
    beat_len = None
    prev_sig = sig
    for k, start in enumerate(db):
        for i in sorted(sigs):
            if start >= i and (k == 0 or i > db[k - 1]):
                sig = sigs[i]
        bar_q = 4.0 * sig[0] / sig[1]
        end = db[k + 1] if k + 1 < len(db) else n
        m = end - start
        if k + 1 < len(db):
            beat_len = bar_q / m
        elif beat_len is None or sig != prev_sig:
            beats = sig[0] // 3 if sig[1] in (8, 16) and sig[0] % 3 == 0 and sig[0] > 3 else sig[0]
            beat_len = bar_q / beats
        prev_sig = sig
        if not ts_events or ts_events[-1][1:] != sig:
            ts_events.append((pos, sig[0], sig[1]))
        q[start:end] = pos + beat_len * np.arange(m)
        pos += bar_q if k + 1 < len(db) else beat_len * m
    # pickup before the first downbeat
    pre = db[0]
    if pre:
        bar0 = 4.0 * first_sig[0] / first_sig[1]
        first_len = (q[db[1]] - q[db[0]]) / (db[1] - db[0]) if len(db) > 1 else bar0 / first_sig[0]
        pickup_q = first_len * pre
        shift = bar0 * np.ceil(pickup_q / bar0 - 1e-9)
        q[db[0]:] += shift
        q[:pre] = shift - first_len * np.arange(pre, 0, -1)
        ts_events = [(0.0, first_sig[0], first_sig[1])] + [(p + shift, a, b) for p, a, b in ts_events[1:]]
    return q, ts_events


def _interp_extrap(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise-linear map, extended past both ends with the first/last segment's slope."""
    y = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    y[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    y[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return y


def retime_performance(midi_path: str | os.PathLike, annotations_path: str | os.PathLike) -> bytes:
    """A human performance put on its annotated beat grid, as standard MIDI file bytes.

    Every note onset/offset in seconds (from the file's tempo map, read with
    symusic like the tokenizer does) is mapped to a quarter position by linear
    interpolation between the annotated beats (``beat_quarters``), extrapolated
    past the first/last beat and clipped at 0; the result is written at 480 ticks
    per quarter, a constant 120 qpm, with the annotated time signatures, so the
    tokenizer's beat grid is the performer's beat. Pitches, velocities, programs,
    drum flags and track names are kept; a note keeps at least 1 tick.
    """
    import symusic

    from .musicfile import validate_midi_bytes

    times, down, sigs = read_beat_annotations(annotations_path)
    beat_q, ts_events = beat_quarters(down, sigs)
    try:
        data = Path(midi_path).read_bytes()
    except OSError as e:
        raise SMUInputError(midi_path, f"cannot read ({e.strerror})") from None
    validate_midi_bytes(data, str(midi_path))
    try:
        score = symusic.Score.from_midi(data).to("second")
    except Exception as e:
        raise SMUInputError(midi_path, f"unreadable MIDI: {type(e).__name__}: {e}") from None
    tpq = 480
    out = symusic.Score(tpq)
    out.tempos.append(symusic.Tempo(0, qpm=120.0))
    for q, num, den in ts_events:
        out.time_signatures.append(symusic.TimeSignature(int(round(q * tpq)), num, den))
    for tr in score.tracks:
        new = symusic.Track(tr.name, tr.program, tr.is_drum)
        a = tr.notes.numpy()
        if len(a["time"]):
            on = a["time"].astype(np.float64)
            off = on + a["duration"].astype(np.float64)
            t_on = np.round(np.maximum(_interp_extrap(on, times, beat_q), 0.0) * tpq).astype(np.int64)
            t_off = np.round(np.maximum(_interp_extrap(off, times, beat_q), 0.0) * tpq).astype(np.int64)
            dur = np.maximum(t_off - t_on, 1)
            new.notes = symusic.Note.from_numpy(time=t_on.astype(np.int32), duration=dur.astype(np.int32),
                                                pitch=a["pitch"], velocity=a["velocity"])
        out.tracks.append(new)
    return bytes(out.dumps_midi())
