"""The training configuration: ``TrainConfig`` (JSON round-trippable, validated) and the
learning-rate schedule (``lr_factor``).

What ``trainer.Trainer`` needs to know about a run, and nothing about how it runs. Imports
numpy, ``errors`` and ``io`` (no torch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SMUInputError
from .io import atomic_write_text, unknown_fields

TRAIN_CONFIG_NAME = "train_config.json"


_SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class TrainConfig:
    """Everything the loop needs, JSON round-trippable (``to_dict`` / ``from_dict``).

    ``steps`` wins over ``epochs`` when both are set; one of them is required.
    ``batch_size`` is the global batch (split over ranks; must divide by the world size).
    ``checkpoint_every`` / ``eval_every`` are in optimizer steps; 0 = only at the end.
    ``schedule``: linear warm-up over ``warmup_steps`` then ``constant``, ``linear`` or
    ``cosine`` decay to ``min_lr_ratio * lr`` at the last step.
    Weight decay applies to weight matrices / embeddings (dim >= 2), not to biases or
    LayerNorm gains (nanoGPT's rule).
    """

    steps: int | None = 1000
    epochs: int | None = None
    batch_size: int = 32
    eval_batch_size: int | None = None
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 3.0
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    checkpoint_every: int = 500
    eval_every: int = 500
    eval_batches: int | None = None
    log_every: int = 10
    out_dir: str = "runs/run"
    num_workers: int = 0

    def validate(self) -> TrainConfig:
        def bad(reason: str) -> SMUInputError:
            return SMUInputError("train config", reason)

        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        for k in ("steps", "epochs", "eval_batch_size", "eval_batches"):
            v = getattr(self, k)
            if v is not None and not is_int(v):
                raise bad(f"{k} must be an integer or null, got {v!r}")
        for k in ("batch_size", "warmup_steps", "seed", "checkpoint_every", "eval_every", "log_every",
                  "num_workers"):
            if not is_int(getattr(self, k)):
                raise bad(f"{k} must be an integer, got {getattr(self, k)!r}")
        for k in ("lr", "weight_decay", "grad_clip", "min_lr_ratio"):
            v = getattr(self, k)
            if not is_num(v) or not math.isfinite(v):
                raise bad(f"{k} must be a finite number, got {v!r}")
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2 or \
                not all(is_num(b) and 0 <= b < 1 for b in self.betas):
            raise bad(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        for k in ("schedule", "device", "out_dir"):
            if not isinstance(getattr(self, k), str):
                raise bad(f"{k} must be a string, got {getattr(self, k)!r}")
        if not isinstance(self.bf16, bool):
            raise bad(f"bf16 must be true or false, got {self.bf16!r}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise bad(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.eval_batches is not None and self.eval_batches < 1:
            raise bad(f"eval_batches must be >= 1, got {self.eval_batches}")
        if self.steps is None and self.epochs is None:
            raise bad("set steps or epochs")
        if self.steps is not None and int(self.steps) < 1:
            raise bad(f"steps must be >= 1, got {self.steps}")
        if self.epochs is not None and int(self.epochs) < 1:
            raise bad(f"epochs must be >= 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise bad(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise bad("weight_decay and grad_clip must be >= 0")
        if self.schedule not in _SCHEDULES:
            raise bad(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise bad(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.checkpoint_every < 0 or self.eval_every < 0 or self.log_every < 1:
            raise bad("warmup_steps, checkpoint_every, eval_every must be >= 0 and log_every >= 1")
        if self.num_workers < 0:
            raise bad("num_workers must be >= 0")
        if len(self.betas) != 2:
            raise bad("betas must be two numbers")
        if self.device not in ("auto", "cpu") and not str(self.device).startswith(("cuda", "mps")):
            raise bad(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        unknown = unknown_fields(cls, d)
        if unknown:
            known = sorted(f.name for f in fields(cls))
            raise SMUInputError("train config", f"unknown keys {unknown}; known: {known}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SMUInputError(path, "train config file not found") from None
        except (OSError, ValueError, RecursionError) as e:  # not JSON, too many digits, too deep
            raise SMUInputError(path, f"not a readable JSON train config ({str(e)[:200] or e.__class__.__name__})"
                                ) from None
        if not isinstance(d, dict):
            raise SMUInputError(path, "train config must be a JSON object")
        return cls.from_dict(d)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))  # else cosine
    return min_ratio + (1.0 - min_ratio) * decay
