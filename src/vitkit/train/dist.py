"""torch.distributed set-up from the environment ``torchrun`` provides (nothing home-made)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str = "auto", device: torch.device | None = None) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the env)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistInfo()
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "auto":
        backend = "nccl" if (device is not None and device.type == "cuda") else "gloo"
    kwargs = {}
    if backend == "nccl" and device is not None:
        kwargs["device_id"] = device
    dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, True)


def _local_gpu(name: str) -> torch.device:
    """This process's GPU: LOCAL_RANK's, refusing more processes per node than GPUs (NCCL would
    fail later with 'Duplicate GPU detected')."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    n = torch.cuda.device_count()
    if per_node > n:
        raise UserError(f"device={name!r}: {per_node} processes on this node but {n} GPU(s); start one process "
                         f"per GPU (torchrun --nproc_per_node={n}) or train on the CPU with device=cpu")
    return torch.device("cuda", local)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return _local_gpu(name) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={name!r} but CUDA is not available; use device=cpu")
        if dev.index is None:
            dev = _local_gpu(name)
    return dev


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, *, fsdp: bool) -> nn.Module:
    """The parallel wrapper: FSDP2 ``fully_shard`` per block and on the whole (in place), DDP, or the bare module."""
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (info.world_size,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    return model
