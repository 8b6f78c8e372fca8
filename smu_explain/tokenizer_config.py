"""``TokenizerConfig``: every setting that changes tokens, and its hash.

The settings of the compound-word :class:`~smu_explain.tokenizer.Tokenizer` (grid, pitch range,
durations, optional velocity/program, windows) and the ones reading uses (``READ_FIELDS`` of
:mod:`smu_explain.reading`: pitch range, artefact-metre threshold). JSON round trip, save/load,
and ``hash()`` (with ``TOKENIZER_VERSION``), which keys tokenized caches.
Imports numpy and :mod:`smu_explain.io` only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import atomic_write_text, unknown_fields

__all__ = ["TOKENIZER_VERSION", "TokenizerConfig"]

TOKENIZER_VERSION = 1  # part of TokenizerConfig.hash(): bump when encoding rules change


@dataclass(frozen=True)
class TokenizerConfig:
    """All settings that change tokens. ``hash()`` keys tokenized caches."""

    pos_per_quarter: int = 4
    n_positions: int = 16
    max_bar_skip: int = 16
    pitch_min: int = 22
    pitch_max: int = 107
    dur_per_quarter: int = 8
    n_durations: int = 64
    use_velocity: bool = False
    n_velocity_bins: int = 32
    use_program: bool = False
    max_len: int = 512
    stride: int | None = None  # None = max_len
    min_bar_quarters: float = 1.5

    def __post_init__(self):
        for name in ("pos_per_quarter", "n_positions", "max_bar_skip", "dur_per_quarter",
                     "n_durations", "n_velocity_bins", "max_len"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TokenizerConfig.{name} must be a positive int, got {v!r}")
        if not (0 <= self.pitch_min <= self.pitch_max <= 127):
            raise ValueError(
                f"TokenizerConfig pitch range must satisfy 0 <= pitch_min <= pitch_max <= 127, "
                f"got {self.pitch_min}..{self.pitch_max}")
        if self.n_velocity_bins > 127:
            raise ValueError("TokenizerConfig.n_velocity_bins must be <= 127")
        if self.stride is not None and (not isinstance(self.stride, int) or not self.stride >= 1):
            raise ValueError(f"TokenizerConfig.stride must be a positive int or None, got {self.stride!r}")
        if not self.min_bar_quarters >= 0:
            raise ValueError("TokenizerConfig.min_bar_quarters must be >= 0")

    @property
    def effective_stride(self) -> int:
        return self.max_len if self.stride is None else self.stride

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TokenizerConfig:
        unknown = unknown_fields(cls, d)
        if unknown:
            raise ValueError(f"unknown TokenizerConfig keys: {unknown}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> TokenizerConfig:
        return cls.from_dict(json.loads(s))

    def save(self, path) -> None:
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path) -> TokenizerConfig:
        return cls.from_json(Path(path).read_text())

    def hash(self) -> str:
        """Stable sha256 (hex, 16 chars) of the JSON config plus the tokenizer version."""
        payload = json.dumps({"v": TOKENIZER_VERSION, "config": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
