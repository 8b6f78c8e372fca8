"""Octuple tokens, as Adversarial-MidiBERT (and PianoBART, MusicBERT) read music.

One token per note, eight attributes in the column order of Adversarial-MidiBERT's
``MidiBert.classes`` (github RS2002/Adversarial-MidiBERT, ``model.py``)::

    bar, position, instrument, pitch, duration, velocity, timesig, tempo

The vocabulary is PianoBART's ``Data/Octuple.pkl`` (github RS2002/PianoBart, written by
``Data/data_generation/make_dict.py``), converted to ``smu_explain/vocab/octuple.json``
by ``scripts/octuple_vocab.py`` without unpickling anything but plain containers. The
binning below is the one of PianoBART's ``Data/data_generation/convert.py``
(``MIDI_to_encoding``, itself MusicBERT's preprocessing); the value tables (how many
bars, positions, durations, which time signatures, which tempi) are read from the JSON
token strings, so the JSON and the code cannot drift apart silently.

Ids (per attribute): the regular values first (id 0 = ``Bar 0``, ``Pitch 0``, ...), then
six specials in this order: ``PAD = n``, ``MASK = n+1``, ``SOS``, ``EOS``, ``CLS``, ``SEP``
(``n`` = number of regular values of that attribute). So, unlike the CP tokenizer
(``PAD_ID = 0``, ``MASK_ID = 1``), PAD and MASK differ per attribute: use
``tokenizer.pad_ids`` / ``tokenizer.mask_ids`` (arrays of 8). Vocabulary sizes
(``tokenizer.vocab_sizes``, specials included): bar 262, position 134, instrument 135,
pitch 262, duration 134, velocity 38, timesig 260, tempo 55.

Rules (tests/test_octuple.py)
-----------------------------
* Time grid: 16 positions per quarter (``Position i/64``: 64 per whole note). A tick
  ``t`` is at position ``round(t * 16 / ticks_per_quarter)``, Python's round (half to
  even), computed in integers.
* Time signatures: every event is reduced as the authors do (denominator > 64: halve
  both while both are even; numerator > 2 x denominator: divide the numerator by its
  smallest factor until it fits) and must then be one of the vocabulary's ``j/2^i``
  (``1 <= j <= 2^(i+1)``, ``2^i <= 64``), else :class:`~smu_explain.errors.SMUInputError`.
  Before the first event: 4/4. At one position the last event (file order) wins.
* Bars: a bar is ``numerator * 64 // denominator`` positions of the (reduced) time
  signature in effect at its first position; a change inside a bar takes effect at the
  next bar line. So 5/8 bars are 40 positions, 7/8 bars 56; 9/4 (reduced to 3/4) gets
  48-position bars, as the authors' data has them. ``bar`` = 0-based bar index; bars above 255 continue in the
  authors' segments of 255 bars (bar 256 -> id 0, 510 -> 254, 511 -> 0, ...), which
  :meth:`OctupleTokenizer.decode_notes` undoes when the bar id drops.
* position = onset position - first position of its bar (0..127).
* instrument = GM program 0..127 (128 = percussion: never produced, the project's
  reader drops drum tracks). pitch = MIDI pitch 0..127.
* duration = position of the end minus position of the onset, binned: 0..15 exactly,
  then 7 octaves of 16 bins of width 2, 4, ..., 128 positions; longer notes get the
  last bin (127). Decoding gives the bin's first value (``Duration k`` strings).
* velocity = ``velocity // 4``; decodes to ``4 * id + 2``.
* timesig = the reduced time signature in effect at the note's onset position (the
  event's, even inside a bar that still runs in the old metre).
* tempo = ``round(12 * log2(clip(qpm, 16, 256) / 16))`` of the tempo in effect at the
  onset position (120 qpm before the first tempo event); decodes to ``16 * 2^(id/12)``.

Events (tempo and time signatures) come from the MIDI file when the piece was read with
:meth:`OctupleTokenizer.read` (kept, in ticks, under ``piece.stats["octuple_events"]``).
A :class:`~smu_explain.piece.Piece` read otherwise has only the project's effective
bar-line metres and seconds per note: then time signatures come from
``piece.time_signatures`` and the tempo at a note is estimated from the seconds between
its onset and the next distinct onset (exact unless a tempo change lies between them).

Checked against the authors' own encoder: PianoBART's ``convert.py`` (``MIDI_to_encoding``
and the 256-bar segmentation of ``F``), run outside this project with miditoolkit 1.0.1,
gives the same rows as :meth:`encode` on every file of sample_midi and on files with
5/8, 7/8, 3/4, 6/8, 9/4, 12/8, 3/16, metre changes inside bars, tempo events outside
16..256 qpm, two tempo events at one tick and bars up to 798 (tests/test_octuple.py keeps one
of those outputs as a literal).

Deviations from the authors' pipeline (one row per note of the piece, always): the
project's reader drops drum tracks (the authors encode them as instrument 128, pitch
128 + p); the authors drop notes after 2^16 positions (``trunc_pos``) and split pieces
longer than 256 bars into separate sequences ending in EOS; here every note keeps its
row, in the piece's order (the authors sort the rows as tuples), and
:meth:`encode_windows` cuts windows of ``max_len`` (1024, the authors' sequence length)
rows. A gap of more than 255 empty bars gets the segment of its bar here; the authors'
loop opens only one new segment per note (its bar id would leave the vocabulary).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SMUInputError
from .piece import Piece
from .reading import read_piece
from .tokenizer import window_slices
from .tokenizer_config import TokenizerConfig

__all__ = [
    "ATTRIBUTES",
    "AUTHOR_ATTRIBUTES",
    "SPECIALS",
    "VOCAB_PATH",
    "OctupleTokenizer",
    "load_vocab",
]

# column order = Adversarial-MidiBERT's MidiBert.classes; lower-case names as in the app
AUTHOR_ATTRIBUTES = ("Bar", "Position", "Instrument", "Pitch", "Duration", "Velocity", "TimeSig", "Tempo")
ATTRIBUTES = tuple(a.lower() for a in AUTHOR_ATTRIBUTES)
SPECIALS = ("PAD", "MASK", "SOS", "EOS", "CLS", "SEP")
VOCAB_PATH = Path(__file__).resolve().parent / "vocab" / "octuple.json"
VOCAB_FORMAT = "smu_explain.octuple_vocab"

POS_PER_QUARTER = 16  # checked against the JSON's "Position i/64" strings
DEFAULT_QPM = 120.0
DEFAULT_TS = (4, 4)
BAR_SEGMENT = 255  # the authors' max_bar: bars above 255 start a new segment
MAX_ORIG_VALUE = 127  # pitch, program, velocity


def load_vocab(path=None) -> dict:
    """The Octuple vocabulary JSON (``scripts/octuple_vocab.py`` writes it), checked."""
    p = Path(path) if path is not None else VOCAB_PATH
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise SMUInputError(p, f"unreadable Octuple vocabulary: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != VOCAB_FORMAT:
        raise SMUInputError(p, f"not an Octuple vocabulary (format is not {VOCAB_FORMAT!r})")
    tokens = doc.get("tokens")
    if doc.get("attributes") != list(AUTHOR_ATTRIBUTES) or not isinstance(tokens, dict):
        raise SMUInputError(p, f"attributes must be {list(AUTHOR_ATTRIBUTES)}")
    for a in AUTHOR_ATTRIBUTES:
        t = tokens.get(a)
        if not isinstance(t, list) or not all(isinstance(s, str) for s in t):
            raise SMUInputError(p, f"{a}: token list missing")
        if t[len(t) - len(SPECIALS):] != [f"{a} <{s}>" for s in SPECIALS]:
            raise SMUInputError(p, f"{a}: the last tokens are not the specials {SPECIALS}")
        if len(set(t)) != len(t):
            raise SMUInputError(p, f"{a}: duplicate token strings")
    return doc


def _numbers(strings: list[str], attribute: str, pattern: str, path) -> list[tuple]:
    rx = re.compile(rf"^{attribute} {pattern}$")
    out = []
    for s in strings:
        m = rx.match(s)
        if m is None:
            raise SMUInputError(path, f"unexpected {attribute} token {s!r}")
        out.append(m.groups())
    return out


def _round_half_even_div(num: np.ndarray, den: int) -> np.ndarray:
    """``round(num / den)`` with Python's rounding (half to even), exactly, in integers."""
    q, r = np.divmod(num, den)
    up = (2 * r > den) | ((2 * r == den) & (q % 2 == 1))
    return q + up


def reduce_time_signature(numerator: int, denominator: int, max_den: int = 64, max_bar_wholes: int = 2) -> tuple[int, int]:
    """The authors' reduction of a time signature to the vocabulary's range (module docstring).
    Both parts must be >= 1 (``ValueError``: a MIDI denominator exponent of 8 or more reads as 0)."""
    n, d = int(numerator), int(denominator)
    if n < 1 or d < 1:
        raise ValueError(f"time signature {n}/{d}: both parts must be at least 1")
    while d > max_den and d % 2 == 0 and n % 2 == 0:
        d //= 2
        n //= 2
    while n > max_bar_wholes * d:
        n //= next(i for i in range(2, n + 1) if n % i == 0)
    return n, d


class OctupleTokenizer:
    """Octuple tokens over :data:`ATTRIBUTES` (rules in the module docstring).

    Offers the CP :class:`~smu_explain.tokenizer.Tokenizer`'s surface where it applies:
    ``attributes``, ``vocab_sizes``, ``index``, ``read``, ``encode``, ``windows``,
    ``encode_windows``, ``decode_values``, ``decode_notes``; ``decode`` gives the notes
    table (pandas), ``pad_ids`` / ``mask_ids`` replace CP's constant ``PAD_ID`` / ``MASK_ID``,
    ``to_dict`` / ``from_dict`` describe it (CP: ``TokenizerConfig.to_dict``).
    """

    name = "octuple"

    def __init__(self, vocab_path=None, max_len: int = 1024, stride: int | None = None):
        if not isinstance(max_len, int) or max_len < 1 or (stride is not None and (not isinstance(stride, int) or stride < 1)):
            raise ValueError(f"max_len and stride must be positive ints, got {max_len!r}, {stride!r}")
        self.vocab_path = Path(vocab_path) if vocab_path is not None else VOCAB_PATH
        self.vocab = load_vocab(self.vocab_path)
        self.max_len = max_len
        self.stride = stride
        self.attributes: list[str] = list(ATTRIBUTES)
        self.index = {a: i for i, a in enumerate(self.attributes)}
        tok = self.vocab["tokens"]
        self.tokens: dict[str, list[str]] = {a: tok[A] for a, A in zip(ATTRIBUTES, AUTHOR_ATTRIBUTES, strict=False)}
        self.vocab_sizes: list[int] = [len(self.tokens[a]) for a in self.attributes]
        self.n_values: list[int] = [n - len(SPECIALS) for n in self.vocab_sizes]
        base = np.asarray(self.n_values, dtype=np.int64)
        self.special_ids: dict[str, np.ndarray] = {s: base + k for k, s in enumerate(SPECIALS)}
        self.pad_ids = self.special_ids["PAD"]
        self.mask_ids = self.special_ids["MASK"]
        self._parse_tables()

    def __repr__(self) -> str:
        return f"OctupleTokenizer(vocab={str(self.vocab_path)!r}, max_len={self.max_len}, stride={self.stride})"

    # ---- the value tables, from the JSON token strings
    def _regular(self, a: str) -> list[str]:
        return self.tokens[a][: self.n_values[self.index[a]]]

    def _parse_tables(self) -> None:
        p = self.vocab_path
        bars = [int(g[0]) for g in _numbers(self._regular("bar"), "Bar", r"(\d+)", p)]
        pos = _numbers(self._regular("position"), "Position", r"(\d+)/(\d+)", p)
        if bars != list(range(len(bars))) or [int(g[0]) for g in pos] != list(range(len(pos))):
            raise SMUInputError(p, "Bar / Position tokens are not 0, 1, 2, ...")
        per_whole = {int(g[1]) for g in pos}
        if per_whole != {4 * POS_PER_QUARTER}:
            raise SMUInputError(p, f"positions per whole note {sorted(per_whole)}, this code bins {4 * POS_PER_QUARTER}")
        self.n_bars, self.n_positions = len(bars), len(pos)
        inst = self._regular("instrument")
        if inst[:128] != [f"Instrument {i}" for i in range(128)]:
            raise SMUInputError(p, "Instrument tokens are not 'Instrument 0..127'")
        pitch = self._regular("pitch")
        if pitch[:128] != [f"Pitch {i}" for i in range(128)]:
            raise SMUInputError(p, "Pitch tokens are not 'Pitch 0..127'")
        self.percussion_instrument = inst.index("Instrument percussion") if "Instrument percussion" in inst else None
        durs = [int(g[0]) for g in _numbers(self._regular("duration"), "Duration", r"(\d+)", p)]
        if durs != list(range(len(durs))) or len(durs) % POS_PER_QUARTER:
            raise SMUInputError(p, "Duration tokens are not 0..16k-1")
        self.n_durations = len(durs)
        # duration bins: 16 per octave, widths 1, 2, 4, ... positions
        octave = np.arange(self.n_durations) // POS_PER_QUARTER
        step = np.arange(self.n_durations) % POS_PER_QUARTER
        self.duration_start = POS_PER_QUARTER * (2 ** octave - 1) + step * 2 ** octave  # positions
        self.duration_width = 2 ** octave
        vel = np.asarray([int(g[0]) for g in _numbers(self._regular("velocity"), "Velocity", r"(\d+)", p)])
        self.velocity_quant = int(vel[1] - vel[0]) if len(vel) > 1 else 128
        if not np.array_equal(vel, np.arange(len(vel)) * self.velocity_quant + self.velocity_quant // 2):
            raise SMUInputError(p, "Velocity tokens are not evenly binned")
        self.velocity_values = vel
        ts = [(int(n), int(d)) for n, d in _numbers(self._regular("timesig"), "TimeSig", r"(\d+)/(\d+)", p)]
        self.ts_list = ts
        self.ts_index = {t: i for i, t in enumerate(ts)}
        self.max_ts_den = max(d for _, d in ts)
        self.max_bar_wholes = max(n // d for n, d in ts if n % d == 0)
        tempo = np.asarray([float(g[0]) for g in _numbers(self._regular("tempo"), "Tempo", r"([0-9.eE+-]+)", p)])
        self.tempo_values = tempo
        self.min_tempo, self.max_tempo = float(tempo[0]), float(tempo[-1])
        self.tempo_quant = round((len(tempo) - 1) / math.log2(self.max_tempo / self.min_tempo))
        expect = 2.0 ** (np.arange(len(tempo)) / self.tempo_quant) * self.min_tempo
        if not np.allclose(tempo, expect, rtol=1e-12):
            raise SMUInputError(p, "Tempo tokens are not 2^(k/q) * min_tempo")

    # ---- single-value binning (the authors' rules)
    def tempo_id(self, qpm: float) -> int:
        x = min(max(float(qpm), self.min_tempo), self.max_tempo) / self.min_tempo
        return int(round(math.log2(x) * self.tempo_quant))

    def timesig_id(self, numerator: int, denominator: int, path="<piece>") -> int:
        try:
            t = reduce_time_signature(numerator, denominator, self.max_ts_den, self.max_bar_wholes)
        except ValueError:
            t = None
        if t not in self.ts_index:
            raise SMUInputError(path, f"unsupported time signature {numerator}/{denominator} "
                                      + (f"(reduced {t[0]}/{t[1]}: not in the Octuple vocabulary)" if t else
                                         "(not a time signature: a part is 0)"))
        return self.ts_index[t]

    def measure_positions(self, ts_id: int) -> int:
        n, d = self.ts_list[ts_id]
        return n * 4 * POS_PER_QUARTER // d

    def duration_id(self, positions) -> np.ndarray:
        """Duration bin of a length in positions (>= 0); past the last bin: the last bin."""
        d = np.asarray(positions, dtype=np.int64)
        k = np.searchsorted(self.duration_start, d, side="right") - 1
        return np.clip(k, 0, self.n_durations - 1)

    # ---- reading
    def read(self, source, name: str | None = None) -> Piece:
        """Read a file with the project's reader (all pitches 0..127 kept, every metre kept)
        and keep the MIDI file's own tempo and time-signature events for :meth:`encode`."""
        cfg = TokenizerConfig(pitch_min=0, pitch_max=127, min_bar_quarters=0.0)
        piece = read_piece(source, name, config=cfg)
        data = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        else:
            try:
                with open(source, "rb") as f:
                    if f.read(4) == b"MThd":  # a score format has no MIDI events of its own
                        f.seek(0)
                        data = f.read()
            except OSError:
                data = None
        if data and data[:4] == b"MThd":
            try:
                import symusic

                score = symusic.Score.from_midi(data)
                tp = score.tempos.numpy()
                ts = score.time_signatures.numpy()
                piece.stats["octuple_events"] = {
                    "ticks_per_quarter": int(score.ticks_per_quarter),
                    "tempos": [[int(t), int(m)] for t, m in zip(tp["time"], tp["mspq"], strict=False)],
                    "time_signatures": [[int(t), int(n), int(d)] for t, n, d in
                                        zip(ts["time"], ts["numerator"], ts["denominator"], strict=False)],
                }
            except Exception as e:  # noqa: BLE001 - read_piece already accepted the file
                raise SMUInputError(piece.source or name, f"unreadable tempo/metre events: {e}") from e
        return piece

    # ---- events of a piece
    def _events(self, piece: Piece, path: str):
        """(tpq, tempo events [(tick, qpm)] or None, time-signature events [(tick, num, den)])."""
        ev = piece.stats.get("octuple_events") if isinstance(piece.stats, dict) else None
        tpq = int(piece.ticks_per_quarter)
        if ev is not None and int(ev.get("ticks_per_quarter", -1)) == tpq:
            tempos = [(int(t), 60e6 / int(m)) for t, m in ev["tempos"] if int(m) > 0]
            ts = [(int(t), int(n), int(d)) for t, n, d in ev["time_signatures"]]
            return tpq, tempos, ts
        ts = [(int(round(q * tpq)), int(n), int(d)) for q, n, d in piece.time_signatures]
        return tpq, None, ts

    @staticmethod
    def _estimated_qpm(piece: Piece) -> np.ndarray:
        """Per-note tempo from the piece's seconds: slope to the next distinct onset (the
        previous one for the last onset; the note's own length, else 120, for one onset)."""
        q = np.asarray(piece.onset_q, dtype=np.float64)
        s = np.asarray(piece.start_sec, dtype=np.float64)
        uq, first = np.unique(q, return_index=True)
        us = s[first]
        if len(uq) >= 2:
            slope = np.diff(uq) / np.maximum(np.diff(us), 1e-12) * 60.0
            slope = np.concatenate([slope, slope[-1:]])
            return slope[np.searchsorted(uq, q)]
        dq = np.asarray(piece.duration_q, dtype=np.float64)
        ds = np.asarray(piece.end_sec, dtype=np.float64) - s
        ok = (dq > 0) & (ds > 0)
        return np.full(len(q), float(np.median(dq[ok] / ds[ok] * 60.0)) if ok.any() else DEFAULT_QPM)

    # ---- encoding
    def encode(self, piece: Piece) -> np.ndarray:
        """Tokens (N, 8) int64, row i = note i of the piece (rules in the module docstring).

        Raises :class:`SMUInputError` (naming the piece and the reason) for a piece the
        Octuple vocabulary cannot hold.
        """
        path = piece.source or piece.name
        n = len(piece)
        out = np.empty((n, len(self.attributes)), dtype=np.int64)
        if n == 0:
            return out
        pitch = np.asarray(piece.pitch, dtype=np.int64)
        vel = np.asarray(piece.velocity, dtype=np.int64)
        prog = np.asarray(piece.program, dtype=np.int64)
        for label, v in (("pitch", pitch), ("velocity", vel), ("program", prog)):
            if v.min() < 0 or v.max() > MAX_ORIG_VALUE:
                raise SMUInputError(path, f"{label} outside 0..{MAX_ORIG_VALUE} (min {v.min()}, max {v.max()})")
        tpq, tempos, ts_events = self._events(piece, path)
        if tpq < 1:
            raise SMUInputError(path, f"implausible resolution {tpq} ticks per quarter")
        onset = np.asarray(piece.onset_q, dtype=np.float64)
        dur_q = np.asarray(piece.duration_q, dtype=np.float64)
        if not (np.isfinite(onset).all() and np.isfinite(dur_q).all()) or onset.min() < 0:
            raise SMUInputError(path, "negative or non-finite note times")
        t_on = np.rint(onset * tpq).astype(np.int64)
        t_off = np.maximum(np.rint((onset + np.maximum(dur_q, 0)) * tpq).astype(np.int64), t_on)
        p_on = _round_half_even_div(t_on * POS_PER_QUARTER, tpq)
        p_off = _round_half_even_div(t_off * POS_PER_QUARTER, tpq)

        # time signatures: the last event at or before a position (stable by time = file order)
        ts_events = sorted(ts_events, key=lambda e: e[0])
        ts_pos = _round_half_even_div(np.asarray([e[0] for e in ts_events], dtype=np.int64) * POS_PER_QUARTER, tpq)
        ts_ids = np.asarray([self.timesig_id(nm, dn, path) for _, nm, dn in ts_events], dtype=np.int64)
        default_ts = self.ts_index[DEFAULT_TS]

        def ts_at(p: np.ndarray) -> np.ndarray:
            k = np.searchsorted(ts_pos, p, side="right") - 1
            return np.where(k >= 0, ts_ids[np.maximum(k, 0)] if len(ts_ids) else default_ts, default_ts)

        # bars: constant-length runs from each bar line where a new metre takes over
        seg_start, seg_len, seg_bar = [0], [self.measure_positions(int(ts_at(np.array([0]))[0]))], [0]
        for e in np.unique(ts_pos[ts_pos > 0]):
            s, m = seg_start[-1], seg_len[-1]
            if e <= s:
                continue
            line = s + -(-(int(e) - s) // m) * m
            new_len = self.measure_positions(int(ts_at(np.array([line]))[0]))
            if line == s:
                continue
            seg_bar.append(seg_bar[-1] + (line - s) // m)
            seg_start.append(line)
            seg_len.append(new_len)
        starts = np.asarray(seg_start, dtype=np.int64)
        lens = np.asarray(seg_len, dtype=np.int64)
        bars0 = np.asarray(seg_bar, dtype=np.int64)
        k = np.searchsorted(starts, p_on, side="right") - 1
        rel = p_on - starts[k]
        bar = bars0[k] + rel // lens[k]
        position = rel % lens[k]

        # tempo at the onset position
        if tempos is None:
            tempo_ids = np.asarray([self.tempo_id(x) for x in self._estimated_qpm(piece)], dtype=np.int64)
        else:
            tempos = sorted(tempos, key=lambda e: e[0])
            tp_pos = _round_half_even_div(np.asarray([t for t, _ in tempos], dtype=np.int64) * POS_PER_QUARTER, tpq)
            tp_ids = np.asarray([self.tempo_id(q) for _, q in tempos], dtype=np.int64)
            kk = np.searchsorted(tp_pos, p_on, side="right") - 1
            default_tp = self.tempo_id(DEFAULT_QPM)
            tempo_ids = np.where(kk >= 0, tp_ids[np.maximum(kk, 0)] if len(tp_ids) else default_tp, default_tp)

        seg = np.where(bar <= BAR_SEGMENT, 0, (bar - 1) // BAR_SEGMENT)
        bar_id = np.where(seg == 0, bar, bar - (BAR_SEGMENT * seg + 1))
        cols = {
            "bar": bar_id,
            "position": position,
            "instrument": prog,
            "pitch": pitch,
            "duration": self.duration_id(p_off - p_on),
            "velocity": vel // self.velocity_quant,
            "timesig": ts_at(p_on),
            "tempo": tempo_ids,
        }
        for j, a in enumerate(self.attributes):
            out[:, j] = cols[a]
        over = out >= np.asarray(self.n_values)
        if over.any():  # cannot happen with the authors' vocabulary; a guard for other JSONs
            i, j = np.argwhere(over)[0]
            raise SMUInputError(path, f"note {i}: {self.attributes[j]} value {out[i, j]} outside the vocabulary")
        return out

    def windows(self, n_tokens: int) -> list[slice]:
        """Slices of at most ``max_len`` rows every ``stride`` (default ``max_len``) rows,
        covering all rows; the last window is the first that reaches the end."""
        return window_slices(n_tokens, self.max_len, self.max_len if self.stride is None else self.stride)

    def encode_windows(self, piece: Piece, tokens: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(window rows, note indices)]. Bars are not re-based: the authors' sequences carry
        the bar index within the piece (segment), as here."""
        if tokens is None:
            tokens = self.encode(piece)
        return [(tokens[sl].copy(), np.arange(sl.start, sl.stop, dtype=np.int64)) for sl in self.windows(len(tokens))]

    # ---- decoding
    def decode_values(self, attribute: str, ids) -> np.ndarray:
        """Musical values of token ids (specials give -1): bar and position index,
        program, pitch, duration in positions (1/16 quarter; the bin's first value),
        velocity (the bin's middle), time signature as ``numerator * 1000 + denominator``
        (:meth:`decode_timesig` gives tuples), tempo in qpm (float)."""
        if attribute not in self.index:
            raise KeyError(f"unknown attribute {attribute!r}")
        j = self.index[attribute]
        ids = np.asarray(ids, dtype=np.int64)
        special = (ids < 0) | (ids >= self.n_values[j])
        safe = np.where(special, 0, ids)
        if attribute == "duration":
            v = self.duration_start[safe]
        elif attribute == "velocity":
            v = self.velocity_values[safe]
        elif attribute == "tempo":
            return np.where(special, -1.0, self.tempo_values[safe])
        elif attribute == "timesig":
            t = np.asarray(self.ts_list, dtype=np.int64)[safe]
            v = t[..., 0] * 1000 + t[..., 1]
        else:
            v = safe
        return np.where(special, -1, v)

    def decode_timesig(self, ids) -> list[tuple[int, int]]:
        return [self.ts_list[int(i)] for i in np.asarray(ids).ravel()]

    def _rows(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[1] != len(self.attributes):
            raise ValueError(f"tokens must have shape (N, {len(self.attributes)}), got {tokens.shape}")
        if (tokens < 0).any() or (tokens >= np.asarray(self.vocab_sizes)).any():
            i, j = np.argwhere((tokens < 0) | (tokens >= np.asarray(self.vocab_sizes)))[0]
            raise ValueError(f"token row {i}: id {tokens[i, j]} out of vocabulary for {self.attributes[j]!r}")
        tokens = tokens[tokens[:, self.index["bar"]] < self.n_values[self.index["bar"]]]  # PAD/EOS/... rows
        bad = tokens >= np.asarray(self.n_values)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"token row {i} has a special id in attribute {self.attributes[j]!r}")
        perc = self.percussion_instrument
        if perc is not None and (tokens[:, self.index["instrument"]] == perc).any():
            raise ValueError("percussion tokens cannot be decoded (the project excludes drum tracks)")
        return tokens

    def decode_notes(self, tokens: np.ndarray, name: str = "decoded") -> Piece:
        """Tokens back to a :class:`Piece`, rows in order (rows whose bar is a special are
        skipped; MASK or another special in a note row raises ValueError).

        Bar lengths: the authors' rule, the most frequent time signature among the bar's
        notes (ties: the earliest row's), an empty bar keeps the previous bar's (4/4 for
        bar 0). Seconds: the tempo at each onset position is the rounded mean of its
        notes' tempo ids, carried forward (120 qpm before the first note).
        """
        t = self._rows(tokens)
        ix = self.index
        n = len(t)
        bar_id = t[:, ix["bar"]]
        seg = np.concatenate([[0], np.cumsum(np.diff(bar_id) < 0)]) if n else np.zeros(0, dtype=np.int64)
        bar = np.where(seg == 0, bar_id, bar_id + BAR_SEGMENT * seg + 1)
        n_bars = int(bar.max()) + 1 if n else 1
        ts_of_bar = np.full(n_bars, -1, dtype=np.int64)
        if n:
            pairs = np.stack([bar, t[:, ix["timesig"]]], axis=1)
            uniq, first, counts = np.unique(pairs, axis=0, return_index=True, return_counts=True)
            order = np.lexsort((first, -counts, uniq[:, 0]))  # per bar: most notes, then earliest row
            best = uniq[order]
            keep = np.concatenate([[True], best[1:, 0] != best[:-1, 0]])
            ts_of_bar[best[keep, 0]] = best[keep, 1]
        default_ts = self.ts_index[DEFAULT_TS]
        for b in range(n_bars):  # carry forward into empty bars (a loop over bars, not notes)
            if ts_of_bar[b] < 0:
                ts_of_bar[b] = default_ts if b == 0 else ts_of_bar[b - 1]
        bar_len = np.asarray([self.measure_positions(int(i)) for i in ts_of_bar], dtype=np.int64)
        bar_start = np.concatenate([[0], np.cumsum(bar_len)[:-1]])
        p_on = bar_start[bar] + t[:, ix["position"]]
        d_pos = self.duration_start[t[:, ix["duration"]]]
        # tempo map at onset positions
        default_tp = self.tempo_id(DEFAULT_QPM)
        if n:
            up, inv = np.unique(p_on, return_inverse=True)
            mean_id = np.bincount(inv, weights=t[:, ix["tempo"]]) / np.bincount(inv)
            tp_id = np.asarray([round(x) for x in mean_id], dtype=np.int64)  # Python round, as the authors
            if up[0] > 0:
                up, tp_id = np.concatenate([[0], up]), np.concatenate([[default_tp], tp_id])
        else:
            up, tp_id = np.zeros(1, dtype=np.int64), np.asarray([default_tp])
        sec_per_pos = 60.0 / (self.tempo_values[tp_id] * POS_PER_QUARTER)
        seg_sec = np.concatenate([[0.0], np.cumsum(np.diff(up) * sec_per_pos[:-1])])

        def sec(p):
            kk = np.clip(np.searchsorted(up, p, side="right") - 1, 0, len(up) - 1)
            return seg_sec[kk] + (p - up[kk]) * sec_per_pos[kk]

        prog = t[:, ix["instrument"]]
        programs = np.unique(prog)
        track = np.searchsorted(programs, prog).astype(np.int32)
        note_index = np.zeros(n, dtype=np.int64)
        for k in range(len(programs)):  # per track (not per note)
            sel = track == k
            note_index[sel] = np.arange(int(sel.sum()))
        tpq = 480
        ts_changes = []
        for b in range(n_bars):
            if b == 0 or ts_of_bar[b] != ts_of_bar[b - 1]:
                nm, dn = self.ts_list[int(ts_of_bar[b])]
                ts_changes.append((float(bar_start[b] / POS_PER_QUARTER), nm, dn))
        ticks_per_pos = tpq // POS_PER_QUARTER
        events = {
            "ticks_per_quarter": tpq,
            "tempos": [[int(p * ticks_per_pos), int(round(60e6 / self.tempo_values[i]))] for p, i in zip(up, tp_id, strict=False)],
            "time_signatures": [[int(round(q * tpq)), nm, dn] for q, nm, dn in ts_changes],
        }
        return Piece(
            name=name,
            pitch=t[:, ix["pitch"]].astype(np.int16),
            velocity=self.velocity_values[t[:, ix["velocity"]]].astype(np.int16),
            program=prog.astype(np.int16),
            track=track,
            note_index=note_index,
            start_sec=sec(p_on),
            end_sec=sec(p_on + d_pos),
            onset_q=p_on / POS_PER_QUARTER,
            duration_q=d_pos / POS_PER_QUARTER,
            bar=bar.astype(np.int64),
            beat=t[:, ix["position"]] / POS_PER_QUARTER,
            track_names=[f"Instrument {int(p)}" for p in programs],
            bar_starts_q=bar_start / POS_PER_QUARTER,
            bar_lengths_q=bar_len / POS_PER_QUARTER,
            time_signatures=ts_changes,
            ticks_per_quarter=tpq,
            stats={"octuple_events": events, "decoded_from": "octuple tokens"},
            source=name,
        )

    def decode(self, tokens: np.ndarray, name: str = "decoded"):
        """The notes table (pandas, ``piece.NOTE_COLUMNS``) of decoded tokens, plus
        ``time_signature`` ("5/8") and ``qpm`` (the note's tempo token) columns."""
        piece = self.decode_notes(tokens, name=name)
        t = self._rows(tokens)
        df = piece.notes_table()
        df["time_signature"] = [f"{nm}/{dn}" for nm, dn in self.decode_timesig(t[:, self.index["timesig"]])]
        df["qpm"] = self.tempo_values[t[:, self.index["tempo"]]]
        return df

    def vocab_hash(self) -> str:
        """sha256 (16 hex chars) of the token lists: the vocabulary's identity, whatever the file's layout."""
        payload = json.dumps([self.tokens[a] for a in self.attributes], separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """What identifies this tokenizer (for a checkpoint's tokenizer.json): kind, window
        settings, attributes, sizes and the vocabulary's hash."""
        return {
            "kind": self.name,
            "max_len": self.max_len,
            "stride": self.stride,
            "attributes": list(self.attributes),
            "vocab_sizes": list(self.vocab_sizes),
            "vocab_hash": self.vocab_hash(),
        }

    @classmethod
    def from_dict(cls, d: dict, vocab_path=None) -> OctupleTokenizer:
        """The tokenizer :meth:`to_dict` described; ValueError when the vocabulary differs."""
        if not isinstance(d, dict) or d.get("kind") != cls.name:
            raise ValueError(f"not an Octuple tokenizer description: kind {d.get('kind') if isinstance(d, dict) else d!r}")
        unknown = set(d) - {"kind", "max_len", "stride", "attributes", "vocab_sizes", "vocab_hash"}
        if unknown:
            raise ValueError(f"unknown Octuple tokenizer keys: {sorted(unknown)}")
        tk = cls(vocab_path, max_len=d.get("max_len", 1024), stride=d.get("stride"))
        for key in ("attributes", "vocab_sizes", "vocab_hash"):
            if key in d and d[key] != tk.to_dict()[key]:
                raise ValueError(f"Octuple tokenizer {key} {d[key]!r} differ from this vocabulary's {tk.to_dict()[key]!r}")
        return tk


# ----------------------------------------------------------------------------- this project's ids

def _relabel(tokens: np.ndarray, tables: list[np.ndarray]) -> np.ndarray:
    """Each attribute column j of ``tokens`` mapped through ``tables[j]`` (one id table per attribute)."""
    t = np.asarray(tokens, dtype=np.int64)
    out = np.empty_like(t)
    for j in range(t.shape[-1]):
        out[..., j] = tables[j][t[..., j]]
    return out


@dataclass(frozen=True)
class OctupleIdsConfig:
    """The settings the rest of the library reads from ``tokenizer.config`` (windows, reading,
    the units of decoded positions and durations), for :class:`OctupleIds`."""

    max_len: int = 1024
    stride: int | None = None
    pos_per_quarter: int = 16  # decoded positions are in 1/16 quarter
    dur_per_quarter: int = 16  # decoded durations too
    pitch_min: int = 0  # read every pitch: Octuple has all 128
    pitch_max: int = 127
    min_bar_quarters: float = 1.5

    @property
    def effective_stride(self) -> int:
        return self.max_len if self.stride is None else self.stride


class OctupleIds:
    """:class:`OctupleTokenizer` with this project's id convention, for imported models
    (``smu import``, :mod:`smu_explain.published`): per attribute, PAD = 0, MASK = 1, the
    authors' regular value ``v`` = ``v + 2``, their other specials (SOS, EOS, CLS, SEP) keep their
    ids. ``perm[j][i]`` is the authors' id of our id ``i`` (the import permutes the embedding and
    head rows by it, so the model computes the same function on these ids). Same surface as the
    CP ``Tokenizer`` where the library uses it; ``to_dict`` is tokenizer.json
    (``{"kind": "octuple", "ids": "smu", ...}``)."""

    name = "octuple"

    def __init__(self, max_len: int = 1024, stride: int | None = None, vocab_path=None):
        self.inner = OctupleTokenizer(vocab_path, max_len=max_len, stride=stride)
        self.config = OctupleIdsConfig(max_len=max_len, stride=stride)
        self.attributes = list(self.inner.attributes)
        self.index = dict(self.inner.index)
        self.vocab_sizes = list(self.inner.vocab_sizes)
        self.perm = [np.asarray(ids_permutation(n, size), dtype=np.int64)
                     for n, size in zip(self.inner.n_values, self.vocab_sizes, strict=False)]
        self._ours = [np.argsort(p) for p in self.perm]  # authors' id -> ours

    def __repr__(self) -> str:
        return f"OctupleIds(max_len={self.config.max_len}, stride={self.config.stride})"

    def to_ours(self, tokens: np.ndarray) -> np.ndarray:
        return _relabel(tokens, self._ours)

    def to_theirs(self, tokens: np.ndarray) -> np.ndarray:
        return _relabel(tokens, self.perm)

    def read(self, source, name: str | None = None) -> Piece:
        return self.inner.read(source, name)

    def encode(self, piece: Piece) -> np.ndarray:
        return self.to_ours(self.inner.encode(piece))

    def windows(self, n_tokens: int) -> list[slice]:
        return self.inner.windows(n_tokens)

    def encode_windows(self, piece: Piece, tokens: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        if tokens is None:
            tokens = self.encode(piece)
        return [(tokens[sl].copy(), np.arange(sl.start, sl.stop, dtype=np.int64)) for sl in self.windows(len(tokens))]

    def decode_values(self, attribute: str, ids) -> np.ndarray:
        j = self.index[attribute]
        ids = np.asarray(ids, dtype=np.int64)
        return self.inner.decode_values(attribute, self.perm[j][np.clip(ids, 0, len(self.perm[j]) - 1)])

    def decode_notes(self, tokens: np.ndarray, name: str = "decoded") -> Piece:
        return self.inner.decode_notes(self.to_theirs(tokens), name)

    def to_dict(self) -> dict:
        return {**self.inner.to_dict(), "ids": "smu"}

    @classmethod
    def from_dict(cls, d: dict, vocab_path=None) -> OctupleIds:
        if not isinstance(d, dict) or d.get("ids") != "smu":
            raise ValueError("not a description of Octuple tokens with this project's ids ('ids': 'smu')")
        inner = OctupleTokenizer.from_dict({k: v for k, v in d.items() if k != "ids"}, vocab_path)
        return cls(max_len=inner.max_len, stride=inner.stride, vocab_path=vocab_path)


def ids_permutation(n_values: int, size: int) -> list[int]:
    """Our id -> the authors' id, for an attribute of ``n_values`` regular values then
    ``size - n_values`` specials starting with PAD, MASK: [PAD, MASK, 0..n-1, SOS, EOS, ...]."""
    return [n_values, n_values + 1, *range(n_values), *range(n_values + 2, size)]
