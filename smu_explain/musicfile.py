"""A music file's bytes: loading a path or bytes (size, type) and checking a Standard MIDI File.

:func:`load_bytes` is the one place a file is taken in: bytes or a path, at most
``MAX_FILE_BYTES`` (64 MiB), its type by extension (``MIDI_EXTENSIONS``, ``SCORE_EXTENSIONS``;
any other is refused) or, for bytes, by content (``MThd`` = MIDI; XML or a zip = a MusicXML
score). :func:`validate_midi_bytes` checks an SMF header and its chunk list (type 0/1, ticks
per quarter 1..``MAX_TICKS_PER_QUARTER``, no truncated chunk); :func:`midi_last_tick` walks
the delta times. Every failure is an :class:`~smu_explain.errors.SMUInputError` naming the file.
Imports only :mod:`smu_explain.errors` (the readers above it: scores.py, reading.py).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from .errors import SMUInputError

__all__ = ["MAX_FILE_BYTES", "MAX_TICKS_PER_QUARTER", "MIDI_EXTENSIONS", "SCORE_EXTENSIONS", "display_name",
           "close_all_on_note_off", "load_bytes", "midi_last_tick", "midi_walk",
           "validate_midi_bytes"]

MIDI_EXTENSIONS = (".mid", ".midi", ".kar", ".smf")
SCORE_EXTENSIONS = (".xml", ".musicxml", ".mxl", ".krn", ".abc")

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_TICKS_PER_QUARTER = 30000


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

def midi_last_tick(data: bytes) -> int:
    """The largest absolute tick of the file (:func:`midi_walk`)."""
    return midi_walk(data)[0]


def midi_walk(data: bytes) -> tuple[int, int]:
    """(the largest absolute tick of the file: the greatest sum of a track's delta times; the number of
    note-on events with a velocity above 0 outside channel 10, the drum channel), from one walk over the
    events of every MTrk chunk: delta, status with running status, meta/sysex lengths. Linear in the
    size, no allocation per event. The tick tells apart a time past 2^31 ticks, which symusic (32-bit
    ticks) wraps round, from a true negative time; the note-ons tell whether symusic paired every one."""
    n = len(data)
    ons = 0
    if n < 14:
        return 0, 0
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
                if s & 0xF0 == 0x90 and s & 0x0F != 9 and i + 1 < end and data[i + 1]:
                    ons += 1
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
    return best, ons


def close_all_on_note_off(data: bytes) -> tuple[bytes, int]:
    """The MIDI file ``data`` rewritten so that every note-off closes every open note of its pitch and channel
    (the note-offs it lacked added at the same tick), and a note-off with no open note is dropped (its delta
    time passed on): the reading of most sequencers (and pretty_midi's), which a first-in first-out pairing
    (symusic's) then reads without shifting later pairs. Returns (the new bytes, the note-offs added).
    Parsed and written with mido; nothing else of the file changes."""
    import io

    import mido

    mid = mido.MidiFile(file=io.BytesIO(data))
    added = 0
    for track in mid.tracks:
        out, carry, sounding = [], 0, {}
        for msg in track:
            t, carry = msg.time + carry, 0
            if msg.type == "note_on" and msg.velocity > 0:
                key = (msg.channel, msg.note)
                sounding[key] = sounding.get(key, 0) + 1
            elif msg.type in ("note_on", "note_off"):
                n = sounding.pop((msg.channel, msg.note), 0)
                if n == 0:
                    carry = t
                    continue
                out += [msg.copy(time=t)] + [msg.copy(time=0) for _ in range(n - 1)]
                added += n - 1
                continue
            out.append(msg.copy(time=t))
        track[:] = out
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue(), added


def display_name(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "<bytes>"


def load_bytes(source, path_str: str) -> tuple[bytes, str]:
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
    try:  # what the path is comes first: a missing file or a folder is that, whatever its name
        if not p.exists():
            raise SMUInputError(path_str, "file not found")
        if p.is_dir():
            raise SMUInputError(path_str, "is a folder, not a file (give one of its MIDI or MusicXML files)")
        if not p.is_file():
            raise SMUInputError(path_str, "not a regular file")
        if ext not in MIDI_EXTENSIONS and ext not in SCORE_EXTENSIONS:
            raise SMUInputError(
                path_str, f"unsupported file type {ext or '(no extension)'!r}; expected MIDI "
                          f"({', '.join(MIDI_EXTENSIONS)}) or a score ({', '.join(SCORE_EXTENSIONS)})")
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
