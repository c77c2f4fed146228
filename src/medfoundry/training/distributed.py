"""torch.distributed set-up for ``torchrun``: one process per device, gloo on CPU, nccl on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: global rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    launched: bool = False  # started by torchrun (a process group even with one process)

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True in a process group: more than one process, or one process started by ``torchrun``."""
        return self.world_size > 1 or self.launched


def init_distributed(device: str | None = None, backend: str | None = None) -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); a single process without those variables runs alone.

    ``device``: 'cpu', 'cuda' or None (cuda when available). The backend defaults to nccl on cuda, else gloo.
    Under ``torchrun`` (``TORCHELASTIC_RUN_ID`` set) the group is joined even with one process, so that
    ``torchrun --nproc_per_node 1`` on one GPU runs the NCCL and DistributedDataParallel code paths.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(want, local) if want.startswith("cuda") and ":" not in want else torch.device(want)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    launched = "TORCHELASTIC_RUN_ID" in os.environ
    if (world > 1 or launched) and not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if dev.type == "cuda" else "gloo"))
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev, launched=launched)


def barrier(env: DistEnv) -> None:
    """Wait for every process (no-op when alone)."""
    if env.distributed and dist.is_initialized():
        dist.barrier()


def all_mean(value: float, env: DistEnv) -> float:
    """Mean of a float over all processes."""
    if not (env.distributed and dist.is_initialized()):
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return float(t.item()) / env.world_size


def cleanup(env: DistEnv) -> None:
    """Leave the process group."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()
