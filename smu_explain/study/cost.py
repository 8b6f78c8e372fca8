"""What a study stage costs: ``CostMeter`` (wall time, tokens, steps, peak RSS, CUDA peak, CPU
seconds, machine load), the ``cost`` of every stage result.

Imports the standard library only (torch lazily, when a meter starts or stops).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _read_vm(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        return None
    return None


class CostMeter:
    """Measures one stage: wall time, tokens, steps, peak RSS, CUDA peak (module docstring), and
    the process's CPU seconds and the machine's 1-minute load at the start and the end: a stage
    that shared the machine shows a load above its own threads and a wall time above its CPU
    time per thread. A fine-tuning stage resumed after an interruption counts the wall time of
    the runs finished before it (``resumed_runs``, ``resumed_wall_s``); its CPU seconds and
    load are this sitting's."""

    def __init__(self):
        self.tokens = 0
        self.steps = 0
        self.wall_s = 0.0
        self.peak_rss_mb: float | None = None
        self.peak_source = ""
        self.cuda_peak_mb: float | None = None
        self.cpu_s = 0.0
        self.load: list[float | None] = []  # 1-minute load at the start and the end
        self.resumed_runs = 0  # fine-tuning runs finished in an earlier sitting of this stage
        self.resumed_wall_s = 0.0  # and their wall time (counted in ``wall_s``)

    def __enter__(self) -> CostMeter:
        import torch

        self._reset = False
        try:  # Linux >= 4.0: "5" resets the peak RSS (VmHWM) of this process
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._reset = _read_vm("VmHWM") is not None
        except OSError:
            self._reset = False
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        self._cpu0 = _cpu_seconds()
        self.load = [_load1()]
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self.wall_s = time.perf_counter() - self._t0 + self.resumed_wall_s
        self.cpu_s = _cpu_seconds() - self._cpu0
        self.load.append(_load1())
        if self._reset:
            self.peak_rss_mb = _read_vm("VmHWM")
            self.peak_source = "VmHWM (reset at stage start)"
        else:
            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_rss_mb = r / 1024.0 if sys.platform != "darwin" else r / 2**20
            self.peak_source = "ru_maxrss (process lifetime peak)"
        if torch.cuda.is_available():
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    def add(self, tokens: int = 0, steps: int = 0) -> None:
        self.tokens += int(tokens)
        self.steps += int(steps)

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 3), "tokens": self.tokens, "steps": self.steps,
                "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1),
                "peak_rss_source": self.peak_source,
                "cuda_peak_mb": None if self.cuda_peak_mb is None else round(self.cuda_peak_mb, 1),
                "cpu_s": round(self.cpu_s, 1),
                "load_1min": [None if x is None else round(x, 2) for x in self.load],
                "resumed_runs": self.resumed_runs, "resumed_wall_s": round(self.resumed_wall_s, 3)}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load1() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
