"""Process layout of a run: the only module that touches ``torch.distributed``.

A run is one process, or several started by ``torchrun --nproc_per_node=N -m augment ...`` or
``accelerate launch -m augment ...``; both set ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``. Every rank
executes the same job on the same ``output.dir``; ranks exchange nothing but barriers: sampling work
is split into disjoint batches written to per-batch shard files, which rank 0 merges by index.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init() -> ProcessInfo:
    """Read the launcher's environment and join the process group when there are several ranks.

    Uses NCCL when every rank has a GPU, gloo otherwise (CPU runs and tests).
    """
    info = ProcessInfo(
        rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=_env_int("LOCAL_RANK", 0),
    )
    if info.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.device)
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
        log.info("rank %d of %d joined the %s process group", info.rank, info.world_size, backend)
    return info


def barrier() -> None:
    """Wait for every rank (a no-op in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
