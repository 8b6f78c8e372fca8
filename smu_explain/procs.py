"""What the kernel says of a process (Linux ``/proc``): the facts the run registry checks before
it signals anything (``runs.py``: a pid read from a file is signalled only when the process is
provably one it started).

- ``proc_stat(pid)``: fields 3.. of ``/proc/<pid>/stat`` (state, ppid, pgrp, ...), or None.
- ``proc_start_time(pid)``: the kernel start time (clock ticks), so a recycled pid is not taken
  for the process that had it before.
- ``has_marker(pid, name, value)``: ``name=value`` is in the process's environment (a secret the
  registry put there when it started the process).
- ``marked_members(pgid, name, value)``: the live processes of a group that carry the marker.

Unreadable or vanished processes give None / False / nothing: never an exception.
"""

from __future__ import annotations

import os
from pathlib import Path


def proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state, ppid, pgrp, ...); None if unreadable."""
    try:
        raw = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) is in parentheses and may contain spaces
    return raw[raw.rfind(")") + 2:].split()


def proc_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (field 22 of /proc/<pid>/stat); None if unknown."""
    rest = proc_stat(pid)
    try:
        return int(rest[19]) if rest else None
    except (IndexError, ValueError):
        return None


def has_marker(pid: int, name: str, value: str) -> bool:
    """True when ``<name>=<value>`` is in the process's environment."""
    try:
        env = Path(f"/proc/{int(pid)}/environ").read_bytes()
    except (OSError, ValueError):
        return False
    return f"{name}={value}".encode() in env.split(b"\0")


def marked_members(pgid: int, name: str, value: str) -> list[int]:
    """Live processes of group ``pgid`` that carry the marker ``<name>=<value>``."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        rest = proc_stat(int(entry.name))
        try:
            if rest and rest[0] not in ("Z", "X") and int(rest[2]) == pgid \
                    and has_marker(int(entry.name), name, value):
                out.append(int(entry.name))
        except (IndexError, ValueError):
            continue
    return out
