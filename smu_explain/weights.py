"""The safety checks of a safetensors weights file (``model.safetensors``), before and after reading it.

Owns: reading the header alone (names, shapes, dtypes; no tensor data), building a model on
the meta device with its random initialisers skipped to compare shapes, the parameter count
of a header, and refusing weights that hold NaN or infinities. Every failure is an
``SMUCheckpointError`` naming the file. ``checkpoint.py`` (the loader) and ``published.py``
(the importer) call these.

Imports: ``errors`` only (torch and safetensors inside the functions); never checkpoint or model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import SMUCheckpointError

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn


def weights_header(weights: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], str]]:
    """{tensor name: (shape, dtype)} from a safetensors file's header; no tensor data is read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            out = {}
            for k in f.keys():  # noqa: SIM118  safetensors' safe_open has keys() but is not iterable
                sl = f.get_slice(k)
                out[k] = (tuple(int(d) for d in sl.get_shape()), str(sl.get_dtype()))
            return out
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SMUCheckpointError(weights, f"corrupt or unreadable safetensors file ({e})") from None


# the random initialisers a module's constructor calls (torch.nn.init and the Tensor methods)
_RANDOM_FILLS = frozenset({"normal_", "uniform_", "trunc_normal_", "random_", "bernoulli_", "exponential_",
                           "cauchy_", "log_normal_", "geometric_", "kaiming_uniform_", "kaiming_normal_",
                           "xavier_uniform_", "xavier_normal_", "orthogonal_", "sparse_"})


def skip_random_fills(any_device: bool = False):
    """A torch function mode under which random initialisers of meta tensors do nothing
    (``any_device``: of every tensor - for a model whose every parameter is loaded next,
    strictly, so no random number is ever seen; a 90 M-parameter model builds in a fraction of
    the time its random initialisation takes).

    A meta tensor holds no numbers, so there is nothing to fill; but torch runs the random
    fills of meta tensors through its Python reference kernels, whose first call imports
    ``torch._dynamo`` (about 1 s of CPU, once per process: most of the app's first model load,
    and nothing else the app runs needs it). Only these in-place fills are skipped: every
    shape comes from the module's constructor as before."""
    import torch
    from torch.overrides import TorchFunctionMode

    class SkipRandomFills(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") in _RANDOM_FILLS:
                t = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by name
                if isinstance(t, torch.Tensor) and (t.is_meta or any_device):
                    return t
            return func(*args, **kwargs)

    return SkipRandomFills()


def check_weights_header(weights: str | os.PathLike, build: Callable[[], nn.Module]) -> None:
    """Compare the tensor names and shapes of ``weights`` with those of ``build()``, built on
    the meta device (no memory allocated). ``SMUCheckpointError`` on any difference."""
    import torch

    header = weights_header(weights)
    with torch.device("meta"), skip_random_fills():
        expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_few(unexpected)}")
        raise SMUCheckpointError(weights, "weights do not match config.json: " + "; ".join(parts))
    bad = [f"{k} {header[k][0]} != {v}" for k, v in expected.items() if header[k][0] != v]
    if bad:
        raise SMUCheckpointError(weights, f"tensor shapes do not match config.json: {_few(bad)}")
    if any(not dt.startswith(("F", "BF")) for _, dt in header.values()):
        raise SMUCheckpointError(weights, "weights must be floating point tensors")


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def parameters_in_header(header: dict[str, tuple[tuple[int, ...], str]]) -> int:
    """The number of values in a safetensors header (:func:`weights_header`)."""
    n = 0
    for shape, _ in header.values():
        k = 1
        for d in shape:
            k *= int(d)
        n += k
    return n


def refuse_non_finite(state: dict[str, Any], weights: str | os.PathLike) -> None:
    """``SMUCheckpointError`` naming the first floating-point tensor of ``state`` that holds a NaN
    or an infinity (and how many of its values do): such a model gives NaN scores that look like
    results."""
    import math

    import torch

    for name, t in state.items():
        if t.is_floating_point() or t.is_complex():
            # fast path: any NaN or infinity makes the sum NaN or infinite (one pass over the memory,
            # no boolean copy); a finite sum proves the tensor finite. A sum that overflowed is
            # checked value by value below, like a tensor that holds a NaN.
            if t.is_floating_point() and math.isfinite(float(t.sum())):
                continue
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                raise SMUCheckpointError(weights, f"tensor {name!r} holds {int(bad.sum()):,} NaN or infinite "
                                                  f"value(s) of {t.numel():,}; the model cannot give meaningful "
                                                  "scores (was training diverging when it was saved?)")


# ----------------------------------------------------------------------------- refused pickles

#: what a torch weights pickle legitimately names (anything else is reported by pickle_refusal)
_WEIGHT_GLOBALS = re.compile(r"(torch|collections|numpy\.core\.multiarray|_codecs)\b")


def _pickle_globals(path: str | os.PathLike, limit: int = 64 << 20) -> list[str]:
    """The globals a pickle (a plain one, or a torch archive's data.pkl) names, read with
    ``pickletools.genops`` (it parses opcodes, it runs nothing), at most ``limit`` bytes."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                raw = z.open(name).read(limit) if name else b""
        else:
            with open(path, "rb") as f:
                raw = f.read(limit)
        found, strings = [], []
        for op, arg, _ in pickletools.genops(io.BytesIO(raw)):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
        return found
    except Exception:  # a damaged pickle: whatever was found before the damage is not worth a guess
        return []


def pickle_refusal(e: BaseException, path: str | os.PathLike) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in our words: the global a pickle
    asks for (a file that would run code when loaded) or the unpickler's own reason; never
    torch's advice to load it with ``weights_only=False``."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    name = m.group(1) if m else next((g for g in _pickle_globals(path) if not _WEIGHT_GLOBALS.match(g)), None)
    if name:
        return (f"refused: loading it would call {name}, which a weights file never needs (a pickle can run "
                "any code when it is loaded; only tensors and plain containers are read). Do not open it with "
                "torch.load(weights_only=False)")
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = m.group(1).strip() if m else (lines[0] if lines else e.__class__.__name__)
    return f"not a weights file this importer can read safely (tensors and plain containers only): {detail[:200]}"
