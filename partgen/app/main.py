"""partgen-app: the Hydra entry point (conf/app.yaml) that serves the web app.

    partgen-app [host=127.0.0.1] [port=7860] [checkpoint=MODEL_SET] [segmenter=...] [share=false]
                [generate.steps=12 generate.layout_steps=12 ...] [segment.num_samples=...]

conf/app.yaml holds partgen-generate's and partgen-segment's configs (conf/generate.yaml and
conf/segment.yaml) under `generate` and `segment`: the app has no generation defaults of its own.
It loads the models once and serves until stopped. Bad settings: one line on stderr, exit 1.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

APP = "partgen-app"


def compose(overrides=()) -> DictConfig:
    """conf/app.yaml with Hydra overrides, as partgen-app composes it (outside a running Hydra app)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="partgen.conf", version_base="1.3"):
        return hydra_compose(config_name="app", overrides=list(overrides))


def pipeline_configs(cfg: DictConfig) -> tuple[DictConfig, DictConfig]:
    """partgen-generate's and partgen-segment's configs as the app runs them (cfg.generate and
    cfg.segment: conf/generate.yaml and conf/segment.yaml with their overrides), with the app's
    checkpoint (the model set) and segmenter in their places when given."""
    # each its own root: their `pipeline:` nodes interpolate their own keys (${checkpoint}, ${parts.method})
    generate = OmegaConf.create(OmegaConf.to_container(cfg.generate, resolve=False))
    segment = OmegaConf.create(OmegaConf.to_container(cfg.segment, resolve=False))
    if cfg.get("checkpoint") is not None:
        generate.checkpoint = str(cfg.checkpoint)
    if cfg.get("segmenter") is not None:
        segment.checkpoint = str(cfg.segmenter)
        if generate.parts.get("method") == "learned":
            generate.parts.checkpoint = str(cfg.segmenter)
    return generate, segment


def serve(cfg: DictConfig) -> int:
    """Build the app from cfg and serve it (blocks until stopped); 1 on bad settings."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home
    try:
        import gradio  # noqa: F401
    except ImportError:
        print(f"{APP}: gradio is not installed: pip install -e '.[app]' (make app does)", file=sys.stderr)
        return 1
    from partgen.app.ui import AppSettings, launch

    try:
        settings = AppSettings.from_config(cfg)
        generate_cfg, segment_cfg = pipeline_configs(cfg)
    except (ValueError, TypeError, KeyError) as err:
        print(f"{APP}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    try:
        return launch(settings, generate_cfg, segment_cfg)
    except OSError as err:  # e.g. the port is taken
        print(f"{APP}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1


@hydra.main(version_base="1.3", config_path="pkg://partgen.conf", config_name="app")
def _main(cfg: DictConfig) -> None:
    code = serve(cfg)
    if code:
        sys.exit(code)


def main() -> None:
    _main()
