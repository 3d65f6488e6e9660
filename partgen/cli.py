"""The Hydra entry points: partgen-annotate, partgen-train, partgen-generate, partgen-segment.

Configs live in conf/ (packaged as partgen.conf). An app whose job is not built yet says so in
one line on stderr and exits with status 2; it never pretends to have worked.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import hydra
from omegaconf import DictConfig

CONFIG_PATH = "pkg://partgen.conf"
NOT_BUILT_EXIT = 2


def _not_built(app: str, what: str, issue: str) -> NoReturn:
    print(f"{app}: {what} is not built yet ({issue}); nothing was done", file=sys.stderr)
    sys.exit(NOT_BUILT_EXIT)


def _fail(app: str, message: str) -> NoReturn:
    print(f"{app}: {message}", file=sys.stderr)
    sys.exit(1)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="annotate")
def _annotate(cfg: DictConfig) -> None:
    from partgen.data_pipeline.annotate import AnnotateConfig, list_assets, run

    if cfg.parts.method == "learned":
        from partgen.data_pipeline.parts import learned_segmenter

        try:  # fail once here rather than once per asset
            learned_segmenter(str(cfg.parts.segmenter))
        except NotImplementedError as err:
            _not_built("partgen-annotate", "parts.method=learned", str(err))
    try:
        assets = list_assets(str(cfg.input))
    except (FileNotFoundError, OSError, ValueError) as err:
        _fail("partgen-annotate", str(err))
    acfg = AnnotateConfig(
        resolution=int(cfg.resolution),
        num_samples=int(cfg.num_samples),
        num_sharp_samples=int(cfg.num_sharp_samples),
        num_volume_samples=int(cfg.num_volume_samples),
        block_subdiv=int(cfg.block_subdiv),
        block_band=int(cfg.get("block_band", 0)),
        num_views=int(cfg.num_views),
        view_size=int(cfg.view_size),
        icon_camera=str(cfg.icon_camera),
        parts_method=str(cfg.parts.method),
        num_parts=cfg.parts.get("num_parts"),
        learned=(
            {"checkpoint": cfg.parts.checkpoint, "segmenter": str(cfg.parts.segmenter)}
            if cfg.parts.method == "learned"
            else {}
        ),
        max_parts=int(cfg.parts.max_parts),
        min_fraction=float(cfg.parts.min_fraction),
        filter_flags=tuple(cfg.parts.filter),
        max_bytes=int(cfg.max_bytes),
        seed=int(cfg.seed),
    )
    counts = run(
        assets,
        cfg.output,
        acfg,
        shard=int(cfg.shard),
        num_shards=int(cfg.num_shards),
        workers=int(cfg.workers),
        retry_failed=bool(cfg.retry_failed),
        progress=bool(cfg.progress),
    )
    print(
        f"partgen-annotate: {counts['ok']} ok, {counts['filtered']} filtered, {counts['failed']} failed, "
        f"{counts['skipped_done']} already in the manifest; records in {cfg.output}/records"
    )


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _train(cfg: DictConfig) -> None:
    from partgen.train.run import ConfigError, run

    try:
        summary = run(cfg)
    except ConfigError as err:
        _fail("partgen-train", str(err))
    if summary["rank"] == 0:
        evals = ", ".join(f"{k} {v:.4g}" for k, v in summary["eval"].items()) or "no evaluation"
        print(
            f"partgen-train: {summary['step']} steps (last loss {summary['loss']}); {evals}; "
            f"checkpoints in {summary['run_dir']}/checkpoints, weights in {summary['model_dir']}"
        )


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="generate")
def _generate(cfg: DictConfig) -> None:
    from partgen.pipelines.generate import main

    code = main(cfg)
    if code:
        sys.exit(code)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="segment")
def _segment(cfg: DictConfig) -> None:
    from partgen.pipelines.segment import main

    code = main(cfg)
    if code:
        sys.exit(code)


def annotate() -> None:
    _annotate()


def train() -> None:
    _train()


def generate() -> None:
    _generate()


def segment() -> None:
    _segment()
