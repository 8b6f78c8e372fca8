"""What the training loop reports to: the ``Callback`` hooks ``trainer.Trainer`` fires, and the
ones every run uses: ``ProgressFile`` (the JSONL progress file the CLI, the app's live view and
``runs`` read back with ``read_progress``), ``TqdmProgress`` (the terminal bar) and
``EarlyStopping``. A hook gets the running ``Trainer`` as its first argument; this module does
not import it (nor anything but numpy, torch, tqdm, ``errors`` and ``io``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import SMUTrainingError
from .io import read_jsonl

PROGRESS_NAME = "progress.jsonl"


class Callback:
    """Hooks the loop fires. Runs on rank 0 only unless ``all_ranks`` is True."""

    all_ranks = False

    def on_train_start(self, trainer: Any) -> None: ...

    def on_step_end(self, trainer: Any, info: dict[str, Any]) -> None: ...

    def on_eval(self, trainer: Any, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Any, epoch: int) -> None: ...

    def on_checkpoint(self, trainer: Any, path: Path) -> None: ...

    def on_train_end(self, trainer: Any, status: str, message: str) -> None: ...


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


class ProgressFile(Callback):
    """Appends one JSON object per line to ``path`` (flushed each write).

    Step lines are written every ``every`` steps and carry the loss and stats
    averaged over those steps. Format: docs/ARCHITECTURE.md "Progress file".
    """

    def __init__(self, path: str | os.PathLike, every: int | None = None):
        self.path = Path(path)
        self.every = every
        self._f = None
        self._acc: dict[str, float] = {}
        self._n = 0
        self._last: dict[str, Any] = {}
        self._tokens = 0
        self._t_last = time.perf_counter()
        self.t0 = time.time()

    def write(self, event: str, **fields_: Any) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  kept open by the logger across writes
            if _ends_mid_line(self.path):  # a torn or foreign last line: start a fresh one
                self._f.write("\n")
        rec = {"event": event, "time": time.time(), "wall_s": round(time.time() - self.t0, 3)}
        rec.update(fields_)
        self._f.write(json.dumps(rec, default=_json_plain) + "\n")
        self._f.flush()

    def on_train_start(self, trainer):
        self.t0 = time.time()
        self._t_last = time.perf_counter()
        self.write("start", step=trainer.step, total_steps=trainer.total_steps, epoch=trainer.epoch,
                   config=trainer.config.to_dict(), world_size=trainer.dist.world_size,
                   device=str(trainer.device), n_params=trainer.n_params, resumed=trainer.resumed,
                   batches_per_epoch=trainer.batches_per_epoch, warnings=list(trainer.warnings),
                   data=(getattr(trainer, "save_extra", None) or {}).get("training_data"))

    def on_step_end(self, trainer, info):
        every = self.every or trainer.config.log_every
        self._n += 1
        self._tokens += info.get("tokens", 0)
        self._last = info
        for k, v in [("loss", info["loss"])] + [(f"stats.{k}", v) for k, v in info.get("stats", {}).items()]:
            if isinstance(v, (int, float)):
                self._acc[k] = self._acc.get(k, 0.0) + float(v)
        if self._n >= every or trainer.step >= trainer.total_steps:
            self._flush(trainer)

    def _flush(self, trainer) -> None:
        """Write the pending step line (averages since the last one)."""
        if self._n == 0:
            return
        info = self._last
        now = time.perf_counter()
        dt = max(now - self._t_last, 1e-9)
        avg = {k: v / self._n for k, v in self._acc.items()}
        self.write("step", step=trainer.step, epoch=info["epoch"], loss=_finite_or_none(avg.pop("loss")),
                   lr=info["lr"], tokens_per_s=round(self._tokens / dt, 1),
                   grad_norm=_finite_or_none(info.get("grad_norm")),
                   stats={k[len("stats."):]: _finite_or_none(v) for k, v in avg.items()})
        self._acc, self._n, self._tokens, self._t_last = {}, 0, 0, now

    def on_eval(self, trainer, metrics):
        self.write("eval", step=trainer.step, epoch=trainer.epoch,
                   metrics={k: _finite_or_none(v) for k, v in metrics.items()})

    def on_epoch_end(self, trainer, epoch):
        self.write("epoch", epoch=epoch, step=trainer.step)

    def on_checkpoint(self, trainer, path):
        self.write("checkpoint", step=trainer.step, path=str(path))

    def on_train_end(self, trainer, status, message):
        self._flush(trainer)
        self.write("status", status=status, message=message, step=trainer.step)
        self.close()

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None


def _ends_mid_line(path: Path) -> bool:
    """True when the regular file ``path`` is not empty and does not end with a newline."""
    try:
        with open(path, "rb") as f:
            if not os.fstat(f.fileno()).st_size or not os.path.isfile(path):
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def _json_plain(o: Any) -> Any:
    if isinstance(o, (np.generic,)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def read_progress(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse a progress file, bounded and tolerant (see ``io.read_jsonl``): a half-written
    last line (the writer died mid-line), binary junk and overlong lines are skipped, and a
    device or an endless file is never read into memory."""
    return read_jsonl(path)


class TqdmProgress(Callback):
    """A terminal progress bar (tqdm) showing step, loss and lr."""

    def __init__(self, file=None, disable: bool | None = None):
        self.file = file or sys.stderr
        self.disable = disable
        self.bar = None

    def on_train_start(self, trainer):
        from tqdm import tqdm

        self.bar = tqdm(total=trainer.total_steps, initial=trainer.step, file=self.file, dynamic_ncols=True,
                        disable=self.disable, desc="train", unit="step")

    def on_step_end(self, trainer, info):
        if self.bar is not None:
            self.bar.update(1)
            if trainer.step % trainer.config.log_every == 0 or trainer.step == trainer.total_steps:
                self.bar.set_postfix(loss=f"{info['loss']:.4f}", lr=f"{info['lr']:.2e}", epoch=info["epoch"])

    def on_eval(self, trainer, metrics):
        if self.bar is not None:
            self.bar.write(f"step {trainer.step}: " + ", ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))

    def on_train_end(self, trainer, status, message):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EarlyStopping(Callback):
    """Stop when ``metric`` has not improved for ``patience`` evaluations; keep the best.

    ``mode`` is 'max' (accuracy) or 'min' (loss); ``tie_break`` (e.g. 'val_loss', lower
    wins) decides between evaluations with exactly the same ``metric``. On every improvement
    ``on_improve(trainer, metrics)`` runs (e.g. save the best model). Stopping is a
    normal end (status ``done``) with a message naming the best step.
    """

    def __init__(self, metric: str = "val_acc", mode: str = "max", patience: int = 5,
                 on_improve: Callable[[Any, dict[str, float]], None] | None = None,
                 min_delta: float = 0.0, tie_break: str | None = None):
        if mode not in ("max", "min"):
            raise ValueError("mode must be 'max' or 'min'")
        self.metric, self.mode, self.patience = metric, mode, int(patience)
        self.on_improve, self.min_delta = on_improve, float(min_delta)
        self.tie_break = tie_break  # a loss-like metric (lower wins) deciding exact ties of ``metric``
        self.best: float | None = None
        self.best_tie: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    def _better(self, v: float, tie: float | None) -> bool:
        if self.best is None:
            return True
        if v == self.best and tie is not None and self.best_tie is not None:
            return tie < self.best_tie
        return v > self.best + self.min_delta if self.mode == "max" else v < self.best - self.min_delta

    def on_eval(self, trainer, metrics):
        if self.metric not in metrics:
            raise SMUTrainingError(f"early stopping watches {self.metric!r} but evaluation gave {sorted(metrics)}")
        v = float(metrics[self.metric])
        tie = float(metrics[self.tie_break]) if self.tie_break and self.tie_break in metrics else None
        if math.isfinite(v) and self._better(v, tie):
            self.best, self.best_tie, self.best_step, self.bad_evals = v, tie, trainer.step, 0
            if self.on_improve is not None:
                self.on_improve(trainer, metrics)
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.patience:
                trainer.request_stop(
                    f"early stopping at step {trainer.step}: {self.metric} did not improve for "
                    f"{self.patience} evaluations (best {self.best:.4f} at step {self.best_step})", status="done")
