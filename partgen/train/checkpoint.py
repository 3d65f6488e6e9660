"""Resumable training checkpoints: safetensors and JSON only, each written whole or not at all.

Layout of a run directory:

    <run_dir>/checkpoints/
        step_0000123/
            model.safetensors, model.yaml   raw weights + resolved model config (partgen.models.io)
            ema.safetensors                 EMA weights, same keys (only when EMA is on);
                                            load_model(folder, weights="ema.safetensors") reads them
            optimizer.safetensors           every tensor of the optimiser state, flattened
            optimizer.json                  the rest of the optimiser state (param groups, scalars)
            trainer.json                    step, epoch, batch index in the epoch, scheduler state,
                                            EMA update count, the RNG states of every rank, the
                                            resolved full config (written last)
        latest                              the name of the newest folder (text, one line)

Atomicity: a checkpoint is written into checkpoints/.tmp-step_XXXXXXX-PID/, its files fsynced,
then renamed to step_XXXXXXX (rename within one directory is atomic on POSIX); the `latest`
pointer is replaced atomically after the rename; only then are old folders pruned to the last
`keep`. A process killed at any point leaves either the new complete folder or none (plus a
.tmp- folder, removed by the next save). Resuming trusts the folders, each complete by
construction, and takes the highest step; `latest` can lag one save behind when the kill lands
between the rename and the pointer update, and is for people and other tools.

Nothing here unpickles: tensors go through safetensors, everything else through JSON. Torch's
CPU RNG state (a byte tensor) is stored as base64 text.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from partgen.models.io import CONFIG as MODEL_CONFIG
from partgen.models.io import EMA_WEIGHTS, save_model
from partgen.models.io import WEIGHTS as MODEL_WEIGHTS

CHECKPOINTS = "checkpoints"
LATEST = "latest"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
TRAINER_STATE = "trainer.json"
FORMAT = 1
REQUIRED = (MODEL_WEIGHTS, MODEL_CONFIG, OPTIMIZER_TENSORS, OPTIMIZER_META, TRAINER_STATE)
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


def step_name(step: int) -> str:
    return f"{_PREFIX}{step:07d}"


def step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith(_PREFIX):
        return None
    try:
        return int(name[len(_PREFIX) :])
    except ValueError:
        return None


# --------------------------------------------------------------------------- optimizer state


def _encode(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able twin of obj: tensors moved into `tensors` under dotted keys, tuples and int keys tagged."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _encode(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}}
        return {
            "__items__": [
                [_encode(k, f"{prefix}.key{i}", tensors), _encode(v, f"{prefix}.{k}", tensors)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} without pickle")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"].items()}
        if "__items__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        raise ValueError(f"unknown tag in stored state: {sorted(obj)}")
    return obj


def flatten_state(state: dict) -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors for safetensors, JSON-able rest) of a nested state dict such as Optimizer.state_dict()."""
    tensors: dict[str, torch.Tensor] = {}
    meta = _encode(state, "state", tensors)
    return tensors, meta


def unflatten_state(tensors: dict[str, torch.Tensor], meta: Any) -> dict:
    """Inverse of flatten_state."""
    return _decode(meta, tensors)


# --------------------------------------------------------------------------- RNG states


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _from_b64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def rng_state() -> dict:
    """This process's RNG states as JSON: python random, numpy's global RNG, torch CPU, every CUDA device."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_from_b64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [_from_b64(s) for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# --------------------------------------------------------------------------- folders


def _fsync_tree(path: Path) -> None:
    """Flush every file of a folder and the folder itself to disk (survives power loss, not only kills)."""
    for child in path.iterdir():
        if child.is_file():
            fd = os.open(child, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, allow_nan=True))


def read_trainer_state(path: str | Path) -> dict:
    return json.loads((Path(path) / TRAINER_STATE).read_text())


def is_complete(path: str | Path) -> bool:
    """True when `path` is a checkpoint folder with every file its trainer.json promises."""
    path = Path(path)
    if not all((path / name).is_file() for name in REQUIRED):
        return False
    try:
        state = read_trainer_state(path)
    except (OSError, ValueError):
        return False
    return not state.get("ema") or (path / EMA_WEIGHTS).is_file()


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if p.is_dir() and (step := step_of(p)) is not None]
    return [p for _, p in sorted(found) if is_complete(p)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in run_dir, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """Which checkpoint to start from: None (fresh), "auto" (latest of run_dir, if any) or a path.

    A path may name a checkpoint folder or a run directory (its latest checkpoint is taken);
    a path that holds neither is a ValueError.
    """
    if resume is None or str(resume).lower() in ("", "null", "none"):
        return None
    if str(resume) == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume).expanduser()
    if is_complete(path):
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise ValueError(f"trainer.resume={resume}: neither a complete checkpoint folder nor a run with one")
    return found


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    model_config: dict | DictConfig,
    optimizer_state: dict,
    trainer_state: dict,
    ema_state: dict[str, torch.Tensor] | None = None,
    keep: int | None = 3,
) -> Path:
    """Write checkpoints/step_XXXXXXX atomically, point `latest` at it, prune to the last `keep`.

    model is the raw module (not a DDP wrapper). trainer_state is any JSON-able dict; "format",
    "step" and "ema" are added. keep: None or 0 keeps every checkpoint. Call on one rank only.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = step_name(step)
    for stale in root.glob(f"{_TMP_PREFIX}*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    tmp.mkdir()
    try:
        save_model(tmp, model, model_config)
        if ema_state is not None:
            save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in ema_state.items()}, tmp / EMA_WEIGHTS)
        tensors, meta = flatten_state(optimizer_state)
        save_file(tensors, tmp / OPTIMIZER_TENSORS)
        _write_json(tmp / OPTIMIZER_META, meta)
        _write_json(
            tmp / TRAINER_STATE, {"format": FORMAT, "step": step, "ema": ema_state is not None, **trainer_state}
        )
        _fsync_tree(tmp)
        final = root / name
        if final.exists():  # the same step written again (a resumed run re-saving): swap it out
            old = root / f"{_TMP_PREFIX}old-{name}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    pointer = root / f"{_TMP_PREFIX}{LATEST}-{os.getpid()}"
    pointer.write_text(name + "\n")
    os.replace(pointer, root / LATEST)
    if keep:
        for old in list_checkpoints(run_dir)[:-keep]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema_model: torch.nn.Module | None = None,
) -> dict:
    """Load weights (and optimiser state, EMA weights when given) into existing objects; return trainer.json.

    model and ema_model must be built from the same config (strict key match); tensors are loaded
    onto the device their module already sits on.
    """
    path = Path(path)
    if not is_complete(path):
        raise ValueError(f"{path}: not a complete checkpoint (needs {', '.join(REQUIRED)})")
    state = read_trainer_state(path)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')}, this code reads {FORMAT}")
    model.load_state_dict(_load_weights(path / MODEL_WEIGHTS, model))
    if ema_model is not None:
        source = path / EMA_WEIGHTS if state.get("ema") else path / MODEL_WEIGHTS
        ema_model.load_state_dict(_load_weights(source, ema_model))
    if optimizer is not None:
        meta = json.loads((path / OPTIMIZER_META).read_text())
        optimizer.load_state_dict(unflatten_state(load_file(str(path / OPTIMIZER_TENSORS)), meta))
    return state


def _load_weights(file: Path, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    device = next(iter(module.state_dict().values()), torch.empty(0)).device
    return load_file(str(file), device=str(device))
