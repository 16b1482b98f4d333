"""Data-parallel training on PyTorch's own runtime: torchrun sets the environment, we read it.

NCCL on CUDA, gloo on CPU; one device per local rank. Rank 0 alone prints, saves and writes the
run directory; every rank takes part in one small all-reduce per optimizer step that carries the
control flags (stop, pause, save), so a signal or a request reaching any rank stops them all at the
same step and nobody waits forever in a collective.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1  # processes on this machine: what --nproc asked for

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The process's place in a torchrun job (a single process outside one)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", "0")), size=size,
                 local_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(size))))


def init(world: World, device: torch.device) -> None:
    if world.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def max_flags(values: list[int], device: torch.device) -> list[int]:
    """Element-wise max of small integer flags over all ranks (one collective)."""
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_values(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def torchrun_argv(nproc: int, args: list[str]) -> list[str]:
    """torchrun (`--standalone --nproc_per_node N -m minimind <args>`) through launcher.py, which ends a
    failed job with one line and the failing process's exit code."""
    return [sys.executable, "-m", "minimind.engine.launcher", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "minimind", *args]
