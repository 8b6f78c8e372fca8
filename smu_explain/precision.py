"""The precision of the model passes: ``fp32``, or ``bf16`` autocast for the batched passes.

Owns ``PRECISIONS``, :func:`fast_precision` (where bf16 passes are fast: the default the CLI,
the app and the study pick) and :func:`autocast` (the context the explain table, the
attributions and the picks' draws run their batched passes under). May import torch only.
"""

from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16")


def fast_precision(device: str | torch.device = "cpu") -> str:
    """"bf16" where bf16 IG passes are fast (a CUDA GPU with bf16, or a CPU with bf16 units:
    avx512_bf16 / amx_bf16 in /proc/cpuinfo, and PyTorch running its AVX-512 kernels), else
    "fp32" (emulated bf16 would be slower)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    # The kernels PyTorch dispatches to must be AVX-512 ones too: with the CPU's bf16 units
    # present but ATEN_CPU_CAPABILITY=avx2/default, bf16 attention fails ("pack_vnni2 is only
    # supported when avx512 is supported").
    if not torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512"):
        return "fp32"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return "fp32"
    return "bf16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def autocast(device: torch.device, precision: str):
    """bf16 autocast for the batched interior passes (``precision="bf16"``), else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

