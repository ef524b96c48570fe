"""Multi-process helpers: one process per device, started by `torchrun`.

`torchrun --nproc_per_node N -m sgone.cli train ...` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; `init_distributed` reads them. Backend: NCCL when the device is
CUDA, gloo otherwise (CPU). With WORLD_SIZE unset or 1 everything here is a no-op, so the
engine calls these helpers unconditionally.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank among world_size processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> cuda if available else cpu; otherwise the named device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Join the process group described by the environment (WORLD_SIZE > 1), else single process.

    On CUDA each process takes GPU LOCAL_RANK. Calling it again after the group exists
    returns the same description.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    base = resolve_device(device)
    if world <= 1:
        return DistInfo(device=base)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if base.type == "cuda":
        base = torch.device("cuda", local_rank)
        torch.cuda.set_device(base)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if base.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=base)


def cleanup() -> None:
    """Leave the process group (if any). On the normal path every rank first waits for the others:
    a rank that tears gloo down while another still talks to it can abort ("terminate called without
    an active exception"; seen once in 8-10 runs of the two-process test). While an exception is
    propagating (a `finally` after a failure) it leaves at once, so the other ranks fail fast
    instead of waiting at a barrier this rank's failure may never let them reach."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1 and sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def is_enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_enabled():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """Sum `tensor` over ranks (a copy; the input is untouched). NCCL needs it on the GPU."""
    if not is_enabled():
        return tensor.clone()
    out = tensor.detach().clone().to(device or tensor.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(tensor.device)


def all_gather_object(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] (just [obj] in one process)."""
    if not is_enabled():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s object on every rank."""
    if not is_enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BatchNorm running statistics) to every rank.

    DDP syncs buffers at the start of each forward, so after the last training step every rank
    holds its own statistics; validation and the final model must use one set: rank 0's, the
    one its checkpoint saves.
    """
    if not is_enabled():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=src)


def shard(n: int, rank: int, world_size: int) -> range:
    """Indices 0..n-1 that rank `rank` handles: every world_size-th one, starting at rank."""
    return range(rank, n, world_size)
