"""partgen-train's job: a composed config -> processes, model, task, optimiser -> Trainer.fit().

    run(cfg) reads
        cfg.model    a `_target_` inside partgen (an nn.Module), built by Hydra
        cfg.task     a `_target_` inside partgen (partgen.train.task.Task), built by Hydra
        cfg.optim    a `_partial_: true` optimiser, called with the model's trainable parameters
        cfg.trainer  conf/trainer/default.yaml (partgen.train.trainer.TrainerConfig)
        cfg.seed     the one seed: weights (same on every rank), data order, per-rank RNG streams
    and returns the trainer's summary: step, epoch, loss (last logged), eval (last metrics, rank 0),
    run_dir, checkpoint (newest), model_dir (<run_dir>/model: EMA weights when EMA is on, readable
    by partgen.models.io.load_model), resumed_from, rank, world_size.

Bad configuration is a ConfigError (a ValueError) with a one-line reason, raised before any training
step on every rank; the CLI turns it into exit status 1. Anything else keeps its traceback.
Launch under torchrun for DDP; partgen.train.distributed documents single- and multi-node runs and
what scales with the number of processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from partgen.models.io import check_config
from partgen.train.distributed import broadcast_object, init_distributed, shutdown
from partgen.train.task import Task
from partgen.train.trainer import ConfigError, Trainer, TrainerConfig, seed_everything

__all__ = ["ConfigError", "default_run_dir", "run"]


def default_run_dir(run_dir: str | None) -> Path:
    """trainer.run_dir if set, else Hydra's output dir of this run, else the current directory."""
    if run_dir:
        return Path(run_dir).expanduser().resolve()
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():  # inside a Hydra app; compose() (tests, notebooks) sets none
        output_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)
        if output_dir:
            return Path(output_dir).resolve()
    return Path.cwd().resolve()


def _section(cfg: DictConfig, key: str, hint: str) -> dict[str, Any]:
    node = cfg.get(key)
    if node is None:
        raise ConfigError(f"no `{key}` in the config: {hint}")
    return OmegaConf.to_container(node, resolve=True)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train as cfg says (one process, or one of torchrun's); see the module docstring."""
    trainer_cfg = TrainerConfig.from_config(cfg.trainer)
    task_cfg = _section(cfg, "task", "pick an experiment (experiment=NAME) that names a task")
    model_cfg = _section(cfg, "model", "pick a model (model=NAME or an experiment)")
    try:
        check_config(model_cfg, "model config")
        check_config(task_cfg, "task config")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _section(cfg, "optim", "pick an optimiser (optim=NAME)")
    if trainer_cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts

    dist = init_distributed(trainer_cfg.device)
    try:
        # every rank writes into rank 0's directory (Hydra time-stamps each process's own)
        run_dir = Path(broadcast_object(dist, str(default_run_dir(trainer_cfg.run_dir)) if dist.is_main else None))
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        seed = int(cfg.get("seed", 0))
        seed_everything(seed)  # the same initial weights on every rank
        model = instantiate(cfg.model)
        task = instantiate(cfg.task)
        if not isinstance(task, Task):
            raise ConfigError(
                f"{task_cfg['_target_']} is not a Task: it needs train_dataset, collate, training_step and evaluate"
            )
        optimizer_factory = instantiate(cfg.optim)
        trainer = Trainer(
            model=model,
            task=task,
            optimizer_factory=optimizer_factory,
            config=trainer_cfg,
            run_dir=run_dir,
            dist=dist,
            seed=seed,
            model_config=model_cfg,
            full_config=OmegaConf.to_container(cfg, resolve=True),
        )
        return trainer.fit()
    finally:
        shutdown(dist)
