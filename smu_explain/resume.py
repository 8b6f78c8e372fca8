"""The training state file (``checkpoint.pt``) that a resumed run starts from.

Its format (``STATE_FORMAT``, tensors / numbers / strings / lists / dicts only, read back with
``weights_only=True``), the atomic writer, the safe reader, the codec of an objective's state
(numpy arrays as tagged tensors), the RNG states of a rank, and the sanity limits beyond which
``trainer.Trainer`` refuses to keep a state. Imports numpy, torch and ``errors``.
"""

from __future__ import annotations

import contextlib
import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import SMUCheckpointError, SMUWriteError
from .limits import is_whole

CHECKPOINT_NAME = "checkpoint.pt"
STATE_FORMAT = "smu_explain.train_state"
STATE_VERSION = 1

# Checkpoint sanity (Trainer.checkpoint_problem): weights beyond this magnitude mean a
# diverged run; a loss moving average this many times its lowest (after LOSS_MIN_STEPS
# steps) means an exploding one. Such states are never written as checkpoints.
WEIGHT_LIMIT = 1e4
LOSS_EXPLODE_FACTOR = 10.0
LOSS_MIN_STEPS = 10


# ============================================================================ files

def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary sibling, fsync, then ``os.replace`` (never a half file).

    A failed write (disk full, ...) removes the temporary file, leaves ``path`` as it was
    and raises ``SMUWriteError`` (torch reports a full disk as a RuntimeError of its zip
    writer; both are turned into one clear error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        raise SMUWriteError(path, f"could not write the checkpoint ({write_error_reason(e)}); "
                                  "the previous checkpoint is kept") from None
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_error_reason(e: BaseException) -> str:
    if isinstance(e, OSError):
        return e.strerror or str(e)
    ctx = e.__context__ or e.__cause__
    if isinstance(ctx, OSError) and ctx.strerror:
        return ctx.strerror
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return first[:200]


def encode_plain(obj: Any) -> Any:
    """Make an objective state safe for ``weights_only`` loading (numpy arrays -> tagged tensors)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj)).clone()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, int) else k: encode_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a training checkpoint "
                    "(objective state must hold tensors, numpy arrays, numbers, strings, lists, dicts)")


def decode_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return obj["__ndarray__"].numpy()
        return {k: decode_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_plain(v) for v in obj]
    return obj


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``checkpoint.pt`` safely (``weights_only=True``); ``SMUCheckpointError`` otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise SMUCheckpointError(path, "no training checkpoint here (nothing to resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (zip), EOFError ...
        from .weights import pickle_refusal

        raise SMUCheckpointError(path, f"unreadable or unsafe training checkpoint: {pickle_refusal(e, path)}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise SMUCheckpointError(path, "not a smu_explain training checkpoint")
    version = state.get("version", -1)
    if not is_whole(version):
        raise SMUCheckpointError(path, f"checkpoint version {str(version)[:40]!r} is not a number")
    if version > STATE_VERSION:
        raise SMUCheckpointError(path, f"checkpoint version {version} is newer than this smu_explain")
    if problem := _state_problem(state):
        raise SMUCheckpointError(path, f"a damaged training checkpoint: {problem}")
    return state


def _state_problem(state: dict[str, Any]) -> str | None:
    """What in a training checkpoint's structure is not as ``Trainer.train_state`` writes it
    (before anything of it is used), or None."""
    model = state.get("model")
    if not (isinstance(model, dict) and model
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())):
        return "'model' is not a mapping of parameter names to tensors"
    for key in ("optimizer", "scheduler"):
        if not isinstance(state.get(key), dict):
            return f"{key!r} is not a state mapping"
    for key in ("step", "epoch", "batch_in_epoch"):
        if not (is_whole(state.get(key)) and state[key] >= 0):
            return f"{key!r} is not a whole number >= 0 (got {str(state.get(key))[:40]!r})"
    rng = state.get("rng")
    if not (isinstance(rng, list) and rng and all(isinstance(r, dict) and {"python", "numpy", "torch"} <= set(r)
                                                  for r in rng)):
        return "'rng' is not a list of random-number states"
    for key in ("config", "objective", "last_metrics"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            return f"{key!r} is not a mapping"
    return None


# ============================================================================ RNG state

def rng_state(device: torch.device) -> dict[str, Any]:
    py = random.getstate()
    npst = np.random.get_state()
    st: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npst[0], torch.from_numpy(npst[1].astype(np.int64)), int(npst[2]), int(npst[3]), float(npst[4])],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    py = st["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state((str(n[0]), n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


@contextmanager
def preserve_rng(device: torch.device):
    """Run a block (validation) without disturbing the training RNG streams."""
    st = rng_state(device)
    try:
        yield
    finally:
        set_rng_state(st, device)
