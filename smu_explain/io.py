"""File plumbing shared by the library, the CLI and the app (no torch, no numpy).

- ``atomic_write_text``: a regular
  file (or a new one) is replaced atomically (temporary sibling, fsync,
  ``os.replace``), keeping the replaced file's permissions; a symlink is followed (its
  target is written, the link stays); a device, FIFO or other non-regular file is
  written through (never replaced by a regular file). A failed write leaves the old
  file as it was.
- ``atomic_write_stream``: for writers that need a file handle (``np.savez``): a
  uniquely named temporary sibling (``mkstemp``) given the mode ``open()`` would give a
  new file (``default_file_mode``), then ``os.replace``; readers see the old file or
  the whole new one.
- ``read_jsonl``: the bounded, tolerant reader of JSONL progress files.

Checkpoints keep their own writers for the weights (``resume.atomic_torch_save``;
``checkpoint.save_checkpoint`` for model.safetensors, whose JSON files go through
``atomic_write_text``): they need torch and their own error semantics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat as _stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "JSONL_MAX_BYTES",
    "JSONL_MAX_LINE",
    "atomic_write_stream",
    "atomic_write_text",
    "default_file_mode",
    "read_jsonl",
]


def default_file_mode() -> int:
    """0o666 minus the process umask: the mode ``open()`` gives a new file (e.g. 0o644).

    Tools that create files privately (safetensors, mkstemp: 0o600) are chmod-ed to this."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # not thread-safe, hence the /proc way first
    os.umask(old)
    return 0o666 & ~old


def _named(e: OSError, path: str | os.PathLike) -> OSError:
    """``e`` naming ``path``, the file the caller asked for, not our temporary sibling (or nothing)."""
    return type(e)(e.errno, e.strerror or str(e), os.fspath(path)) if e.errno is not None else e


def _atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    try:
        _atomic_write_to(path, data)
    except OSError as e:
        raise _named(e, path) from None


def _atomic_write_to(path: str | os.PathLike, data: str | bytes) -> None:
    binary = isinstance(data, bytes)
    kw: dict[str, Any] = {} if binary else {"encoding": "utf-8"}
    mode_w = "wb" if binary else "w"
    path = Path(os.path.realpath(path))  # follow symlinks: write their target, keep the link
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not _stat.S_ISREG(mode):
        if _stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "is a folder, not a file", str(path))
        with open(path, mode_w, **kw) as f:
            f.write(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode_w, **kw) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, _stat.S_IMODE(mode))  # keep the replaced file's permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(path: str | os.PathLike) -> None:
    """Raise the ``OSError`` a write of ``path`` would (naming it) when that is knowable now: the
    path is a folder, a parent is a file, or the nearest existing folder above it cannot be
    written. For commands that would otherwise compute for minutes before finding out."""
    path = Path(os.path.realpath(path))
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder, not a file", os.fspath(path))
    if path.exists():
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(20, f"{parent} is a file, not a folder", os.fspath(path))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(13, f"Permission denied (cannot write in {parent})", os.fspath(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see the module docstring)."""
    _atomic_write(path, text)


def atomic_write_stream(path: str | os.PathLike, write: Callable[[IO[Any]], Any], binary: bool = True) -> None:
    """Write through ``write(fh)`` into a temporary sibling, then ``os.replace`` it onto
    ``path``: readers see the old file or the whole new one, never half a file. The
    folder must exist. A failure (even KeyboardInterrupt) removes the temporary file."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as e:
        raise _named(e, path) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0o600; follow the umask like open()
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            raise _named(e, path) from None
        raise


#: Progress files are read at most this far back from their end, and lines longer than
#: this are skipped, so an endless or binary file cannot exhaust memory.
JSONL_MAX_BYTES = 64 * 1024 * 1024
JSONL_MAX_LINE = 1024 * 1024


def read_jsonl(path: str | os.PathLike, max_bytes: int = JSONL_MAX_BYTES,
               max_line: int = JSONL_MAX_LINE) -> list[dict]:
    """Parsed lines of a JSONL file; a missing file gives ``[]``.

    Reading is bounded and incremental: only regular files are read (a device such as
    /dev/zero or a FIFO gives ``[]``), at most the last ``max_bytes`` of the file, line
    by line; a line longer than ``max_line`` bytes, a line that is not UTF-8, a torn last
    line (the writer is mid-write) and any other line that is not a JSON object are skipped.
    """
    p = Path(path)
    try:
        st = os.stat(p)
        if not _stat.S_ISREG(st.st_mode):
            return []
        f = open(p, "rb")  # noqa: SIM115  entered by `with f:` below; only stat/open errors give []
    except OSError:
        return []
    out = []
    with f:
        budget = max_bytes
        if st.st_size > max_bytes:  # keep the tail: skip to the first line start in it
            f.seek(st.st_size - max_bytes)
            budget -= len(f.readline(max_bytes))
        while budget > 0:
            line = f.readline(min(max_line + 1, budget))
            if not line:
                break
            budget -= len(line)
            if len(line) > max_line:  # overlong: skip the rest of it, within the budget
                while budget > 0 and not line.endswith(b"\n"):
                    line = f.readline(min(max_line + 1, budget))
                    if not line:
                        break
                    budget -= len(line)
                continue
            try:
                text = line.decode("utf-8").strip()
            except UnicodeDecodeError:
                continue
            if not text:
                continue
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def unknown_fields(cls: type, d: Mapping[str, Any]) -> list[str]:
    """Keys of ``d`` that are not fields of the dataclass ``cls`` (sorted): the one check every
    config's ``from_dict`` makes before building (each raises its own error with them)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return sorted(set(d) - known)
