"""Reading an untrusted music file in a worker process bounded in memory and time.

:func:`read_piece_bounded` runs :func:`smu_explain.reading.read_piece` in a fresh Python
process (``python -m smu_explain.sandbox FOLDER``; torch-free: it imports numpy, symusic and,
for scores, music21) and hands back the :class:`~smu_explain.piece.Piece` or an
:class:`~smu_explain.errors.SMUInputError` with the reason. The worker

* imports its readers, then limits its address space (``RLIMIT_AS``) to what it holds then
  (~120 MB for MIDI, ~160 MB with music21) plus ``max_memory_bytes`` (default 2 GiB), so a file
  whose reading needs more fails inside the worker ("the file needs more than 2 GB of memory to
  read") instead of taking the memory of the process that asked;
* is killed after ``timeout_s`` seconds of wall time (default 60 s, waiting for a slot
  included; ``RLIMIT_CPU`` backs it), so a file that makes a reader loop is refused ("took
  longer than 60 s");
* runs with at most ``MAX_CONCURRENT_READS`` (2) others of one process, so simultaneous
  uploads cannot multiply the memory bound;
* reads a copy of the bytes stored under a name this module makes (``input`` + a suffix from
  :data:`READ_SUFFIXES`, :func:`stored_suffix`) in a private temporary folder; the user's file
  name is only data (the piece's name and the error's path), never a path;
* answers with plain data, never a pickle: the note arrays as ``.npz`` (read with
  ``allow_pickle=False``) and the rest of the piece as JSON, so a worker that a hostile file
  subverted still cannot run code in the caller.

Cost: one worker start per read, 0.3-0.5 s for a MIDI file on the 2-core dev machine (Python,
numpy and symusic imports; music21 adds ~0.4 s for scores); the app caches pieces by content, so
each distinct file pays it once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .errors import SMUInputError
from .musicfile import MIDI_EXTENSIONS, SCORE_EXTENSIONS
from .piece import Piece
from .tokenizer_config import TokenizerConfig

__all__ = ["DEFAULT_MAX_MEMORY_BYTES", "DEFAULT_TIMEOUT_S", "MAX_CONCURRENT_READS", "READ_SUFFIXES", "piece_name", "read_piece_bounded",
           "stored_suffix"]

DEFAULT_MAX_MEMORY_BYTES = 2 * 1024 ** 3
DEFAULT_TIMEOUT_S = 60.0
#: the suffixes a stored upload may get: every format the tokenizer reads
READ_SUFFIXES = tuple(MIDI_EXTENSIONS) + tuple(SCORE_EXTENSIONS)
#: workers that may run at once in one process (each may take ``max_memory_bytes``): further
#: reads wait for a slot, at most their ``timeout_s``, then are refused as "busy"
MAX_CONCURRENT_READS = 2
_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_READS)
_MAX_RESULT_JSON_BYTES = 64 * 1024 * 1024
_EXIT_MEMORY = 3  # the worker ran out of memory where it could not even write its answer
_REQUEST, _RESULT, _ARRAYS, _STDERR = "request.json", "result.json", "arrays.npz", "stderr.txt"


def _gb(n: int) -> str:
    return f"{n / 1024 ** 3:.3g} GB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.0f} MB"


def piece_name(filename: str) -> str:
    """The piece name of an upload called ``filename``: its last path part without a suffix the
    tokenizer reads (pure string work: any name, NUL or 300 bytes long included, gives a name)."""
    base = str(filename).replace("\\", "/").rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot >= 0 and base[dot:].lower() in READ_SUFFIXES:
        base = base[:dot]
    return base or "upload"


def stored_suffix(name: str, data: bytes) -> str:
    """The suffix an upload is stored under, from :data:`READ_SUFFIXES`: the content says MIDI
    (``MThd``), .mxl (a zip) or MusicXML (XML, any byte-order mark), keeping ``name``'s suffix
    when it says the same; text that is none of these is Humdrum or ABC only by ``name``'s suffix
    (.krn, .abc). ``SMUInputError`` otherwise. ``name`` may be anything (over 255 bytes, NUL,
    slashes): it is only looked at, never used as a path."""
    from .musicfile import load_bytes

    head = str(name)[-16:].lower()
    dot = head.rfind(".")
    suffix = head[dot:] if dot >= 0 else ""
    if data[:4] == b"MThd":
        return suffix if suffix in MIDI_EXTENSIONS else ".mid"
    if data[:2] == b"PK":
        return ".mxl"
    try:
        load_bytes(data[:4096], str(name))  # sniffs XML (a byte-order mark included)
        return suffix if suffix in (".xml", ".musicxml") else ".musicxml"
    except SMUInputError:
        pass
    if suffix in (".krn", ".abc"):
        return suffix
    if suffix in READ_SUFFIXES:
        raise SMUInputError(name, "not a MIDI file (no 'MThd' header) nor a MusicXML score")
    raise SMUInputError(name, f"unsupported file type {suffix or '(no extension)'!r}; expected MIDI "
                              f"({', '.join(MIDI_EXTENSIONS)}) or a score ({', '.join(SCORE_EXTENSIONS)})")


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = "1"  # one thread: no per-thread buffers eating the address-space limit
    env["MALLOC_ARENA_MAX"] = "2"  # the music21 timer thread must not reserve another 64 MB arena
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONSTARTUP", None)
    return env


def read_piece_bounded(source, name: str | None = None, *, filename: str | None = None,
                       config: TokenizerConfig | None = None, suffix: str | None = None,
                       max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES, timeout_s: float = DEFAULT_TIMEOUT_S,
                       max_notes: int | None = None) -> Piece:
    """:func:`~smu_explain.reading.read_piece` in a worker process whose reading may use
    ``max_memory_bytes`` of address space and ``timeout_s`` seconds (see the module docstring).

    ``source``: bytes (an upload: stored as ``input`` + ``suffix``, or + :func:`stored_suffix`
    of ``filename`` and the bytes) or a path (read where it is; its extension says the format).
    ``filename``: the user's name of the bytes (only data: the name errors give, the suffix
    hint); ``name``: the piece's name (default: :func:`piece_name` of ``filename``, the path's
    stem, or "piece").
    ``max_notes``: a piece with more notes is refused in the worker, so its arrays never reach
    the caller. Returns the :class:`Piece`; raises :class:`SMUInputError` for every unusable
    input, a read that needs more memory or time than allowed included.
    """
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    display = str(filename if filename is not None else name if name is not None else "<bytes>") if is_bytes \
        else str(source)
    t0 = time.monotonic()
    if not _SLOTS.acquire(timeout=timeout_s):
        raise SMUInputError(display, f"the server is busy reading other files (waited {timeout_s:g} s); try again")
    try:
        return _read_bounded(source, is_bytes, display, name, filename, config, suffix, max_memory_bytes,
                             max(0.1, timeout_s - (time.monotonic() - t0)), timeout_s, max_notes)
    finally:
        _SLOTS.release()


def _read_bounded(source, is_bytes, display, name, filename, config, suffix, max_memory_bytes, time_left,
                  timeout_s, max_notes) -> Piece:
    if name is None:
        name = (piece_name(filename) if filename is not None else "piece") if is_bytes else Path(str(source)).stem
    try:
        folder = Path(tempfile.mkdtemp(prefix="smu_read_"))
    except OSError as e:
        raise SMUInputError(display, f"cannot store the file for reading ({e.strerror or e})") from None
    try:
        if is_bytes:
            data = bytes(source)
            if not data:
                raise SMUInputError(display, "empty file (0 bytes)")
            if suffix is None:
                suffix = stored_suffix(display, data)
            elif suffix.lower() not in READ_SUFFIXES:
                raise SMUInputError(display, f"unsupported file type {suffix[:16]!r}")
            path = folder / ("input" + suffix.lower())
            try:
                path.write_bytes(data)
            except OSError as e:
                raise SMUInputError(display, f"cannot store the file for reading ({e.strerror or e})") from None
            del data
        else:
            path = Path(source).absolute()  # the worker runs in its own folder
        request = {"path": os.fspath(path), "name": name, "max_memory_bytes": int(max_memory_bytes),
                   "timeout_s": float(timeout_s), "max_notes": max_notes,
                   "config": config.to_dict() if config is not None else None}
        (folder / _REQUEST).write_text(json.dumps(request))
        cmd = [sys.executable, "-m", "smu_explain.sandbox", os.fspath(folder)]
        with open(folder / _STDERR, "wb") as err:
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=_worker_env(),
                                      timeout=time_left, close_fds=True, cwd=folder)
            except subprocess.TimeoutExpired:  # run() has killed and reaped the worker
                raise SMUInputError(display, f"reading the file took longer than {timeout_s:g} s; refused") from None
            except OSError as e:  # no process could be started (process or memory limits of the server)
                raise SMUInputError(display, f"cannot start the reader ({e.strerror or e})") from None
        return _answer(folder, proc.returncode, display, name, max_memory_bytes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _answer(folder: Path, returncode: int, display: str, name: str, max_memory_bytes: int) -> Piece:
    result = folder / _RESULT
    memory_reason = f"the file needs more than {_gb(max_memory_bytes)} of memory to read; refused"
    if not result.is_file():
        if returncode == _EXIT_MEMORY:
            raise SMUInputError(display, memory_reason)
        if returncode < 0:
            import signal

            try:
                sig = signal.Signals(-returncode).name
            except ValueError:
                sig = str(-returncode)
            if sig == "SIGXCPU":
                raise SMUInputError(display, "reading the file used more CPU time than allowed; refused")
            raise SMUInputError(display, f"the reader stopped on signal {sig} (probably out of memory); refused")
        tail = (folder / _STDERR).read_bytes()[-300:].decode(errors="replace").strip().splitlines()
        raise SMUInputError(display, f"the reader failed (exit {returncode}"
                                     f"{': ' + tail[-1] if tail else ''})")
    if result.stat().st_size > _MAX_RESULT_JSON_BYTES:
        raise SMUInputError(display, "the reader's answer is too large")
    try:
        meta = json.loads(result.read_text())
        if "memory" in meta:
            raise SMUInputError(display, memory_reason)
        if "error" in meta:
            raise SMUInputError(display, str(meta["error"]))
        with np.load(folder / _ARRAYS, allow_pickle=False) as z:  # object arrays raise, never unpickle
            arrays = {k: z[k] for k in z.files}
        fields = {f.name for f in dataclasses.fields(Piece)}
        kw = {k: v for k, v in meta["piece"].items() if k in fields}
        kw.update({k: v for k, v in arrays.items() if k in fields})
        kw["time_signatures"] = [(float(t), int(n), int(d)) for t, n, d in kw.get("time_signatures", [])]
        kw["name"] = name
        kw["source"] = display
        return Piece(**kw)
    except SMUInputError:
        raise
    except (ValueError, TypeError, KeyError, OSError, zipfile_error()) as e:
        raise SMUInputError(display, f"the reader's answer is unusable ({type(e).__name__}); refused") from None


def zipfile_error() -> type:
    import zipfile

    return zipfile.BadZipFile


# --------------------------------------------------------------------------- the worker


def _caused_by_memory(e: BaseException | None) -> bool:
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, MemoryError):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _address_space() -> int:
    """This process's address space in bytes (Linux ``VmSize``; 0 where there is no /proc)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _preload(path: str) -> None:
    """Import what reading ``path`` needs, so the memory limit that follows bounds the read."""
    import symusic  # noqa: F401

    if Path(path).suffix.lower() in SCORE_EXTENSIONS:
        import xml.etree.ElementTree  # noqa: F401
        import zipfile  # noqa: F401

        import music21  # noqa: F401
        from music21.midi import translate  # noqa: F401
        from music21.musicxml import xmlToM21  # noqa: F401


def _limit(max_memory_bytes: int, timeout_s: float) -> None:
    """Address space: what the worker holds now (its imports) + ``max_memory_bytes``; CPU time:
    ``timeout_s`` + 5 s (the caller's wall-clock bound comes first); no core files."""
    import resource

    limit = _address_space() + max_memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = int(math.ceil(timeout_s)) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _plain(o):
    return o.item() if isinstance(o, np.generic) else str(o)


def _write_answer(folder: Path, answer: dict, arrays: dict | None = None) -> None:
    if arrays is not None:
        with open(folder / _ARRAYS, "wb") as f:
            np.savez(f, **arrays)
    (folder / (_RESULT + ".part")).write_text(json.dumps(answer, default=_plain))
    os.replace(folder / (_RESULT + ".part"), folder / _RESULT)


def _work(folder: Path) -> int:
    request = json.loads((folder / _REQUEST).read_text())
    _preload(request["path"])
    _limit(int(request["max_memory_bytes"]), float(request["timeout_s"]))
    try:
        from .reading import read_piece

        config = TokenizerConfig.from_dict(request["config"]) if request.get("config") else None
        piece = read_piece(request["path"], name=request["name"], config=config)
        max_notes = request.get("max_notes")
        if max_notes is not None and len(piece) > int(max_notes):
            raise SMUInputError(request["path"], f"too many notes: {len(piece):,} (the limit is {int(max_notes):,})")
        arrays, rest = {}, {}
        for f in dataclasses.fields(Piece):
            v = getattr(piece, f.name)
            (arrays if isinstance(v, np.ndarray) else rest)[f.name] = v
        del piece
        _write_answer(folder, {"piece": rest}, arrays)
    except SMUInputError as e:
        if _caused_by_memory(e):
            _write_answer(folder, {"memory": True})
        else:
            _write_answer(folder, {"error": e.reason})
    except MemoryError:
        _write_answer(folder, {"memory": True})
    except Exception as e:  # noqa: BLE001 - any failure is the file's: say what it was
        if _caused_by_memory(e):
            _write_answer(folder, {"memory": True})
        else:
            _write_answer(folder, {"error": f"unreadable file: {type(e).__name__}: {str(e)[:500]}"})
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m smu_explain.sandbox FOLDER (used by read_piece_bounded)", file=sys.stderr)
        return 2
    try:
        return _work(Path(argv[0]))
    except MemoryError:
        return _EXIT_MEMORY


if __name__ == "__main__":
    sys.exit(main())
