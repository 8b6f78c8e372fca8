"""The score: a notation view of some bars of a :class:`~smu_explain.piece.Piece`, engraved by Verovio.

Torch-free and streamlit-free; ``verovio`` (PyPI) is imported only when something is rendered.

Rules (tested in tests/test_notation.py)
-----------------------------------------

What is shown
    * The notes whose onset lies in the selected bars ``[first, stop)`` (0-based bar indices of
      ``Piece.bar``; the page shows them 1-based). One MusicXML ``<note>`` per piece note, plus
      tied continuation notes where a note crosses a bar line or has a length no single note
      value can write. A note that sounds on past the last selected bar is cut at the end of the
      range (counted and said in the caption); a note that started before the first selected bar
      is not shown (its bar is not selected).
    * Only the selected bars are built and engraved: a 1,000-bar piece costs what its 8 bars cost
      (the notes of the range are found by binary search on ``Piece.bar``).

One quantised path for every input (MIDI and MusicXML alike)
    * The piece is read by the tokenizer's rules first (a MusicXML score becomes MIDI through
      music21, so its notes are the piece's notes, in the piece's order: grace notes dropped,
      repeats expanded). The original score's layout, voices and spelling are not kept: every
      input is written again from its notes, by the rules below. A score's notes on the 16th grid
      come through unchanged; anything finer (triplets, 32nds) is rounded, and the caption says how
      many notes moved.
    * Grid: ``GRID_PER_QUARTER`` = 4 steps per quarter (a 16th note). A note's onset is rounded
      to the nearest step from its own bar line (half up); an onset that would round onto the next
      bar line stays on its bar's last step (a note never leaves its bar). Its end is rounded the
      same way in the bar that holds it; a note shorter than one step after rounding gets one
      step (a 16th).
    * A bar is ``round(bar length x 4)`` steps (at least 1). Its time signature is the piece's
      metre when the bar has that metre's length; otherwise (a pickup, an odd bar) the shortest
      of n/4, n/8, n/16, n/32 that has the bar's length. A time signature is written where it
      changes, and on the first bar.

Staves, voices, spelling
    * Two staves (a piano system): middle C (MIDI 60) and above on the treble staff, the rest on
      the bass staff (``SPLIT_PITCH``). Tracks are not kept apart.
    * In a staff, notes with the same rounded onset and end form a chord; chords go to the first
      voice that is free at their onset (greedy, in onset order), so overlapping notes of
      different lengths get voices of their own. The first voice of a staff is filled with rests
      (a whole-bar rest in an empty bar); gaps in the other voices are left invisible (MusicXML
      ``<forward>``).
    * Lengths are written with whole, half, quarter, 8th and 16th notes, dotted or not; a length
      no value writes is split into values tied together (an onset not on the beat is first
      brought to the beat with short values; a dotted value starts on a quarter, a dotted half or
      longer on an even quarter of the bar). Ties also join the
      parts of a note across a bar line.
    * Beams: adjacent values shorter than a quarter in one voice are beamed within a beat (a dotted
      quarter in 6/8, 9/8, 12/8); a rest or a longer value breaks the beam.
    * No key signature; pitches are spelled with C# Eb F# Ab Bb (``SPELLING``); an accidental is
      written on the first note of a bar and staff that alters the step, and again when it
      changes (naturals included), never on a tied continuation.

Colours (the masker overlay: columns ``score``, ``picked``, ``frozen``, one row per piece note in
the piece's order; ``explain.masker_view``)
    * picked (would be masked at the ratio): red ``COLORS["picked"]``;
    * frozen (never masked): grey ``COLORS["frozen"]`` and a parenthesised notehead (the mark);
    * the others: black, or with ``shade=True`` a blue that darkens with the note's score rank
      in the whole piece (``shade_color``);
    * without a table (no model) every note is black.
    The colour is the MusicXML ``color`` attribute of every ``<note>`` of the note (ties included),
    which Verovio draws. Every ``<note>`` has an ``id`` (``note_id``: ``n<index>`` for the
    note's first part, ``n<index>-<k>`` for its k-th tied continuation); Verovio keeps it as the
    SVG group id, so ``ScoreView.note_ids`` maps a piece note to its elements in the SVG. The
    note ``selected`` (the one chosen on Explore) gets a blue ring round its notehead(s), by a
    CSS rule added to the SVG on its ids.
    * Layout: ``BARS_PER_SYSTEM`` (4) bars to a line, the lines as wide as the page.
    * The page shows each engraved page as an ``<img>`` with an SVG data URI (``ScoreView.html``):
      Streamlit's ``st.html`` sanitises with DOMPurify's HTML profile, which drops inline SVG.
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple
from xml.sax.saxutils import escape as _xml_escape

import numpy as np

__all__ = ["GRID_PER_QUARTER", "SPLIT_PITCH", "COLORS", "SPELLING", "ScoreView", "note_id", "note_states",
           "shade_color", "bar_range_around", "clip_bar_range", "build_musicxml", "render_svg", "score_view",
           "legend_items"]

GRID_PER_QUARTER = 4  # 16th-note grid
SPLIT_PITCH = 60  # middle C and above: treble staff
DEFAULT_BARS = 8
BARS_PER_SYSTEM = 4  # a new system (line) every 4 bars
COLORS = {"picked": "#d62728", "frozen": "#8c8c8c", "other": "#000000", "selected": "#1f77b4"}
SPELLING = [("C", 0), ("C", 1), ("D", 0), ("E", -1), ("E", 0), ("F", 0), ("F", 1), ("G", 0), ("A", -1),
            ("A", 0), ("B", -1), ("B", 0)]
_ACCIDENTAL = {-1: "flat", 0: "natural", 1: "sharp"}
# (length in 16ths, MusicXML type, dotted), longest first
_VALUES = [(24, "whole", True), (16, "whole", False), (12, "half", True), (8, "half", False), (6, "quarter", True),
           (4, "quarter", False), (3, "eighth", True), (2, "eighth", False), (1, "16th", False)]
_RENDER_LOCK = threading.Lock()  # one Verovio toolkit, not thread-safe: one engraving at a time
_TOOLKIT: list = []


@dataclass
class ScoreView:
    """An engraved range of bars. ``bars`` = (first, stop), 0-based, stop excluded."""

    musicxml: str
    pages: list[str]  # one SVG document per engraved page
    bars: tuple[int, int]
    notes: np.ndarray  # the piece's note indices shown, in piece order
    note_ids: dict[int, list[str]]  # piece note index -> ids of its <note> elements (SVG group ids)
    quantised: dict[str, int]  # onsets_moved, ends_moved, lengthened, cut_at_range_end
    seconds: dict[str, float] = field(default_factory=dict)  # build, render
    caption: str = ""

    @property
    def svg(self) -> str:
        """Every page's SVG, one after another."""
        return "\n".join(self.pages)

    def html(self, label: str) -> str:
        """The pages as ``<img>`` elements with SVG data URIs (so no HTML sanitiser drops an SVG
        element, and the ids and the ring's style stay inside each SVG); ``label`` (the alt text,
        e.g. the piece's name) is escaped here."""
        from .markup import html_escape

        alt = html_escape(label)
        return "".join(f'<img alt="{alt}" style="width:100%;max-width:1500px;height:auto;background:#fff" '
                       f'src="data:image/svg+xml;base64,{base64.b64encode(p.encode("utf-8")).decode("ascii")}"/>'
                       for p in self.pages)


def note_id(index: int, part: int = 0) -> str:
    """The element id of piece note ``index`` (its ``part``-th tied piece: 0 = where it starts)."""
    return f"n{int(index)}" if part == 0 else f"n{int(index)}-{int(part)}"


def note_states(table, n: int | None = None) -> np.ndarray:
    """Per note: ``"picked"``, ``"frozen"`` or ``"other"`` from the overlay's ``picked`` / ``frozen``
    columns (frozen wins: a frozen note is never masked). ``table`` None: all ``"other"``."""
    if table is None:
        return np.full(int(n or 0), "other", dtype=object)
    m = len(table)
    frozen = (table["frozen"].fillna(False).to_numpy(dtype=bool) if "frozen" in table
              else np.zeros(m, dtype=bool))
    picked = (table["picked"].fillna(False).to_numpy(dtype=bool) if "picked" in table
              else np.zeros(m, dtype=bool))
    out = np.full(m, "other", dtype=object)
    out[picked] = "picked"
    out[frozen] = "frozen"
    return out


def shade_color(rank: float) -> str:
    """A blue from light (rank 0: the lowest score of the piece) to dark (rank 1)."""
    r = float(np.clip(rank, 0.0, 1.0))
    lo, hi = np.array([158, 202, 225]), np.array([8, 48, 107])
    c = np.rint(lo + (hi - lo) * r).astype(int)
    return "#{:02x}{:02x}{:02x}".format(*c)


def clip_bar_range(piece, first: int, stop: int) -> tuple[int, int]:
    """``(first, stop)`` clipped to the piece's bars, at least one bar."""
    n = len(piece.bar_starts_q)
    first = int(np.clip(first, 0, max(0, n - 1)))
    stop = int(np.clip(stop, first + 1, n))
    return first, stop


def bar_range_around(piece, note: int | None, n_bars: int = DEFAULT_BARS) -> tuple[int, int]:
    """``n_bars`` bars holding note ``note`` (its bar second of them when it can be), or the first
    ``n_bars`` bars when ``note`` is None or not a note of the piece."""
    if note is None or not 0 <= int(note) < len(piece):
        return clip_bar_range(piece, 0, n_bars)
    b = int(piece.bar[int(note)])
    first = max(0, b - 1)
    first = max(0, min(first, len(piece.bar_starts_q) - n_bars))
    return clip_bar_range(piece, first, first + n_bars)


def legend_items(shade: bool = False) -> list[tuple[str, str, str]]:
    """(state, colour, words) for the page's legend."""
    return [("picked", COLORS["picked"], "picked by the masker (would be masked at this ratio)"),
            ("frozen", COLORS["frozen"], "frozen (never masked): grey, notehead in parentheses"),
            ("other", shade_color(0.8) if shade else COLORS["other"],
             "other notes" + (" (darker blue = higher masker score)" if shade else "")),
            ("selected", COLORS["selected"], "the note selected on Explore (blue ring)")]


# ----------------------------------------------------------------------------- quantisation

def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5 + 1e-9).astype(np.int64)


def _bar_steps(piece, first: int, stop: int) -> np.ndarray:
    return np.maximum(1, _round_half_up(np.asarray(piece.bar_lengths_q[first:stop]) * GRID_PER_QUARTER))


def _quantise(piece, idx: np.ndarray, first: int, stop: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Onset and end of notes ``idx`` in steps from the start of bar ``first`` (the range's own
    time line, bars of ``_bar_steps`` steps), and what the rounding changed."""
    steps = _bar_steps(piece, first, stop)
    starts = np.concatenate([[0], np.cumsum(steps)])  # range step of each bar line, and the end
    bar = piece.bar[idx].astype(np.int64)
    pos = np.minimum(_round_half_up(piece.beat[idx] * GRID_PER_QUARTER), steps[bar - first] - 1)
    onset = starts[bar - first] + pos
    end_q = piece.onset_q[idx] + piece.duration_q[idx]
    bstarts = np.asarray(piece.bar_starts_q, dtype=np.float64)
    end_bar = np.clip(np.searchsorted(bstarts, end_q + 1e-9, side="right") - 1, 0, len(bstarts) - 1)
    in_range = end_bar < stop
    eb = np.clip(end_bar, first, stop - 1) - first
    end = np.where(in_range, starts[eb] + _round_half_up((end_q - bstarts[np.clip(end_bar, 0, None)]) *
                                                         GRID_PER_QUARTER), starts[-1])
    lengthened = end < onset + 1
    end = np.maximum(end, onset + 1)
    cut = end > starts[-1]
    end = np.minimum(end, starts[-1])
    q = {"onsets_moved": int(np.sum(np.abs(pos / GRID_PER_QUARTER - piece.beat[idx]) > 1e-6)),
         "ends_moved": int(np.sum(~cut & ~lengthened & (np.abs((end - onset) / GRID_PER_QUARTER
                                                                - piece.duration_q[idx]) > 1e-6))),
         "lengthened": int(np.sum(lengthened & ~cut)),
         "cut_at_range_end": int(np.sum(cut | ~in_range))}
    return onset, end, q


def _split_values(pos: int, length: int) -> list[tuple[int, str, bool]]:
    """Note values (16ths, type, dotted) writing ``length`` 16ths from ``pos`` 16ths after a bar line,
    tied: the longest value that fits and starts where such a value may (a quarter or longer, or a
    dotted value, on a quarter; a dotted half or longer on an even quarter; a shorter one on a
    multiple of its length)."""
    out = []
    while length > 0:
        for v, typ, dot in _VALUES:
            base = v * 2 // 3 if dot else v
            if dot:  # a dotted value on a beat; a dotted half or longer on every other quarter
                align = 2 * GRID_PER_QUARTER if base >= 2 * GRID_PER_QUARTER else GRID_PER_QUARTER
            else:
                align = min(base, GRID_PER_QUARTER)
            if v <= length and pos % align == 0:
                out.append((v, typ, dot))
                pos += v
                length -= v
                break
    return out


def _beat_steps(ts: tuple[int, int]) -> int:
    """Steps of one beam group: a dotted quarter in 6/8, 9/8, 12/8; a quarter otherwise."""
    num, den = ts
    if den == 8 and num % 3 == 0 and num > 3:
        return 3 * GRID_PER_QUARTER // 2
    return GRID_PER_QUARTER


def _beams(frags: list) -> dict[int, str]:
    """``begin`` / ``continue`` / ``end`` per fragment (by position in ``frags``: one voice's notes of
    one bar, in time order, as (onset, length, beat group)): runs of two or more adjacent values
    shorter than a quarter in the same beat group are beamed."""
    out: dict[int, str] = {}
    run: list[int] = []

    def close():
        if len(run) > 1:
            out.update({k: "continue" for k in run})
            out[run[0]], out[run[-1]] = "begin", "end"
        run.clear()

    for k, (pos, v, group) in enumerate(frags):
        if v >= GRID_PER_QUARTER:
            close()
            continue
        if run and (frags[run[-1]][2] != group or frags[run[-1]][0] + frags[run[-1]][1] != pos):
            close()
        run.append(k)
    close()
    return out


def _time_signature(piece, bar: int, steps: int) -> tuple[int, int]:
    start = float(piece.bar_starts_q[bar])
    num, den = 4, 4
    for t, n, d in piece.time_signatures:
        if t <= start + 1e-9:
            num, den = int(n), int(d)
    if round(4 * num / den * GRID_PER_QUARTER) == steps:
        return num, den
    for den in (4, 8, 16):
        if (steps * den) % (4 * GRID_PER_QUARTER) == 0:
            return steps * den // (4 * GRID_PER_QUARTER), den
    return steps, 16


# ----------------------------------------------------------------------------- MusicXML

class _Frag(NamedTuple):
    """One written value of a chord in one bar (a note longer than one value, or crossing a bar
    line, is several, tied)."""

    k: int  # its index in the bar's list
    voice: int
    staff: int
    pos: int  # steps from the bar line
    length: int  # steps
    type: str  # MusicXML type
    dotted: bool
    members: list[int]  # positions (into the range's arrays) of the chord's notes
    tie_stop: bool  # continues a note begun earlier
    tie_start: bool  # the note goes on after it


def _voices(onset: np.ndarray, end: np.ndarray, pitch: np.ndarray) -> list[list[tuple[int, int, list[int]]]]:
    """Chords (onset, end, positions into the arrays, low to high) per voice, greedy by onset."""
    chords: dict[tuple[int, int], list[int]] = {}
    for i in np.lexsort((pitch, -end, onset)):
        chords.setdefault((int(onset[i]), int(end[i])), []).append(int(i))
    voices: list[list] = []
    free_at: list[int] = []
    for (s, e), members in chords.items():
        for v, t in enumerate(free_at):  # noqa: B007  v (the free voice) is used after the loop
            if t <= s:
                break
        else:
            v = len(voices)
            voices.append([])
            free_at.append(0)
        voices[v].append((s, e, members))
        free_at[v] = e
    return voices


def _pitch_xml(p: int) -> tuple[str, int, int, str]:
    step, alter = SPELLING[p % 12]
    octave = p // 12 - 1
    xml = f"<step>{step}</step>" + (f"<alter>{alter}</alter>" if alter else "") + f"<octave>{octave}</octave>"
    return step, alter, octave, xml


def build_musicxml(piece, table=None, first: int = 0, stop: int | None = None, *, shade: bool = False,
                   title: str | None = None) -> tuple[str, dict[int, list[str]], np.ndarray, dict[str, int]]:
    """MusicXML (partwise, one two-staff part) of bars ``[first, stop)`` of ``piece``, coloured by
    ``table`` (the masker overlay, or None). Returns (xml, note ids per piece note, the piece's note
    indices shown, what the quantisation changed). See the module rules."""
    first, stop = clip_bar_range(piece, first, len(piece.bar_starts_q) if stop is None else stop)
    lo, hi = np.searchsorted(piece.bar, [first, stop], side="left")
    idx = np.arange(lo, hi, dtype=np.int64)
    steps = _bar_steps(piece, first, stop)
    starts = np.concatenate([[0], np.cumsum(steps)])
    onset, end, quant = _quantise(piece, idx, first, stop)
    pitch = piece.pitch[idx].astype(int)
    states = note_states(table, len(piece))
    if len(states) != len(piece):
        raise ValueError(f"the overlay has {len(states)} rows; the piece has {len(piece)} notes")
    if shade and table is not None and "score" in table:
        sc = table["score"].to_numpy(dtype=np.float64)
        ranks = (np.argsort(np.argsort(sc, kind="stable"), kind="stable") / max(1, len(sc) - 1))
    else:
        ranks = None

    def colour(i: int) -> str:
        s = states[i]
        if s != "other" or ranks is None:
            return COLORS[s]
        return shade_color(ranks[i])

    staff_of = np.where(pitch >= SPLIT_PITCH, 1, 2)
    # voices per staff over the whole range: (voice number, staff, chords)
    layers: list[tuple[int, int, list]] = []
    for staff in (1, 2):
        sel = np.flatnonzero(staff_of == staff)
        vs = _voices(onset[sel], end[sel], pitch[sel]) or [[]]
        for chords in vs:
            layers.append((len(layers) + 1, staff, [(s, e, [int(sel[m]) for m in mem]) for s, e, mem in chords]))

    ids: dict[int, list[str]] = {int(i): [] for i in idx}
    parts_done: dict[int, int] = {int(i): 0 for i in idx}
    per_bar: list[list[_Frag]] = [[] for _ in range(stop - first)]
    for vnum, staff, chords in layers:
        for s, e, members in chords:
            t = s
            while t < e:
                b = int(np.searchsorted(starts, t, side="right") - 1)
                seg_end = min(e, int(starts[b + 1]))
                pos = t - int(starts[b])
                vals = _split_values(pos, seg_end - t)
                for _k, (v, typ, dot) in enumerate(vals):
                    per_bar[b].append(_Frag(len(per_bar[b]), vnum, staff, pos, v, typ, dot, members, t > s,
                                            t + v < e))
                    pos += v
                    t += v
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<score-partwise version="4.0">']
    if title:
        out.append(f"<work><work-title>{_xml_escape(title)}</work-title></work>")
    out.append('<part-list><score-part id="P1"><part-name print-object="no">Piano</part-name></score-part></part-list>'
               '<part id="P1">')
    last_ts = None
    for b in range(stop - first):
        L = int(steps[b])
        out.append(f'<measure number="{first + b + 1}">')
        if b and b % BARS_PER_SYSTEM == 0:
            out.append('<print new-system="yes"/>')
        ts = _time_signature(piece, first + b, L)
        attrs = []
        if b == 0:
            attrs.append(f"<divisions>{GRID_PER_QUARTER}</divisions><key><fifths>0</fifths></key>")
        if ts != last_ts:
            attrs.append(f"<time><beats>{ts[0]}</beats><beat-type>{ts[1]}</beat-type></time>")
            last_ts = ts
        if b == 0:
            attrs.append('<staves>2</staves><clef number="1"><sign>G</sign><line>2</line></clef>'
                         '<clef number="2"><sign>F</sign><line>4</line></clef>')
        if attrs:
            out.append("<attributes>" + "".join(attrs) + "</attributes>")
        frags = per_bar[b]
        # accidentals: per staff, in time order; a tied continuation shows none and changes nothing
        shown: dict[tuple[int, int], bool] = {}  # (fragment, member) -> accidental written
        state: dict[tuple[int, str, int], int] = {}  # (staff, step, octave) -> alteration in force
        for f in sorted(frags, key=lambda f: f.pos):
            for m in f.members:
                step, alter, octave, _ = _pitch_xml(int(pitch[m]))
                key = (f.staff, step, octave)
                shown[(f.k, m)] = not f.tie_stop and state.get(key, 0) != alter
                if not f.tie_stop:
                    state[key] = alter
        first_layer = {1: None, 2: None}
        for vnum, staff, _ in layers:
            if first_layer[staff] is None:
                first_layer[staff] = vnum
        written = False
        for vnum, staff, _ in layers:
            mine = sorted((f for f in frags if f.voice == vnum), key=lambda f: f.pos)
            if not mine and vnum != first_layer[staff]:
                continue
            if written:
                out.append(f"<backup><duration>{L}</duration></backup>")
            written = True
            if not mine:
                out.append(f'<note><rest measure="yes"/><duration>{L}</duration><voice>{vnum}</voice>'
                           f"<staff>{staff}</staff></note>")
                continue
            group = _beat_steps(ts)
            beams = _beams([(f.pos, f.length, f.pos // group) for f in mine])
            t = 0
            for k, f in enumerate(mine + [None]):
                gap_end = L if f is None else f.pos
                if gap_end > t:  # rests in the staff's first voice, invisible space in the others
                    if vnum == first_layer[staff]:
                        for v, typ, dot in _split_values(t, gap_end - t):
                            out.append(f"<note><rest/><duration>{v}</duration><voice>{vnum}</voice>"
                                       f"<type>{typ}</type>" + ("<dot/>" if dot else "") +
                                       f"<staff>{staff}</staff></note>")
                    else:
                        out.append(f"<forward><duration>{gap_end - t}</duration><voice>{vnum}</voice>"
                                   f"<staff>{staff}</staff></forward>")
                if f is None:
                    break
                _, _, _, pos, v, typ, dot, members, tie_stop, tie_start = f
                for j, m in enumerate(sorted(members, key=lambda m: pitch[m])):
                    i = int(idx[m])
                    nid = note_id(i, parts_done[i])
                    parts_done[i] += 1
                    ids[i].append(nid)
                    _, alter, _, pxml = _pitch_xml(int(pitch[m]))
                    frozen = states[i] == "frozen"
                    note = [f'<note id="{nid}" color="{colour(i)}">', "<chord/>" if j else "",
                            f"<pitch>{pxml}</pitch><duration>{v}</duration>",
                            '<tie type="stop"/>' if tie_stop else "", '<tie type="start"/>' if tie_start else "",
                            f"<voice>{vnum}</voice><type>{typ}</type>", "<dot/>" if dot else ""]
                    if shown.get((f.k, m)):
                        note.append(f"<accidental>{_ACCIDENTAL[alter]}</accidental>")
                    if frozen:
                        note.append(f'<notehead parentheses="yes" color="{COLORS["frozen"]}">normal</notehead>')
                    note.append(f"<staff>{staff}</staff>")
                    if j == 0 and k in beams:
                        note.append(f'<beam number="1">{beams[k]}</beam>')
                    if tie_stop or tie_start:
                        note.append("<notations>" + ('<tied type="stop"/>' if tie_stop else "") +
                                    ('<tied type="start"/>' if tie_start else "") + "</notations>")
                    note.append("</note>")
                    out.append("".join(note))
                t = pos + v
        out.append("</measure>")
    out.append("</part></score-partwise>")
    return "\n".join(out), ids, idx, quant


# ----------------------------------------------------------------------------- engraving

def _toolkit():
    if not _TOOLKIT:
        import verovio

        with contextlib.suppress(Exception):  # older bindings: keep their log
            verovio.enableLog(verovio.LOG_OFF)
        _TOOLKIT.append(verovio.toolkit())
    return _TOOLKIT[0]


def render_svg(musicxml: str, *, width: int = 1700, scale: int = 40) -> list[str]:
    """Verovio's SVG of ``musicxml``, one document per page (one page unless the range is very long:
    the page height fits the music; a viewBox, so each SVG scales to its container's width)."""
    with _RENDER_LOCK:
        tk = _toolkit()
        tk.setOptions({"pageWidth": width, "pageHeight": 60000, "adjustPageHeight": True, "scale": scale,
                       "header": "none", "footer": "none", "breaks": "encoded", "svgViewBox": True,
                       "pageMarginTop": 50, "pageMarginBottom": 50, "pageMarginLeft": 50,
                       "pageMarginRight": 50, "minLastJustification": 0.0})
        if not tk.loadData(musicxml):
            raise ValueError("Verovio could not read the MusicXML it was given")
        return [tk.renderToSVG(p) for p in range(1, tk.getPageCount() + 1)]


def _ring_css(ids: list[str]) -> str:
    if not ids:
        return ""
    sel = ", ".join(f'g[id="{i}"] .notehead use' for i in ids)
    return (f"<style>{sel} {{ stroke: {COLORS['selected']}; stroke-width: 160px; "
            "paint-order: stroke; }</style>")


def quantise_words(quant: dict[str, int], n: int, first: int, stop: int) -> str:
    """The caption's sentence on what the quantisation changed."""
    parts = [f"{quant['onsets_moved']:,} onsets", f"{quant['ends_moved']:,} ends"]
    words = (f"Quantised for notation: onsets and ends rounded to the nearest 16th note (the same rule for MIDI "
             f"and MusicXML; a score's notes are re-written from the piece, its own layout is not kept): "
             f"{' and '.join(parts)} of the {n:,} notes moved")
    if quant["lengthened"]:
        words += f", {quant['lengthened']:,} notes shorter than a 16th shown as 16ths"
    if quant["cut_at_range_end"]:
        words += f", {quant['cut_at_range_end']:,} notes cut at the end of bar {stop} (they sound on)"
    return words + (". Two staves split at middle C (C4 and up on the treble staff); no key signature, "
                     "pitches spelled C# Eb F# Ab Bb.")


def score_view(piece, table=None, first: int = 0, stop: int | None = None, *, selected: int | None = None,
               shade: bool = False) -> ScoreView:
    """Build and engrave bars ``[first, stop)`` (default: ``DEFAULT_BARS`` bars from ``first``) of
    ``piece`` coloured by the overlay ``table``; ``selected``: a piece note to ring."""
    stop = first + DEFAULT_BARS if stop is None else stop
    first, stop = clip_bar_range(piece, first, stop)
    t0 = time.perf_counter()
    xml, ids, idx, quant = build_musicxml(piece, table, first, stop, shade=shade)
    t1 = time.perf_counter()
    pages = render_svg(xml)
    ring = ids.get(int(selected), []) if selected is not None else []
    if ring:  # a <style> inside each page's root <svg> element
        pages = [re.sub(r"(<svg\b[^>]*>)", lambda m: m[1] + _ring_css(ring), p, count=1) for p in pages]
    t2 = time.perf_counter()
    return ScoreView(musicxml=xml, pages=pages, bars=(first, stop), notes=idx, note_ids=ids, quantised=quant,
                     seconds={"build": t1 - t0, "render": t2 - t1},
                     caption=quantise_words(quant, len(idx), first, stop))
