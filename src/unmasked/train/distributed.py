"""torchrun set-up: one process per device, DDP on the student, rank 0 writes files."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from unmasked.devices import resolve_device


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_processes() -> int:
    """How many processes torchrun launched (WORLD_SIZE; 1 without torchrun), known before the
    process group exists, so options can be checked per process before anything starts."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_arg: str) -> tuple[DistEnv, torch.device]:
    """Reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); picks the device."""
    world = launched_processes()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    # under torchrun a bare `cuda` means this process's GPU (LOCAL_RANK)
    device = resolve_device(device_arg, local_rank=local if world > 1 else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistEnv(rank, world, local), device


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def broadcast_flag(env: DistEnv, flag: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any rank (e.g. a stop request)."""
    if not env.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_mean(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (a copy; SUM then divide, since gloo has no AVG)."""
    if not env.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / env.world


def gather_objects(env: DistEnv, obj) -> list:
    """Every process's `obj`, in rank order (a collective: all ranks must call it)."""
    if not env.enabled:
        return [obj]
    out = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def cleanup(env: DistEnv, finished: bool = True) -> None:
    """Destroys the process group. After a clean finish every rank first waits for the others: a
    rank tearing gloo down while rank 0 still writes the export can abort at exit ("terminate called
    without an active exception"). After an error there is no barrier, since a peer may never come."""
    if env.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
