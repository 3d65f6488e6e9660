"""The Hydra entry points: partgen-annotate, partgen-train, partgen-generate, partgen-segment.

Configs live in conf/ (packaged as partgen.conf): each app's file is the one source of its defaults,
and partgen-generate / partgen-segment build their pipeline from its `pipeline:` node
(run_generate, run_segment: the bodies of the apps, callable with a composed config). Bad input
or configuration: one line on stderr, exit status 1.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import hydra
from omegaconf import DictConfig

CONFIG_PATH = "pkg://partgen.conf"


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
        except ValueError as err:
            _fail("partgen-annotate", str(err))
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


def run_generate(cfg: DictConfig) -> int:
    """partgen-generate: cfg.image -> cfg.output (conf/generate.yaml, whose `pipeline:` node builds the
    PartGenerator); 0 on success, 1 on bad input.

    Errors print one line on stderr and leave nothing at cfg.output: everything is written into a
    temporary sibling folder that is renamed into place at the end.
    """
    import time
    from pathlib import Path

    from partgen.data_pipeline.mesh_io import MeshError
    from partgen.pipelines.generate import GenerationError, make_report, resolve_models, write_outputs
    from partgen.pipelines.outputs import InputError, build_pipeline, check_output, publish_outputs
    from partgen.pipelines.proportions import check_dimensions

    app = "partgen-generate"
    try:
        image, output, seed = Path(str(cfg.image)), Path(str(cfg.output)), int(cfg.seed)
        check_output(output, bool(cfg.overwrite))
        dims = None if cfg.dimensions is None else check_dimensions(cfg.dimensions).tolist()
        start = time.perf_counter()
        generator = build_pipeline(cfg.pipeline)
        load_s = time.perf_counter() - start
        gen = generator(image, seed=seed, progress=bool(cfg.progress), layout=cfg.layout, dimensions=dims)
        gen.times = {"load_models_s": load_s} | gen.times
        layout = str(cfg.layout) if cfg.layout else "stage 1"
        settings = {"seed": seed} | generator.settings() | {"layout": layout, "dimensions": dims}
        models = str(resolve_models(cfg.checkpoint))
        report = make_report(image, gen, settings, models, time.perf_counter() - start)
        publish_outputs(output, bool(cfg.overwrite), lambda folder: write_outputs(folder, image, gen, report))
    except (
        InputError,
        MeshError,
        GenerationError,
        FileNotFoundError,
        ValueError,
        OSError,
    ) as err:  # ImageError: a ValueError
        print(f"{app}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    names = ", ".join(f"{p.name} ({p.voxels} voxels)" for p in gen.parts)
    print(
        f"{app}: {image.name} -> {len(gen.parts)} parts: {names}; {gen.tokens['voxels']} voxel tokens; "
        f"{report['times_s']['total_s']:.1f} s; wrote parts.glb, mesh.obj, mesh.ply, preview.png and report.json to {output}"
    )
    return 0


def run_segment(cfg: DictConfig) -> int:
    """partgen-segment: segment cfg.input into cfg.output (conf/segment.yaml, whose `pipeline:` node
    builds the Segmenter); 0 on success, 1 on bad input.

    Errors print one line on stderr and leave nothing at cfg.output: everything is written into a
    temporary sibling folder that is renamed into place at the end.
    """
    from pathlib import Path

    from partgen.data_pipeline.mesh_io import MeshError
    from partgen.pipelines.outputs import InputError, build_pipeline, check_output, publish_outputs
    from partgen.pipelines.segment import read_shape, summarise, write_outputs

    try:
        path, output = Path(str(cfg.input)), Path(str(cfg.output))
        check_output(output, bool(cfg.overwrite))
        num_parts = cfg.num_parts
        if num_parts is not None and int(num_parts) < 1:
            raise InputError(f"num_parts must be positive or null, got {num_parts}")
        shape = read_shape(path, max_bytes=int(cfg.max_bytes))
        segmenter = build_pipeline(cfg.pipeline)
        n = None if num_parts is None else int(num_parts)
        if shape.faces is not None:
            seg = segmenter.label_mesh(shape.vertices, shape.faces, n)
        else:
            seg = segmenter.label_points(shape.vertices, shape.normals, n)
        summary = summarise(path, shape, seg, segmenter.source, output)
        publish_outputs(
            output,
            bool(cfg.overwrite),
            lambda folder: write_outputs(folder, path, shape, seg, segmenter.source, summary),
        )
    except (InputError, MeshError, FileNotFoundError, ValueError, OSError) as err:
        print(f"partgen-segment: {' '.join(str(err).split())}", file=sys.stderr)  # one line, whatever it held
        return 1
    print(summary)
    return 0


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="generate")
def _generate(cfg: DictConfig) -> None:
    code = run_generate(cfg)
    if code:
        sys.exit(code)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="segment")
def _segment(cfg: DictConfig) -> None:
    code = run_segment(cfg)
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
