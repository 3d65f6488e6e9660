"""The generic training loop behind partgen-train: one Task, one model, one optimiser, any number of processes.

Per optimiser step (trainer.max_steps of them):
    grad_accum micro-batches: batch -> task.training_step(model, batch) -> (loss / grad_accum).backward()
        (under DDP the first grad_accum - 1 run inside model.no_sync(): gradients are all-reduced once)
    clip the global gradient norm to grad_clip (a non-finite norm skips the update, and says so in the log)
    optimizer.step(); LR schedule step (linear warm-up over warmup_steps, then cosine to 0 at max_steps,
    or constant); EMA update (rank 0)
    every log_every: one row in <run_dir>/metrics.jsonl (and TensorBoard when installed)
    every eval_every and at the end: task.evaluate(EMA or raw model) on rank 0
    every ckpt_every and at the end: an atomic checkpoint (partgen.train.checkpoint), rank 0
With trainer.max_minutes the run also ends (checkpoint, export) once that much wall-clock time has
passed since the trainer was built, and the cosine reaches 0 then if the steps have not ended it
first: a lent GPU machine's fixed minutes, whatever its speed. A resumed run's budget starts afresh.

Data order is a function of (seed, epoch) only: a DistributedSampler shards a permutation seeded by
seed + epoch, and the loader's worker seeds come from a generator seeded by (seed, rank, epoch), so
the global RNGs (what dropout and the task's noise draw from) are never touched by the loader. The
position in the epoch is counted in micro-batches and stored in every checkpoint; a resumed run skips
to it without loading the skipped items. Together with the restored RNG states (every rank's),
optimiser, scheduler and EMA, a resumed run continues bit-identically on CPU (on GPU as far as the
kernels are deterministic; trainer.deterministic=true asks torch for deterministic kernels), given
the same world size and batch size, and num_workers=0 or items that seed their randomness per index
(partgen.train.task). Resuming on another world size or batch size keeps the fraction of the epoch
already seen and reseeds the RNGs: it continues, not bit-identically. A fresh run (resume=null)
refuses a run_dir that already holds checkpoints rather than mixing with them.

metrics.jsonl rows (one JSON object per line, flushed as written):
    {"kind": "train", "step", "epoch", "loss", "lr", "grad_norm", "skipped", "time_s", <task logs>}
    {"kind": "eval", "step", <task metrics as "eval/NAME">}
"loss" and the task logs are means over the log window (the steps since the previous train row),
over micro-batches and over ranks; "lr" is the rate the step used. On resume the rows after the
checkpoint's step are dropped, so the file reads as one run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from partgen.models.io import save_model
from partgen.train import checkpoint as ckpt
from partgen.train.distributed import DistInfo, all_gather_object, barrier, broadcast_object
from partgen.train.ema import EMA
from partgen.train.task import Task

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
EXPORT = "model"  # <run_dir>/model: the weights to ship (EMA when on), readable by partgen.models.io.load_model


class ConfigError(ValueError):
    """A training configuration that cannot run; the message is one line for the user (the CLI exits 1)."""


@dataclass
class TrainerConfig:
    """conf/trainer/default.yaml, typed. Steps are optimiser steps; batch_size is per process."""

    max_steps: int = 100_000
    max_minutes: float | None = None  # wall-clock budget of this process; null or 0: none
    batch_size: int = 4
    grad_accum: int = 1
    grad_clip: float | None = 1.0  # null or 0: no clipping (the norm is still logged)
    ema_decay: float | None = 0.9999  # null or 0: no EMA
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast on CUDA; CPU runs fp32
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 1000
    log_every: int = 50
    eval_every: int | None = 2000  # null or 0: never evaluate
    ckpt_every: int | None = 2000  # null or 0: checkpoint only at the end
    keep_checkpoints: int | None = 3  # null or 0: keep all
    num_workers: int = 2
    drop_last: bool = True
    find_unused_parameters: bool = False  # DDP: set true when some parameters get no gradient in a step
    resume: str | None = None  # null: fresh; auto: latest checkpoint of run_dir; or a checkpoint/run path
    init_weights: str | None = None  # a trained model (folder or run) whose weights start a fresh run (fine-tuning)
    run_dir: str | None = None  # null: Hydra's run dir (the current dir outside Hydra)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = False
    progress: bool = True
    tensorboard: bool = True

    @classmethod
    def from_config(cls, node: DictConfig | dict) -> TrainerConfig:
        values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown trainer keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.max_steps < 0 or self.batch_size < 1 or self.grad_accum < 1 or self.log_every < 1:
            raise ConfigError("trainer: max_steps >= 0, batch_size >= 1, grad_accum >= 1 and log_every >= 1 please")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise ConfigError(f"trainer.max_minutes={self.max_minutes}: > 0, or null for no time budget")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"trainer.precision={self.precision}: fp32 or bf16")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"trainer.lr_schedule={self.lr_schedule}: cosine or constant")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"trainer.device={self.device}: auto, cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("trainer.device=cuda but torch sees no CUDA device")
        if self.ema_decay and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"trainer.ema_decay={self.ema_decay}: in (0, 1), or null for no EMA")


def lr_factor(
    schedule: str, warmup_steps: int, max_steps: int, elapsed: Callable[[], float] | None = None
) -> Callable[[int], float]:
    """Multiplier of the base LR for the update at optimiser step s (0-based): warm-up then cosine or
    flat. elapsed (a time budget): the share of it spent, 0-1; the cosine then follows whichever of
    steps and time runs out first, so it reaches 0 when the run ends either way."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (s - warmup_steps) / max(1, max_steps - warmup_steps))
        if elapsed is not None:
            progress = max(progress, min(1.0, elapsed()))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor  # a plain function: LambdaLR's state_dict stores no closure state, the config decides


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader_seed(seed: int, rank: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, np.uint64)[0] >> 1)


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (set_start), so a resume skips what was seen."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class MetricsLog:
    """metrics.jsonl (always) and TensorBoard scalars (when installed and enabled), written on rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.writer = None
        self.file = None
        if not enabled:
            return
        path = run_dir / METRICS
        if resume_step is not None and path.exists():
            _truncate_metrics(path, resume_step)
        elif resume_step is None and path.exists():
            path.unlink()  # a fresh run in a used folder starts a fresh log
        self.file = path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: metrics go to %s only", path)
            else:
                self.writer = SummaryWriter(str(run_dir / TENSORBOARD), purge_step=resume_step)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.writer is not None:
            prefix = "" if row["kind"] == "eval" else "train/"
            for key, value in row.items():
                if key not in ("kind", "step") and isinstance(value, int | float):
                    self.writer.add_scalar(prefix + key, value, row["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows up to `step` (and drop a line cut short by a kill), atomically."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("step", 0) <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without changing any global RNG state (python, numpy, torch, CUDA)."""
    state = ckpt.rng_state()
    try:
        yield
    finally:
        ckpt.set_rng_state(state)


class Trainer:
    """Train `model` on `task` with the optimiser `optimizer_factory(params)` as `config` says; fit() runs it.

    model: the raw module (moved to dist.device and wrapped in DDP here). model_config: its resolved
    Hydra config (written beside every checkpoint's weights). full_config: the whole run config
    (stored in trainer.json). run_dir: where checkpoints/, metrics.jsonl and model/ go; the same
    path on every rank.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        task: Task,
        optimizer_factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
        config: TrainerConfig,
        run_dir: str | Path,
        dist: DistInfo,
        seed: int,
        model_config: dict,
        full_config: dict,
    ) -> None:
        self.config = config
        self.task = task
        self.dist = dist
        self.seed = int(seed)
        self.run_dir = Path(run_dir)
        self.model_config = model_config
        self.full_config = full_config
        self.device = dist.device
        self.raw_model = model.to(self.device)
        if config.init_weights:  # before prepare: the task's statistics are then measured afresh
            self._init_weights(config.init_weights)
        prepare = getattr(task, "prepare", None)
        if prepare is not None:  # before the optimiser, EMA and DDP see the model (Task protocol)
            prepare(self.raw_model)
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self.optimizer = optimizer_factory(self.params)
        self.clock_start = time.monotonic()  # the time budget (max_minutes) counts from here
        self.budget_spent = 0.0  # its share spent, as rank 0 measured it after the last update (_sync_budget)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_factor(
                config.lr_schedule,
                config.warmup_steps,
                config.max_steps,
                (lambda: self.budget_spent) if config.max_minutes else None,
            ),
        )
        self.ema = EMA(self.raw_model, config.ema_decay) if config.ema_decay and dist.is_main else None
        self.autocast_bf16 = config.precision == "bf16" and self.device.type == "cuda"
        if config.precision == "bf16" and not self.autocast_bf16:
            log.warning("trainer.precision=bf16 needs CUDA; training in fp32 on %s", self.device)
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        self.dataset = task.train_dataset()
        self.sampler = ResumableDistributedSampler(self.dataset, dist.world_size, dist.rank, self.seed)
        self.loader_generator = torch.Generator()
        self.loader = DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=config.num_workers,
            collate_fn=task.collate,
            pin_memory=self.device.type == "cuda",
            drop_last=config.drop_last,
            generator=self.loader_generator,
        )
        per_epoch = self.sampler.num_samples // config.batch_size
        if not config.drop_last:
            per_epoch = math.ceil(self.sampler.num_samples / config.batch_size)
        if per_epoch == 0:
            raise ConfigError(
                f"{len(self.dataset)} items give no batch of {config.batch_size} per rank on {dist.world_size} "
                "rank(s): lower trainer.batch_size or set trainer.drop_last=false"
            )
        self.batches_per_epoch = per_epoch
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches of this epoch already consumed

        self.model: nn.Module = self.raw_model
        if dist.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.raw_model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )

    # ----------------------------------------------------------------------------- state

    def _restore(self, path: Path) -> None:
        """Load a checkpoint into the model, optimiser, scheduler, EMA, loader position and RNGs."""
        state = ckpt.load_checkpoint(
            path, model=self.raw_model, optimizer=self.optimizer, ema_model=self.ema.model if self.ema else None
        )
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.num_updates = int(state.get("ema_updates", 0))
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        old_world, old_batch = int(state["world_size"]), int(state["batch_size"])
        if (old_world, old_batch) != (self.dist.world_size, self.config.batch_size):
            # keep the fraction of the epoch already seen: the global position in the epoch's permutation
            seen = self.batch_in_epoch * old_batch * old_world
            self.batch_in_epoch = seen // (self.config.batch_size * self.dist.world_size)
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            ckpt.set_rng_state(rngs[self.dist.rank])
        else:  # another world size: exact continuation is impossible anyway; distinct streams per rank
            log.warning("checkpoint from %d rank(s), running on %d: RNGs reseeded", len(rngs), self.dist.world_size)
            seed_everything(self.seed + self.dist.rank + 1_000_003 * self.step)
        if self.dist.is_main:
            log.info("resumed from %s (step %d, epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)

    def _init_weights(self, path: str) -> None:
        """Load a trained model's weights (EMA when it has them; models.io) into the model, strictly:
        a fine-tuning run starts from them (a resumed run's checkpoint replaces them later)."""
        from safetensors.torch import load_file

        from partgen.models.io import find_model_folder, trained_weights

        folder = find_model_folder(path, "trainer.init_weights names a model folder or a run")
        state = load_file(str(folder / trained_weights(folder)), device=str(self.device))
        try:
            self.raw_model.load_state_dict(state)
        except RuntimeError as err:
            raise ConfigError(f"trainer.init_weights={path}: its weights do not fit this model ({err})") from None
        log.info("initialised the model from %s", folder)

    def _resume_path(self) -> Path | None:
        """Rank 0 decides where to start from (see checkpoint.resolve_resume) and tells the others."""
        found, error = None, None
        if self.dist.is_main:
            try:
                found = ckpt.resolve_resume(self.config.resume, self.run_dir)
                existing = ckpt.list_checkpoints(self.run_dir)
                if found is None and self.config.resume is None and existing:
                    raise ValueError(
                        f"{self.run_dir} already holds checkpoints: trainer.resume=auto continues them, "
                        "or pick another run directory"
                    )
                later = [p.name for p in existing if found is not None and ckpt.step_of(p) > ckpt.step_of(found)]
                if later and found.parent.resolve() == (self.run_dir / ckpt.CHECKPOINTS).resolve():
                    raise ValueError(
                        f"resuming from {found.name} in a run that went on to {later[-1]}: resume into "
                        "another trainer.run_dir (or remove the later checkpoints)"
                    )
            except ValueError as err:
                error = str(err)
        found, error = broadcast_object(self.dist, (None if found is None else str(found), error))
        if error is not None:
            raise ConfigError(error)
        return None if found is None else Path(found)

    def _save(self) -> Path | None:
        rngs = all_gather_object(self.dist, ckpt.rng_state())  # collective: every rank
        path = None
        if self.dist.is_main:
            path = ckpt.save_checkpoint(
                self.run_dir,
                self.step,
                model=self.raw_model,
                model_config=self.model_config,
                optimizer_state=self.optimizer.state_dict(),
                ema_state=self.ema.state_dict() if self.ema else None,
                trainer_state={
                    "epoch": self.epoch,
                    "batch_in_epoch": self.batch_in_epoch,
                    "scheduler": self.scheduler.state_dict(),
                    "ema_updates": self.ema.num_updates if self.ema else 0,
                    "world_size": self.dist.world_size,
                    "batch_size": self.config.batch_size,
                    "rng": rngs,
                    "config": self.full_config,
                },
                keep=self.config.keep_checkpoints,
            )
        barrier(self.dist)
        return path

    # ----------------------------------------------------------------------------- loop pieces

    def _batches(self) -> Iterator[Any]:
        """Micro-batches forever, epoch after epoch, starting at (epoch, batch_in_epoch)."""
        while True:
            self.sampler.set_epoch(self.epoch)
            self.sampler.set_start(self.batch_in_epoch * self.config.batch_size)
            self.loader_generator.manual_seed(_loader_seed(self.seed, self.dist.rank, self.epoch))
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def _evaluate(self) -> dict[str, float]:
        """task.evaluate on rank 0 (EMA model if any) without touching the training RNGs; the others wait."""
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            model = self.ema.model if self.ema is not None else self.raw_model
            was_training = model.training
            model.eval()
            try:
                with preserved_rng(), torch.no_grad():
                    metrics = {k: float(v) for k, v in (self.task.evaluate(model) or {}).items()}
            finally:
                model.train(was_training)
        barrier(self.dist)
        return metrics

    def _train_step(self, batches: Iterator[Any]) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """One optimiser step over grad_accum micro-batches: (mean loss, mean logs, gradient norm)."""
        accum = self.config.grad_accum
        loss_sum = torch.zeros((), device=self.device)
        logs: dict[str, float] = {}
        for micro in range(accum):
            batch = next(batches)
            last = micro == accum - 1
            sync = contextlib.nullcontext() if last or not self.dist.distributed else self.model.no_sync()
            with sync:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast_bf16):
                    loss, step_logs = self.task.training_step(self.model, batch)
                if loss.dim() != 0:
                    raise ValueError(f"training_step must return a scalar loss, got shape {tuple(loss.shape)}")
                (loss / accum).backward()
            loss_sum += loss.detach().float()
            for key, value in step_logs.items():
                logs[key] = logs.get(key, 0.0) + float(value) / accum
        max_norm = self.config.grad_clip if self.config.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        return loss_sum / accum, logs, grad_norm

    def _sync_budget(self) -> bool:
        """Update budget_spent, the share of trainer.max_minutes spent since the trainer was built, as
        rank 0 measures it (every rank then takes the same LR and stops at the same step); whether
        it is all spent. False without a budget."""
        if not self.config.max_minutes:
            return False
        spent = (time.monotonic() - self.clock_start) / (60.0 * self.config.max_minutes)
        if self.dist.world_size > 1:
            shared = torch.tensor([spent], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(shared, src=0)
            spent = float(shared.item())
        self.budget_spent = spent
        return spent >= 1.0

    # ----------------------------------------------------------------------------- fit

    def fit(self) -> dict[str, Any]:
        """Train to max_steps (resuming as config.resume says); return a summary of the run."""
        cfg = self.config
        resume_from = self._resume_path()
        if resume_from is not None:
            self._restore(resume_from)
        else:
            seed_everything(self.seed + self.dist.rank)
        start_step = self.step
        metrics_log = MetricsLog(
            self.run_dir, self.dist.is_main, cfg.tensorboard, self.step if resume_from is not None else None
        )
        bar = None
        if self.dist.is_main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="partgen-train", unit="step", dynamic_ncols=True)

        batches = self._batches()
        window_loss = torch.zeros((), device=self.device)
        window_logs: dict[str, float] = {}
        window_steps = 0
        skipped = 0
        last_loss: float | None = None
        last_eval: dict[str, float] = {}
        last_ckpt: Path | None = None
        t0 = time.monotonic()
        self.model.train()
        try:
            while self.step < cfg.max_steps:
                loss, logs, grad_norm = self._train_step(batches)
                lr = self.optimizer.param_groups[0]["lr"]
                if torch.isfinite(grad_norm):
                    self.optimizer.step()
                else:
                    skipped += 1
                    log.warning("step %d: non-finite gradient norm, update skipped", self.step + 1)
                self.optimizer.zero_grad(set_to_none=True)
                out_of_time = self._sync_budget()  # before the schedule reads it
                self.scheduler.step()
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.raw_model)
                window_loss += loss
                window_steps += 1
                for key, value in logs.items():
                    window_logs[key] = window_logs.get(key, 0.0) + value
                if bar is not None:
                    bar.update(1)

                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps or out_of_time:
                    mean_loss, mean_logs, skipped_all = self._reduce_window(
                        window_loss, window_logs, window_steps, skipped
                    )
                    last_loss = mean_loss
                    metrics_log.write(
                        {
                            "kind": "train",
                            "step": self.step,
                            "epoch": self.epoch,
                            "loss": mean_loss,
                            "lr": lr,
                            "grad_norm": float(grad_norm),
                            "skipped": skipped_all,
                            "time_s": round(time.monotonic() - t0, 3),
                            **mean_logs,
                        }
                    )
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean_loss:.4g}", lr=f"{lr:.3g}")
                    window_loss = torch.zeros((), device=self.device)
                    window_logs, window_steps, skipped = {}, 0, 0

                if out_of_time:
                    log.info("trainer.max_minutes=%s spent at step %d: ending the run", cfg.max_minutes, self.step)
                at_end = self.step == cfg.max_steps or out_of_time
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or at_end):
                    last_eval = self._evaluate()
                    if last_eval:
                        metrics_log.write(
                            {"kind": "eval", "step": self.step, **{f"eval/{k}": v for k, v in last_eval.items()}}
                        )
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or at_end:
                    last_ckpt = self._save()
                if out_of_time:
                    break

            model_dir = None
            if self.dist.is_main:
                if last_ckpt is None:
                    last_ckpt = ckpt.latest_checkpoint(self.run_dir)
                if self.step > start_step or not (self.run_dir / EXPORT).is_dir():
                    weights = self.ema.state_dict() if self.ema is not None else None
                    model_dir = save_model(self.run_dir / EXPORT, self.raw_model, self.model_config, state_dict=weights)
                else:
                    model_dir = self.run_dir / EXPORT
            barrier(self.dist)
        finally:
            if bar is not None:
                bar.close()
            metrics_log.close()
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loss": last_loss,
            "eval": last_eval,
            "run_dir": str(self.run_dir),
            "checkpoint": str(last_ckpt) if last_ckpt is not None else None,
            "model_dir": str(model_dir) if model_dir is not None else None,
            "resumed_from": str(resume_from) if resume_from is not None else None,
            "rank": self.dist.rank,
            "world_size": self.dist.world_size,
        }

    def _reduce_window(
        self, loss_sum: torch.Tensor, logs: dict[str, float], steps: int, skipped: int
    ) -> tuple[float, dict[str, float], int]:
        """Means over the log window and over ranks (a collective under DDP: every rank calls it)."""
        parts = all_gather_object(self.dist, (float(loss_sum), dict(logs), steps, skipped))
        total_steps = sum(p[2] for p in parts)
        mean_loss = sum(p[0] for p in parts) / total_steps
        keys = sorted({k for p in parts for k in p[1]})
        mean_logs = {k: sum(p[1].get(k, 0.0) for p in parts) / total_steps for k in keys}
        return mean_loss, mean_logs, parts[0][3]  # every rank skips the same steps (the norm is all-reduced)
