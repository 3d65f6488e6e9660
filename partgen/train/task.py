"""The Task protocol: what partgen-train needs from a training job besides the model and the optimiser.

A task owns the data and the objective; the trainer (partgen.train.trainer) owns everything else:
devices, DDP, sampling order, accumulation, precision, clipping, EMA, logging, checkpoints.
Tasks are built by Hydra from `cfg.task` (a `_target_` inside partgen) and need no base class:

    class MyTask:
        def train_dataset(self) -> Dataset: ...              # map-style; len() and [i]
        def collate(self, items: list) -> Any: ...             # list of dataset items -> one batch
        def training_step(self, model, batch) -> tuple[Tensor, dict[str, float]]: ...
        def evaluate(self, model) -> dict[str, float]: ...   # may return {}

Optional: `def prepare(self, model) -> None`, called once with the bare model on its device before
the optimiser, EMA and DDP are built (and before a resumed checkpoint is loaded over it): for state
the task measures on its data and the model keeps, such as the latent statistics of
partgen.train.tasks.layout. It must give every rank the same result.

What each method can count on:
  * train_dataset is called once per process; the trainer shards it with a DistributedSampler
    (every rank sees 1/world_size of each epoch, in an order fixed by (seed, epoch)). Items whose
    randomness is drawn from the global RNGs are reproducible with num_workers=0; with workers,
    seed per item (e.g. np.random.default_rng((seed, epoch, index))) to resume bit-exactly.
  * collate runs in the loader (a worker process when num_workers > 0); the batch reaches
    training_step as collate made it, on the CPU: training_step moves it to the model's device
    (`next(model.parameters()).device`).
  * training_step gets the model as the trainer wraps it: under DDP that is the
    DistributedDataParallel wrapper, so call it (`model(...)`) for the forward pass, which is what
    synchronises gradients; reach attributes through `partgen.train.distributed.unwrap(model)`.
    It returns the scalar loss of this micro-batch (the trainer divides by grad_accum and calls
    backward) and a few floats to log (averaged over micro-batches, ranks and the log window).
    Under trainer.precision=bf16 on CUDA it runs inside bf16 autocast.
  * evaluate runs on rank 0 only, under torch.no_grad(), with the EMA model when EMA is on (else
    the raw model, never the DDP wrapper), in eval mode; the global RNG states are restored
    afterwards, so evaluating never changes the training trajectory. The other ranks wait at a
    barrier, so keep it to minutes (NCCL's collective timeout).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Task(Protocol):
    def train_dataset(self) -> torch.utils.data.Dataset: ...

    def collate(self, items: list) -> Any: ...

    def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...
