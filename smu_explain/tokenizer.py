"""Reading music files into a :class:`Piece` and the compound-word ``Tokenizer``.

One token per note. A token is an int64 row over ``tokenizer.attributes``:
``bar, position, pitch, duration`` (+ ``velocity`` and/or ``program`` when the
config enables them). Every attribute has its own vocabulary with ``PAD_ID = 0``,
``MASK_ID = 1``; regular values start at ``N_SPECIAL = 2``.

Rules (all tested in tests/test_tokenizer*.py, tests/test_bad_input.py, tests/test_augment.py)
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
    * Scores are parsed and checked against the bounds below before music21 builds anything,
      and music21 then reads exactly what was checked (see "Bounds"). A .mxl is read from the
      rootfile its META-INF/container.xml names. The music21 conversion is bounded by
      ``SCORE_PARSE_TIMEOUT_S`` with its warnings silenced. Grace notes are removed
      (``Piece.dropped["grace_notes"]``); repeats are expanded as music21 does, and
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
    * Overlapping notes of the same pitch are kept as they are (no merging, no
      truncation); zero-length notes are kept (their token gets the minimum duration).
    * Notes are sorted by (onset tick, pitch, track, note_index).

Bounds (what a file may ask of the reader; all refusals are ``SMUInputError``)
    * Every file: at most ``MAX_FILE_BYTES`` (64 MiB) on disk; MIDI: 1..30000 ticks per
      quarter, last onset at most ``MAX_PIECE_QUARTERS`` (1,000,000) quarters, events below
      2^32 ticks.
    * Scores, on the *parsed* values, before music21: at most ``MAX_SCORE_NOTES`` (20,000)
      notes, ``MAX_SCORE_MEASURES`` (3,000) measures/bar lines and ``MAX_SCORE_PARTS`` (64)
      parts/spines/voices/tunes.
      - MusicXML (.xml, .musicxml, the .mxl rootfile): parsed by the XML parser first (any
        declared encoding, UTF-16 included; CDATA, comments, character and internal entities
        resolved, so none can hide a value; external entities are never fetched; the parser
        stops at the first bound broken), at most ``MAX_XML_ELEMENTS`` (1,000,000) elements,
        the numbers of ``_XML_ELEMENT_BOUNDS`` (``<fifths>`` -14..14, ``<beats>`` 1..256 also
        summed over "3+2", ``<beat-type>`` 1..256, ``<divisions>`` 0.001..1e6, ``<octave>``
        -1..10, ``<alter>`` -4..4, ``<actual-notes>``/``<normal-notes>`` 1..1000,
        ``<multiple-rest>`` 1..10000, ``<staves>`` 1..64, ``<duration>`` 0..1e8, ...) and
        ``<repeat times>`` 0..100; the root must be ``<score-partwise>``; music21 reads the
        checked tree written out again. A .mxl's container is at most 1 MiB, its score at most
        ``MAX_FILE_BYTES`` inflated (the declared size, which zipfile enforces); member names
        are looked up, never used as paths.
      - Humdrum (.krn), per record: at most 64 spines; ``*M`` metres numerator (summed) and
        denominator 1..256; ``*MM`` tempo 0..10000; ``*k[...]`` at most 14 accidentals;
        ``*>[...]`` at most 100 labels; every recip (duration) number 0..1024.
      - ABC (.abc): ``M:`` numerator (summed) and denominator 1..256, ``L:`` numbers 0..1024,
        ``Q:`` 0..10000 (header lines and inline ``[M:...]`` fields); every number of the music
        (length multipliers and divisors, tuplets, endings) 0..1024.
    * music21's conversion: ``SCORE_PARSE_TIMEOUT_S`` (55 s) wall time in this process.
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

Tokens (:class:`Tokenizer`)
    * Onsets are located on the *token bar grid*: the bars above, where a bar longer
      than ``n_positions`` steps is split into sub-bars of ``n_positions`` steps (the
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

Memory and speed
    * Tokenisation is vectorised with numpy; the only Python loops run over tracks,
      tempo events and time-signature events, never over notes.
    * Reading plus encoding a 100,000-note file allocates less than
      ``MEMORY_BOUND_BYTES_PER_NOTE`` (400) bytes per note of Python/numpy memory at
      peak (measured with tracemalloc; tests/test_bad_input.py checks 40 MB for
      100,000 notes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import SMUInputError
from .io import atomic_write_text, unknown_fields

__all__ = [
    "window_slices",
    "PAD_ID",
    "MASK_ID",
    "N_SPECIAL",
    "BASE_ATTRIBUTES",
    "NOTE_COLUMNS",
    "TRANSPOSE_RANGE",
    "MIDI_EXTENSIONS",
    "SCORE_EXTENSIONS",
    "Piece",
    "TokenizerConfig",
    "Tokenizer",
    "read_piece",
    "validate_midi_bytes",
    "midi_last_tick",
    "check_score_xml",
    "check_score_humdrum",
    "check_score_abc",
    "transpose",
    "random_transpose",
]

PAD_ID = 0
MASK_ID = 1
N_SPECIAL = 2
#: the attributes of every token, in column order (``velocity``, ``program`` follow when enabled)
BASE_ATTRIBUTES = ("bar", "position", "pitch", "duration")

# The notes table of a piece (``Piece.notes_table``): the first columns of every per-note table.
NOTE_COLUMNS = ["note", "pitch", "velocity", "track", "program", "start_sec", "end_sec",
                "onset_q", "duration_q", "bar", "beat"]
TOKENIZER_VERSION = 1  # part of TokenizerConfig.hash(): bump when encoding rules change

TRANSPOSE_RANGE = tuple(range(-6, 6))  # -6..+5 semitones

MIDI_EXTENSIONS = (".mid", ".midi", ".kar", ".smf")
SCORE_EXTENSIONS = (".xml", ".musicxml", ".mxl", ".krn", ".abc")

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_TICKS_PER_QUARTER = 30000
MAX_PIECE_QUARTERS = 1_000_000
MEMORY_BOUND_BYTES_PER_NOTE = 400

DEFAULT_MSPQ = 500_000  # 120 qpm
_EPS = 1e-9


# --------------------------------------------------------------------------- Piece


@dataclass
class Piece:
    """One file's notes after the reading rules, sorted by (onset, pitch).

    All note arrays have the same length N. ``time_signatures`` lists the metres in
    effect as ``(start_q, numerator, denominator)`` at the bar lines where they start.
    """

    name: str
    pitch: np.ndarray  # int16
    velocity: np.ndarray  # int16
    program: np.ndarray  # int16
    track: np.ndarray  # int32, index into track_names
    note_index: np.ndarray  # int64, index of the note in its source track
    start_sec: np.ndarray  # float64
    end_sec: np.ndarray  # float64
    onset_q: np.ndarray  # float64, quarters on the beat grid
    duration_q: np.ndarray  # float64, quarters
    bar: np.ndarray  # int64, 0-based bar index
    beat: np.ndarray  # float64, quarters from the start of the bar
    track_names: list[str]
    bar_starts_q: np.ndarray  # float64
    bar_lengths_q: np.ndarray  # float64
    time_signatures: list[tuple[float, int, int]]
    ticks_per_quarter: int = 480
    dropped: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return int(self.pitch.shape[0])

    @property
    def n_notes(self) -> int:
        return len(self)

    def notes_table(self):
        """The notes table (pandas): one row per note, the columns ``NOTE_COLUMNS`` (``note`` =
        0..N-1, the note's index in the piece, then the fields of the same names). The one
        builder of it: explain tables, the app's piano rolls and plots start from it."""
        import pandas as pd

        return pd.DataFrame({c: np.arange(len(self)) if c == "note" else getattr(self, c) for c in NOTE_COLUMNS})

    def to_dataframe(self):
        """:meth:`notes_table` plus ``note_index`` (the note's index in its source track)."""
        df = self.notes_table()
        df.insert(NOTE_COLUMNS.index("program") + 1, "note_index", self.note_index)
        return df

    def subset(self, idx) -> "Piece":
        """A Piece with only the notes ``idx`` (same grid and metadata)."""
        idx = np.asarray(idx)
        arrays = {
            f.name: getattr(self, f.name)[idx]
            for f in dataclasses.fields(self)
            if f.name in _NOTE_FIELDS
        }
        return dataclasses.replace(self, **arrays)


_NOTE_FIELDS = (
    "pitch", "velocity", "program", "track", "note_index", "start_sec", "end_sec",
    "onset_q", "duration_q", "bar", "beat",
)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TokenizerConfig:
    """All settings that change tokens. ``hash()`` keys tokenized caches."""

    pos_per_quarter: int = 4
    n_positions: int = 16
    max_bar_skip: int = 16
    pitch_min: int = 22
    pitch_max: int = 107
    dur_per_quarter: int = 8
    n_durations: int = 64
    use_velocity: bool = False
    n_velocity_bins: int = 32
    use_program: bool = False
    max_len: int = 512
    stride: int | None = None  # None = max_len
    min_bar_quarters: float = 1.5

    def __post_init__(self):
        for name in ("pos_per_quarter", "n_positions", "max_bar_skip", "dur_per_quarter",
                     "n_durations", "n_velocity_bins", "max_len"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TokenizerConfig.{name} must be a positive int, got {v!r}")
        if not (0 <= self.pitch_min <= self.pitch_max <= 127):
            raise ValueError(
                f"TokenizerConfig pitch range must satisfy 0 <= pitch_min <= pitch_max <= 127, "
                f"got {self.pitch_min}..{self.pitch_max}")
        if self.n_velocity_bins > 127:
            raise ValueError("TokenizerConfig.n_velocity_bins must be <= 127")
        if self.stride is not None and (not isinstance(self.stride, int) or not 1 <= self.stride):
            raise ValueError(f"TokenizerConfig.stride must be a positive int or None, got {self.stride!r}")
        if not self.min_bar_quarters >= 0:
            raise ValueError("TokenizerConfig.min_bar_quarters must be >= 0")

    @property
    def effective_stride(self) -> int:
        return self.max_len if self.stride is None else self.stride

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TokenizerConfig":
        unknown = unknown_fields(cls, d)
        if unknown:
            raise ValueError(f"unknown TokenizerConfig keys: {unknown}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "TokenizerConfig":
        return cls.from_dict(json.loads(s))

    def save(self, path) -> None:
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path) -> "TokenizerConfig":
        return cls.from_json(Path(path).read_text())

    def hash(self) -> str:
        """Stable sha256 (hex, 16 chars) of the JSON config plus the tokenizer version."""
        payload = json.dumps({"v": TOKENIZER_VERSION, "config": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- reading


def validate_midi_bytes(data: bytes, path="<bytes>") -> int:
    """Check an SMF header and chunk list; return ticks per quarter.

    Raises SMUInputError for: empty data, no ``MThd``, a short header, format not in
    0/1 (2 is refused explicitly), zero tracks, SMPTE division, ticks per quarter
    outside 1..MAX_TICKS_PER_QUARTER, a chunk running past the end of the data,
    fewer track chunks than the header declares.
    """
    n = len(data)
    if n == 0:
        raise SMUInputError(path, "empty file (0 bytes)")
    if data[:4] != b"MThd":
        raise SMUInputError(path, "not a MIDI file (no 'MThd' header)")
    if n < 14:
        raise SMUInputError(path, f"truncated MIDI header ({n} bytes)")
    hlen, fmt, ntrk, division = struct.unpack(">IHHH", data[4:14])
    if hlen < 6 or 8 + hlen > n:
        raise SMUInputError(path, f"bad MIDI header length {hlen}")
    if fmt == 2:
        raise SMUInputError(path, "MIDI type 2 (independent sequences) is not supported")
    if fmt not in (0, 1):
        raise SMUInputError(path, f"unknown MIDI format {fmt}")
    if ntrk == 0:
        raise SMUInputError(path, "MIDI header declares 0 tracks")
    if division & 0x8000:
        raise SMUInputError(path, "SMPTE time division has no beat grid (not supported)")
    if not 1 <= division <= MAX_TICKS_PER_QUARTER:
        raise SMUInputError(
            path, f"implausible resolution: {division} ticks per quarter "
                  f"(accepted: 1..{MAX_TICKS_PER_QUARTER})")
    pos = 8 + hlen
    n_mtrk = 0
    while pos + 8 <= n and n_mtrk < ntrk:
        ctype = data[pos:pos + 4]
        (clen,) = struct.unpack(">I", data[pos + 4:pos + 8])
        if pos + 8 + clen > n:
            raise SMUInputError(
                path, f"truncated MIDI file: chunk {ctype!r} at byte {pos} claims {clen} bytes, "
                      f"{n - pos - 8} left")
        if ctype == b"MTrk":
            n_mtrk += 1
        pos += 8 + clen
    if n_mtrk < ntrk:
        raise SMUInputError(
            path, f"truncated MIDI file: header declares {ntrk} tracks, found {n_mtrk}")
    return division


#: symusic keeps times as 32-bit ticks: a file whose delta times sum past this wraps round.
_INT32_TICKS = 2 ** 31


def midi_last_tick(data: bytes) -> int:
    """The largest absolute tick of the file: the greatest sum of a track's delta times (a
    walk over the events of every MTrk chunk: delta, status with running status, meta/sysex
    lengths). Linear in the size, no allocation per event. Used to tell apart a time past
    2^31 ticks, which symusic (32-bit ticks) wraps round, from a true negative time."""
    n = len(data)
    if n < 14:
        return 0
    (hlen,) = struct.unpack(">I", data[4:8])
    pos = 8 + hlen
    best = 0
    while pos + 8 <= n:
        ctype = data[pos:pos + 4]
        (clen,) = struct.unpack(">I", data[pos + 4:pos + 8])
        i, end = pos + 8, min(pos + 8 + clen, n)
        pos = end
        if ctype != b"MTrk":
            continue
        t = running = 0
        while i < end:
            b = data[i]
            i += 1
            d = b & 0x7F
            while b & 0x80 and i < end:
                b = data[i]
                i += 1
                d = (d << 7) | (b & 0x7F)
            t += d
            if i >= end:
                break
            s = data[i]
            if s & 0x80:
                i += 1
            elif running:
                s = running
            else:
                break  # a data byte without a status: the rest of the chunk is unreadable
            if s < 0xF0:
                running = s
                i += 1 if 0xC0 <= s < 0xE0 else 2
            elif s == 0xFF or s in (0xF0, 0xF7):
                if s == 0xFF:
                    i += 1  # meta type
                ln = 0
                while i < end:
                    b = data[i]
                    i += 1
                    ln = (ln << 7) | (b & 0x7F)
                    if not b & 0x80:
                        break
                i += ln
            # other system messages carry no length in a file: skip the status byte only
        best = max(best, t)
    return best


def _display_name(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "<bytes>"


def _load_bytes(source, path_str: str) -> tuple[bytes, str]:
    """Return (bytes, kind) where kind is 'midi' or 'score' ('score' = use music21)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) == 0:
            raise SMUInputError(path_str, "empty file (0 bytes)")
        if len(data) > MAX_FILE_BYTES:
            raise SMUInputError(path_str, f"file too large ({len(data)} bytes > {MAX_FILE_BYTES})")
        if data[:4] == b"MThd":
            return data, "midi"
        head = data[:512]
        for bom, enc in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
            if head.startswith(bom):  # an XML text with a byte-order mark: look at its characters
                head = head[len(bom):].decode(enc, errors="ignore").encode("ascii", errors="ignore")
                break
        head = head.lstrip()
        if head[:5] == b"<?xml" or head[:14] == b"<score-partwis" or data[:2] == b"PK":
            return data, "score"
        raise SMUInputError(path_str, "not a MIDI file (no 'MThd' header) nor a MusicXML score")
    p = Path(source)
    ext = p.suffix.lower()
    if ext not in MIDI_EXTENSIONS and ext not in SCORE_EXTENSIONS:
        raise SMUInputError(
            path_str, f"unsupported file type {ext or '(no extension)'!r}; expected MIDI "
                      f"({', '.join(MIDI_EXTENSIONS)}) or a score ({', '.join(SCORE_EXTENSIONS)})")
    try:
        if not p.exists():
            raise SMUInputError(path_str, "file not found")
        if not p.is_file():
            raise SMUInputError(path_str, "not a regular file")
        size = p.stat().st_size
        if size == 0:
            raise SMUInputError(path_str, "empty file (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise SMUInputError(path_str, f"file too large ({size} bytes > {MAX_FILE_BYTES})")
        data = p.read_bytes()
    except SMUInputError:
        raise
    except OSError as e:
        raise SMUInputError(path_str, f"cannot read file: {e}") from e
    return data, ("midi" if ext in MIDI_EXTENSIONS else "score")


def _score_pickup_quarters(score) -> float:
    """Length in quarters of a pickup (anacrusis) first measure, 0.0 if there is none."""
    parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    measures = parts[0].getElementsByClass("Measure")
    if not len(measures):
        return 0.0
    m0 = measures[0]
    try:
        bar = float(m0.barDuration.quarterLength)
        pad = float(m0.paddingLeft or 0.0)
    except Exception:  # noqa: BLE001 - no time signature / odd measure: no pickup
        return 0.0
    if pad <= 0 or pad >= bar:
        return 0.0
    return bar - pad


#: Wall-clock bound of one music21 parse + MIDI conversion (seconds); longer is refused.
#: (The app reads every file in a worker process with its own bounds: smu_explain/sandbox.py.)
SCORE_PARSE_TIMEOUT_S = 55.0

#: Bounds on a score's size, checked on the parsed values before music21 builds anything:
#: music21 reads MusicXML superlinearly (2,000 measures / 8,000 notes 6.7 s, 4,000 / 16,000 22 s
#: on the 2-core dev machine; 5,000 / 20,000 ran past 55 s with 4 processes sharing its 2 cores),
#: so larger scores are refused rather than read for minutes. ``SCORE_PARSE_TIMEOUT_S`` still
#: bounds what passes (a dense score under these bounds on a busy machine).
MAX_SCORE_NOTES = 20_000
MAX_SCORE_MEASURES = 3_000  # all parts together (MusicXML <measure>, Humdrum/ABC bar lines)
MAX_SCORE_PARTS = 64  # MusicXML <score-part>, Humdrum spines (after splits), ABC voices
MAX_XML_ELEMENTS = 1_000_000
MAX_SCORE_LINE_FIELDS = MAX_SCORE_PARTS  # fields of one Humdrum record
MAX_MXL_CONTAINER_BYTES = 1024 * 1024

# Numeric MusicXML fields that music21 loops over (or that make no sense beyond these
# bounds), checked on the parsed XML before music21 sees it: <fifths>99999999</fifths> loops
# once per fifth, <beats>99999999</beats> once per beat, <repeat times="99999999"> once per repeat.
_XML_ELEMENT_BOUNDS = {
    "fifths": (-14, 14), "beats": (1, 256), "beat-type": (1, 256), "divisions": (1e-3, 1e6),
    "octave": (-1, 10), "alter": (-4, 4), "key-alter": (-4, 4), "key-octave": (-1, 10),
    "actual-notes": (1, 1000), "normal-notes": (1, 1000), "multiple-rest": (1, 10000),
    "measure-repeat": (0, 1000), "beat-repeat": (0, 1000), "staves": (1, 64), "staff": (1, 64),
    "chromatic": (-127, 127), "diatonic": (-100, 100), "octave-change": (-10, 10), "tremolo": (0, 8),
    "duration": (0, 1e8),
}
_XML_ATTRIBUTE_BOUNDS = {"times": (0, 100)}  # <repeat times="N">
# Humdrum / ABC numbers (see check_score_humdrum / check_score_abc)
_METER_BOUNDS = (1, 256)  # numerator (the sum of "3+2" parts) and denominator
_TEMPO_BOUNDS = (0, 10_000)  # quarters (or beats) per minute
_RHYTHM_BOUNDS = (0, 1024)  # Humdrum recip values, ABC length multipliers/divisors, tuplets, endings
_KEY_ACCIDENTALS = 14


def _implausible(path_str: str, what: str, value, lo, hi) -> SMUInputError:
    return SMUInputError(path_str, f"implausible score: {what} {value} (accepted {lo:g}..{hi:g}); "
                                   "refused before music21 reads it")


def _check_number(path_str: str, what: str, text: str, bounds, *, plus: bool = False) -> None:
    """Every number in ``text`` ("3+2" beats, "1, 2" endings) within ``bounds``; with ``plus``
    their sum too. Text that is not a number is left to music21 (it reports it)."""
    import re

    lo, hi = bounds
    text = text.strip()
    if len(text) > 256:  # no sane number is this long; a long text could hide one past a cut
        raise _implausible(path_str, what, text[:32] + "...", lo, hi)
    total = 0.0
    for part in re.split(r"[+,\s]+", text):
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            continue
        if not (math.isfinite(v) and lo <= v <= hi):
            raise _implausible(path_str, what, part[:64], lo, hi)
        total += v
    if plus and total > hi:
        raise _implausible(path_str, what, text.strip()[:64], lo, hi)


def _count(path_str: str, counts: dict[str, int], what: str, limit: int, k: int = 1) -> None:
    counts[what] = counts.get(what, 0) + k
    if counts[what] > limit:
        raise SMUInputError(path_str, f"score too large: more than {limit:,} {what}; refused before music21 reads it")


def check_score_xml(source, path_str: str):
    """Parse MusicXML (bytes, any encoding the XML declares; or an already parsed element tree)
    and check the *parsed* values music21 will read against sane bounds (``_XML_ELEMENT_BOUNDS``,
    ``<repeat times>``, ``MAX_SCORE_NOTES`` / ``MAX_SCORE_MEASURES`` / ``MAX_SCORE_PARTS``,
    ``MAX_XML_ELEMENTS``). CDATA, comments, character and internal entities are resolved by the
    XML parser first, so they cannot hide a value; the parser stops at the first bound broken, so
    a huge score is refused before it is built. Returns the root element (music21 reads this very
    tree). Raises ``SMUInputError``."""
    import io
    import xml.etree.ElementTree as ET

    if not isinstance(source, (bytes, bytearray, memoryview)):
        root, elements = source, source.iter()
        events = (("end", el) for el in elements)
    else:
        try:
            events = ET.iterparse(io.BytesIO(bytes(source)), events=("end",))
        except ET.ParseError as e:  # pragma: no cover - iterparse raises lazily
            raise SMUInputError(path_str, f"not well-formed MusicXML: {e}") from None
        root = None
    counts: dict[str, int] = {}
    try:
        for _, el in events:
            _count(path_str, counts, "XML elements", MAX_XML_ELEMENTS)
            tag = el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else ""
            if tag in _XML_ELEMENT_BOUNDS:
                _check_number(path_str, f"<{tag}>", "".join(el.itertext()), _XML_ELEMENT_BOUNDS[tag],
                              plus=tag == "beats")
            for attr, bounds in _XML_ATTRIBUTE_BOUNDS.items():
                if attr in el.attrib:
                    _check_number(path_str, f"{attr}=", el.attrib[attr], bounds)
            if tag == "note":
                _count(path_str, counts, "notes", MAX_SCORE_NOTES)
            elif tag == "measure":
                _count(path_str, counts, "measures", MAX_SCORE_MEASURES)
            elif tag == "score-part":
                _count(path_str, counts, "parts", MAX_SCORE_PARTS)
            root = el
    except ET.ParseError as e:
        raise SMUInputError(path_str, f"not well-formed MusicXML: {e}") from None
    if root is None:
        raise SMUInputError(path_str, "empty MusicXML document")
    return root


def _mxl_rootfile(data: bytes, path_str: str) -> bytes:
    """The score of a .mxl (zip): the rootfile META-INF/container.xml names (the first
    ``<rootfile full-path>``), or, without a container, the only/first .xml member outside
    META-INF. Member names are only looked up, never used as paths; the container is bounded
    by ``MAX_MXL_CONTAINER_BYTES`` and the score by ``MAX_FILE_BYTES`` (its declared size,
    which zipfile enforces while inflating)."""
    import io
    import xml.etree.ElementTree as ET
    import zipfile

    def read_member(z, info, limit: int, what: str) -> bytes:
        if info.file_size > limit:
            raise SMUInputError(path_str, f"compressed MusicXML (.mxl): {what} expands to {info.file_size} "
                                          f"bytes (> {limit})")
        return z.read(info)

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = {}
            for i in z.infolist():
                infos.setdefault(i.filename, i)
            container = infos.get("META-INF/container.xml")
            if container is not None:
                try:
                    croot = ET.fromstring(read_member(z, container, MAX_MXL_CONTAINER_BYTES, "META-INF/container.xml"))
                except ET.ParseError as e:
                    raise SMUInputError(path_str, f"compressed MusicXML (.mxl): META-INF/container.xml is not "
                                                  f"well-formed ({e})") from None
                name = next((el.get("full-path") for el in croot.iter()
                             if isinstance(el.tag, str) and el.tag.rsplit("}", 1)[-1] == "rootfile"
                             and el.get("full-path")), None)
                if name is None:
                    raise SMUInputError(path_str, "compressed MusicXML (.mxl): META-INF/container.xml names no rootfile")
                if name not in infos:
                    raise SMUInputError(path_str, f"compressed MusicXML (.mxl): the rootfile {name[:200]!r} named in "
                                                  "META-INF/container.xml is not in the archive")
                member = infos[name]
            else:
                members = [i for i in infos.values() if not i.filename.startswith("META-INF/")
                           and i.filename.lower().endswith((".xml", ".musicxml"))]
                if not members:
                    raise SMUInputError(path_str, "compressed MusicXML (.mxl) without a score inside")
                member = members[0]
            return read_member(z, member, MAX_FILE_BYTES, "the score")
    except SMUInputError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, RuntimeError,
            NotImplementedError) as e:
        raise SMUInputError(path_str, f"not a valid compressed MusicXML (.mxl) file ({e})") from None


def _score_text(data: bytes) -> str:
    """Humdrum / ABC text: UTF-8 (a BOM is dropped), else Latin-1 (every byte is a character)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def check_score_humdrum(text: str, path_str: str) -> None:
    """Refuse Humdrum (**kern) whose parsed records break the bounds before music21 reads it:
    fields per record (spines, ``MAX_SCORE_LINE_FIELDS``), metres ``*M<n>/<d>`` (n, the sum of
    "3+2" parts, and d in ``_METER_BOUNDS``), tempi ``*MM`` (``_TEMPO_BOUNDS``), key signatures
    ``*k[...]`` (at most ``_KEY_ACCIDENTALS`` accidentals), expansion lists ``*>[...]``
    (at most 100 labels), recip (duration) numbers of every data token (``_RHYTHM_BOUNDS``),
    notes (``MAX_SCORE_NOTES``) and measures (``=`` records, ``MAX_SCORE_MEASURES``)."""
    import re

    counts: dict[str, int] = {}
    meter = re.compile(r"^\*M(\d[\d+]*)/(\d+)")
    tempo = re.compile(r"^\*MM([^\t]*)")
    recip = re.compile(r"(\d+)(?:%(\d+))?")
    for line in text.splitlines():
        if not line or line.startswith("!"):
            continue
        fields = line.split("\t")
        spines = len(fields) + fields.count("*^")  # a split makes two spines of one from the next record
        if spines > MAX_SCORE_LINE_FIELDS:
            raise SMUInputError(path_str, f"score too large: a Humdrum record with {spines:,} spines "
                                          f"(accepted 1..{MAX_SCORE_LINE_FIELDS}); refused before music21 reads it")
        if line.startswith("="):
            _count(path_str, counts, "measures", MAX_SCORE_MEASURES)
            continue
        for f in fields:
            if f.startswith("*"):
                if m := meter.match(f):
                    _check_number(path_str, "metre numerator", m[1], _METER_BOUNDS, plus=True)
                    _check_number(path_str, "metre denominator", m[2], (0, _METER_BOUNDS[1]))
                elif m := tempo.match(f):
                    _check_number(path_str, "tempo *MM", m[1], _TEMPO_BOUNDS)
                elif f.startswith("*k[") and len(f) > 4 + 2 * _KEY_ACCIDENTALS:
                    raise _implausible(path_str, "key signature", f[:64], 0, _KEY_ACCIDENTALS)
                elif f.startswith("*>") and f.count(",") >= 100:
                    raise _implausible(path_str, "expansion list of", f"{f.count(',') + 1} labels", 1, 100)
                continue
            if f.startswith("!") or f == ".":
                continue
            for sub in f.split(" "):  # chords: space-separated notes of one spine
                for m in recip.finditer(sub):
                    _check_number(path_str, "duration", m[1], _RHYTHM_BOUNDS)
                    if m[2]:
                        _check_number(path_str, "duration", m[2], _RHYTHM_BOUNDS)
                if "r" not in sub and re.search(r"[a-gA-G]", sub):
                    _count(path_str, counts, "notes", MAX_SCORE_NOTES)


def check_score_abc(text: str, path_str: str) -> None:
    """Refuse ABC whose parsed fields and numbers break the bounds before music21 reads it:
    ``M:`` (numerator, the sum of "2+3" parts, and denominator in ``_METER_BOUNDS``), ``L:``
    (``_RHYTHM_BOUNDS``), ``Q:`` (``_TEMPO_BOUNDS``), in header lines and inline ``[M:...]``
    fields; every number of the music (note length multipliers and divisors, tuplets, repeat
    endings) in ``_RHYTHM_BOUNDS``; tunes (``X:``) and voices (``V:``) at most
    ``MAX_SCORE_PARTS``; notes ``MAX_SCORE_NOTES``; bar lines ``MAX_SCORE_MEASURES``."""
    import re

    counts: dict[str, int] = {}
    field = re.compile(r"^([A-Za-z+]):(.*)$")
    inline = re.compile(r"\[([A-Za-z]):([^\]]*)\]")
    voices: set[str] = set()

    def check_field(key: str, value: str) -> None:
        if key == "M":
            m = re.match(r"\s*\(?([\d+\s]+)\)?\s*/\s*(\d+)", value)
            if m:
                _check_number(path_str, "M:", m[1], _METER_BOUNDS, plus=True)
                _check_number(path_str, "M:", m[2], (0, _METER_BOUNDS[1]))
            else:
                _check_number(path_str, "M:", re.sub(r"[^\d+,\s.]", " ", value), _METER_BOUNDS)
        elif key == "L":
            _check_number(path_str, "L:", re.sub(r"[^\d.]", " ", value), _RHYTHM_BOUNDS)
        elif key == "Q":
            _check_number(path_str, "Q:", re.sub(r'"[^"]*"|[^\d.]', " ", value), _TEMPO_BOUNDS)
        elif key == "X":
            _count(path_str, counts, "tunes", MAX_SCORE_PARTS)
        elif key == "V":
            voices.add(value.strip().split(" ")[0][:64])
            if len(voices) > MAX_SCORE_PARTS:
                raise SMUInputError(path_str, f"score too large: more than {MAX_SCORE_PARTS} voices; "
                                              "refused before music21 reads it")

    for raw in text.splitlines():
        line = raw.split("%", 1)[0] if not raw.startswith("%%") else ""
        if not line.strip():
            continue
        if m := field.match(line):
            check_field(m[1], m[2])
            continue
        for m in inline.finditer(line):
            check_field(m[1], m[2])
        music = inline.sub(" ", line)
        music = re.sub(r'"[^"]*"|![^!]*!|\+[^+]*\+|\{[^}]*\}', " ", music)  # annotations, decorations, grace groups
        for m in re.finditer(r"\d+", music):
            _check_number(path_str, "note length / tuplet / ending", m[0][:64], _RHYTHM_BOUNDS)
        _count(path_str, counts, "notes", MAX_SCORE_NOTES, len(re.findall(r"[A-Ga-g]", music)))
        _count(path_str, counts, "measures", MAX_SCORE_MEASURES, len(re.findall(r"\|+", music)))


def _score_format(data: bytes, source) -> str:
    """'musicxml', 'mxl', 'humdrum' or 'abc': by the path's extension (a zip is a .mxl whatever
    its name), bytes by their content (XML or zip)."""
    ext = Path(str(source)).suffix.lower() if isinstance(source, (str, os.PathLike)) else ""
    if data[:2] == b"PK" or ext == ".mxl":
        return "mxl"
    return {".krn": "humdrum", ".abc": "abc"}.get(ext, "musicxml")


class _ScoreTimeout(Exception):
    """Raised inside the music21 worker thread when it ran past SCORE_PARSE_TIMEOUT_S."""


def _run_bounded(fn, timeout: float, path_str: str):
    """``fn()`` in a worker thread, at most ``timeout`` seconds; then the thread is stopped
    (an exception is raised inside it; music21's loops are Python code) and the score refused."""
    import ctypes
    import threading

    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller
            box["error"] = e

    t = threading.Thread(target=target, name="smu-music21", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident), ctypes.py_object(_ScoreTimeout))
        t.join(10)
        raise SMUInputError(path_str, f"reading the score with music21 took longer than {timeout:g} s; refused")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _score_note_info(score) -> dict[str, Any]:
    """Remove grace notes from ``score`` (music21's MIDI drops them, except after expanding
    repeats, where it garbles them into long notes) and count: written notes (tied
    continuations once), grace notes removed, and whether repeats are marked."""
    written = grace = 0
    for n in list(score.recurse().notes):
        k = len(getattr(n, "pitches", ())) or 1
        if n.duration.isGrace:
            grace += k
            site = n.activeSite
            if site is not None:
                site.remove(n)
        elif n.tie is None or n.tie.type == "start":
            written += k
    repeats = bool(len(score.recurse().getElementsByClass("RepeatMark")))
    return {"written": written, "grace": grace, "repeats": repeats}


def _score_to_midi_bytes(data: bytes, path_str: str, source) -> tuple[bytes, float, dict[str, Any]]:
    """Convert a MusicXML/Humdrum/ABC score to MIDI bytes with music21.

    Returns (MIDI bytes, pickup length in quarters or 0.0, note info). music21's MIDI puts a
    pickup measure at tick 0 and loses its partial length; the reader restores it.
    The score is parsed and its values checked first (``check_score_xml`` on the .mxl's rootfile
    or the XML, ``check_score_humdrum``, ``check_score_abc``); music21 then reads exactly what
    was checked (the checked XML tree serialised again, the decoded text), the conversion is bounded by
    ``SCORE_PARSE_TIMEOUT_S`` and music21's warnings are not printed.
    Note info: ``written`` notes, ``grace`` notes (music21's MIDI drops them) and
    ``repeats`` (music21 expands repeats, so the MIDI may hold more notes than written).
    """
    fmt = _score_format(data, source)
    if fmt in ("mxl", "musicxml"):
        root = check_score_xml(_mxl_rootfile(data, path_str) if fmt == "mxl" else data, path_str)
        tag = root.tag.rsplit("}", 1)[-1] if isinstance(root.tag, str) else ""
        if root.tag != "score-partwise":
            raise SMUInputError(path_str, f"not a score-partwise MusicXML document (root element <{tag[:64]}>)")
        import xml.etree.ElementTree as ET

        # music21 reads the checked tree written out again: no DTD, entity, CDATA or comment left
        text = ET.tostring(root, encoding="unicode")
        del root
    else:
        text = _score_text(data)
        (check_score_humdrum if fmt == "humdrum" else check_score_abc)(text, path_str)

    def convert():
        import contextlib
        import io
        import warnings

        import music21
        from music21.midi import translate

        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            score = music21.converter.parse(text, format="musicxml" if fmt == "mxl" else fmt)
            info = _score_note_info(score)
            pickup = _score_pickup_quarters(score)
            mf = translate.music21ObjectToMidiFile(score)
            return mf.writestr(), pickup, info

    try:
        out, pickup, info = _run_bounded(convert, SCORE_PARSE_TIMEOUT_S, path_str)
    except SMUInputError:
        raise
    except MemoryError as e:  # (the sandbox's worker tells its memory limit from the cause)
        raise SMUInputError(path_str, "reading the score with music21 ran out of memory; refused") from e
    except Exception as e:  # music21 raises many unrelated types on bad input
        raise SMUInputError(path_str, f"cannot read score with music21: {type(e).__name__}: {e}") from e
    if not out:
        raise SMUInputError(path_str, "music21 produced no MIDI data")
    return bytes(out), pickup, info


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


def read_piece(source, name: str | None = None, *, config: "TokenizerConfig | None" = None) -> Piece:
    """Read a MIDI file / score (path or bytes) into a :class:`Piece` (see module rules).

    ``config`` supplies the pitch range and the artefact-metre threshold (``READ_FIELDS``;
    defaults: ``TokenizerConfig()``). Raises :class:`SMUInputError` for every unusable input.
    """
    cfg = config or TokenizerConfig()
    path_str = _display_name(source)
    if name is None:
        name = Path(path_str).stem if isinstance(source, (str, os.PathLike)) else "piece"
    data, kind = _load_bytes(source, path_str)
    score_info = None
    if kind == "score":
        data, pickup_q, score_info = _score_to_midi_bytes(data, path_str, source)
    else:
        pickup_q = 0.0
    tpq = validate_midi_bytes(data, path_str)
    try:
        import symusic

        score = symusic.Score.from_midi(data)
    except Exception as e:
        raise SMUInputError(path_str, f"unreadable MIDI: {type(e).__name__}: {e}") from e
    last_tick = midi_last_tick(data)
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
    if score_info is not None:  # say what music21 did: grace notes dropped, repeats expanded
        piece.dropped["grace_notes"] = int(score_info["grace"])
        piece.stats["notes_written"] = int(score_info["written"])
        piece.stats["repeat_notes_added"] = (max(0, piece.stats["notes_read"] - int(score_info["written"]))
                                             if score_info["repeats"] else 0)
    return piece


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
        np.asarray(ts["denominator"]).astype(int).tolist(),
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
            try:
                pm.time_signature_changes.append(pretty_midi.TimeSignature(int(num), int(den), float(t) * spq))
            except ValueError:
                pass
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
