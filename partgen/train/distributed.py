"""Process groups from torchrun's environment: one process per device, gloo on CPU, NCCL on CUDA.

Without WORLD_SIZE in the environment (a plain `partgen-train ...`) everything here is a no-op
and training runs in one process. torchrun sets WORLD_SIZE, RANK and LOCAL_RANK (and the
rendezvous variables init_process_group reads):

    # one machine, K processes (K GPUs; or K CPU processes with gloo)
    torchrun --standalone --nproc_per_node=K --no-python partgen-train experiment=NAME \\
        hydra.run.dir=runs/NAME

    # two machines with 8 GPUs each; run on both, node_rank 0 and 1, HOST = a reachable
    # address of one of them (the c10d rendezvous store), the same --rdzv_id on both
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 --rdzv_id=NAME --no-python partgen-train experiment=NAME \\
        trainer.run_dir=/shared/runs/NAME

What scales with the number of processes W:
  * the global batch: trainer.batch_size (per process) x trainer.grad_accum x W. The learning
    rate is not rescaled for you: set optim.lr for the global batch (linear or sqrt rule).
  * data: the DistributedSampler gives each rank 1/W of every epoch, so an epoch takes 1/W of
    the optimiser steps; trainer.max_steps counts optimiser steps, so the same max_steps sees
    W times the samples. trainer.num_workers is per process.
  * what does not scale: evaluation and checkpoint writing run on rank 0 while the others wait
    at a barrier.
Multi-node runs need trainer.run_dir on a filesystem every node sees: rank 0 writes the
checkpoints and every rank reads them back on resume. Each process runs Hydra; rank 0's run
directory is broadcast, so the others' (possibly differently time-stamped) Hydra folders hold
only their logs. resume=auto needs a fixed run directory (hydra.run.dir= or trainer.run_dir=).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist

# Imported before any process group exists, on purpose: its functions take `group=group.WORLD` as a
# default argument, bound when the module is first imported. DistributedDataParallel imports it
# (through torch._dynamo); imported after init_process_group, those defaults hold the default group
# for good, so destroy_process_group cannot free it and gloo's worker threads outlive it. One of
# them then releases the last collective's tensors while the interpreter shuts down, and the
# process aborts ("terminate called without an active exception"; a rank of a finished run failed
# with SIGABRT in about 1 of 8 runs on a loaded machine).
import torch.distributed.nn.functional  # noqa: F401
from torch import nn

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank among world_size, its device, whether it made the process group."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: Device = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Read torchrun's environment, pick this process's device and join the process group.

    device: auto = CUDA (device LOCAL_RANK) when available, else CPU. An existing process group
    (made by the caller) is reused and left to the caller to destroy. timeout_s bounds every
    collective, including the barrier the other ranks wait at while rank 0 evaluates.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device=cuda but torch sees no CUDA device")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    owns = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), device_id=dev if use_cuda else None)
        owns = True
    if dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, owns_group=owns)


def shutdown(info: DistInfo) -> None:
    """Destroy the process group if init_distributed made it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable Python objects; only between live processes, never from disk)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(info: DistInfo, obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
