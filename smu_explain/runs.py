"""On-disk registry of training runs launched from the app.

A run is a ``smu pretrain`` subprocess (never a thread of the app). Rules:

- Root folder: ``root`` argument, else ``$SMU_RUNS_DIR``, else ``./runs``; a root
  that names a file, or ``$SMU_MAX_RUNS`` that is not a whole number >= 1, is an
  ``SMUInputError`` with the reason.
- One folder per run, ``<root>/<run id>/`` holding ``run.json`` (the record), the
  run's ``log.txt`` (stdout + stderr), ``progress.jsonl`` and ``out/`` (the
  checkpoint folder, selectable as a model once written).
- **The files are data, never instructions** (issue 28). ``run.json`` holds no
  command line and no paths: a queued run's command is re-built by this module
  from its validated parameters (``strategy`` and ``config`` from the known names,
  ``steps`` and ``log_every`` bounded whole numbers, ``data`` an existing folder,
  ``no_bar`` / ``no_cache`` booleans), with this registry's own launcher; the log,
  progress and output paths are always ``<root>/<id>/log.txt`` etc., whatever the
  record says, and are used only when they resolve inside the run's own folder
  (a symlink pointing out is ignored: no log shown, nothing written through it).
- **A queued run starts only if this registry queued it**: :meth:`RunRegistry.submit` signs the
  record (``sig``: HMAC-SHA256 of id, creation time, parameters and secret, keyed by ``<root>/.key``,
  256 random bits in a file only its owner, this user, may read). An unsigned, foreign or edited
  queued record is marked failed, "not started", never launched.
  Run ids are validated (``[A-Za-z0-9][A-Za-z0-9._-]*``, no ``..``, the folder's
  own name); ``get("../..")`` is "no such run".
- **A process is signalled only when the registry can prove it started it**: either
  this process holds its ``Popen`` handle, or the pid of the record is alive with
  the recorded kernel start time, leads its own process group, *and* its
  environment carries this run's marker ``SMU_RUN_MARKER=<id>:<secret>`` (set by
  :meth:`RunRegistry._start`, a 128-bit random secret stored in the record). A
  number read from a file alone never reaches ``kill``: a record naming pid 1 (or
  any process it did not start) is "not alive", so the run is derived as finished.
  After the leader exits, stragglers of a cancelled run are found by the same
  marker (same process group and the marker in their environment) and killed one
  by one.
- A malformed record (not a JSON object, wrong types, an unknown status, bad
  parameters, a symlinked or oversize run.json, a folder name that is not a valid
  id) is skipped and reported by :meth:`RunRegistry.skipped` (the Train page lists
  them), never an exception.
- Status is one of ``queued, running, done, failed, cancelled`` and is derived,
  not trusted: a run is running while its proven process is alive (zombies count as
  dead). Once dead, the last ``{"event": "status"}`` line of its progress file
  decides (done / failed / cancelled); without one, a run whose cancel was
  requested is ``cancelled`` and any other is ``failed`` (crashed: show its log
  tail). Terminal statuses are written back to ``run.json``.
- Who may train (issue 24): :func:`training_allowed` - on by default only when the app
  listens on a loopback address; served beyond localhost (``make demo HOST=0.0.0.0``) the
  Train page is off unless the operator sets ``SMU_ALLOW_TRAIN=1`` (``0`` turns it off
  everywhere).
- At most ``max_concurrent`` runs run at once (``$SMU_MAX_RUNS``, default 1) and at most
  ``max_queued`` wait (``$SMU_MAX_QUEUED``, default 4; a submit beyond it is an
  ``SMUInputError``: "the queue is full"), so a room of viewers cannot pile up work;
  :meth:`RunRegistry.submit` queues the rest and :meth:`RunRegistry.poll` starts queued runs, oldest first, whenever a slot
  is free. A file lock (``<root>/.lock``) serialises state changes, so several app
  sessions (or an app restart) never start a queued run twice.
- Subprocesses start in their own session (process group) with
  ``start_new_session=True``: they survive a browser refresh and an app restart, and
  :meth:`RunRegistry.cancel` signals the whole group: SIGTERM, then SIGKILL after
  ``grace_s`` seconds if the group is still alive (``wait=False`` returns at once and
  a later :meth:`poll` escalates).
- The library never imports streamlit; the app keeps one registry per root in
  ``st.cache_resource``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import stat as _stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .checkpoint import is_checkpoint
from .errors import SMUInputError
from .io import JSONL_MAX_BYTES, JSONL_MAX_LINE, atomic_write_text, read_jsonl  # noqa: F401
from .limits import is_whole
from .names import SIZES, STRATEGIES
from .procs import has_marker, marked_members, proc_start_time, proc_stat

__all__ = [
    "MAX_STEPS",
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "RunInfo",
    "RunRegistry",
    "default_runs_dir",
    "max_runs_from_env",
    "time_left",
    "training_allowed",
    "read_jsonl",
    "valid_run_id",
]

RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
RUN_FILE = "run.json"
LOG_FILE, PROGRESS_FILE, OUT_DIR = "log.txt", "progress.jsonl", "out"
MARKER_ENV = "SMU_RUN_MARKER"
KEY_FILE = ".key"  # the registry's signing key (see the module docstring)
MAX_STEPS = 10_000_000
MAX_RECORD_BYTES = 256 * 1024  # a run.json is ~1 kB; anything far larger is not ours
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SECRET_RE = re.compile(r"[0-9a-f]{32}")
_SIG_RE = re.compile(r"[0-9a-f]{64}")
# the run options a record may carry (beyond strategy/data/config/steps), with their CLI flags
_INT_OPTIONS = {"log_every": "--log-every"}
_FLAG_OPTIONS = {"no_bar": "--no-bar", "no_cache": "--no-cache"}

# Popen handles of the runs this process started, so their exit codes are
# collected (no zombies) and known. Keyed by (registry root, run id).
_HANDLES: dict[str, subprocess.Popen] = {}


def default_runs_dir() -> Path:
    """``$SMU_RUNS_DIR`` if set, else ``./runs`` (relative to the working directory)."""
    return Path(os.environ.get("SMU_RUNS_DIR") or "runs")


def max_runs_from_env(default: int = 1, name: str = "SMU_MAX_RUNS") -> int:
    """``$SMU_MAX_RUNS`` (or ``name``) as a whole number >= 1 (``default`` when unset); else ``SMUInputError``."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"[0-9]{1,4}", raw) or int(raw) < 1:
        raise SMUInputError(name, f"must be a whole number from 1 to 9999, not {raw[:40]!r}")
    return int(raw)


LOOPBACK = ("localhost", "127.0.0.1", "::1")


def training_allowed(server_address: str | None) -> tuple[bool, str]:
    """(allowed, reason if not): may this server start training runs for whoever asks?

    ``SMU_ALLOW_TRAIN=1`` / ``0`` decides when set; otherwise training is on only when the
    server listens on a loopback address (``""`` or ``0.0.0.0`` mean every interface)."""
    flag = (os.environ.get("SMU_ALLOW_TRAIN") or "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True, ""
    if flag in ("0", "false", "no", "off"):
        return False, "Training is turned off on this server (SMU_ALLOW_TRAIN=0)."
    addr = (server_address or "").strip().strip("[]")
    if addr in LOOPBACK or addr.startswith("127."):
        return True, ""
    where = addr if addr not in ("", "0.0.0.0", "::") else "every network interface"
    return False, (f"This server listens on {where}, so anyone who can reach it could start training "
                   "processes: training is off. The operator can turn it on with SMU_ALLOW_TRAIN=1.")


def valid_run_id(run_id: Any) -> bool:
    """True for a string that can name a run folder: letters, digits, ``._-``, no ``..``."""
    return isinstance(run_id, str) and bool(_ID_RE.fullmatch(run_id)) and ".." not in run_id


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunInfo:
    """The record of one run (``run.json``) plus the paths the registry derives for it.

    ``out_dir``, ``progress_path`` and ``log_path`` are never read from the record:
    they are ``<root>/<id>/out`` etc.
    """

    id: str
    status: str
    created: str
    params: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    pid: int | None = None
    pid_start: int | None = None  # kernel start time of the process (clock ticks), Linux
    secret: str = ""  # the marker's secret: the run's process has SMU_RUN_MARKER=<id>:<secret>
    started: str | None = None
    finished: str | None = None
    returncode: int | None = None
    cancel_requested: float | None = None  # unix time of the first SIGTERM
    killed: bool = False
    message: str = ""
    sig: str = ""  # the registry's signature of a run it queued (see the module docstring)

    # the fields written to run.json (run_dir is where it lives, not what it says)
    _STORED = ("id", "status", "created", "params", "pid", "pid_start", "secret", "started", "finished",
               "returncode", "cancel_requested", "killed", "message", "sig")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def out_dir(self) -> str:
        return str(Path(self.run_dir) / OUT_DIR)

    @property
    def progress_path(self) -> str:
        return str(Path(self.run_dir) / PROGRESS_FILE)

    @property
    def log_path(self) -> str:
        return str(Path(self.run_dir) / LOG_FILE)

    @property
    def marker(self) -> str:
        return f"{self.id}:{self.secret}"

    @property
    def label(self) -> str:
        """Short human label: ``<id> (<strategy>, <size>, <steps> steps) - <status>``."""
        p = self.params
        bits = [str(p[k]) for k in ("strategy", "config") if k in p]
        if "steps" in p:
            bits.append(f"{p['steps']} steps")
        return f"{self.id} ({', '.join(bits)}) - {self.status}" if bits else f"{self.id} - {self.status}"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._STORED}

    @classmethod
    def from_record(cls, d: Any, run_dir: Path) -> RunInfo:
        """Validate a parsed run.json found in ``run_dir``; ``ValueError`` says what is wrong."""
        if not isinstance(d, dict):
            raise ValueError(f"the record is a JSON {type(d).__name__}, not an object")
        if d.get("id") != run_dir.name:
            raise ValueError("its id does not match its folder name")
        if d.get("status") not in RUN_STATUSES:
            raise ValueError(f"unknown status {str(d.get('status'))[:40]!r}")
        for k in ("created", "secret", "message"):
            if not isinstance(d.get(k, ""), str):
                raise ValueError(f"{k!r} is not a string")
        for k in ("started", "finished"):
            if d.get(k) is not None and not isinstance(d[k], str):
                raise ValueError(f"{k!r} is not a string")
        for k in ("pid", "pid_start", "returncode"):
            v = d.get(k)
            if v is not None and not (is_whole(v) and -(2 ** 31) <= v < 2 ** 63):
                raise ValueError(f"{k!r} is not a whole number")
        if d.get("pid") is not None and d["pid"] < 1:
            raise ValueError("'pid' is not a process id")
        c = d.get("cancel_requested")
        if c is not None and not (isinstance(c, (int, float)) and not isinstance(c, bool) and c == c
                                  and abs(c) < 1e12):
            raise ValueError("'cancel_requested' is not a time")
        if not isinstance(d.get("killed", False), bool):
            raise ValueError("'killed' is not true/false")
        if d.get("secret") and not _SECRET_RE.fullmatch(d["secret"]):
            raise ValueError("'secret' is malformed")
        if not isinstance(d.get("sig", ""), str) or (d.get("sig") and not _SIG_RE.fullmatch(d["sig"])):
            raise ValueError("'sig' is malformed")
        params = validate_params(d.get("params"))
        return cls(id=d["id"], status=d["status"], created=d.get("created", ""), params=params,
                   run_dir=str(run_dir), pid=d.get("pid"), pid_start=d.get("pid_start"),
                   secret=d.get("secret", ""), started=d.get("started"), finished=d.get("finished"),
                   returncode=d.get("returncode"), cancel_requested=c, killed=d.get("killed", False),
                   message=d.get("message", "")[:2000], sig=d.get("sig", ""))

    def signed_part(self) -> bytes:
        """What the registry signs when it queues the run: who it is and what it will run."""
        return json.dumps({"id": self.id, "created": self.created, "params": self.params, "secret": self.secret},
                          sort_keys=True, separators=(",", ":")).encode()


def validate_params(p: Any) -> dict[str, Any]:
    """The run parameters, checked (``ValueError`` with the reason): what a command is built from."""
    if not isinstance(p, dict):
        raise ValueError("'params' is not an object")
    p = {k: v for k, v in p.items() if k != "extra_args"}  # records before issue 28: never used now
    unknown = set(p) - {"strategy", "data", "config", "steps", *_INT_OPTIONS, *_FLAG_OPTIONS}
    if unknown:
        raise ValueError(f"unknown parameters {sorted(map(str, unknown))[:5]}")
    if p.get("strategy") not in STRATEGIES:
        raise ValueError(f"unknown strategy; one of {', '.join(STRATEGIES)}")
    if p.get("config") not in SIZES:
        raise ValueError(f"unknown model size; one of {', '.join(SIZES)}")
    if not (is_whole(p.get("steps")) and 1 <= p["steps"] <= MAX_STEPS):
        raise ValueError(f"the number of steps must be a whole number from 1 to {MAX_STEPS:,}")
    data = p.get("data")
    if not (isinstance(data, str) and data.startswith("/") and "\0" not in data and len(data) < 4096):
        raise ValueError("'data' is not an absolute folder path")
    for k in _INT_OPTIONS:
        if k in p and not (is_whole(p[k]) and 1 <= p[k] <= MAX_STEPS):
            raise ValueError(f"{k!r} must be a whole number from 1 to {MAX_STEPS:,}")
    for k in _FLAG_OPTIONS:
        if k in p and not isinstance(p[k], bool):
            raise ValueError(f"{k!r} must be true or false")
    return dict(p)


def time_left(records: list[dict], total_steps: int) -> float | None:
    """Seconds a run still needs, from its progress records (``step`` and ``wall_s``): the
    seconds per step since its first step (start-up left out) times the steps left. None
    before two steps are known."""
    pts = sorted({int(r["step"]): float(r["wall_s"]) for r in records
                  if isinstance(r.get("step"), int) and isinstance(r.get("wall_s"), (int, float))
                  and r["step"] >= 1}.items())
    if len(pts) < 2 or not total_steps:
        return None
    (s0, w0), (s1, w1) = pts[0], pts[-1]
    if s1 <= s0 or w1 < w0:
        return None
    return max(0.0, (int(total_steps) - s1) * (w1 - w0) / (s1 - s0))


def _final_status(progress_path: str | os.PathLike) -> dict | None:
    """The last ``{"event": "status"}`` record of a progress file, if any."""
    for rec in reversed(read_jsonl(progress_path)):
        if rec.get("event") == "status" and rec.get("status") in TERMINAL_STATUSES:
            return rec
    return None


# ----------------------------------------------------------------------------- processes (procs.py)

def _proven(run: RunInfo) -> bool:
    """True while the run's recorded pid is a live, non-zombie process that this registry
    started: same kernel start time, leader of its own process group, the run's marker
    in its environment. Anything less and the pid is not ours to signal."""
    pid = run.pid
    if not (is_whole(pid) and pid > 1 and pid != os.getpid() and run.pid_start is not None and run.secret):
        return False
    rest = proc_stat(pid)
    if not rest or rest[0] in ("Z", "X"):
        return False
    try:
        pgrp, start = int(rest[2]), int(rest[19])
    except (IndexError, ValueError):
        return False
    return start == run.pid_start and pgrp == pid and has_marker(pid, MARKER_ENV, run.marker)


class RunRegistry:
    """Launch, list, poll and cancel training runs; state lives on disk under ``root``.

    ``launcher`` is the command prefix that runs the CLI (default
    ``[sys.executable, "-m", "smu_explain.cli"]``); tests substitute a small
    fake CLI. ``env`` adds variables to the subprocess environment. Both come from
    code, never from a run's files.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, max_concurrent: int | None = None,
                 launcher: Sequence[str] | None = None, grace_s: float = 5.0,
                 env: dict[str, str] | None = None, max_queued: int | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()
        if max_concurrent is None:
            max_concurrent = max_runs_from_env()
        if max_queued is None:
            max_queued = max_runs_from_env(4, "SMU_MAX_QUEUED")
        for name, v in (("max_concurrent", max_concurrent), ("max_queued", max_queued)):
            if not is_whole(v) or v < 1:
                raise SMUInputError(name, "must be a whole number >= 1")
        self.max_concurrent, self.max_queued = int(max_concurrent), int(max_queued)
        self.launcher = list(launcher) if launcher else [sys.executable, "-m", "smu_explain.cli"]
        self.grace_s = float(grace_s)
        self.env = dict(env or {})
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not self.root.is_dir():
                raise NotADirectoryError(str(self.root))
        except (OSError, RuntimeError) as e:
            reason = "names a file, not a folder" if isinstance(e, (FileExistsError, NotADirectoryError)) \
                else f"cannot be used as the runs folder ({e.__class__.__name__}: {e.strerror or e})" \
                if isinstance(e, OSError) else f"cannot be used as the runs folder ({e})"
            raise SMUInputError(str(self.root)[:300], f"runs folder (SMU_RUNS_DIR) {reason}") from None
        self._real_root = self.root.resolve()

    # ------------------------------------------------------------ persistence
    @contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _run_dir(self, run_id: str) -> Path | None:
        """``<root>/<run_id>`` when the id is valid and the folder is a real folder in the root."""
        if not valid_run_id(run_id):
            return None
        d = self.root / run_id
        try:
            if d.is_symlink() or not d.is_dir() or d.resolve().parent != self._real_root:
                return None
        except OSError:
            return None
        return d

    def _inside(self, run: RunInfo, name: str) -> Path | None:
        """``<run dir>/<name>`` unless it is a symlink or resolves outside the run's folder."""
        p = Path(run.run_dir) / name
        try:
            if p.is_symlink() or p.resolve().parent != Path(run.run_dir).resolve():
                return None
        except OSError:
            return None
        return p

    def _key_bytes(self, create: bool = False) -> bytes | None:
        """The signing key of ``<root>/.key`` (caller holds the lock); None when there is none
        or it is not this user's private regular file (then nothing queued is trusted)."""
        path = self.root / KEY_FILE
        if create:
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                try:
                    os.write(fd, secrets.token_hex(32).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not _stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                return None
            raw = os.read(fd, 65)
        finally:
            os.close(fd)
        return bytes.fromhex(raw.decode("ascii")) if re.fullmatch(rb"[0-9a-f]{64}", raw) else None

    @staticmethod
    def _signature(key: bytes, run: RunInfo) -> str:
        return hmac.new(key, run.signed_part(), hashlib.sha256).hexdigest()

    def _save(self, run: RunInfo) -> None:
        d = Path(run.run_dir)
        d.mkdir(parents=True, exist_ok=True)
        target = d / RUN_FILE
        if target.is_symlink():  # never write through a planted link
            target.unlink()
        atomic_write_text(target, json.dumps(run.to_dict(), indent=2))

    def _load(self, run_dir: Path) -> RunInfo:
        """The validated record of ``run_dir``; ``ValueError`` with the reason when it is not usable."""
        p = run_dir / RUN_FILE
        try:
            st = os.lstat(p)
        except OSError:
            raise ValueError("no run.json") from None
        if not _stat.S_ISREG(st.st_mode):
            raise ValueError("run.json is not a regular file")
        if st.st_size > MAX_RECORD_BYTES:
            raise ValueError(f"run.json is larger than {MAX_RECORD_BYTES // 1024} kB")
        try:
            with open(p, "rb") as f:
                raw = f.read(MAX_RECORD_BYTES + 1)
            d = json.loads(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ValueError(f"run.json is not readable JSON ({e.__class__.__name__})") from None
        return RunInfo.from_record(d, run_dir)

    def _scan(self) -> tuple[list[RunInfo], list[tuple[str, str]]]:
        runs, skipped = [], []
        try:
            entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError as e:
            return [], [(str(self.root), f"cannot list the runs folder: {e.strerror}")]
        for e in entries:
            if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
                continue
            d = self._run_dir(e.name)
            if d is None:
                skipped.append((e.name[:80], "the folder name is not a valid run id"))
                continue
            try:
                runs.append(self._load(d))
            except ValueError as err:
                skipped.append((e.name, str(err)))
        runs.sort(key=lambda r: (r.created, r.id))
        return runs, skipped

    def _all(self) -> list[RunInfo]:
        return self._scan()[0]

    def skipped(self) -> list[tuple[str, str]]:
        """(folder name, reason) of every folder under the root whose record was not usable."""
        return self._scan()[1]

    # ------------------------------------------------------------ commands
    def build_command(self, *, strategy: str, data: str, config: str, steps: int, out_dir: Path,
                      progress_path: Path, log_every: int | None = None, no_bar: bool = False,
                      no_cache: bool = False) -> list[str]:
        """The ``pretrain`` command line of a run (launcher prefix + arguments)."""
        cmd = [*self.launcher, "pretrain", "--strategy", strategy, "--data", str(data),
               "--config", config, "--steps", str(int(steps)), "--out", str(out_dir),
               "--progress", str(progress_path)]
        if log_every is not None:
            cmd += ["--log-every", str(int(log_every))]
        cmd += [flag for k, flag in _FLAG_OPTIONS.items() if {"no_bar": no_bar, "no_cache": no_cache}[k]]
        return cmd

    def command_for(self, run: RunInfo) -> list[str]:
        """The command a run's parameters stand for (re-validated; ``SMUInputError`` if they are bad)."""
        try:
            p = validate_params(run.params)
        except ValueError as e:
            raise SMUInputError(run.id, str(e)) from None
        return self.build_command(strategy=p["strategy"], data=p["data"], config=p["config"], steps=p["steps"],
                                  out_dir=Path(run.out_dir), progress_path=Path(run.progress_path),
                                  log_every=p.get("log_every"), no_bar=p.get("no_bar", False),
                                  no_cache=p.get("no_cache", False))

    def _new_id(self, strategy: str) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{strategy}-{secrets.token_hex(2)}"

    def submit(self, *, strategy: str, data: str | os.PathLike, config: str = "tiny", steps: int = 50,
               log_every: int | None = None, no_bar: bool = False, no_cache: bool = False,
               start: bool = True) -> RunInfo:
        """Register a new pretraining run; start it now if a slot is free, else queue it.

        Raises ``SMUInputError`` for an unknown strategy or size, a step count
        out of range, or a data folder that does not exist.
        """
        try:
            data_path = Path(data).expanduser().resolve()
            ok = data_path.is_dir()
        except (OSError, RuntimeError, ValueError) as e:
            raise SMUInputError(str(data)[:300], f"not a usable folder path ({e.__class__.__name__})") from None
        if not ok:
            raise SMUInputError(str(data)[:300], "training data folder not found")
        params: dict[str, Any] = {"strategy": strategy, "data": str(data_path), "config": config, "steps": steps}
        if log_every is not None:
            params["log_every"] = log_every
        params.update({k: True for k, on in (("no_bar", no_bar), ("no_cache", no_cache)) if on})
        try:
            params = validate_params(params)  # the one rule set, the same a stored record is held to
        except ValueError as e:
            raise SMUInputError("run parameters", str(e)) from None
        run_id = self._new_id(strategy)
        run = RunInfo(id=run_id, status="queued", created=_now_iso(), params=params,
                      run_dir=str(self.root / run_id), secret=secrets.token_hex(16))
        with self._lock():
            waiting = sum(r.status == "queued" for r in self._all())
            if waiting >= self.max_queued:
                raise SMUInputError("queue", f"the queue is full ({waiting} runs waiting, at most "
                                    f"{self.max_queued}: SMU_MAX_QUEUED); start it when one has begun")
            key = self._key_bytes(create=True)
            if key is None:
                raise SMUInputError(str(self.root / KEY_FILE)[:300], "the runs folder's key is not a private "
                                    "file of this user (owner-only permissions); remove it to make a new one")
            run.sig = self._signature(key, run)
            (self.root / run_id).mkdir()
            self._save(run)
        if start:
            self.poll()
        return self.get(run_id)

    def _start(self, run: RunInfo) -> RunInfo:
        """Launch a queued run's subprocess (caller holds the lock); the command is re-built
        from the validated parameters, the paths from the run's folder."""
        try:
            key = self._key_bytes()
            if key is None or not hmac.compare_digest(run.sig, self._signature(key, run)):
                raise SMUInputError(RUN_FILE, "this queued record was not written by this registry (no valid "
                                    "signature); submit the run again from the Train page")
            cmd = self.command_for(run)
            if not Path(run.params["data"]).is_dir():
                raise SMUInputError(run.params["data"], "training data folder not found")
            for name in (LOG_FILE, PROGRESS_FILE, OUT_DIR):
                if self._inside(run, name) is None:
                    raise SMUInputError(name, "is a link out of the run's folder; not started")
        except SMUInputError as e:
            run.status, run.finished, run.message = "failed", _now_iso(), f"not started: {e}"
            self._save(run)
            return run
        if not run.secret:
            run.secret = secrets.token_hex(16)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, MARKER_ENV: run.marker}
        try:
            log = os.open(run.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            run.status, run.finished = "failed", _now_iso()
            run.message = f"could not open the run's log: {e.strerror}"
            self._save(run)
            return run
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True, cwd=str(Path.cwd()))
        except OSError as e:
            run.status, run.finished = "failed", _now_iso()
            run.message = f"could not start the training command: {e}"
            self._save(run)
            return run
        finally:
            os.close(log)
        _HANDLES[self._key(run)] = proc
        run.pid, run.pid_start = proc.pid, proc_start_time(proc.pid)
        run.status, run.started = "running", _now_iso()
        self._save(run)
        return run

    def _key(self, run: RunInfo) -> str:
        return f"{self._real_root}/{run.id}"

    # ------------------------------------------------------------ signals
    def _signal(self, run: RunInfo, sig: int) -> bool:
        """Send ``sig`` to the run's process group, only if it is proven to be ours."""
        handle = _HANDLES.get(self._key(run))
        if handle is not None:
            if handle.poll() is not None:
                return False
            pgid = handle.pid  # start_new_session: the child leads its own group
        elif _proven(run):
            pgid = run.pid
        else:
            return False
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _kill_stragglers(self, run: RunInfo) -> None:
        """SIGKILL what is left of a cancelled run's group (found by its marker) after the leader exited."""
        if not (run.pid and run.secret):
            return
        for pid in marked_members(run.pid, MARKER_ENV, run.marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------ status
    def _refresh(self, run: RunInfo) -> RunInfo:
        """Derive a started run's status from its process and progress file (caller holds the lock)."""
        if run.status != "running":
            return run
        handle = _HANDLES.get(self._key(run))
        if handle is not None:
            rc = handle.poll()
            alive = rc is None
            if rc is not None:
                run.returncode = rc
        else:
            alive = _proven(run)
        if alive:
            if (run.cancel_requested is not None and time.time() - run.cancel_requested > self.grace_s
                    and self._signal(run, signal.SIGKILL)):
                run.killed = True
                self._save(run)
            return run
        # the leader is gone; make sure no straggler of its group survives a cancel
        if run.cancel_requested is not None:
            self._kill_stragglers(run)
        progress = self._inside(run, PROGRESS_FILE)
        final = _final_status(progress) if progress is not None else None
        if final is not None:
            run.status = final["status"]
            run.message = str(final.get("message") or "")[:2000]
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
        _HANDLES.pop(self._key(run), None)
        self._save(run)
        return run

    def poll(self) -> list[RunInfo]:
        """Refresh every run's status, escalate overdue cancels, start queued runs in free slots.

        Returns all runs, oldest first (malformed records are left out: see :meth:`skipped`).
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

    def _get_locked(self, run_id: str) -> RunInfo:
        d = self._run_dir(run_id)
        if d is None:
            raise SMUInputError(str(run_id)[:80], "no such run")
        try:
            return self._load(d)
        except ValueError as e:
            raise SMUInputError(str(run_id)[:80], f"run record is unusable: {e}") from None

    def get(self, run_id: str) -> RunInfo:
        """One run by id (status refreshed); ``SMUInputError`` if there is none or it is malformed."""
        with self._lock():
            return self._refresh(self._get_locked(run_id))

    # ------------------------------------------------------------ control
    def cancel(self, run_id: str, *, grace_s: float | None = None, wait: bool = True) -> RunInfo:
        """Cancel a run: a queued run is marked cancelled; a running one gets SIGTERM.

        With ``wait`` the call waits up to ``grace_s`` (default: the registry's)
        for the process to exit, then sends SIGKILL to its group. Without
        ``wait`` it returns at once; :meth:`poll` kills it once the grace period
        is over. Cancelling a finished run changes nothing. Only a process proven to
        be the run's is ever signalled.
        """
        grace = self.grace_s if grace_s is None else float(grace_s)
        with self._lock():
            run = self._refresh(self._get_locked(run_id))
            if run.status == "queued":
                run.status, run.finished, run.message = "cancelled", _now_iso(), "cancelled before it started"
                self._save(run)
                return run
            if run.status != "running":
                return run
            if run.cancel_requested is None:
                run.cancel_requested = time.time()
                self._save(run)
            self._signal(run, signal.SIGTERM)
        if not wait:
            return self.get(run_id)
        deadline = time.time() + grace
        while time.time() < deadline:
            run = self.get(run_id)
            if run.status != "running":
                return run
            time.sleep(0.05)
        with self._lock():
            run = self._get_locked(run_id)
            if run.status == "running" and self._signal(run, signal.SIGKILL):
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
        with self._lock():
            run = self._get_locked(run_id)
        p = self._inside(run, PROGRESS_FILE)
        return read_jsonl(p) if p is not None else []

    def log_tail(self, run_id: str, n_lines: int = 40, max_bytes: int = 64_000) -> str:
        """The last ``n_lines`` lines of the run's log (stdout + stderr); '' if none yet."""
        with self._lock():
            run = self._get_locked(run_id)
        p = self._inside(run, LOG_FILE)
        if p is None:
            return ""
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        with os.fdopen(fd, "rb") as f:
            if not _stat.S_ISREG(os.fstat(fd).st_mode):
                return ""
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read(max_bytes).decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-n_lines:])

    def model_dirs(self) -> list[tuple[str, Path]]:
        """(label, out dir) of every run whose out dir holds a saved model, newest first."""
        out = []
        for r in reversed(self.list()):
            d = self._inside(r, OUT_DIR)
            if d is not None and is_checkpoint(d):
                out.append((f"run {r.label}", d))
        return out
