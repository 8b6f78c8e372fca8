"""The study's trainer callbacks: ``TokenCounter`` (steps and tokens, saved with every
checkpoint), ``StopAtStep`` (the end of a pre-training chunk) and ``FreezeSnapshots`` (the freeze
book after every freeze event).

Imports ``smu_explain.callbacks`` (torch), ``plan`` and ``analysis``; the package loads it lazily.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..callbacks import Callback
from .analysis import save_freeze_snapshot
from .plan import read_json, write_json


class TokenCounter(Callback):
    """Counts optimizer steps and the real tokens of their batches.

    With ``state_file`` the counts (and the seconds spent) are written at every
    checkpoint, with the checkpoint's step, so a run resumed from that checkpoint can
    start from them (``load``): the counts then cover exactly the steps in the checkpoint.
    """

    def __init__(self, state_file: str | os.PathLike | None = None):
        self.tokens = 0
        self.steps = 0
        self.wall_before = 0.0
        self.state_file = Path(state_file) if state_file else None
        self._t0 = time.perf_counter()

    def load(self, step: int) -> bool:
        """Start from the counts saved with the checkpoint of ``step`` (False if there are none)."""
        if self.state_file is None or not self.state_file.is_file():
            return False
        d = read_json(self.state_file)
        if int(d.get("step", -1)) != int(step):
            return False
        self.tokens, self.steps, self.wall_before = int(d["tokens"]), int(d["steps"]), float(d["wall_s"])
        return True

    @property
    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self._t0

    def on_train_start(self, trainer):
        self._t0 = time.perf_counter()

    def on_step_end(self, trainer, info):
        self.tokens += int(info.get("tokens", 0))
        self.steps += 1

    def on_checkpoint(self, trainer, path):
        if self.state_file is not None:
            write_json(self.state_file, {"step": trainer.step, "steps": self.steps, "tokens": self.tokens,
                                         "wall_s": self.wall_s})


class StopAtStep(Callback):
    """Ends the run normally (status ``done``, checkpoint written) once ``step`` steps are done:
    the end of a pre-training chunk. The next chunk resumes the checkpoint."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_step_end(self, trainer, info):
        if trainer.step >= self.step and trainer.step < trainer.total_steps:
            trainer.request_stop(f"chunk ends at step {self.step} of {trainer.total_steps}", status="done")


class FreezeSnapshots(Callback):
    """Saves the adversarial strategy's freeze book after every freeze event.

    File ``<folder>/freeze_<epoch:05d>.npz`` (no pickles): ``names`` (P,) piece names of
    the training set, ``offsets`` (P+1,), ``bits`` (np.packbits of the concatenated
    per-note flags, True = frozen), ``n_bits``, ``epoch``, ``step`` and ``stats`` (the
    freeze book's history entry, as a JSON string). Works across resumes: the event
    count is the freeze book's ``history`` length.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def on_epoch_end(self, trainer, epoch):
        book = getattr(trainer.objective, "freeze_book", None)
        if book is None or not book.history or int(book.history[-1].get("epoch", -1)) != int(epoch):
            return
        names = list(getattr(trainer.train_set, "piece_names", None) or [])
        save_freeze_snapshot(self.folder / f"freeze_{int(epoch):05d}.npz", book, names, int(epoch),
                             int(trainer.step))
