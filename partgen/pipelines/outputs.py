"""What the inference apps share around their outputs: bad-input errors, the output folder (checked
first, written atomically last), the part colours, and building a pipeline from its config node.

partgen-generate and partgen-segment both refuse a non-empty output unless overwrite (check_output,
before any work), write everything into a temporary sibling folder and rename it into place at the
end (publish_outputs), so an error at any point leaves nothing at output.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np


class InputError(ValueError):
    """An input an app cannot use (a file, an option, the output folder); the message names it and the reason."""


def palette(count: int) -> np.ndarray:
    """(count, 4) uint8 RGBA: well-separated hues (golden-angle steps), full alpha."""
    hue = (np.arange(count) * 0.618033988749895) % 1.0
    k = (np.array([5.0, 3.0, 1.0])[None, :] + hue[:, None] * 6.0) % 6.0
    rgb = 1.0 - 0.75 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)  # HSV with s = 0.75, v = 1
    return np.concatenate([(rgb * 255).round(), np.full((count, 1), 255.0)], 1).astype(np.uint8)


def _publish(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move the finished temp folder to output (replacing an empty one, or any with overwrite)."""
    if output.exists():
        if output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        elif overwrite:
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        else:
            raise InputError(f"output {output} exists and is not empty (choose another or pass overwrite=true)")
    os.replace(tmp, output)


def check_output(output: Path, overwrite: bool) -> None:
    """InputError when output exists and is not an empty folder, unless overwrite."""
    if output.exists() and not overwrite and (not output.is_dir() or any(output.iterdir())):
        raise InputError(f"output {output} exists and is not empty (choose another or pass overwrite=true)")


def publish_outputs(output: Path, overwrite: bool, write) -> None:
    """write(folder) into a temporary sibling of output, then rename it into place: a failure at any
    point leaves nothing at output (and removes the temporary folder)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()  # (not mkdtemp: the folder keeps the umask's permissions when it becomes output)
    try:
        write(tmp)
        _publish(tmp, output, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_pipeline(node):
    """Instantiate an app's `pipeline:` node (conf/generate.yaml, conf/segment.yaml: its _target_ a
    partgen from_folder / from_checkpoint), raising what the target raised (Hydra wraps it) so
    partgen-generate, partgen-segment and partgen-app can report it in one line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except InstantiationException as err:
        if isinstance(err.__cause__, Exception):
            raise err.__cause__ from None
        raise


__all__ = ["InputError", "build_pipeline", "check_output", "palette", "publish_outputs"]
