"""Devices and the process group: ``resolve_device`` and, under torchrun (``RANK`` set),
``setup_distributed`` (joins the group: ``nccl`` on CUDA, ``gloo`` on CPU; ``DistInfo`` says
which rank this process is). The collectives of a step stay in ``trainer.Trainer``.
Imports torch and ``errors``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import SMUInputError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SMUInputError("device", f"{name} requested but CUDA is not available")
    return dev


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when torchrun's ``RANK`` is set; otherwise one plain process."""
    import torch.distributed as dist

    if "RANK" not in os.environ:
        return DistInfo(), resolve_device(device_name)
    rank = int(os.environ["RANK"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_cuda = torch.cuda.is_available() if device_name == "auto" else torch.device(device_name).type == "cuda"
    if use_cuda:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        created = True
    return DistInfo(rank=rank, local_rank=local, world_size=world, initialized_here=created), device
