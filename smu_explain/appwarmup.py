"""The app's background warm-up: after the first page, a daemon thread of the server fills the
caches of ``appstate`` with what the pages show first (the demo models, the samples' overlays,
explain tables and rules, the Why page's default views, the sample folder), at the lowest CPU
priority (``lower_priority``), stepping aside while a session's page runs (``user_run``, ``QUIET_S``).

App side only: imports streamlit and ``appstate`` (as ``A``); the library never imports it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from pathlib import Path

import streamlit as st

from . import appstate as A
from .checkpoint import WEIGHTS_NAME

# what the sessions are doing, for the warm-up to keep out of their way
_ACTIVITY = {"running": 0, "last_end": 0.0}
_ACTIVITY_LOCK = threading.Lock()
QUIET_S = 0.5  # the warm-up waits this long after a page run ends (the browser draws meanwhile)


@contextlib.contextmanager
def user_run():
    """``with appwarmup.user_run(): nav.run()`` (app.py): marks a page run of a session, so the
    background warm-up pauses between its steps while one runs and for ``QUIET_S`` after."""
    with _ACTIVITY_LOCK:
        _ACTIVITY["running"] += 1
    try:
        yield
    finally:
        with _ACTIVITY_LOCK:
            _ACTIVITY["running"] -= 1
            _ACTIVITY["last_end"] = time.monotonic()


def _wait_for_quiet(poll_s: float = 0.05) -> float:
    """Blocks while a page run is on or ended less than ``QUIET_S`` ago; returns the seconds waited."""
    t0 = time.monotonic()
    while True:
        with _ACTIVITY_LOCK:
            busy = _ACTIVITY["running"] > 0 or time.monotonic() - _ACTIVITY["last_end"] < QUIET_S
        if not busy:
            return time.monotonic() - t0
        time.sleep(poll_s)


def lower_priority() -> bool:
    """Give the calling thread the lowest CPU priority (nice 19; Linux schedules threads one by one),
    so that a session's page run wins the cores while the warm-up computes. False where the system
    does not allow it (the warm-up then runs at the server's priority)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (OSError, AttributeError):
        return False
    return True


def _warm(status: dict) -> None:
    """Fill the caches with what the pages show first, in the order people open them:
    both demo models; for the first sample: Explore's overlay, explain table and no-model
    rules for both models (Compare), the Why page's default attention, masker and
    counterfactual views; then the other samples; then Compare's sample-folder evaluation
    (its explain tables are the samples', only its rules are new). Runs in a daemon thread of
    the server process (the caches are process-wide) and steps aside for the sessions: each
    step waits until no page run is on and the last ended ``QUIET_S`` ago (``waited_s``), so
    a click is not slowed by the warm-up beyond the step under way. Errors are recorded,
    never raised."""
    import logging

    # the cached functions' spinners have no page to draw on in this thread: keep the log quiet
    for name in ("streamlit.runtime.scriptrunner_utils.script_run_context",
                 "streamlit.runtime.caching.cache_data_api", "streamlit"):
        logging.getLogger(name).setLevel(logging.ERROR)
    t0 = time.perf_counter()
    status["low_priority"] = lower_priority()  # this thread only: the sessions' runs keep theirs

    def step(what, fn, *args):
        status["waited_s"] = round(status.get("waited_s", 0.0) + _wait_for_quiet(), 2)
        t = time.perf_counter()
        try:
            fn(*args)
            status["done"].append((what, round(time.perf_counter() - t, 2)))
        except Exception as e:  # a missing model or a bad sample must not stop the rest
            status["errors"].append((what, f"{type(e).__name__}: {e}"))

    models = [str(p) for p in A.DEMO_MODELS.values() if (p / WEIGHTS_NAME).is_file()]
    for m in models:
        step(f"load {Path(m).name}", A.load_model, m)
    # Explore's draw (hypergeometric p-values) and Why's IG-vs-occlusion Spearman import it on their first
    # use: ~0.6 s of a click, paid here at the lowest priority instead
    step("import scipy.stats", importlib.import_module, "scipy.stats")
    samples = A.list_samples()
    for i, sample in enumerate(samples):
        try:
            data = sample.read_bytes()
            piece = A.read_piece_cached(data, sample.name)
        except Exception as e:
            status["errors"].append((sample.name, str(e)))
            continue
        if len(piece) == 0 or len(piece) > A.MAX_NOTES:
            continue
        for m in models:
            step(f"overlay {sample.name} {Path(m).name}", A.overlay, m, data, piece, A.DEFAULT_RATIO)
            step(f"explain {sample.name} {Path(m).name}", A.explain, m, data, piece, A.DEFAULT_RATIO, 0)
        if models:  # the marks beside the recovery accuracy (Explore: model A; Compare: the first)
            step(f"rules {sample.name}", A.rules, models[0], data, piece, A.DEFAULT_RATIO, 0)
        if i == 0 and models:
            step(f"why {sample.name}", _warm_why, models[0], data, piece)
    for m in models:
        step(f"folder {Path(m).name}", A.folder_explain, m, A.SAMPLE_DIR, A.DEFAULT_RATIO, 0)
    if models:
        step("folder rules", A.folder_rules, models[0], A.SAMPLE_DIR, A.DEFAULT_RATIO, 0)
    status["finished_s"] = round(time.perf_counter() - t0, 2)


def _warm_why(model_path: str, data: bytes, piece) -> None:
    from . import counterfactual as cf

    model, tok = A.load_model(model_path)
    note = A.why_default_note(len(piece))
    A.attention(model_path, data, piece, note, model.config.n_layers - 1, None, False)
    A.masker_note(model_path, data, piece, note, A.WHY_DEFAULTS["n_masks"], A.DEFAULT_RATIO, A.WHY_DEFAULTS["seed"])
    edited = cf.transpose(piece, A.WHY_DEFAULTS["semitones"], [note], config=tok.config)
    A.overlay(model_path, cf.to_midi_bytes(edited), edited, A.DEFAULT_RATIO)


@st.cache_resource(show_spinner=False)
def _warm_up_status() -> dict:
    status: dict = {"done": [], "errors": [], "finished_s": None}
    threading.Thread(target=_warm, args=(status,), name="smu-warm-up", daemon=True).start()
    return status


def start_warm_up() -> dict | None:
    """Start (once per server process) the background warm-up of :func:`_warm`; returns its
    status dict (``done``: [(what, seconds)], ``errors``, ``finished_s``). ``$SMU_NO_WARMUP=1``
    switches it off (tests)."""
    if os.environ.get("SMU_NO_WARMUP"):
        return None
    return _warm_up_status()
