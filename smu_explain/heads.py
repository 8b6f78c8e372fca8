"""Fine-tuning models: the task specs and a ``MidiBert`` encoder with a task head (METHOD.md 6).

Owns ``TASKS`` / ``task_spec`` (what each task predicts, at which level), the heads
(``TokenHead``, ``AttentionPool``, ``SequenceHead``) and ``FineTuneModel`` (encoder + head), as
plain ``nn.Module`` s that know nothing of files or training: ``checkpoint.py`` saves and rebuilds
them, ``finetune.py`` trains and evaluates them (its module docstring has the rules of the heads).

Imports: torch, ``model``, ``errors``; never checkpoint, finetune, the trainer or data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .errors import SMUInputError
from .model import MidiBert, ModelConfig


@dataclass(frozen=True)
class TaskSpec:
    name: str
    level: str  # "note" | "sequence"
    n_classes: int | None  # None: from the data (folder)


TASKS: dict[str, TaskSpec] = {
    "melody": TaskSpec("melody", "note", 3),
    "velocity": TaskSpec("velocity", "note", 6),
    "composer": TaskSpec("composer", "sequence", 8),
    "emotion": TaskSpec("emotion", "sequence", 4),
    "folder": TaskSpec("folder", "sequence", None),
}


def task_spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise SMUInputError("task", f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    return TASKS[task]


# ============================================================================ heads

class TokenHead(nn.Module):
    """Per-token classifier (MidiBERT's token classification head)."""

    def __init__(self, d_model: int, n_classes: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.net(hidden)


class AttentionPool(nn.Module):
    """Structured self-attentive pooling: ``hops`` softmax distributions over real tokens."""

    def __init__(self, d_model: int, hops: int = 4, att_dim: int = 128):
        super().__init__()
        self.proj = nn.Linear(d_model, att_dim, bias=False)
        self.score = nn.Linear(att_dim, hops, bias=False)

    def weights(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, hops) attention weights, 0 on padding, each hop summing to 1 over L."""
        s = self.score(torch.tanh(self.proj(hidden))).float()
        s = s.masked_fill(~attention_mask.bool()[..., None], float("-inf"))
        return torch.softmax(s, dim=1).nan_to_num(0.0)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        a = self.weights(hidden, attention_mask).to(hidden.dtype)
        return torch.einsum("blh,bld->bhd", a, hidden).flatten(1)  # (B, hops * D)


class SequenceHead(nn.Module):
    """Attention pooling over the encoder output, then an MLP."""

    def __init__(self, d_model: int, n_classes: int, hidden: int = 256, dropout: float = 0.1, hops: int = 4):
        super().__init__()
        self.pool = AttentionPool(d_model, hops)
        self.mlp = nn.Sequential(nn.Linear(hops * d_model, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(hidden, attention_mask))


class FineTuneModel(nn.Module):
    """Encoder + task head. ``forward(tokens, attention_mask) -> {"logits", "hidden"}``:
    logits (B, L, C) for note tasks, (B, C) for sequence tasks."""

    def __init__(self, encoder: MidiBert, task: str, classes: Sequence[str], head_hidden: int = 256,
                 dropout: float = 0.1, pool_hops: int = 4, info: dict[str, Any] | None = None):
        super().__init__()
        spec = task_spec(task)
        if spec.n_classes is not None and len(classes) != spec.n_classes:
            raise SMUInputError("task", f"{task} has {spec.n_classes} classes, got {len(classes)}: {list(classes)}")
        if len(classes) < 2:
            raise SMUInputError("task", f"a classification task needs at least 2 classes, got {list(classes)}")
        if task == "velocity" and "velocity" in encoder.config.attributes:
            raise SMUInputError("model", "the velocity task needs an encoder without the velocity input "
                                         "attribute (velocity must not be an input)")
        self.encoder = encoder
        self.task, self.level, self.classes = task, spec.level, list(classes)
        self.head_hidden, self.dropout, self.pool_hops = head_hidden, dropout, pool_hops
        d = encoder.config.d_model
        if spec.level == "note":
            self.head: nn.Module = TokenHead(d, len(classes), head_hidden, dropout)
        else:
            self.head = SequenceHead(d, len(classes), head_hidden, dropout, pool_hops)
        # metadata saved with the model (``info``; config.json's other keys, "tokenizer": its config
        # dict), the same attribute as MidiBert.checkpoint_info
        self.checkpoint_info: dict[str, Any] = dict(info or {})

    @property
    def config(self) -> ModelConfig:
        return self.encoder.config

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if attention_mask is None:
            attention_mask = tokens[..., 0] != 0
        hidden = self.encoder.encode(tokens, attention_mask)
        return {"logits": self.head(hidden, attention_mask), "hidden": hidden}

    def head_config(self) -> dict[str, Any]:
        return {"head_hidden": self.head_hidden, "dropout": self.dropout, "pool_hops": self.pool_hops}
