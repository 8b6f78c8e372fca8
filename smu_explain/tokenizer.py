"""The compound-word ``Tokenizer``: a :class:`~smu_explain.piece.Piece` to tokens and back.

One token per note. A token is an int64 row over ``tokenizer.attributes``:
``bar, position, pitch, duration`` (+ ``velocity`` and/or ``program`` when the
config enables them). Every attribute has its own vocabulary with ``PAD_ID = 0``,
``MASK_ID = 1``; regular values start at ``N_SPECIAL = 2``. Encoding, decoding, windowing
(:func:`window_slices`) and pitch augmentation (:func:`transpose`, :func:`random_transpose`).
Reading files is :mod:`smu_explain.reading` (``Tokenizer.read``), the settings
:class:`~smu_explain.tokenizer_config.TokenizerConfig`. Imports ``piece``, ``tokenizer_config``
and ``reading``.

Rules (all tested in tests/test_tokenizer*.py, tests/test_augment.py)
---------------------------------------------------------------------

Tokens (:class:`Tokenizer`)
    * Onsets are located on the *token bar grid*: the piece's bars (:mod:`smu_explain.reading`,
      "Bars"), where a bar longer than ``n_positions`` steps is split into sub-bars of
      ``n_positions`` steps (the
      last sub-bar holds the remainder). Within its token bar an onset is quantised to
      the nearest of ``pos_per_quarter`` steps per quarter counted from the bar line
      (round half up); an onset rounded onto the next bar line becomes position 0 of
      the next token bar. (So bars that start off the 16th grid, e.g. after a 1/32
      bar, keep their positions relative to their own bar line.)
    * bar = token bars advanced since the previous note (0 = same bar), capped at
      ``max_bar_skip``; the first note of a sequence counts from token bar 0 of the
      piece, and in :meth:`Tokenizer.encode_windows` the first note of every window
      gets 0 (the window's bar 0 is the bar of its first note).
    * position = onset step within its token bar, clipped to ``n_positions - 1``.
    * duration = ``round(duration_q * dur_per_quarter)`` clipped to
      ``[1, n_durations]`` (so zero-length notes get 1).
    * velocity bin = ``(velocity - 1) * n_velocity_bins // 127`` (velocity clipped to
      1..127); decoding gives the bin's middle velocity.
    * program = GM program 0..127.
    * Round trip: for notes on the grid (onsets on ``1/pos_per_quarter``, durations
      ``k/dur_per_quarter`` with ``1 <= k <= n_durations``, bar gaps within
      ``max_bar_skip``), ``decode_notes(encode(piece), grid=piece)`` reproduces every
      onset, pitch and duration.

Augmentation
    * :func:`transpose` shifts every pitch id (specials untouched) and raises
      ``ValueError`` if any note would leave ``[pitch_min, pitch_max]``.
    * :func:`random_transpose` draws a shift uniformly from the shifts in
      ``TRANSPOSE_RANGE`` = -6..+5 (one octave, 12 values) that keep *every* note in
      range; if no shift other than 0 fits, it returns the tokens unchanged (shift 0).

Speed
    * Tokenisation is vectorised with numpy; no Python loop runs over notes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np

from .piece import Piece
from .reading import read_piece
from .tokenizer_config import TokenizerConfig

__all__ = [
    "window_slices",
    "PAD_ID",
    "MASK_ID",
    "N_SPECIAL",
    "BASE_ATTRIBUTES",
    "TRANSPOSE_RANGE",
    "Tokenizer",
    "allowed_shifts",
    "transpose",
    "random_transpose",
]

PAD_ID = 0
MASK_ID = 1
N_SPECIAL = 2
#: the attributes of every token, in column order (``velocity``, ``program`` follow when enabled)
BASE_ATTRIBUTES = ("bar", "position", "pitch", "duration")

TRANSPOSE_RANGE = tuple(range(-6, 6))  # -6..+5 semitones

_EPS = 1e-9


# --------------------------------------------------------------------------- tokenizer


def window_slices(n_tokens: int, max_len: int, stride: int) -> list[slice]:
    """Slices of at most ``max_len`` rows every ``stride`` rows, covering all ``n_tokens``; the last
    window is the first one that reaches the end (none lies inside the previous one); 0 -> none.
    (Every tokenizer's ``windows``: CP here, Octuple in octuple.py.)"""
    out, start = [], 0
    while start < n_tokens:
        out.append(slice(start, min(start + max_len, n_tokens)))
        if start + max_len >= n_tokens:
            break
        start += stride
    return out


class Tokenizer:
    """Compound-word tokenizer: one int64 row per note over ``self.attributes``."""

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()
        c = self.config
        self.attributes: list[str] = list(BASE_ATTRIBUTES)
        if c.use_velocity:
            self.attributes.append("velocity")
        if c.use_program:
            self.attributes.append("program")
        sizes = {
            "bar": c.max_bar_skip + 1,
            "position": c.n_positions,
            "pitch": c.pitch_max - c.pitch_min + 1,
            "duration": c.n_durations,
            "velocity": c.n_velocity_bins,
            "program": 128,
        }
        self.vocab_sizes: list[int] = [N_SPECIAL + sizes[a] for a in self.attributes]
        self.index = {a: i for i, a in enumerate(self.attributes)}

    def __repr__(self) -> str:
        return f"Tokenizer({self.config!r})"

    # ---- helpers
    def read(self, source, name: str | None = None) -> Piece:
        """:func:`read_piece` with this tokenizer's config."""
        return read_piece(source, name, config=self.config)

    def _extend_bars(self, bar_starts: np.ndarray, bar_lengths: np.ndarray, until_q: float | None = None,
                     n_token_bars: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Continue the last bar's metre so the grid covers ``until_q`` / ``n_token_bars`` token bars."""
        bar_starts = np.asarray(bar_starts, dtype=np.float64)
        bar_lengths = np.asarray(bar_lengths, dtype=np.float64)
        last_start, last_len = float(bar_starts[-1]), float(bar_lengths[-1])
        extra = 0
        if until_q is not None and until_q >= last_start + last_len - _EPS:
            extra = int(math.floor((until_q - last_start) / last_len + _EPS))
        if n_token_bars is not None:
            n_sub = self._n_sub(bar_lengths)
            have = int(n_sub.sum())
            if n_token_bars > have:
                extra = max(extra, -(-(n_token_bars - have) // int(n_sub[-1])))
        if extra > 0:
            bar_starts = np.concatenate([bar_starts, last_start + last_len * np.arange(1, extra + 1)])
            bar_lengths = np.concatenate([bar_lengths, np.full(extra, last_len)])
        return bar_starts, bar_lengths

    def _n_sub(self, bar_lengths: np.ndarray) -> np.ndarray:
        max_len_q = self.config.n_positions / self.config.pos_per_quarter
        return np.maximum(1, np.ceil(np.asarray(bar_lengths) / max_len_q - _EPS).astype(np.int64))

    def _token_grid(self, bar_starts: np.ndarray, bar_lengths: np.ndarray) -> np.ndarray:
        """Token bar starts: musical bars split into sub-bars of at most n_positions steps."""
        c = self.config
        max_len_q = c.n_positions / c.pos_per_quarter
        n_sub = self._n_sub(bar_lengths)
        starts = np.repeat(np.asarray(bar_starts, dtype=np.float64), n_sub)
        first = np.repeat(np.cumsum(n_sub) - n_sub, n_sub)
        return starts + (np.arange(len(starts)) - first) * max_len_q

    def _uniform_grid(self, n_bars: int) -> np.ndarray:
        c = self.config
        return np.arange(max(n_bars, 1), dtype=np.float64) * (c.n_positions / c.pos_per_quarter)

    # ---- encoding
    def encode(self, piece: Piece) -> np.ndarray:
        """Tokens (N, A) int64, row i = note i of the piece (rules in the module docstring)."""
        c = self.config
        n = len(piece)
        out = np.empty((n, len(self.attributes)), dtype=np.int64)
        if n == 0:
            return out
        pitch = np.asarray(piece.pitch, dtype=np.int64)
        if pitch.min() < c.pitch_min or pitch.max() > c.pitch_max:
            raise ValueError(
                f"piece {piece.name!r} has pitches outside {c.pitch_min}..{c.pitch_max}: read it with "
                f"this tokenizer's config (tokenizer.read / read_piece(config=...))")
        ppq = c.pos_per_quarter
        onset = np.asarray(piece.onset_q, dtype=np.float64)
        bs, bl = self._extend_bars(piece.bar_starts_q, piece.bar_lengths_q,
                                   until_q=float(onset.max()) + c.n_positions / ppq)
        grid = self._token_grid(bs, bl)
        # token bar of the raw onset, then the nearest grid step inside that bar (half up);
        # a note rounded onto the next bar line moves to position 0 of the next token bar
        tbar = np.maximum(np.searchsorted(grid, onset + _EPS, side="right") - 1, 0)
        pos = np.floor((onset - grid[tbar]) * ppq + 0.5)
        nxt = grid[np.minimum(tbar + 1, len(grid) - 1)]
        roll = grid[tbar] + pos / ppq >= nxt - _EPS
        roll &= tbar + 1 < len(grid)
        tbar = tbar + roll
        pos = np.where(roll, 0, pos).astype(np.int64)
        np.clip(pos, 0, c.n_positions - 1, out=pos)
        skip = np.diff(tbar, prepend=0)
        np.clip(skip, 0, c.max_bar_skip, out=skip)
        dur = np.floor(np.asarray(piece.duration_q, dtype=np.float64) * c.dur_per_quarter + 0.5)
        dur = np.clip(dur, 1, c.n_durations).astype(np.int64)
        cols = {
            "bar": skip,
            "position": pos,
            "pitch": pitch - c.pitch_min,
            "duration": dur - 1,
        }
        if c.use_velocity:
            v = np.clip(np.asarray(piece.velocity, dtype=np.int64), 1, 127)
            cols["velocity"] = (v - 1) * c.n_velocity_bins // 127
        if c.use_program:
            cols["program"] = np.clip(np.asarray(piece.program, dtype=np.int64), 0, 127)
        for j, a in enumerate(self.attributes):
            out[:, j] = cols[a] + N_SPECIAL
        return out

    def windows(self, n_tokens: int) -> list[slice]:
        """Slices of at most max_len tokens every ``stride`` tokens, covering all tokens.

        The last window is the first one that reaches the end (no window lies inside
        the previous one); ``n_tokens == 0`` gives no window.
        """
        return window_slices(n_tokens, self.config.max_len, self.config.effective_stride)

    def encode_windows(self, piece: Piece, tokens: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(window tokens with bar re-based so its first note has bar 0, note indices)]."""
        if tokens is None:
            tokens = self.encode(piece)
        jb = self.index["bar"]
        out = []
        for sl in self.windows(len(tokens)):
            w = tokens[sl].copy()
            if len(w):
                w[0, jb] = N_SPECIAL
            out.append((w, np.arange(sl.start, sl.stop, dtype=np.int64)))
        return out

    # ---- values
    def decode_values(self, attribute: str, ids) -> np.ndarray:
        """Musical values of token ids for one attribute (specials give -1).

        bar: bar skip; position: grid step; pitch: MIDI pitch; duration: steps of
        1/dur_per_quarter; velocity: middle velocity of the bin; program: GM program.
        """
        c = self.config
        ids = np.asarray(ids, dtype=np.int64)
        v = ids - N_SPECIAL
        if attribute == "pitch":
            v = v + c.pitch_min
        elif attribute == "duration":
            v = v + 1
        elif attribute == "velocity":
            lo = np.ceil(v * 127 / c.n_velocity_bins).astype(np.int64) + 1
            hi = np.ceil((v + 1) * 127 / c.n_velocity_bins).astype(np.int64)
            v = (lo + hi) // 2
        elif attribute not in ("bar", "position", "program"):
            raise KeyError(f"unknown attribute {attribute!r}")
        return np.where(ids < N_SPECIAL, -1, v)

    # ---- decoding
    def decode_notes(self, tokens: np.ndarray, grid: Piece | None = None, qpm: float = 120.0,
                     name: str = "decoded") -> Piece:
        """Tokens back to a Piece (rows whose pitch id is PAD are skipped).

        ``grid``: take the bar grid from this piece (e.g. the source piece) so that
        non-4/4 metres decode exactly; ``None`` = every token bar is n_positions steps.
        Times in seconds use a constant ``qpm``. MASK/PAD in a non-padding row raise
        ValueError.
        """
        c = self.config
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[1] != len(self.attributes):
            raise ValueError(f"tokens must have shape (N, {len(self.attributes)}), got {tokens.shape}")
        tokens = tokens[tokens[:, self.index["pitch"]] != PAD_ID]
        bad = tokens < N_SPECIAL
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"token row {i} has a special id in attribute {self.attributes[j]!r}")
        over = tokens >= np.asarray(self.vocab_sizes)
        if over.any():
            i, j = np.argwhere(over)[0]
            raise ValueError(f"token row {i}: id {tokens[i, j]} out of vocabulary for {self.attributes[j]!r}")
        val = {a: self.decode_values(a, tokens[:, j]) for j, a in enumerate(self.attributes)}
        tbar = np.cumsum(val["bar"])
        n_needed = int(tbar[-1]) + 1 if len(tbar) else 1
        if grid is not None:
            bar_starts, bar_lengths = self._extend_bars(grid.bar_starts_q, grid.bar_lengths_q,
                                                        n_token_bars=n_needed)
            ts = list(grid.time_signatures)
        else:
            bar_starts = self._uniform_grid(n_needed)
            bar_lengths = np.full(len(bar_starts), c.n_positions / c.pos_per_quarter)
            quarters = c.n_positions / c.pos_per_quarter
            ts = [(0.0, int(quarters), 4) if quarters == int(quarters)
                  else (0.0, c.n_positions, 4 * c.pos_per_quarter)]
        tgrid = self._token_grid(bar_starts, bar_lengths)
        n = len(tokens)
        onset_q = tgrid[tbar] + val["position"] / c.pos_per_quarter if n else np.zeros(0)
        duration_q = val["duration"] / c.dur_per_quarter
        velocity = val["velocity"] if c.use_velocity else np.full(n, 80)
        program = val["program"] if c.use_program else np.zeros(n, dtype=np.int64)
        order = np.lexsort((val["pitch"], onset_q))
        spq = 60.0 / qpm
        bar = np.searchsorted(bar_starts, onset_q + _EPS, side="right") - 1 if n else np.zeros(0, np.int64)
        onset_q, duration_q = onset_q[order], duration_q[order]
        bar = bar[order]
        prog_names = [f"program {p}" for p in range(128)]
        program = program[order].astype(np.int16)
        track = program.astype(np.int32) if c.use_program else np.zeros(n, dtype=np.int32)
        return Piece(
            name=name,
            pitch=val["pitch"][order].astype(np.int16),
            velocity=np.asarray(velocity)[order].astype(np.int16),
            program=program,
            track=track,
            note_index=order.astype(np.int64),  # the token row each note comes from
            start_sec=onset_q * spq,
            end_sec=(onset_q + duration_q) * spq,
            onset_q=onset_q,
            duration_q=duration_q,
            bar=bar.astype(np.int64),
            beat=onset_q - bar_starts[bar] if n else np.zeros(0),
            track_names=prog_names if c.use_program else ["decoded"],
            bar_starts_q=np.asarray(bar_starts, dtype=np.float64),
            bar_lengths_q=np.asarray(bar_lengths, dtype=np.float64),
            time_signatures=ts,
            ticks_per_quarter=480,
            dropped={},
            stats={"notes_kept": n},
            source="<decoded>",
        )

    def decode(self, tokens: np.ndarray, grid: Piece | None = None, qpm: float = 120.0):
        """Tokens to a ``pretty_midi.PrettyMIDI`` (one instrument per program, constant tempo).

        Time signatures come from ``grid`` (or n_positions/(4*pos_per_quarter) bars);
        onsets and durations are exact multiples of the grid at resolution 480.
        """
        import pretty_midi

        p = self.decode_notes(tokens, grid=grid, qpm=qpm)
        pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=float(qpm))
        spq = 60.0 / qpm
        for t, num, den in p.time_signatures:
            with contextlib.suppress(ValueError):
                pm.time_signature_changes.append(pretty_midi.TimeSignature(int(num), int(den), float(t) * spq))
        for prog in np.unique(p.program):
            inst = pretty_midi.Instrument(program=int(prog), name=f"program {int(prog)}")
            sel = np.flatnonzero(p.program == prog)
            for i in sel:  # output construction only; not the tokenization hot path
                inst.notes.append(pretty_midi.Note(
                    velocity=int(max(1, p.velocity[i])), pitch=int(p.pitch[i]),
                    start=float(p.start_sec[i]), end=float(p.end_sec[i])))
            pm.instruments.append(inst)
        return pm


# --------------------------------------------------------------------------- augmentation


def transpose(tokens: np.ndarray, semitones: int, tokenizer: Tokenizer) -> np.ndarray:
    """Shift every pitch by ``semitones`` (a copy; PAD/MASK ids untouched).

    Works on (..., A) arrays. Raises ValueError when a note would leave
    ``[pitch_min, pitch_max]`` (use :func:`random_transpose` for a safe shift).
    """
    tokens = np.asarray(tokens)
    out = tokens.copy()
    if semitones == 0:
        return out
    j = tokenizer.index["pitch"]
    p = out[..., j]
    real = p >= N_SPECIAL
    new = p + int(semitones)
    lo, hi = N_SPECIAL, tokenizer.vocab_sizes[j] - 1
    if (real & ((new < lo) | (new > hi))).any():
        c = tokenizer.config
        raise ValueError(f"transposing by {semitones} moves notes outside {c.pitch_min}..{c.pitch_max}")
    out[..., j] = np.where(real, new, p)
    return out


def allowed_shifts(tokens: np.ndarray, tokenizer: Tokenizer, shifts: Sequence[int] = TRANSPOSE_RANGE) -> list[int]:
    """The shifts from ``shifts`` that keep every (non-special) pitch in range."""
    j = tokenizer.index["pitch"]
    p = np.asarray(tokens)[..., j]
    p = p[p >= N_SPECIAL]
    if p.size == 0:
        return list(shifts)
    lo_room = int(p.min()) - N_SPECIAL
    hi_room = tokenizer.vocab_sizes[j] - 1 - int(p.max())
    return [s for s in shifts if -lo_room <= s <= hi_room]


def random_transpose(tokens: np.ndarray, rng: np.random.Generator, tokenizer: Tokenizer,
                     return_shift: bool = False):
    """Transpose by a shift drawn uniformly from the in-range shifts of -6..+5.

    Only shifts that keep every note in range are candidates; if none but 0 fits,
    the tokens come back unchanged (shift 0). ``rng``: numpy Generator.
    """
    cands = allowed_shifts(tokens, tokenizer)
    shift = int(cands[int(rng.integers(len(cands)))]) if cands else 0
    out = transpose(tokens, shift, tokenizer)
    return (out, shift) if return_shift else out
