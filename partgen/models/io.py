"""Model weights on disk: model.safetensors + model.yaml (the resolved Hydra config of the model).

A checkpoint is data, not code: loading never unpickles (safetensors only) and instantiates
only classes inside partgen — a model.yaml whose `_target_` (at any depth) names anything else
is refused before anything is imported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"  # a training checkpoint's EMA weights, preferred when a folder has them
CONFIG = "model.yaml"
ALLOWED_PREFIX = "partgen."


def _targets(node) -> list[str]:
    """Every `_target_` in a config tree."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                found.append(str(value))
            else:
                found += _targets(value)
    elif isinstance(node, list):
        for value in node:
            found += _targets(value)
    return found


# Options of experiments that lost and left main (README, Training: one line each, pointing at the
# git history). A model.yaml that names one at the value that switched it off (what every config
# wrote while the option existed, the bundled model set's included) loads: the key is dropped. One
# that switched it on names weights this code cannot run, and is refused with the reason.
REMOVED_OPTIONS: dict[str, dict[str, object]] = {
    "partgen.models.layout_flow.LayoutFlow": {"moment_condition": False},
    "partgen.models.vecset_vae.VecSetVAE": {"query_mlp_ratio": 0.0, "output": "occupancy"},
}


# PointSegmenter's backbone was a string ("vector" | "serialized") with both backbones' keyword
# arguments beside it (the bundled segmenter's model.yaml): now it is a config of its own
# (conf/point_backbone), a factory of the input channels. The old form maps onto the new one.
SEGMENTER = "partgen.models.point_transformer.PointSegmenter"
LEGACY_BACKBONES = {
    "vector": (
        "partgen.models.point_transformer.PointTransformerSeg",
        ("widths", "encoder_blocks", "decoder_blocks", "neighbours", "share_planes", "norm", "fps_start"),
    ),
    "serialized": (
        "partgen.models.point_transformer.SerializedPointTransformer",
        ("width", "depth", "heads", "patch_size", "grid_size", "cpe_neighbours"),
    ),
}


def _legacy_backbone(config: dict, source: str) -> dict:
    """A PointSegmenter config with backbone: "vector" | "serialized" -> backbone as its own config."""
    if config.get("_target_") != SEGMENTER or not isinstance(config.get("backbone"), str):
        return config
    if config["backbone"] not in LEGACY_BACKBONES:
        raise ValueError(f"{source}: unknown PointSegmenter backbone {config['backbone']!r}")
    target, own = LEGACY_BACKBONES[config["backbone"]]
    every = {key for _, keys in LEGACY_BACKBONES.values() for key in keys}
    out = {key: value for key, value in config.items() if key not in every}
    out["backbone"] = {"_target_": target, "_partial_": True} | {k: config[k] for k in own if k in config}
    return out


def upgrade_config(config, source: str = "model config"):
    """The config as this code reads it, at any depth: the removed options (REMOVED_OPTIONS)
    dropped (ValueError naming one that is set to anything but its off value), and a PointSegmenter
    backbone of the old form given as its own config (LEGACY_BACKBONES)."""
    if isinstance(config, list):
        return [upgrade_config(value, source) for value in config]
    if not isinstance(config, dict):
        return config
    out = _legacy_backbone({key: upgrade_config(value, source) for key, value in config.items()}, source)
    for key, off in REMOVED_OPTIONS.get(str(out.get("_target_")), {}).items():
        if key in out:
            if out[key] != off:
                raise ValueError(
                    f"{source}: {out['_target_']} with {key}={out[key]!r} is an experiment that left main "
                    f"(README, Training: removed experiments; load it with the commit that trained it)"
                )
            del out[key]
    return out


def check_config(config: dict, source: str = "model config") -> None:
    """ValueError unless every `_target_` names something inside partgen (and there is one at the top)."""
    if not isinstance(config, dict) or "_target_" not in config:
        raise ValueError(f"{source}: no `_target_` at the top level")
    for target in _targets(config):
        if not target.startswith(ALLOWED_PREFIX):
            raise ValueError(f"{source}: refusing `_target_: {target}` (checkpoints may only build partgen classes)")


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(
    directory: str | Path,
    model: torch.nn.Module,
    config: dict | DictConfig,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write model.safetensors (state_dict, default the model's) and model.yaml (config) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config)
    check_config(cfg, str(directory / CONFIG))
    state = state_dict if state_dict is not None else model.state_dict()
    # safetensors wants contiguous tensors that share no memory
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    _atomic_write(directory / WEIGHTS, lambda tmp: save_file(tensors, tmp))
    _atomic_write(directory / CONFIG, lambda tmp: Path(tmp).write_text(OmegaConf.to_yaml(OmegaConf.create(cfg))))
    return directory


def load_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path}: no model config (a model folder holds {WEIGHTS} and {CONFIG})")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    check_config(cfg, str(path))
    return upgrade_config(cfg, str(path))


def find_model_folder(path: str | Path, hint: str = "") -> Path:
    """The model folder (model.yaml + model.safetensors) a checkpoint argument names.

    path: a model folder (a checkpoint step_XXXXXXX, a run's model/); a run folder (its model/,
    the weights partgen-train ships, else its newest checkpoints/step_*); a checkpoints/ folder
    (its newest step_*). FileNotFoundError says what is missing, then hint (how to make one).
    """
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    if (path / "model" / CONFIG).is_file():
        return path / "model"
    for folder in (path / "checkpoints", path):
        steps = sorted(p for p in folder.glob("step_*") if (p / CONFIG).is_file()) if folder.is_dir() else []
        if steps:
            return steps[-1]  # step_XXXXXXX: zero-padded, so the name order is the step order
    tail = f"; {hint}" if hint else ""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist{tail}")
    raise FileNotFoundError(
        f"checkpoint {path} holds no {CONFIG} + {WEIGHTS} (nor model/ or checkpoints/step_*/ with them){tail}"
    )


def load_model(
    directory: str | Path, map_location: str | torch.device = "cpu", weights: str = WEIGHTS
) -> torch.nn.Module:
    """Rebuild the model from model.yaml and load `weights` (e.g. ema.safetensors) from the folder."""
    from hydra.utils import instantiate

    directory = Path(directory)
    cfg = load_config(directory)
    path = directory / weights
    if not path.exists():
        raise FileNotFoundError(f"{path}: no weights")
    model = instantiate(cfg)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{directory / CONFIG}: `_target_` {cfg['_target_']} did not build a torch module")
    model.load_state_dict(load_file(str(path), device=str(map_location)))
    return model.to(map_location)


def trained_weights(folder: str | Path) -> str:
    """The weights file of a model folder inference uses: EMA_WEIGHTS when there, else WEIGHTS."""
    return EMA_WEIGHTS if (Path(folder) / EMA_WEIGHTS).is_file() else WEIGHTS


def choose_device(device: str | torch.device | None = None) -> torch.device:
    """device, or None: cuda when available, else cpu."""
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


def load_trained(path: str | Path, cls: type | None = None, hint: str = "") -> torch.nn.Module:
    """The model a checkpoint argument names (find_model_folder), EMA weights (trained_weights) when
    the folder has them, in eval mode without gradients; cls: the class it must be (ValueError if not)."""
    folder = find_model_folder(path, hint)
    model = load_model(folder, weights=trained_weights(folder))
    if cls is not None and not isinstance(model, cls):
        raise ValueError(f"{folder} holds a {type(model).__name__}, not a {cls.__name__}")
    return model.eval().requires_grad_(False)
