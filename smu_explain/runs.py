"""On-disk registry of training runs launched from the app.

A run is a ``smu pretrain`` subprocess (never a thread of the app). Rules:

- Root folder: ``root`` argument, else ``$SMU_RUNS_DIR``, else ``./runs``.
  One folder per run, ``<root>/<run id>/`` holding ``run.json`` (the record:
  ``id, command, pid, status, created, out_dir, progress_path, log_path`` plus
  ``params, started, finished, returncode, cancel_requested, message``), the
  run's ``log.txt`` (stdout + stderr), ``progress.jsonl`` and ``out/`` (the
  checkpoint folder, selectable as a model once written).
- Status is one of ``queued, running, done, failed, cancelled`` and is derived,
  not trusted: a run with a pid is running while that process is alive (same
  pid *and* same kernel start time, so a recycled pid does not count; zombies
  count as dead). Once dead, the last ``{"event": "status"}`` line of its
  progress file decides (done / failed / cancelled); without one, a run whose
  cancel was requested is ``cancelled`` and any other is ``failed`` (crashed:
  show its log tail). Terminal statuses are written back to ``run.json``.
- At most ``max_concurrent`` runs (argument, else ``$SMU_MAX_RUNS``, else 1)
  run at once; :meth:`RunRegistry.submit` queues the rest and
  :meth:`RunRegistry.poll` starts queued runs, oldest first, whenever a slot
  is free. A file lock (``<root>/.lock``) serialises state changes, so several
  app sessions (or an app restart) never start a queued run twice.
- Subprocesses start in their own session (process group) with
  ``start_new_session=True``: they survive a browser refresh and an app
  restart, and :meth:`RunRegistry.cancel` signals the whole group: SIGTERM,
  then SIGKILL after ``grace_s`` seconds if the group is still alive
  (``wait=False`` returns at once and a later :meth:`poll` escalates).
- The library never imports streamlit; the app keeps one registry per root
  in ``st.cache_resource``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from .checkpoint import is_checkpoint
from .errors import SMUInputError
from .io import JSONL_MAX_BYTES, JSONL_MAX_LINE, atomic_write_text, read_jsonl  # noqa: F401
from .names import SIZES, STRATEGIES

__all__ = [
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "RunInfo",
    "RunRegistry",
    "default_runs_dir",
    "read_jsonl",
]

RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
RUN_FILE = "run.json"

# Popen handles of the runs this process started, so their exit codes are
# collected (no zombies) and known. Keyed by run id.
_HANDLES: dict[str, subprocess.Popen] = {}


def default_runs_dir() -> Path:
    """``$SMU_RUNS_DIR`` if set, else ``./runs`` (relative to the working directory)."""
    return Path(os.environ.get("SMU_RUNS_DIR") or "runs")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunInfo:
    """The record of one run (the content of its ``run.json``)."""

    id: str
    command: list[str]
    status: str
    created: str
    out_dir: str
    progress_path: str
    log_path: str
    pid: int | None = None
    pid_start: int | None = None  # kernel start time of the process (clock ticks), Linux
    params: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    finished: str | None = None
    returncode: int | None = None
    cancel_requested: float | None = None  # unix time of the first SIGTERM
    killed: bool = False
    message: str = ""

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def run_dir(self) -> Path:
        return Path(self.log_path).parent

    @property
    def label(self) -> str:
        """Short human label: ``<id> (<strategy>, <size>, <steps> steps) - <status>``."""
        p = self.params
        bits = [str(p[k]) for k in ("strategy", "config") if k in p]
        if "steps" in p:
            bits.append(f"{p['steps']} steps")
        return f"{self.id} ({', '.join(bits)}) - {self.status}" if bits else f"{self.id} - {self.status}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunInfo":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def _final_status(progress_path: str | os.PathLike) -> dict | None:
    """The last ``{"event": "status"}`` record of a progress file, if any."""
    for rec in reversed(read_jsonl(progress_path)):
        if rec.get("event") == "status" and rec.get("status") in TERMINAL_STATUSES:
            return rec
    return None


def _proc_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (field 22 of /proc/<pid>/stat); None if unknown."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces
    rest = raw[raw.rfind(")") + 2:].split()
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return rest[0] if rest else None


def _pid_alive(pid: int | None, start: int | None) -> bool:
    """True while ``pid`` runs and is the same process (start time) and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    state = _proc_state(pid)
    if state in ("Z", "X"):
        return False
    if start is not None:
        now = _proc_start_time(pid)
        if now is not None and now != start:
            return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (fallback: the pid alone)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class RunRegistry:
    """Launch, list, poll and cancel training runs; state lives on disk under ``root``.

    ``launcher`` is the command prefix that runs the CLI (default
    ``[sys.executable, "-m", "smu_explain.cli"]``); tests substitute a small
    fake CLI. ``env`` adds variables to the subprocess environment.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, max_concurrent: int | None = None,
                 launcher: Sequence[str] | None = None, grace_s: float = 5.0,
                 env: dict[str, str] | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()
        if max_concurrent is None:
            max_concurrent = int(os.environ.get("SMU_MAX_RUNS", "1") or 1)
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.max_concurrent = int(max_concurrent)
        self.launcher = list(launcher) if launcher else [sys.executable, "-m", "smu_explain.cli"]
        self.grace_s = float(grace_s)
        self.env = dict(env or {})
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ persistence
    @contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _save(self, run: RunInfo) -> None:
        d = self.root / run.id
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / RUN_FILE, json.dumps(run.to_dict(), indent=2))

    def _load(self, run_dir: Path) -> RunInfo | None:
        try:
            return RunInfo.from_dict(json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, TypeError):
            return None

    def _all(self) -> list[RunInfo]:
        runs = []
        if not self.root.is_dir():
            return runs
        for d in self.root.iterdir():
            if d.is_dir() and (d / RUN_FILE).is_file():
                r = self._load(d)
                if r is not None:
                    runs.append(r)
        runs.sort(key=lambda r: (r.created, r.id))
        return runs

    # ------------------------------------------------------------ commands
    def build_command(self, *, strategy: str, data: str, config: str, steps: int, out_dir: Path,
                      progress_path: Path, extra_args: Sequence[str] = ()) -> list[str]:
        """The ``pretrain`` command line of a run (launcher prefix + arguments)."""
        return [*self.launcher, "pretrain", "--strategy", strategy, "--data", str(data),
                "--config", config, "--steps", str(int(steps)), "--out", str(out_dir),
                "--progress", str(progress_path), *map(str, extra_args)]

    def _new_id(self, strategy: str) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{strategy}-{secrets.token_hex(2)}"

    def submit(self, *, strategy: str, data: str | os.PathLike, config: str = "tiny",
               steps: int = 50, extra_args: Sequence[str] = (), start: bool = True) -> RunInfo:
        """Register a new pretraining run; start it now if a slot is free, else queue it.

        Raises ``SMUInputError`` for an unknown strategy or size, a step count
        below 1 or a data folder that does not exist.
        """
        if strategy not in STRATEGIES:
            raise SMUInputError(strategy, f"unknown strategy; choose one of {', '.join(STRATEGIES)}")
        if config not in SIZES:
            raise SMUInputError(config, f"unknown model size; choose one of {', '.join(SIZES)}")
        if int(steps) < 1:
            raise SMUInputError(str(steps), "the number of steps must be at least 1")
        data_path = Path(data)
        if not data_path.exists():
            raise SMUInputError(data_path, "training data folder not found")
        run_id = self._new_id(strategy)
        run_dir = (self.root / run_id).resolve()
        out_dir, progress, log = run_dir / "out", run_dir / "progress.jsonl", run_dir / "log.txt"
        cmd = self.build_command(strategy=strategy, data=str(data_path.resolve()), config=config,
                                 steps=int(steps), out_dir=out_dir, progress_path=progress,
                                 extra_args=extra_args)
        run = RunInfo(id=run_id, command=cmd, status="queued", created=_now_iso(),
                      out_dir=str(out_dir), progress_path=str(progress), log_path=str(log),
                      params={"strategy": strategy, "data": str(data_path), "config": config,
                              "steps": int(steps), "extra_args": list(map(str, extra_args))})
        with self._lock():
            self._save(run)
        if start:
            self.poll()
        return self.get(run_id)

    def _start(self, run: RunInfo) -> RunInfo:
        """Launch a queued run's subprocess (caller holds the lock)."""
        Path(run.log_path).parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = open(run.log_path, "ab")
        try:
            proc = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                    cwd=str(Path.cwd()))
        except OSError as e:
            log.close()
            run.status, run.finished = "failed", _now_iso()
            run.message = f"could not start the training command: {e}"
            self._save(run)
            return run
        log.close()
        _HANDLES[run.id] = proc
        run.pid, run.pid_start = proc.pid, _proc_start_time(proc.pid)
        run.status, run.started = "running", _now_iso()
        self._save(run)
        return run

    # ------------------------------------------------------------ status
    def _refresh(self, run: RunInfo) -> RunInfo:
        """Derive a started run's status from its process and progress file (caller holds the lock)."""
        if run.status != "running":
            return run
        handle = _HANDLES.get(run.id)
        if handle is not None:
            rc = handle.poll()
            alive = rc is None
            if rc is not None:
                run.returncode = rc
        else:
            alive = _pid_alive(run.pid, run.pid_start)
        if alive:
            if run.cancel_requested is not None and time.time() - run.cancel_requested > self.grace_s:
                _signal_group(run.pid, signal.SIGKILL)
                run.killed = True
                self._save(run)
            return run
        # the leader is gone; make sure no straggler of its group survives a cancel
        if run.cancel_requested is not None and run.pid and _group_alive(run.pid):
            _signal_group(run.pid, signal.SIGKILL)
        final = _final_status(run.progress_path)
        if final is not None:
            run.status = final["status"]
            run.message = str(final.get("message") or "")
        elif run.cancel_requested is not None:
            run.status = "cancelled"
            run.message = "cancelled" + (" (killed after the grace period)" if run.killed else "")
        else:
            run.status = "failed"
            code = f" with code {run.returncode}" if run.returncode is not None else ""
            run.message = f"the training process exited{code} without a final status line (crashed); see its log"
        if run.status == "failed" and not run.message:
            run.message = "training failed; see its log"
        run.finished = _now_iso()
        _HANDLES.pop(run.id, None)
        self._save(run)
        return run

    def poll(self) -> list[RunInfo]:
        """Refresh every run's status, escalate overdue cancels, start queued runs in free slots.

        Returns all runs, oldest first.
        """
        with self._lock():
            runs = [self._refresh(r) for r in self._all()]
            running = sum(r.status == "running" for r in runs)
            for i, r in enumerate(runs):
                if running >= self.max_concurrent:
                    break
                if r.status == "queued":
                    runs[i] = self._start(r)
                    running += runs[i].status == "running"
            return runs

    def list(self) -> list[RunInfo]:
        """All runs, oldest first, statuses refreshed (does not start queued runs)."""
        with self._lock():
            return [self._refresh(r) for r in self._all()]

    def queue(self) -> list[RunInfo]:
        """Queued runs in the order they will start."""
        return [r for r in self.list() if r.status == "queued"]

    def get(self, run_id: str) -> RunInfo:
        """One run by id (status refreshed); ``SMUInputError`` if there is none."""
        d = self.root / run_id
        if not (d / RUN_FILE).is_file():
            raise SMUInputError(d, "no such run")
        with self._lock():
            run = self._load(d)
            if run is None:
                raise SMUInputError(d / RUN_FILE, "run record is unreadable")
            return self._refresh(run)

    # ------------------------------------------------------------ control
    def cancel(self, run_id: str, *, grace_s: float | None = None, wait: bool = True) -> RunInfo:
        """Cancel a run: a queued run is marked cancelled; a running one gets SIGTERM.

        With ``wait`` the call waits up to ``grace_s`` (default: the registry's)
        for the process to exit, then sends SIGKILL to its group. Without
        ``wait`` it returns at once; :meth:`poll` kills it once the grace period
        is over. Cancelling a finished run changes nothing.
        """
        grace = self.grace_s if grace_s is None else float(grace_s)
        with self._lock():
            run = self._load(self.root / run_id)
            if run is None:
                raise SMUInputError(self.root / run_id, "no such run")
            run = self._refresh(run)
            if run.status == "queued":
                run.status, run.finished, run.message = "cancelled", _now_iso(), "cancelled before it started"
                self._save(run)
                return run
            if run.status != "running":
                return run
            if run.cancel_requested is None:
                run.cancel_requested = time.time()
                self._save(run)
            _signal_group(run.pid, signal.SIGTERM)
        if not wait:
            return self.get(run_id)
        deadline = time.time() + grace
        while time.time() < deadline:
            run = self.get(run_id)
            if run.status != "running":
                return run
            time.sleep(0.05)
        with self._lock():
            run = self._load(self.root / run_id)
            if run.status == "running":
                _signal_group(run.pid, signal.SIGKILL)
                run.killed = True
                self._save(run)
        for _ in range(100):
            run = self.get(run_id)
            if run.status != "running":
                break
            time.sleep(0.05)
        return run

    # ------------------------------------------------------------ reading
    def progress(self, run_id: str) -> list[dict]:
        """The run's progress records (parsed JSONL lines; a torn last line is skipped)."""
        run = self._load(self.root / run_id)
        if run is None:
            raise SMUInputError(self.root / run_id, "no such run")
        return read_jsonl(run.progress_path)

    def log_tail(self, run_id: str, n_lines: int = 40, max_bytes: int = 64_000) -> str:
        """The last ``n_lines`` lines of the run's log (stdout + stderr); '' if none yet."""
        run = self._load(self.root / run_id)
        if run is None:
            raise SMUInputError(self.root / run_id, "no such run")
        p = Path(run.log_path)
        if not p.is_file():
            return ""
        with open(p, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-n_lines:])

    def model_dirs(self) -> list[tuple[str, Path]]:
        """(label, out dir) of every run whose out dir holds a saved model, newest first."""
        out = []
        for r in reversed(self.list()):
            d = Path(r.out_dir)
            if is_checkpoint(d):
                out.append((f"run {r.label}", d))
        return out
