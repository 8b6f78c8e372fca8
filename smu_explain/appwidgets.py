"""The app's widgets and the messages they show: the piece picker (a sample or an upload), the
model picker, the masking-ratio slider every page shares, reading the chosen piece with its
refusals in plain words (``plain_reason``, ``too_many_notes``, ``model_error``), the Plotly
preload of the browser, and the study's figures that Study and Report share (``study_figures``,
built once per results file). Every bad input becomes an ``st.error`` (or ``st.info``) and ``None``,
never an exception.

App side only: imports streamlit and ``appstate`` (the caches, paths and session keys, used as
``A.<name>`` so a test that patches ``appstate`` patches what the widgets read); the library
never imports it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from . import appstate as A
from .checkpoint import user_folder
from .errors import SMUCheckpointError, SMUInputError
from .markup import md_escape

OTHER_FOLDER = "other folder..."


def piece_picker(key: str = "piece") -> tuple[str, bytes] | None:
    """Pick a sample or upload a file; returns (name, bytes) or None (nothing chosen).

    The choice is copied to ``st.session_state[K_PIECE]`` (and an upload to
    ``K_UPLOAD``) so other pages, and this page after a rerun, reuse it. The
    source radio starts on "upload" when the current piece is not a sample.
    An oversize upload is reported with ``st.error`` and returns None.
    """
    samples = A.list_samples()
    names = [p.name for p in samples]
    current = st.session_state.get(A.K_PIECE)
    sources = ["sample", "upload"]
    src = st.radio("Piece", sources, horizontal=True, key=f"{key}_source",
                   index=1 if current and current[0] not in names else 0,
                   format_func=lambda s: "a sample from sample_midi/" if s == "sample"
                   else "upload MIDI / MusicXML")
    if src == "sample":
        if not samples:
            st.info("No sample pieces found in sample_midi/. Upload a file instead.")
            return None
        idx = names.index(current[0]) if current and current[0] in names else 0
        choice = st.selectbox("Sample piece", names, index=idx, key=f"{key}_sample")
        data = (A.SAMPLE_DIR / choice).read_bytes()
        st.session_state[A.K_PIECE] = (choice, data)
        return choice, data
    up = st.file_uploader(f"MIDI or MusicXML file (at most {A.MAX_UPLOAD_MB} MB)", type=A.UPLOAD_TYPES,
                          key=f"{key}_upload")
    if up is None:
        earlier = st.session_state.get(A.K_UPLOAD)
        if earlier is None and current and current[0] not in names:
            earlier = current
        if earlier is not None:
            st.caption(f"Using the earlier upload: {md_escape(earlier[0])}")
            st.session_state[A.K_PIECE] = earlier
        return earlier
    try:
        A.check_upload_size(up.name, up.size)
    except SMUInputError as e:
        st.error(f"Cannot use {md_escape(up.name)}: {md_escape(plain_reason(e.reason))}")
        return None
    data = up.getvalue()
    st.session_state[A.K_PIECE] = st.session_state[A.K_UPLOAD] = (up.name, data)
    return up.name, data


_PLAIN = [  # (pattern in a reader's reason, what a person is told)
    (r"truncated MIDI file: header declares (\d+) tracks?, found (\d+)",
     lambda m: f"the file is cut short: it should hold {m[1]} tracks but only {m[2]} are there. "
               "Export or download it again."),
    (r"truncated MIDI (file|header)",
     lambda m: "the file is cut short or damaged (part of it is missing). Export or download it again."),
    (r"bad MIDI header length", lambda m: "the file's header is damaged. Export or download it again."),
    (r"not a MIDI file \(no 'MThd' header\) nor a MusicXML score",
     lambda m: "this is neither a MIDI file nor a MusicXML score."),
    (r"not a MIDI file", lambda m: "this is not a MIDI file."),
    (r"MIDI type 2", lambda m: "it is a type-2 MIDI file (several independent songs), which the app cannot read."),
    (r"SMPTE time division",
     lambda m: "the file counts time in video frames (SMPTE), not in beats, so it has no bars to show."),
    (r"implausible resolution: (\d+) ticks",
     lambda m: f"the file states an impossible timing resolution ({int(m[1]):,} ticks per beat)."),
    (r"file too large \((\d+) bytes > (\d+)\)",
     lambda m: f"the file is {int(m[1]) / 1e6:.1f} MB; the limit is {int(m[2]) / 1e6:.0f} MB."),
    (r"empty file", lambda m: "the file is empty."),
    (r"^no notes$", lambda m: "the file has no notes."),
    (r"unreadable MIDI|unusable MIDI content",
     lambda m: "the MIDI data inside the file is damaged and cannot be read."),
]


def plain_reason(reason: str) -> str:
    """A reader's error reason in words a person reads (no chunk names, bytes or exception
    types): ``truncated MIDI file: chunk b'MTrk' at byte 41 ...`` -> ``the file is cut short
    or damaged ...``. Reasons without a known pattern come back unchanged."""
    import re

    for pattern, say in _PLAIN:
        m = re.search(pattern, str(reason))
        if m:
            return say(m)
    return str(reason)


def too_many_notes(name: str, n: int) -> str | None:
    """The refusal message (Markdown, ``name`` escaped) for a piece above ``MAX_NOTES`` notes, else None."""
    if n <= A.MAX_NOTES:
        return None
    return (f"{md_escape(name)} has {n:,} notes: more than the app's limit of {A.MAX_NOTES:,} notes per piece, so the "
            f"model is not run on it (it would take minutes). Cut it into shorter excerpts (a movement "
            f"or a section, at most {A.MAX_NOTES:,} notes each) and upload those.")


RATIO_HELP = "Share of the notes the masker picks (its top scores)."


def ratio_slider(key: str, help: str | None = None) -> float:
    """The masking-ratio slider every page shares: it opens on the ratio last chosen on any page
    (``K_RATIO``, else ``DEFAULT_RATIO``) and stores its value there."""
    ratio = st.slider("Masking ratio", 0.05, 0.50, float(st.session_state.get(A.K_RATIO, A.DEFAULT_RATIO)),
                      step=0.01, key=key, help=help)
    st.session_state[A.K_RATIO] = ratio
    return ratio


def piece_model_ratio(prefix: str):
    """The first row of a page on one piece and one model (Explore, Score): piece picker, model
    picker (loaded after the first roll, see :func:`model_picker`'s ``defer_load``) and the ratio
    slider. Returns (choice, model path or None, ratio, the third column for a page's own controls)."""
    c1, c2, c3 = st.columns([3, 3, 2])
    with c1:
        choice = piece_picker(prefix)
    with c2:
        # a demo model is loaded after the first roll, drawn from the scores stored beside it
        model_path = model_picker("Model", f"{prefix}_model", A.K_MODEL_A, "demo adversarial", defer_load=True)
    with c3:
        ratio = ratio_slider(f"{prefix}_ratio", help=RATIO_HELP)
    return choice, model_path, ratio, c3


def run_model(fn, *args):
    """Call a model helper on the page's piece; show a plain error (never a traceback) and return
    None on failure."""
    try:
        return fn(*args)
    except SMUCheckpointError as e:
        st.error(model_error(e))
    except SMUInputError as e:
        st.error(f"The model cannot read this piece: {md_escape(e.reason)}")
    except Exception as e:  # keep the page alive whatever the model does
        st.error(f"The model failed on this piece: {type(e).__name__}: {md_escape(e)}")
    return None


def load_piece(choice: tuple[str, bytes] | None):
    """Read the chosen piece; on bad input (unreadable, no notes, more than ``MAX_NOTES``
    notes) shows ``st.error`` in plain words and returns None."""
    if choice is None:
        return None
    name, data = choice
    try:
        A.check_upload_size(name, len(data))
        piece = A.read_piece_cached(data, name)
    except A.TooManyNotes as e:
        st.error(too_many_notes(name, e.n))
        return None
    except SMUInputError as e:
        st.error(f"Cannot read {md_escape(name)}: {md_escape(plain_reason(e.reason))}")
        return None
    if len(piece) == 0:
        st.error(f"{md_escape(name)}: the piece has no notes to show.")
        return None
    if msg := too_many_notes(name, len(piece)):
        st.error(msg)
        return None
    return piece


def piece_or_stop(choice: tuple[str, bytes] | None):
    """``load_piece``, or stop the page: with a hint when nothing is chosen yet, after
    ``load_piece``'s error when the file is bad."""
    piece = load_piece(choice)
    if piece is None:
        if choice is None:
            st.info("Pick a sample piece or upload a MIDI / MusicXML file.")
        st.stop()
    return piece


def model_picker(label: str, key: str, state_key: str, default: str, defer_load: bool = False) -> str | None:
    """Choose a model folder; returns its path when it loads, else shows why and returns None.
    ``defer_load``: a folder with masker scores stored for its weights (:func:`appstate.stored_scores`)
    is returned unloaded (the page loads it after its first roll, and reports a failure then).

    A missing demo model gives ``st.info`` (how to get it), a broken folder
    ``st.error`` with the ``SMUCheckpointError`` reason.
    """
    choices = A.model_choices()
    labels = list(choices) + [OTHER_FOLDER]
    stored = st.session_state.get(state_key)
    idx = labels.index(default) if default in labels else 0
    if stored:
        for i, lab in enumerate(labels[:-1]):
            if str(choices[lab]) == str(stored):
                idx = i
                break
        else:
            idx = len(labels) - 1
    choice = st.selectbox(label, labels, index=idx, key=f"{key}_choice")
    if choice == OTHER_FOLDER:
        path_text = st.text_input("Model folder (holds config.json and model.safetensors)",
                                  value=str(stored) if stored else "", key=f"{key}_path")
        if not path_text.strip():
            st.info("Type the path of a model folder.")
            return None
        try:
            path = user_folder(path_text)
        except SMUInputError as e:
            st.error(f"Cannot use this model folder: {md_escape(e.reason)}")
            return None
    else:
        path = choices[choice]
        if choice in A.DEMO_MODELS and not path.exists():
            st.info(f"The {choice} model is not there yet ({path.relative_to(A.REPO_ROOT)}). "
                    "Train it with `smu pretrain` (or on the Train page) and pick the run's folder, "
                    "or choose another model folder.")
            return None
    if not (defer_load and A.stored_scores(path)):
        try:
            A.load_model(path)
        except SMUCheckpointError as e:
            st.error(model_error(e))
            return None
    if problem := A.stored_scores_problem(path):
        st.caption(f"The masker scores stored beside this model cannot be read ({md_escape(problem)}); "
                   "the model is run instead.")
    st.session_state[state_key] = str(path)
    return str(path)


def model_error(e: SMUInputError) -> str:
    """The message (Markdown, escaped) of a model folder that does not load."""
    return f"Cannot load the model: {md_escape(e.reason)} ({md_escape(e.path)})"


def _plotly_chunk() -> str | None:
    """File name of the Plotly chunk of Streamlit's frontend (``static/js/PlotlyChart.<hash>.js``
    in the installed streamlit), or None when there is not exactly one."""
    found = sorted((Path(st.__file__).parent / "static" / "static" / "js").glob("PlotlyChart.*.js"))
    return found[0].name if len(found) == 1 else None


def preload_plotly() -> None:
    """Has the browser load and compile Streamlit's Plotly chunk (about 4.7 MB of JavaScript)
    now, while the server loads the model, instead of when the first chart arrives: without it
    the first piano roll waits for both, one after the other. Draws nothing (a script in an
    ``st.html`` element, put at the end of the sidebar); the chunk is imported under the URL the
    frontend imports it from, so the frontend then finds it ready. Does nothing where the chunk
    or ``st.html(unsafe_allow_javascript=...)`` is missing (another Streamlit version)."""
    import inspect

    name = _plotly_chunk()
    if name is None or "unsafe_allow_javascript" not in inspect.signature(st.html).parameters:
        return
    js = ("(() => { const s = document.querySelector('script[src*=\"/static/js/index.\"]');"
          f"import(new URL({name!r}, s ? s.src : new URL('static/js/', document.baseURI)))"
          ".catch(() => {}); })();")
    st.html(f"<script>{js}</script>", unsafe_allow_javascript=True)


def study_figures(path: str | Path, results: dict) -> dict:
    """``study.analysis_figures`` of the study's ``results`` read from ``path``, built once per file
    (its path, modification time and size; ``A.figure``): the Study and Report pages rerun on every
    widget change, and these rolls and charts cost ~0.3 s of CPU to build."""
    from . import study

    p = Path(path)
    try:
        st_ = p.stat()
        stamp = (st_.st_mtime_ns, st_.st_size)
    except OSError:
        return study.analysis_figures(results.get("analysis", {}))
    return A.figure(("study figures", str(p.resolve()), *stamp),
                    lambda: study.analysis_figures(results.get("analysis", {})))
