"""The app's caches and shared state (app side only).

With ``appwidgets`` (the pickers, the ratio slider, the refusal messages) and ``appwarmup``
(the background warm-up), which import it, this is one of the three app-side modules of the
package that import streamlit; the library modules never import them. Page scripts
(``app_pages/*.py``) use these helpers for:

- paths: the repository's ``sample_midi/`` and ``models/`` folders, the demo
  model folders, the run registry (``$SMU_RUNS_DIR``, default ``./runs``;
  ``$SMU_MAX_RUNS`` concurrent runs, default 1; ``$SMU_CLI`` overrides the
  command prefix that runs the CLI, default ``python -m smu_explain.cli``);
- caching: models (``checkpoint.load_checkpoint``) with ``st.cache_resource`` (keyed
  by folder and the weights' modification time, so a refreshed checkpoint reloads; torch
  runs on ``$SMU_TORCH_THREADS`` threads, default one core fewer than the machine's, see
  :func:`torch_threads`);
  pieces, explain tables, masker views, task predictions, rules, attention... with
  ``st.cache_data``. Every cached function calls one library function (``explain``,
  ``baselines``, ``audio``, ``tokenizer``); none re-implements it;
- reading pieces (``read_piece_cached``: bounded, cached by content, ``TooManyNotes`` above
  ``MAX_NOTES``), the models a picker offers (``model_choices``) and the notes on a model
  (``untrained_masker_note``, ``recovery_note``); the widgets themselves are in ``appwidgets``;
- state shared across pages lives in non-widget ``st.session_state`` keys
  (``smu_piece`` = (name, bytes), ``smu_upload`` = the last upload, ``smu_model_a`` / ``smu_model_b`` = folder
  paths, ``smu_ratio``, ``smu_notes`` = the note chosen on Explore per piece), because widget values do not
  survive a page change.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from . import limits
from .checkpoint import CONFIG_NAME, SCORES_NAME, WEIGHTS_NAME, load_checkpoint, load_masker_scores, read_config
from .errors import SMUCheckpointError, SMUInputError
from .markup import md_escape

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "sample_midi"
MODELS_DIR = REPO_ROOT / "models"
DEMO_MODELS = {
    "demo adversarial": MODELS_DIR / "demo-adversarial",
    "demo random": MODELS_DIR / "demo-random",
}
MAX_UPLOAD_MB = 20
# every file the app reads is read in a worker process with these bounds (sandbox.read_piece_bounded);
# pieces above READ_MAX_NOTES notes stay in the worker (those above MAX_NOTES are refused after reading)
READ_MAX_MEMORY_BYTES = 2 * 1024 ** 3
READ_TIMEOUT_S = 60.0
READ_MAX_NOTES = 1_000_000
# pieces with more notes are refused with a message before any model runs (limits.py; smu explain too)
MAX_NOTES = limits.MAX_NOTES
UPLOAD_TYPES = ["mid", "midi", "kar", "smf", "xml", "musicxml", "mxl"]

# non-widget session keys shared by pages
K_PIECE = "smu_piece"  # (name, bytes) of the piece in use
K_UPLOAD = "smu_upload"  # (name, bytes) of the last upload
K_MODEL_A = "smu_model_a"
K_MODEL_B = "smu_model_b"
K_RATIO = "smu_ratio"
K_NOTES = "smu_notes"  # {piece_key: the note chosen on Explore, typed or clicked}: Explore and Score read it
DEFAULT_RATIO = 0.15  # the masking ratio the pages open on (and the warm-up fills the caches for)


# ----------------------------------------------------------------------------- registry

@st.cache_resource(show_spinner=False)
def _registry(root: str, max_runs: int, launcher: tuple[str, ...]):
    from .runs import RunRegistry

    return RunRegistry(root, max_concurrent=max_runs, launcher=list(launcher))


def get_registry():
    """The run registry for ``$SMU_RUNS_DIR`` (one shared object per root).

    Raises ``SMUInputError`` when ``$SMU_RUNS_DIR`` or ``$SMU_MAX_RUNS`` is unusable."""
    from .runs import default_runs_dir, max_runs_from_env

    try:
        root = str(default_runs_dir().expanduser().resolve())
    except (OSError, RuntimeError) as e:
        raise SMUInputError("SMU_RUNS_DIR", f"not a usable folder path ({e.__class__.__name__})") from None
    launcher = tuple(shlex.split(os.environ["SMU_CLI"])) if os.environ.get("SMU_CLI") else (
        sys.executable, "-m", "smu_explain.cli")
    return _registry(root, max_runs_from_env(), launcher)


# ----------------------------------------------------------------------------- pieces

def list_samples() -> list[Path]:
    """MIDI / MusicXML files of ``sample_midi/``, sorted by name."""
    if not SAMPLE_DIR.is_dir():
        return []
    exts = {"." + e for e in UPLOAD_TYPES}
    return sorted(p for p in SAMPLE_DIR.iterdir() if p.suffix.lower() in exts)


def check_upload_size(name: str, size: int) -> None:
    """``SMUInputError`` when an upload is larger than ``MAX_UPLOAD_MB``."""
    if size > MAX_UPLOAD_MB * 1024 * 1024:
        raise SMUInputError(name, f"file is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB")


class TooManyNotes(SMUInputError):
    """A piece above ``MAX_NOTES`` notes: refused, and never kept in the cache (one such piece
    can take tens of MB; 128 of them would not fit the server)."""

    def __init__(self, name: str, n: int):
        super().__init__(name, f"{n:,} notes: more than the app's limit of {MAX_NOTES:,} notes per piece")
        self.n = n


@st.cache_data(show_spinner=False, max_entries=128)
def _read_piece_cached(data: bytes, name: str, fields: tuple | None):
    piece = _read(data, name, fields)
    if len(piece) > MAX_NOTES:
        raise TooManyNotes(name, len(piece))  # an exception is not cached: the piece is let go
    return piece


def read_piece_cached(data: bytes, name: str, fields: tuple | None = None):
    """``reading.read_piece`` on bytes (cached by content), with the default tokenizer config or
    the ``fields`` values (:func:`read_fields`) of a model's. Raises ``SMUInputError``
    (``TooManyNotes`` above ``MAX_NOTES`` notes: such pieces are not cached)."""
    return _read_piece_cached(data, name, fields)  # one call form: one cache entry per file


def read_fields(config) -> tuple | None:
    """The values of a tokenizer config that ``read_piece`` uses (``tokenizer.READ_FIELDS``), or
    None when they are the defaults: such a config reads a file as the pages read it."""
    from .reading import READ_FIELDS
    from .tokenizer_config import TokenizerConfig

    vals = tuple(getattr(config, f) for f in READ_FIELDS)
    return None if vals == tuple(getattr(TokenizerConfig(), f) for f in READ_FIELDS) else vals


def read_key(data: bytes, fields: tuple | None = None) -> str:
    """The cache key of a piece read from ``data`` with ``fields`` (:func:`read_fields`): its
    :func:`piece_key` for the default reading, so every page and the folder evaluation share the
    model passes of a file."""
    return piece_key(data) if fields is None else f"{piece_key(data)}:{fields}"


def _is_sample(data: bytes, name: str) -> bool:
    """True when ``data`` is, byte for byte, the file ``name`` of ``sample_midi/`` (the
    repository's own pieces); ``name`` is only compared with the samples' names."""
    samples = {p.name: p for p in list_samples()}
    try:
        return name in samples and samples[name].stat().st_size == len(data) and samples[name].read_bytes() == data
    except OSError:
        return False


def _read(data: bytes, name: str, fields: tuple | None = None):
    """Read ``data`` (an upload, a folder's file) the bounded way: in a worker process limited to
    ``READ_MAX_MEMORY_BYTES`` of memory and ``READ_TIMEOUT_S`` seconds
    (``sandbox.read_piece_bounded``), stored under a name the app makes ("input" + a suffix the
    tokenizer reads, told by ``name``'s suffix or the content); ``name`` is only data (the piece
    name, the error's file name). Pieces above ``READ_MAX_NOTES`` notes never leave the worker.
    The repository's own samples (the same bytes as the file of ``sample_midi/``) are read in
    this process: they are known, and the first roll does not wait for a worker (~0.17 s)."""
    from .reading import READ_FIELDS, read_piece
    from .sandbox import piece_name, read_piece_bounded
    from .tokenizer_config import TokenizerConfig

    config = TokenizerConfig(**dict(zip(READ_FIELDS, fields, strict=False))) if fields is not None else None
    if _is_sample(data, name):
        piece = read_piece(SAMPLE_DIR / name, name=piece_name(name), config=config)
        piece.source = name
        return piece
    return read_piece_bounded(data, filename=name, config=config, max_memory_bytes=READ_MAX_MEMORY_BYTES,
                              timeout_s=READ_TIMEOUT_S, max_notes=READ_MAX_NOTES)


# ----------------------------------------------------------------------------- models

def _weights_mtime(path: Path) -> float:
    try:
        return (path / WEIGHTS_NAME).stat().st_mtime
    except OSError:
        return 0.0


def torch_threads() -> int:
    """Torch's intra-op threads in the app: ``$SMU_TORCH_THREADS``, else one core fewer than the
    machine has (at least 1, at most 4). The browser that shows the app usually runs on the same
    machine: on 2 cores, two torch threads left it none while a model pass ran (the first roll was
    drawn while the explain table was computed), and on a busy machine they cost 2.4 times the CPU
    of one (the OpenMP threads wait for each other) and took 2.4 times as long."""
    n = os.environ.get("SMU_TORCH_THREADS", "").strip()
    if n.isdigit() and int(n) > 0:
        return int(n)
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def _set_threads() -> None:
    import torch

    torch.set_num_threads(torch_threads())


@st.cache_resource(show_spinner="Loading model...", max_entries=8)
def _load_model(path: str, mtime: float):
    """``checkpoint.load_checkpoint``: (encoder in eval mode, tokenizer); a fine-tuned folder
    gives its encoder (with the pre-trained heads and masker)."""
    _set_threads()
    ckpt = load_checkpoint(path)
    return ckpt.encoder.eval(), ckpt.tokenizer


@st.cache_resource(show_spinner="Loading the fine-tuned model...", max_entries=4)
def _load_task_model(path: str, mtime: float):
    """``checkpoint.load_checkpoint`` of a fine-tuned folder: (model in eval mode, tokenizer)."""
    _set_threads()
    ckpt = load_checkpoint(path, kind="finetuned")
    return ckpt.model.eval(), ckpt.tokenizer


def load_task_model(path: str | Path):
    """(fine-tuned model, tokenizer) of a fine-tuned folder, cached; raises ``SMUCheckpointError``."""
    p = Path(path)
    return _load_task_model(str(p.resolve()), _weights_mtime(p))


def _checkpoint_info(path: str | Path) -> dict | None:
    """The metadata saved with the model at ``path`` (its config.json, read without torch: the first
    roll is drawn before the model loads), None when that cannot be read."""
    try:
        return read_config(path)
    except SMUCheckpointError:
        return None


def _imported(info: dict) -> dict:
    """config.json's ``"imported"`` section (``smu import``), ``{}`` for this project's own models."""
    imported = info.get("imported")
    return imported if isinstance(imported, dict) else {}


def untrained_masker_note(path: str | Path) -> str | None:
    """A warning (Markdown, names escaped) when the model at ``path`` was not pre-trained adversarially.

    Only the adversarial strategy trains the masker head; a random- or bar-masking
    model's head is still at its initialisation, so its scores, picks and frozen
    notes carry no meaning. Returns None for an adversarial model.
    """
    info = _checkpoint_info(path)
    if info is None:
        return None
    if _imported(info).get("has_masker") is False:
        return (f"{md_escape(Path(path).name)} is a published checkpoint without a masker head (the file holds "
                "none): every note scores the same, so the masker's picks and frozen notes below mean nothing.")
    strategy = info.get("strategy")  # config.json: any JSON at all
    name = strategy.get("name") if isinstance(strategy, dict) else None
    if name == "adversarial":
        return None
    how = f"the {md_escape(name)} strategy" if name else "an unknown strategy"
    return (f"{md_escape(Path(path).name)} was pre-trained with {how}: its masker head was never trained, so its "
            "masker scores, picks and frozen notes are those of an untrained head (shown for comparison only).")


def recovery_note(path: str | Path) -> str | None:
    """A sentence (Markdown, names escaped) when the model at ``path`` cannot recover notes: a
    published checkpoint imported without its recovery heads (MidiBERT-Piano's ``model.ckpt``
    holds the encoder only). None otherwise (and when the model cannot be loaded)."""
    info = _checkpoint_info(path)
    if info is not None and _imported(info).get("has_recovery_heads") is False:
        return (f"{md_escape(Path(path).name)} is a published encoder without its recovery heads (the checkpoint "
                "holds the encoder only), so it cannot guess masked notes: its guesses, recovery accuracy and "
                "reconstruction are not shown.")
    return None


def load_model(path: str | Path):
    """(model, tokenizer) of a checkpoint folder; raises ``SMUCheckpointError``."""
    p = Path(path)
    return _load_model(str(p.resolve()), _weights_mtime(p))


def model_choices() -> dict[str, Path]:
    """Label -> folder: the demo models, every folder under models/, finished runs with weights."""
    out: dict[str, Path] = dict(DEMO_MODELS)
    if MODELS_DIR.is_dir():
        for d in sorted(MODELS_DIR.iterdir()):
            if d.is_dir() and d not in out.values() and (d / CONFIG_NAME).is_file():
                out[f"models/{d.name}"] = d
    try:
        for label, d in get_registry().model_dirs():
            out[label] = d
    except (OSError, SMUInputError):  # an unusable runs folder: the Train page says why
        pass
    return out


@st.cache_resource(show_spinner=False, max_entries=16)
def _stored_scores(path: str, weights_mtime: float, scores_mtime: float) -> tuple[dict, str | None]:
    """({piece key: entry}, None), or ({}, why) when the file is there but cannot be read."""
    try:
        pieces = load_masker_scores(path, strict=True)
    except SMUCheckpointError as e:
        return {}, e.reason
    return {sha[:PIECE_KEY_LEN]: entry for sha, entry in pieces.items()}, None


def _stored(path: str | Path) -> tuple[dict, str | None]:
    p = Path(path)
    try:
        stamp = (p / SCORES_NAME).stat().st_mtime
    except OSError:
        return {}, None
    return _stored_scores(str(p.resolve()), _weights_mtime(p), stamp)


def stored_scores_problem(path: str | Path) -> str | None:
    """Why the masker scores stored beside a model cannot be read (too large, not JSON, a number
    over the digit limit, nested too deeply), None when they can or there are none."""
    return _stored(path)[1]


def stored_scores(path: str | Path) -> dict:
    """The masker scores stored beside a model's weights (``checkpoint.load_masker_scores``:
    {:func:`piece_key` of a file: entry}, ``{}`` when none or stale), read once per file version. A folder
    whose stored scores match its weights was loaded when they were made: the pages draw the
    first masker overlay of those pieces from them and load the model after the roll."""
    return _stored(path)[0]


def stored_view(model_path: str | Path, key: str, piece) -> pd.DataFrame | None:
    """``explain.masker_view`` of a piece (``key``: its :func:`piece_key`) at ``DEFAULT_RATIO``
    from the scores stored beside the model (:func:`stored_scores`), or None when it is not there."""
    entry = stored_scores(model_path).get(key)
    try:
        if (entry is None or len(entry["score"]) != len(piece)
                or ratio_key(entry["ratio"]) != ratio_key(DEFAULT_RATIO)):
            return None
        df = piece.notes_table()
        df["score"] = np.asarray(entry["score"], dtype=np.float64)
        for col in ("picked", "frozen"):
            flags = np.zeros(len(df), dtype=bool)
            flags[np.asarray(entry[col], dtype=np.int64)] = True
            df[col] = flags
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return df


# ----------------------------------------------------------------------------- explain

PIECE_KEY_LEN = 20


def piece_key(data: bytes) -> str:
    """A file's bytes in a cache key: the first ``PIECE_KEY_LEN`` hex digits of their sha256."""
    return hashlib.sha256(data).hexdigest()[:PIECE_KEY_LEN]


def chosen_note(key: str, n_notes: int) -> int | None:
    """The note the user chose on Explore in the piece ``key`` (:data:`K_NOTES`), or None (none chosen,
    or not a note of a piece of ``n_notes`` notes)."""
    note = st.session_state.get(K_NOTES, {}).get(key)
    return note if note is not None and 0 <= note < n_notes else None


def choose_note(key: str, note: int) -> None:
    """Keep ``note`` as the note chosen in the piece ``key``: a plain key, so it survives page changes."""
    st.session_state.setdefault(K_NOTES, {})[key] = int(note)


def model_key(path: str | Path) -> tuple[str, float]:
    """(resolved folder, weights' modification time): a model folder in a cache key."""
    p = Path(path)
    return str(p.resolve()), _weights_mtime(p)


@st.cache_resource(show_spinner=False, max_entries=96)
def _figure_cached(key: tuple, _build):
    return _build()


def figure(key: tuple, build):
    """The figure ``build()`` makes, built once per ``key`` for the whole server: a rerun that
    changes nothing a figure shows (another note in the inspector, a tab opened, a page visited
    again) does not build it again (a piano roll's Plotly objects cost 0.05-0.2 s of CPU).
    ``key`` names everything the figure shows (:func:`model_key`, :func:`piece_key`,
    :func:`ratio_key`, the settings); the figure is shared, so nobody changes it
    (``st.plotly_chart`` copies it)."""
    return _figure_cached(tuple(key), build)


def ratio_key(ratio: float) -> float:
    """A masking ratio as a cache key: the slider's value to 4 decimals (its step is 0.01), so
    the same ratio reached by different steps (0.16 - 0.01 and 0.15) is one entry."""
    return round(float(ratio), 4)


def mask_groups(ratio: float) -> int:
    """How ``explain.explain_piece`` masks the notes at ``ratio``: each window's notes split
    into ``round(1 / ratio)`` seeded groups, one group masked per copy. This number (with the
    seed) is the only way the ratio enters its predictions, losses and accuracies: ratios with
    the same number share them (0.14 and 0.15: 7 groups; 0.16-0.18: 6)."""
    return max(1, int(round(1.0 / float(ratio))))


def with_picks(frame: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """A copy of a table with ``score`` and ``frozen`` whose ``picked`` column is the pick at
    ``ratio`` (``picking.picks_at``): a new ratio costs a sort, never a model pass."""
    from .picking import picks_at

    out = frame.copy()
    if len(out):
        out["picked"] = picks_at(out["score"].to_numpy(dtype=float),
                                 out["frozen"].fillna(False).to_numpy(dtype=bool), ratio)
    return out


@st.cache_data(show_spinner="Running the model on the piece...", max_entries=64)
def explain_cached(model_path: str, mtime: float, key: str, groups: int, seed: int,
                   _piece: Any) -> pd.DataFrame:
    """The explain table (``explain.explain_piece``) of a piece with its notes masked in
    ``groups`` groups (:func:`mask_groups`); cached by model, piece, groups and seed."""
    from .explain import explain_piece

    model, tokenizer = _load_model(model_path, mtime)
    return explain_piece(model, tokenizer, _piece, ratio=1.0 / groups, seed=seed)


@st.cache_data(show_spinner="Scoring the notes with the masker...", max_entries=32)
def scores_cached(model_path: str, mtime: float, key: str, _piece: Any) -> pd.DataFrame:
    """``explain.masker_view`` of a piece: the notes table with ``score`` / ``picked`` / ``frozen``
    from one clean pass per window (scores and frozen notes do not depend on the ratio)."""
    stored = stored_view(model_path, key, _piece)
    if stored is not None:
        return stored
    from .explain import masker_view

    model, tokenizer = _load_model(model_path, mtime)
    return masker_view(model, tokenizer, _piece, DEFAULT_RATIO)


def overlay(model_path: str, data: bytes, piece, ratio: float) -> pd.DataFrame:
    """The masker's view (``explain.masker_view``) of a piece for a model folder at ``ratio``:
    one cached model pass per piece and model; another ratio only re-derives ``picked``
    (:func:`with_picks`)."""
    p = Path(model_path)
    table = scores_cached(str(p.resolve()), _weights_mtime(p), piece_key(data), piece)
    # the table's picks are those of DEFAULT_RATIO (the first view; no re-derivation, no torch)
    return table if ratio_key(ratio) == ratio_key(DEFAULT_RATIO) else with_picks(table, ratio)


def explain(model_path: str, data: bytes, piece, ratio: float, seed: int = 0,
            context_ratio: float | None = None) -> pd.DataFrame:
    """The explain table of a piece for a model folder: predictions, losses and accuracies from
    the masks of ``context_ratio`` (default ``ratio``; cached by :func:`mask_groups`), ``picked``
    at ``ratio`` (:func:`with_picks`). Pass ``context_ratio=DEFAULT_RATIO`` to reuse the table
    of the default ratio when only the picks have to follow a new ratio."""
    p = Path(model_path)
    groups = mask_groups(ratio if context_ratio is None else context_ratio)
    table = explain_cached(str(p.resolve()), _weights_mtime(p), piece_key(data), groups, int(seed), piece)
    return with_picks(table, ratio)


# ----------------------------------------------------------------------------- audio

AUDIO_SECONDS = 60.0


@st.cache_data(show_spinner="Rendering audio...", max_entries=16)
def render_audio(notes: pd.DataFrame):
    """``audio.synthesize`` of a notes table (first ``AUDIO_SECONDS`` seconds), cached."""
    from .audio import synthesize

    return synthesize(notes, max_seconds=AUDIO_SECONDS)


# ----------------------------------------------------------------------------- comparison

def folder_files(folder: str | Path, max_files: int = 40) -> list[Path]:
    """Music files of a folder (not recursive), sorted, at most ``max_files``."""
    exts = {"." + e for e in UPLOAD_TYPES}
    d = Path(folder)
    if not d.is_dir():
        raise SMUInputError(d, "folder not found")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise SMUInputError(d, "no MIDI or MusicXML files in this folder")
    return files[:max_files]


def _folder_pieces(folder: str, stamp: tuple, fields: tuple | None):
    """(name, bytes, piece, None) per readable file of ``stamp`` (file names + mtimes) and
    (name, None, None, reason) per file that cannot be used; each file is parsed once
    (:func:`read_piece_cached`) for the explain tables and the rules."""
    out = []
    for name, _ in stamp:
        try:
            data = (Path(folder) / name).read_bytes()
            piece = read_piece_cached(data, name, fields)
        except SMUInputError as e:
            out.append((name, None, None, e.reason))
            continue
        except OSError as e:
            out.append((name, None, None, str(e)))
            continue
        if len(piece) == 0:
            out.append((name, None, None, "no notes"))
        else:
            out.append((name, data, piece, None))
    return out


@st.cache_data(show_spinner="Evaluating on the folder...", max_entries=16)
def folder_explain_cached(model_path: str, mtime: float, folder: str, stamp: tuple, groups: int,
                          seed: int) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Explain tables of every file of a folder with the notes masked in ``groups`` groups
    (:func:`mask_groups`), concatenated with a ``file`` column (no ``topk_`` columns).

    ``stamp`` (file names + mtimes) keys the cache. Each file's table is :func:`explain_cached`'s
    (shared with the pages and the warm-up: a sample evaluated on Explore is not run again).
    Files that cannot be read are skipped and returned as ``(name, reason)``.
    """
    model, tokenizer = _load_model(model_path, mtime)
    fields = read_fields(tokenizer.config)
    frames, skipped = [], []
    for name, data, piece, why in _folder_pieces(folder, stamp, fields):
        if piece is None:
            skipped.append((name, why))
            continue
        f = explain_cached(model_path, mtime, read_key(data, fields), groups, seed, piece)
        f = f.drop(columns=[c for c in f.columns if c.startswith("topk_")])
        f.insert(0, "file", name)
        frames.append(f)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table, skipped


def folder_explain(model_path: str, folder: str | Path, ratio: float, seed: int = 0,
                   max_files: int = 40):
    """(concatenated explain table, skipped files) over a folder; ``SMUInputError`` if unusable.
    Cached by the ratio's :func:`mask_groups`; ``picked`` follows ``ratio`` (per file)."""
    files = folder_files(folder, max_files)
    stamp = tuple((f.name, f.stat().st_mtime) for f in files)
    p = Path(model_path)
    table, skipped = folder_explain_cached(str(p.resolve()), _weights_mtime(p), str(Path(folder).resolve()),
                                           stamp, mask_groups(ratio), int(seed))
    if len(table):
        from .picking import picks_at

        picked = np.zeros(len(table), dtype=bool)
        for _, idx in table.groupby("file", sort=False).indices.items():
            sub = table.iloc[idx]
            picked[idx] = picks_at(sub["score"].to_numpy(dtype=float),
                                   sub["frozen"].fillna(False).to_numpy(dtype=bool), ratio)
        table = table.assign(picked=picked)
    return table, skipped


def accuracy_of(frame: pd.DataFrame) -> dict[str, float]:
    """Mean of every ``correct_<attr>`` column (NaN-skipping).

    On an explain table every note was masked once (seeded random groups of
    about ``ratio`` of each window), so this is the recovery accuracy under
    the same seeded random masks for every model with the same tokenizer.
    """
    out = {}
    for c in frame.columns:
        if c.startswith("correct_"):
            v = frame[c].dropna()
            if len(v):
                out[c[len("correct_"):]] = float(v.astype(float).mean())
    return out


def tokens_key(model_path: str | Path) -> tuple[str, str, int]:
    """What the no-model rules of a model depend on: its tokenizer (kind and settings) and its
    window length. Two models that read music into the same tokens share their rules' cache entries."""
    model, tokenizer = load_model(model_path)
    return type(tokenizer).__name__, repr(tokenizer.config), int(model.config.max_len)  # configs: dataclasses


@st.cache_data(show_spinner="Computing the no-model rules...", max_entries=32)
def rule_table_cached(tokens: tuple, key: str, groups: int, seed: int, _tokenizer: Any,
                      _piece: Any) -> dict[str, np.ndarray]:
    from .baselines import piece_rule_table

    return piece_rule_table(_tokenizer, _piece, ratio=1.0 / groups, seed=seed, max_len=tokens[2])


def rule_table(model_path: str, data: bytes, piece, ratio: float, seed: int = 0) -> dict[str, np.ndarray]:
    """``baselines.piece_rule_table`` (per note) on the masks of :func:`explain` for the same model,
    piece, ratio and seed; cached by the model's tokens (:func:`tokens_key`), not by the model."""
    return rule_table_cached(tokens_key(model_path), piece_key(data), mask_groups(ratio), int(seed),
                             load_model(model_path)[1], piece)


def rules(model_path: str, data: bytes, piece, ratio: float, seed: int = 0) -> dict[str, dict[str, float]]:
    """The no-model rules (``baselines.piece_rules``: the means of :func:`rule_table`) on the masks
    of :func:`explain` for the same model, piece, ratio (its :func:`mask_groups`) and seed:
    {rule: {attribute: accuracy}}."""
    return _means(model_path, rule_table(model_path, data, piece, ratio, seed))


def rule_leads(model_path: str, data: bytes, piece, ratio: float, seed: int, table: pd.DataFrame
               ) -> dict[str, tuple[float, float]]:
    """The 95% interval of the model's lead over the best rule per attribute on the same masked
    notes of the explain ``table`` (``baselines.rule_leads``, paired bootstrap over 4-bar spans)."""
    from .picks import BLOCK_BARS

    key = ("piece", model_key(model_path), piece_key(data), mask_groups(ratio), int(seed))
    return _leads_cached(key, lambda: _leads(model_path, rule_table(model_path, data, piece, ratio, seed), table,
                                             table["bar"].to_numpy() // BLOCK_BARS, seed))


@st.cache_data(show_spinner="Computing the no-model rules on the folder...", max_entries=16)
def folder_rule_table_cached(tokens: tuple, folder: str, stamp: tuple, groups: int, seed: int,
                             _tokenizer: Any) -> dict[str, np.ndarray]:
    from .baselines import piece_rule_table

    # the files folder_explain_cached reads (parsed once for both), in its order; unreadable ones skipped there too
    pieces = [piece for _, _, piece, _ in _folder_pieces(folder, stamp, read_fields(_tokenizer.config))
              if piece is not None]
    return piece_rule_table(_tokenizer, pieces, ratio=1.0 / groups, seed=seed, max_len=tokens[2])


def folder_rule_table(model_path: str, folder: str | Path, ratio: float, seed: int = 0,
                      max_files: int = 40) -> dict[str, np.ndarray]:
    """``baselines.piece_rule_table`` (per note) on the files :func:`folder_explain` scores, their
    notes in its table's order; cached by the ratio's :func:`mask_groups` and the model's tokens."""
    files = folder_files(folder, max_files)
    stamp = tuple((f.name, f.stat().st_mtime) for f in files)
    return folder_rule_table_cached(tokens_key(model_path), str(Path(folder).resolve()), stamp, mask_groups(ratio),
                                    int(seed), load_model(model_path)[1])


def _means(model_path: str, table: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    from .baselines import rule_means

    return rule_means(table, load_model(model_path)[1].attributes)


def folder_rules(model_path: str, folder: str | Path, ratio: float, seed: int = 0,
                 max_files: int = 40) -> dict[str, dict[str, float]]:
    """The no-model rules on the files :func:`folder_explain` scores (their notes pooled)."""
    return _means(model_path, folder_rule_table(model_path, folder, ratio, seed, max_files))


@st.cache_data(show_spinner=False, max_entries=64)
def _leads_cached(key: tuple, _compute: Callable[[], dict]) -> dict[str, tuple[float, float]]:
    """A bootstrap of :func:`_leads`, kept per ``key`` (the model, the notes, the masks), so that a
    page's reruns (every widget change) do not draw it again."""
    return _compute()


def _leads(model_path: str, rule_tables: dict[str, np.ndarray], table: pd.DataFrame, units: np.ndarray,
           seed: int) -> dict[str, tuple[float, float]]:
    from .baselines import rule_leads as leads

    attrs = list(load_model(model_path)[1].attributes)
    correct = {a: table[f"correct_{a}"].to_numpy(dtype=float) for a in attrs if f"correct_{a}" in table}
    return leads(correct, rule_tables, attrs, units, seed=int(seed))


def folder_rule_leads(model_path: str, folder: str | Path, ratio: float, seed: int, max_files: int,
                      table: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """:func:`rule_leads` over a folder: the lead's interval from a paired bootstrap over its files."""
    stamp = tuple((f.name, f.stat().st_mtime) for f in folder_files(folder, max_files))
    key = ("folder", model_key(model_path), str(Path(folder).resolve()), stamp, mask_groups(ratio), int(seed))
    return _leads_cached(key, lambda: _leads(model_path, folder_rule_table(model_path, folder, ratio, seed, max_files),
                                             table, table["file"].to_numpy(), seed))


def rules_verdict(model_acc: dict[str, float], rules_acc: dict[str, dict[str, float]],
                  leads: dict[str, tuple[float, float]] | None = None) -> str:
    """One plain paragraph: per attribute model vs the best rule, then the summary; accuracies
    as percentages with one decimal, like the charts ('pitch: 11.5% vs ... 11.5%'); with
    ``leads`` (:func:`rule_leads`) a lead whose interval includes 0 is not 'learned'."""
    from .baselines import verdict

    lines, summary = verdict(model_acc, rules_acc, fmt="{:.1%}".format, leads=leads)
    return "; ".join(lines) + ". " + summary if lines else summary


@st.cache_data(show_spinner="Running the fine-tuned head...", max_entries=32)
def downstream_cached(head_dir: str, mtime: float, key: str, _piece: Any) -> dict:
    """``attribution.predict_piece`` of a fine-tuned model on a piece (cached by folder and piece),
    plus ``name`` (the folder's name)."""
    from .attribution import predict_piece

    model, tokenizer = _load_task_model(head_dir, mtime)
    return {**predict_piece(model, tokenizer, _piece), "name": Path(head_dir).name}


def downstream(head_dir: str | Path, data: bytes, piece) -> dict:
    """:func:`downstream_cached` for a fine-tuned folder."""
    p = Path(head_dir)
    return downstream_cached(str(p.resolve()), _weights_mtime(p), piece_key(data), piece)


# ----------------------------------------------------------------------------- Why page caches

@st.cache_data(show_spinner="Reading the attention...", max_entries=32)
def attention_cached(path: str, mtime: float, key: str, note: int, layer, head, rollout: bool, _piece):
    """``attention.note_attention`` of a note (cached by model, piece, note, layer, head)."""
    from .attention import note_attention

    model, tok = _load_model(path, mtime)
    return note_attention(model, tok, _piece, note, layer=layer, head=head, rollout=rollout)


@st.cache_data(show_spinner="Explaining the masker's score...", max_entries=32)
def masker_occlusion_cached(path: str, mtime: float, key: str, note: int, _piece):
    """``masker_note.masker_occlusion`` of a note (cached by model, piece and note: one model pass per
    note of its window, whatever the masking ratio, mask count and seed)."""
    from .masker_note import masker_occlusion

    model, tok = _load_model(path, mtime)
    return masker_occlusion(model, tok, _piece, note)


@st.cache_data(show_spinner="Measuring the recoverer's loss...", max_entries=64)
def masker_losses_cached(path: str, mtime: float, key: str, note: int, n_masks: int, ratio: float, seed: int,
                         _piece):
    """``masker_note.masker_recovery_losses`` of a note (cached by model, piece, note and masks)."""
    from .masker_note import masker_recovery_losses

    model, tok = _load_model(path, mtime)
    return masker_recovery_losses(model, tok, _piece, note, n_masks=n_masks, ratio=ratio, seed=seed)


def attention(path, data: bytes, piece, note: int, layer, head, rollout: bool):
    p = Path(path)
    return attention_cached(str(p.resolve()), _weights_mtime(p), piece_key(data), int(note), layer, head,
                            bool(rollout), piece)


def masker_note(path, data: bytes, piece, note: int, n_masks: int, ratio: float, seed: int):
    """``masker_note.explain_masker_note`` of a note from two caches: the occlusion (the costly part:
    one pass per note of the window) by note only, the recoverer's losses by note and masks, so
    a new ratio, mask count or seed re-runs only the masks."""
    from .masker_note import masker_note_summary

    p = Path(path)
    args = (str(p.resolve()), _weights_mtime(p), piece_key(data), int(note))
    occ = masker_occlusion_cached(*args, piece)
    losses = masker_losses_cached(*args, int(n_masks), ratio_key(ratio), int(seed), piece)
    return masker_note_summary(occ, losses, int(note))


# Why page defaults (the warm-up computes what the page shows first with them)
WHY_DEFAULTS = {"n_masks": 8, "seed": 0, "semitones": 1}


def why_default_note(n_notes: int) -> int:
    """The note the Why page starts on: the middle of the piece."""
    return min(n_notes - 1, n_notes // 2)


# ----------------------------------------------------------------------------- what the masker picks (issue 21)

@st.cache_data(show_spinner="Measuring what the masker picks in the folder...", max_entries=8)
def folder_picks_cached(model_path: str, mtime: float, folder: str, stamp: tuple, ratio: float,
                        model_name: str = "") -> dict:
    """What the masker of ``model_path`` picks over a folder (``picks.class_effects``: per class of
    note, intervals from a bootstrap over the files, and ``picks.summary_sentence``). ``stamp``
    (file names + mtimes, as :func:`folder_explain`) keys the cache with the model and ``ratio``
    (pass :func:`ratio_key`). Each file: its masker view (:func:`scores_cached`, shared with the
    pages: stored scores first) with the picks at ``ratio`` (:func:`with_picks`), joined with
    ``harmony.analyze``'s labels. Unusable files are listed in ``skipped`` as ``[name, reason]``."""
    from . import picks
    from .harmony import analyze

    _, tokenizer = _load_model(model_path, mtime)
    fields = read_fields(tokenizer.config)
    frames, names, skipped = [], [], []
    for name, data, piece, why in _folder_pieces(folder, stamp, fields):
        if piece is None:
            skipped.append([name, why])
            continue
        view = with_picks(scores_cached(model_path, mtime, read_key(data, fields), piece), ratio).reset_index(drop=True)
        labels = analyze(piece).reset_index(drop=True)
        frames.append(pd.concat([view, labels[[c for c in labels.columns if c not in view.columns]]], axis=1))
        names.append(name)
    res = picks.class_effects(frames)
    res.update(model=model_name, ratio=float(ratio), pieces=names, skipped=skipped)
    res["sentence"] = picks.summary_sentence(res)
    return res
