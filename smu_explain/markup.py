"""Escaping of user-controlled text before it reaches Markdown or HTML (torch-free, no streamlit).

Every string a person or a file controls (file names, MIDI track names, model and run folder
names, class names from a config.json, error reasons that quote any of these) is escaped where
it is put into a Markdown text (Streamlit's ``st.markdown`` / ``st.caption`` / ``st.error`` ...,
widget labels, ``st.table`` cells and headers) with :func:`md_escape`, and where it is put into
HTML (the downloadable report) with :func:`html_escape`. Code-written text around it keeps its
own formatting (``**bold**``, backticks); only the interpolated values are escaped.

:func:`md_escape` backslash-escapes the characters that open inline Markdown (links, images,
emphasis, code, strikethrough, tables, raw HTML and autolinks, entities, Streamlit's ``$`` maths)
and, at the start of the text, the ones that open a block (heading, quote, list); newlines become
spaces, so a value cannot start a block of its own in the middle of a message. CommonMark renders
a backslash-escaped ASCII punctuation character as the character itself, so the reader sees the
name as it is.
"""

from __future__ import annotations

import html
import re

__all__ = ["md_escape", "html_escape", "MD_SPECIAL"]

# characters that open inline Markdown anywhere in a line
MD_SPECIAL = "\\`*_[]<>#!|~$&"
_INLINE = re.compile("([" + re.escape(MD_SPECIAL) + "])")
# what opens a block at the start of a line: a list item (- + *), a setext underline (=),
# an ordered list (1. / 1)); # and > are escaped everywhere already
_BLOCK_START = re.compile(r"^(\s*)([-+=]|\d+[.)])")
_NEWLINES = re.compile(r"[\r\n\f\v\u2028\u2029\x85]+")


def md_escape(text: object) -> str:
    """``text`` (anything; ``str()`` of it) safe inside Markdown: shown as written, never a link,
    an image, emphasis, HTML or a block. ``md_escape("![x](http://h/b.png)")`` ->
    ``\\!\\[x\\](http://h/b.png)``."""
    s = _NEWLINES.sub(" ", str(text))
    s = _INLINE.sub(r"\\\1", s)
    return _BLOCK_START.sub(_escape_block_start, s)


def md_code(text: str) -> str:
    """``text`` as a Markdown code span. Nothing is escaped inside one (a backslash would show), so
    backticks are the only thing to handle: the fence is one backtick longer than their longest run."""
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _escape_block_start(m: re.Match) -> str:
    """``- `` -> ``\\- ``, ``12. `` -> ``12\\. ``: the character that makes the block escaped."""
    lead, mark = m[1], m[2]
    return lead + mark[:-1] + "\\" + mark[-1]


def html_escape(text: object) -> str:
    """``text`` (``str()`` of it) safe as HTML text or a quoted attribute value: ``& < > " '``
    replaced by entities."""
    return html.escape(str(text), quote=True)
