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


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="annotate")
def _annotate(cfg: DictConfig) -> None:
    _not_built("partgen-annotate", "the part annotation pipeline", "issue #4")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _train(cfg: DictConfig) -> None:
    _not_built("partgen-train", "the training loop", "issue #8")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="generate")
def _generate(cfg: DictConfig) -> None:
    _not_built("partgen-generate", "image -> mesh generation", "issues #6, #7, #8")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="segment")
def _segment(cfg: DictConfig) -> None:
    _not_built("partgen-segment", "the Point Transformer segmenter", "issue #5")


def annotate() -> None:
    _annotate()


def train() -> None:
    _train()


def generate() -> None:
    _generate()


def segment() -> None:
    _segment()
