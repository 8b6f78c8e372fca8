"""Reading a music file (MIDI, or a score through :mod:`smu_explain.scores`) into a :class:`Piece`.

:func:`read_piece` takes a path or bytes (:func:`smu_explain.musicfile.load_bytes`), reads the
MIDI with symusic, merges the tracks, places every note on the beat grid and the bar grid
(:func:`build_bar_grid`), and returns a :class:`~smu_explain.piece.Piece`. Imports
:mod:`smu_explain.errors`, ``musicfile``, ``scores``, ``piece`` and ``tokenizer_config`` (symusic
lazily); the tokenizers import it.

Rules (all tested in tests/test_tokenizer*.py, tests/test_bad_input.py, tests/test_hostile*.py)
-------------------------------------------------------------------------------------------

Reading (:func:`read_piece`)
    * MIDI (.mid/.midi/.kar/.smf, or bytes that start with ``MThd``) is read with
      symusic after :func:`validate_midi_bytes` checked the header and the chunk
      list. Score formats (.xml, .musicxml, .mxl, .krn, .abc) are converted to MIDI
      bytes with music21 and then read the same way. Any other extension is refused.
    * Every failure is an :class:`~smu_explain.errors.SMUInputError` naming the file
      and the reason: missing/empty/too large (> ``MAX_FILE_BYTES``) file, not a MIDI
      file (no ``MThd``), truncated chunks, MIDI type 2, SMPTE time division, a
      resolution outside ``1..MAX_TICKS_PER_QUARTER`` (30000) ticks per quarter, a
      piece longer than ``MAX_PIECE_QUARTERS`` quarters, no notes, only drum notes,
      no notes in the pitch range, any error inside symusic or music21.
    * Scores are parsed and checked against the bounds of :mod:`smu_explain.scores` before music21
      builds anything, and music21 then reads exactly what was checked. A .mxl is read from the
      rootfile its META-INF/container.xml names. The music21 conversion is bounded by
      ``SCORE_PARSE_TIMEOUT_S`` with its warnings silenced. Grace notes are removed
      (``Piece.dropped["grace_notes"]``), and chord symbols, which are not notes
      (``Piece.stats["chord_symbols_removed"]``); repeats are expanded as music21 does, and
      ``Piece.stats`` says ``notes_written`` and ``repeat_notes_added``.
    * MIDI times: symusic keeps ticks in 32 bits. A file whose delta times sum past 2^31 ticks
      (but not 2^32) is read right (:func:`midi_last_tick` walks the deltas; times are taken
      modulo 2^32: the probe's note lands at quarter 80,529.6); past 2^32 ticks it is refused
      with that reason (or as "piece too long" past ``MAX_PIECE_QUARTERS``).
    * Drums (symusic ``is_drum`` tracks, i.e. MIDI channel 10) are excluded. Notes
      outside ``[pitch_min, pitch_max]`` are dropped. Both are counted by reason in
      ``Piece.dropped``. All other tracks are merged; every note keeps ``track``
      (index into ``Piece.track_names``, symusic's track order), ``program`` and
      ``note_index`` (its index in that symusic track's note list).
    * Overlapping notes of the same pitch are kept as symusic pairs them (each note-off closes the
      earliest open note-on of its pitch and channel; no merging, no truncation by this reader);
      zero-length notes are kept (their token gets the minimum duration). Where a file opens a
      pitch that is already sounding and closes it fewer times (a unison inside one part, as
      music21 writes double stops and voices that meet), that pairing would shift every later
      pair (notes merged, some lost): when the file has more note-ons outside channel 10 than
      symusic made notes (:func:`~smu_explain.musicfile.midi_walk`), it is read with every
      note-off closing all the open notes of its pitch and channel, as sequencers and
      pretty_midi read it (:func:`~smu_explain.musicfile.close_all_on_note_off`; the note-offs
      added: ``Piece.stats["note_offs_added"]``; files up to ``REPAIR_MAX_BYTES``, 2 MiB). Note-ons
      still without a note (never closed, or lost in a larger file's pairing) are counted in
      ``Piece.dropped["unpaired_note_ons"]``. POP909, ASAP's scores and EMOPIA
      (2,222 files) have none of either; two of sample_midi's files (and scores with such
      unisons, through music21) had 11 and 2 notes lost before.
    * Notes are sorted by (onset tick, pitch, track, note_index).

Bounds (what a file may ask of the reader; all refusals are ``SMUInputError``)
    * Every file: at most ``MAX_FILE_BYTES`` (64 MiB) on disk; MIDI: 1..30000 ticks per
      quarter, last onset at most ``MAX_PIECE_QUARTERS`` (1,000,000) quarters, events below
      2^32 ticks.
    * Scores: the bounds on their parsed values and on music21's time, in :mod:`smu_explain.scores`.
    * Memory: a read in this process is bounded by the limits above only; the app reads every
      file with :func:`smu_explain.sandbox.read_piece_bounded` (a worker process: 2 GiB of
      address space beyond its imports, 60 s), so no file can take the server's memory.

Time
    * Time is on the beat grid from ticks: ``onset_q = tick / ticks_per_quarter``;
      tempo changes never move notes. ``start_sec``/``end_sec`` come from the tempo
      map (120 qpm before the first tempo event; at one tick the last event wins).

Bars (time signatures)
    * The grid starts at tick 0 with 4/4 unless a time signature says otherwise.
      Bar length in quarters = ``4 * numerator / denominator``.
    * Several time signatures at the same tick: the last one in the file wins.
      Events with numerator 0 or a denominator that is not a power of two in 1..64
      are ignored.
    * Implausible (artefact) metres: a time signature whose bar is shorter than
      ``min_bar_quarters`` (1.5 quarters: 1/4, 2/8, 1/8, ... ) is *not* a metre.
      It is ignored, except when it spans exactly one of its own bars, i.e. the next
      time signature comes exactly one short bar later: then it is kept as that single
      short bar (the way a pickup or one odd bar is written). An ignored short event
      reads as a restatement, at its tick, of the last metre that is not short (4/4
      when there is none): that metre continues. So a short metre never runs on: after
      a kept short bar, an ignored short event that follows it brings the last regular
      metre back (``1/4`` at 0 and ``1/4`` at 1 give one 1-quarter bar, then 4/4).
      POP909's 1/4 events, which last the whole song, are thus ignored and such songs
      are read as 4/4.
    * A change takes effect at the next bar line at or after its tick (the current
      bar is completed first). If several changes fall on the same bar line, the last
      one wins.
    * Pickup bars: the grid always starts at tick 0. An anacrusis written as a partial
      first bar (e.g. 1/4 or 2/4 at tick 0 followed by 4/4 one short bar later) gives a
      short bar 0 through the rules above; an anacrusis written inside a full first
      bar (leading rests) stays at its position in that bar. A MIDI file that starts
      the pickup at tick 0 under the full metre cannot be told apart from a downbeat
      start and is read as such. Scores read through music21 keep their pickup: a
      first measure shorter than its metre (music21 ``paddingLeft``) is written as a
      partial first bar before the rules run.
    * ``Piece.bar_starts_q``/``bar_lengths_q`` cover bar 0 through the bar holding the
      last onset; ``Piece.bar``/``beat`` are a note's 0-based bar and its onset in
      quarter notes from that bar's start.

Memory and speed
    * Reading is vectorised with numpy; the only Python loops run over tracks,
      tempo events and time-signature events, never over notes.
    * Reading plus encoding a 100,000-note file allocates less than
      ``MEMORY_BOUND_BYTES_PER_NOTE`` (400) bytes per note of Python/numpy memory at
      peak (measured with tracemalloc; tests/test_bad_input.py checks 40 MB for
      100,000 notes).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import SMUInputError
from .musicfile import (
    MAX_TICKS_PER_QUARTER,
    close_all_on_note_off,
    display_name,
    load_bytes,
    midi_walk,
    validate_midi_bytes,
)
from .piece import Piece
from .scores import score_to_midi_bytes
from .tokenizer_config import TokenizerConfig

__all__ = ["MAX_PIECE_QUARTERS", "MEMORY_BOUND_BYTES_PER_NOTE", "READ_FIELDS", "build_bar_grid", "read_piece"]

MAX_PIECE_QUARTERS = 1_000_000
MEMORY_BOUND_BYTES_PER_NOTE = 400

DEFAULT_MSPQ = 500_000  # 120 qpm
_EPS = 1e-9

#: symusic keeps times as 32-bit ticks: a file whose delta times sum past this wraps round.
_INT32_TICKS = 2 ** 31


def _with_pickup(ts_events: list[tuple[float, int, int]], pickup_q: float) -> list[tuple[float, int, int]]:
    """Write a pickup of ``pickup_q`` quarters as a partial first bar (its own short metre
    from 0, the score's first metre from ``pickup_q``), as a MIDI file would."""
    den = next((d for d in (4, 8, 16, 32, 64) if abs(pickup_q * d / 4 - round(pickup_q * d / 4)) < _EPS), None)
    if den is None or pickup_q <= 0:
        return ts_events
    at0 = [e for e in ts_events if abs(e[0]) < _EPS]
    first = at0[-1][1:] if at0 else (4, 4)
    rest = [e for e in ts_events if abs(e[0]) >= _EPS]
    events = [(0.0, int(round(pickup_q * den / 4)), den)]
    if not any(abs(e[0] - pickup_q) < _EPS for e in rest):
        events.append((pickup_q, first[0], first[1]))
    return events + rest


def _tempo_seconds(ticks: np.ndarray, tempo_ticks: np.ndarray, tempo_mspq: np.ndarray, tpq: int) -> np.ndarray:
    """Seconds at ``ticks`` from a tempo map (sorted, deduplicated, starting at tick 0)."""
    sec_per_tick = tempo_mspq.astype(np.float64) / 1e6 / tpq
    seg_sec = np.concatenate([[0.0], np.cumsum(np.diff(tempo_ticks).astype(np.float64) * sec_per_tick[:-1])])
    k = np.searchsorted(tempo_ticks, ticks, side="right") - 1
    k = np.clip(k, 0, len(tempo_ticks) - 1)
    return seg_sec[k] + (ticks - tempo_ticks[k]).astype(np.float64) * sec_per_tick[k]


def _tempo_map(score, ticks=None) -> tuple[np.ndarray, np.ndarray]:
    t = score.tempos.numpy()
    times = np.asarray(t["time"], dtype=np.int64) if ticks is None else ticks(t["time"])
    mspq = np.asarray(t["mspq"], dtype=np.int64)
    ok = (mspq > 0) & (times >= 0)
    times, mspq = times[ok], mspq[ok]
    order = np.argsort(times, kind="stable")
    times, mspq = times[order], mspq[order]
    if len(times):
        last = np.ones(len(times), dtype=bool)  # same tick: keep the last event
        last[:-1] = times[1:] != times[:-1]
        times, mspq = times[last], mspq[last]
    if len(times) == 0 or times[0] != 0:
        times = np.concatenate([[0], times])
        mspq = np.concatenate([[DEFAULT_MSPQ], mspq])
    return times, mspq


def _is_valid_meter(num: int, den: int) -> bool:
    return 1 <= num <= 255 and den in (1, 2, 4, 8, 16, 32, 64)


def build_bar_grid(
    ts_events: Sequence[tuple[float, int, int]],
    end_q: float,
    min_bar_quarters: float = 1.5,
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, int, int]], int]:
    """Bar grid from time-signature events (time in quarters), by the module's rules.

    Returns (bar_starts_q, bar_lengths_q, effective time signatures, n_ignored),
    covering bar 0 through the bar that contains ``end_q``.
    """
    # 1. drop invalid events, keep the last event at one time (stable order = file order)
    evs = [(float(t), int(n), int(d)) for t, n, d in ts_events]
    n_ignored = 0
    valid = []
    for t, n, d in sorted(evs, key=lambda e: e[0]):
        if t < 0 or not _is_valid_meter(n, d):
            n_ignored += 1
            continue
        if valid and abs(valid[-1][0] - t) < _EPS:
            valid[-1] = (t, n, d)
            n_ignored += 1
        else:
            valid.append((t, n, d))
    # 2. implausible short metres: keep only when they span exactly one of their bars;
    #    an ignored one restates the last plausible metre at its tick (that metre continues,
    #    also after a single short bar kept just before it)
    kept = []
    plausible = (4, 4)
    for i, (t, n, d) in enumerate(valid):
        blen = 4.0 * n / d
        if blen < min_bar_quarters - _EPS:
            nxt = valid[i + 1][0] if i + 1 < len(valid) else None
            if nxt is None or abs((nxt - t) - blen) > _EPS:
                n_ignored += 1
                kept.append((t, *plausible))
                continue
        else:
            plausible = (n, d)
        kept.append((t, n, d))
    # 3. walk the events: a change takes effect at the next bar line at or after it
    starts_parts: list[np.ndarray] = []
    lens_parts: list[np.ndarray] = []
    effective: list[tuple[float, int, int]] = []
    cur_start, cur_num, cur_den = 0.0, 4, 4
    cur_len = 4.0
    for t, n, d in kept:
        if t <= cur_start + _EPS:
            eff = cur_start
        else:
            k = math.ceil((t - cur_start) / cur_len - _EPS)
            eff = cur_start + k * cur_len
        if eff > end_q + _EPS:  # takes effect after the last onset: nothing changes
            break
        if eff > cur_start + _EPS:
            nb = int(round((eff - cur_start) / cur_len))
            starts_parts.append(cur_start + cur_len * np.arange(nb, dtype=np.float64))
            lens_parts.append(np.full(nb, cur_len))
            if not effective or effective[-1][1:] != (cur_num, cur_den) or effective[-1][0] != cur_start:
                effective.append((cur_start, cur_num, cur_den))
        cur_start, cur_num, cur_den, cur_len = eff, n, d, 4.0 * n / d
    # final segment through the bar that holds end_q
    nb = max(1, int(math.floor((end_q - cur_start) / cur_len + _EPS)) + 1)
    starts_parts.append(cur_start + cur_len * np.arange(nb, dtype=np.float64))
    lens_parts.append(np.full(nb, cur_len))
    effective.append((cur_start, cur_num, cur_den))
    # merge consecutive identical metres in the effective list
    merged: list[tuple[float, int, int]] = []
    for e in effective:
        if merged and merged[-1][1:] == e[1:]:
            continue
        merged.append(e)
    return np.concatenate(starts_parts), np.concatenate(lens_parts), merged, n_ignored


# the TokenizerConfig fields read_piece uses: configs equal on these read a file into the same Piece
READ_FIELDS = ("pitch_min", "pitch_max", "min_bar_quarters")


def read_piece(source, name: str | None = None, *, config: TokenizerConfig | None = None) -> Piece:
    """Read a MIDI file / score (path or bytes) into a :class:`Piece` (see module rules).

    ``config`` supplies the pitch range and the artefact-metre threshold (``READ_FIELDS``;
    defaults: ``TokenizerConfig()``). Raises :class:`SMUInputError` for every unusable input.
    """
    cfg = config or TokenizerConfig()
    path_str = display_name(source)
    if name is None:
        name = Path(path_str).stem if isinstance(source, (str, os.PathLike)) else "piece"
    data, kind = load_bytes(source, path_str)
    score_info = None
    if kind == "score":
        data, pickup_q, score_info = score_to_midi_bytes(data, path_str, source)
    else:
        pickup_q = 0.0
    tpq = validate_midi_bytes(data, path_str)
    try:
        import symusic

        score = symusic.Score.from_midi(data)
    except Exception as e:
        raise SMUInputError(path_str, f"unreadable MIDI: {type(e).__name__}: {e}") from e
    last_tick, note_ons = midi_walk(data)
    # symusic pairs each note-off with the earliest open note-on of its pitch and channel: where a file opens
    # a pitch more often than it closes it, later pairs shift (notes merge, some are lost). Such a file is read
    # with every note-off closing all open notes of its pitch (close_all_on_note_off), as sequencers read it.
    paired, offs_added = _non_drum_notes(score), 0
    if note_ons > paired and len(data) <= REPAIR_MAX_BYTES:
        try:
            fixed, added = close_all_on_note_off(data)
            refit = symusic.Score.from_midi(fixed)
        except Exception:  # noqa: BLE001 - keep symusic's own reading (its losses are counted below)
            pass
        else:
            n = _non_drum_notes(refit)
            if n > paired and refit.ticks_per_quarter == score.ticks_per_quarter:
                score, paired, offs_added = refit, n, added
    if last_tick >= 2 * _INT32_TICKS:
        if last_tick / tpq > MAX_PIECE_QUARTERS:
            raise SMUInputError(path_str, f"piece too long: an event at quarter {last_tick / tpq:,.0f} "
                                          f"(> {MAX_PIECE_QUARTERS:,})")
        raise SMUInputError(path_str, f"an event at tick {last_tick:,} (quarter {last_tick / tpq:,.0f}): times past "
                                      f"2^32 ticks cannot be placed by the MIDI reader (32-bit ticks); refused")
    try:
        piece = _piece_from_score(score, tpq, name, path_str, cfg, pickup_q, wrapped=last_tick >= _INT32_TICKS)
    except SMUInputError:
        raise
    except Exception as e:  # noqa: BLE001 - odd content must surface as a typed input error
        raise SMUInputError(path_str, f"unusable MIDI content: {type(e).__name__}: {e}") from e
    if note_ons > paired:  # notes merged or lost in the pairing, or never closed
        piece.dropped["unpaired_note_ons"] = int(note_ons - paired)
    if offs_added:
        piece.stats["note_offs_added"] = int(offs_added)
    if score_info is not None:  # say what music21 did: grace notes dropped, repeats expanded
        piece.dropped["grace_notes"] = int(score_info["grace"])
        if score_info.get("chord_symbols"):
            piece.stats["chord_symbols_removed"] = int(score_info["chord_symbols"])
        piece.stats["notes_written"] = int(score_info["written"])
        piece.stats["repeat_notes_added"] = (max(0, piece.stats["notes_read"] - int(score_info["written"]))
                                             if score_info["repeats"] else 0)
    return piece


#: the largest MIDI file read again with every note-off closing all open notes (mido is pure Python:
#: ~3 s per MiB here); a larger one keeps symusic's pairing, its losses counted as unpaired note-ons
REPAIR_MAX_BYTES = 2 << 20


def _non_drum_notes(score) -> int:
    return sum(len(t.notes) for t in score.tracks if not t.is_drum)


def _piece_from_score(score, tpq: int, name: str, path_str: str, cfg: TokenizerConfig,
                      pickup_q: float = 0.0, wrapped: bool = False) -> Piece:
    """``wrapped``: the file's delta times sum past 2^31 ticks (but not 2^32), so symusic's
    32-bit times past 2^31 came back negative: they are read modulo 2^32."""
    def ticks(a) -> np.ndarray:
        a = np.asarray(a, dtype=np.int64)
        return a % (2 * _INT32_TICKS) if wrapped else a

    if score.ticks_per_quarter != tpq:  # symusic read something else than the header says
        tpq = int(score.ticks_per_quarter)
        if not 1 <= tpq <= MAX_TICKS_PER_QUARTER:
            raise SMUInputError(path_str, f"implausible resolution: {tpq} ticks per quarter")
    track_names: list[str] = []
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("time", "dur", "pitch", "vel", "track", "idx", "prog")}
    n_read = n_drum = 0
    for ti, tr in enumerate(score.tracks):
        track_names.append(str(tr.name))
        nn = len(tr.notes)
        if nn == 0:
            continue
        n_read += nn
        if tr.is_drum:
            n_drum += nn
            continue
        a = tr.notes.numpy()
        cols["time"].append(ticks(a["time"]))
        cols["dur"].append(ticks(a["duration"]))
        cols["pitch"].append(np.asarray(a["pitch"]).astype(np.int16))
        cols["vel"].append(np.asarray(a["velocity"]).astype(np.int16))
        cols["track"].append(np.full(nn, ti, dtype=np.int32))
        cols["idx"].append(np.arange(nn, dtype=np.int64))
        cols["prog"].append(np.full(nn, int(tr.program), dtype=np.int16))
    if n_read == 0:
        raise SMUInputError(path_str, "no notes")
    if n_drum == n_read:
        raise SMUInputError(path_str, "only drum notes (drum tracks are excluded)")
    time = np.concatenate(cols["time"])
    dur = np.concatenate(cols["dur"])
    pitch = np.concatenate(cols["pitch"])
    vel = np.concatenate(cols["vel"])
    track = np.concatenate(cols["track"])
    nidx = np.concatenate(cols["idx"])
    prog = np.concatenate(cols["prog"])
    del cols

    below = pitch < cfg.pitch_min
    above = pitch > cfg.pitch_max
    keep = ~(below | above)
    dropped = {
        "drums": int(n_drum),
        "pitch_below_min": int(below.sum()),
        "pitch_above_max": int(above.sum()),
    }
    if not keep.any():
        raise SMUInputError(
            path_str, f"no notes in the pitch range {cfg.pitch_min}..{cfg.pitch_max} "
                      f"({n_read - n_drum} pitched notes outside it)")
    if not keep.all():
        time, dur, pitch, vel, track, nidx, prog = (
            x[keep] for x in (time, dur, pitch, vel, track, nidx, prog))
    if time.min() < 0:
        raise SMUInputError(path_str, "negative note time")
    dur = np.maximum(dur, 0)
    order = np.lexsort((nidx, track, pitch, time))
    time, dur, pitch, vel, track, nidx, prog = (
        x[order] for x in (time, dur, pitch, vel, track, nidx, prog))

    onset_q = time / float(tpq)
    duration_q = dur / float(tpq)
    last_q = float(onset_q[-1])
    if last_q > MAX_PIECE_QUARTERS:
        raise SMUInputError(
            path_str, f"piece too long: last onset at {last_q:.0f} quarters (> {MAX_PIECE_QUARTERS})")

    tempo_ticks, tempo_mspq = _tempo_map(score, ticks)
    start_sec = _tempo_seconds(time, tempo_ticks, tempo_mspq, tpq)
    end_sec = _tempo_seconds(time + dur, tempo_ticks, tempo_mspq, tpq)

    ts = score.time_signatures.numpy()
    ts_events = list(zip(
        (ticks(ts["time"]) / float(tpq)).tolist(),
        np.asarray(ts["numerator"]).astype(int).tolist(),
        np.asarray(ts["denominator"]).astype(int).tolist(), strict=False,
    ))
    if pickup_q > 0:
        ts_events = _with_pickup(ts_events, pickup_q)
    bar_starts, bar_lengths, eff_ts, n_ts_ignored = build_bar_grid(ts_events, last_q, cfg.min_bar_quarters)
    bar = np.searchsorted(bar_starts, onset_q + _EPS, side="right") - 1
    beat = onset_q - bar_starts[bar]

    stats = {
        "notes_read": int(n_read),
        "notes_kept": int(len(pitch)),
        "ticks_per_quarter": int(tpq),
        "n_tracks": len(track_names),
        "n_bars": int(len(bar_starts)),
        "time_signature_events": len(ts_events),
        "time_signatures_ignored": int(n_ts_ignored),
        "tempo_events": int(len(tempo_ticks)),
    }
    return Piece(
        name=name,
        pitch=pitch,
        velocity=np.clip(vel, 0, 127).astype(np.int16),
        program=np.clip(prog, 0, 127).astype(np.int16),
        track=track,
        note_index=nidx,
        start_sec=start_sec,
        end_sec=end_sec,
        onset_q=onset_q,
        duration_q=duration_q,
        bar=bar.astype(np.int64),
        beat=beat,
        track_names=track_names,
        bar_starts_q=bar_starts,
        bar_lengths_q=bar_lengths,
        time_signatures=eff_ts,
        ticks_per_quarter=int(tpq),
        dropped=dropped,
        stats=stats,
        source=path_str,
    )
