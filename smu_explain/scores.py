"""Scores (MusicXML, .mxl, Humdrum kern, ABC) to MIDI bytes with music21, within bounds.

:func:`score_to_midi_bytes` parses the score and checks the *parsed* values against the bounds
below before music21 builds anything, lets music21 read exactly what was checked, converts it
to MIDI within ``SCORE_PARSE_TIMEOUT_S`` and says what it did (grace notes removed, written
notes, repeats, the pickup length); :func:`smu_explain.reading.read_piece` then reads those
bytes as any MIDI file. Every refusal is an :class:`~smu_explain.errors.SMUInputError`.
Imports :mod:`smu_explain.errors` and :mod:`smu_explain.musicfile` (music21 lazily).

Bounds (tested in tests/test_hostile_scores.py, tests/test_hostile.py)
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
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .errors import SMUInputError
from .musicfile import MAX_FILE_BYTES

__all__ = ["MAX_SCORE_MEASURES", "MAX_SCORE_NOTES", "MAX_SCORE_PARTS", "SCORE_PARSE_TIMEOUT_S", "check_score_abc",
           "check_score_humdrum", "check_score_xml", "score_to_midi_bytes"]


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
    repeats, where it garbles them into long notes) and chord symbols (annotations, not notes: music21's
    MIDI writes them as notes of no length whose note-offs come first, which a reader pairs with later
    notes), and count: written notes (tied continuations once), grace notes and chord symbols removed,
    and whether repeats are marked."""
    written = grace = symbols = 0
    for n in list(score.recurse().notes):
        k = len(getattr(n, "pitches", ())) or 1
        if "Harmony" in n.classes:  # a chord symbol (music21.harmony)
            symbols += 1
            if n.activeSite is not None:
                n.activeSite.remove(n)
            continue
        if n.duration.isGrace:
            grace += k
            site = n.activeSite
            if site is not None:
                site.remove(n)
        elif n.tie is None or n.tie.type == "start":
            written += k
    repeats = bool(len(score.recurse().getElementsByClass("RepeatMark")))
    return {"written": written, "grace": grace, "chord_symbols": symbols, "repeats": repeats}


def score_to_midi_bytes(data: bytes, path_str: str, source) -> tuple[bytes, float, dict[str, Any]]:
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
