"""Shared test helpers: seeds, thread counts, and where the shared data lives."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from partgen.structures import SparseVoxels, cu_seqlens_from_lengths

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# The Triton kernel tests run where the kernels run: on CUDA, or under Triton's interpreter. CI has
# no GPU: tests/kernels/test_triton_interpreter.py runs that folder in a child pytest with
# TRITON_INTERPRET=1 (which must be set before triton decorates the kernels and must not leak into
# the other tests). By hand: TRITON_INTERPRET=1 .venv/bin/python -m pytest tests/kernels/triton_part_attention
if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    collect_ignore_glob = ["kernels/triton_part_attention/*"]


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def assert_python_defaults(pipeline, *functions) -> dict:
    """An app's `pipeline:` node (conf/<app>.yaml, composed) against the Python API it builds: every
    key's value is the default of that parameter in the first of `functions` that has it. Returns
    the resolved node (without _target_)."""
    import inspect

    from omegaconf import OmegaConf

    node = OmegaConf.to_container(pipeline, resolve=True)
    node.pop("_target_")
    params = [inspect.signature(fn).parameters for fn in functions]
    for key, value in node.items():
        param = next(p[key] for p in params if key in p)
        assert param.default == value, f"{key}: the Python default {param.default!r}, the config {value!r}"
    return node


def load_script(name: str):
    """scripts/<name>.py imported as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_shared(name: str) -> Path:
    """Path of a file in ../shared/data; skip locally when absent, fail on CI (it must be there)."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared data {path} is missing on CI")
        pytest.skip(f"shared data {path} not present")
    return path


def sphere_blocks(res: int, s: int, r: float = 0.3, centre=(0.0, 0.0, 0.0)):
    """The voxels a sphere's surface crosses at res and the exact signed distance on their sub-grids."""
    idx = np.stack(np.meshgrid(*(np.arange(res),) * 3, indexing="ij"), -1).reshape(-1, 3)
    lo, hi = idx / res - 0.5 - centre, (idx + 1) / res - 0.5 - centre
    nearest = np.linalg.norm(np.clip(0.0, lo, hi), axis=1)
    farthest = np.linalg.norm(np.maximum(np.abs(lo), np.abs(hi)), axis=1)
    coords = idx[(nearest < r) & (farthest > r)]
    offsets = np.stack(np.meshgrid(*(np.arange(s + 1),) * 3, indexing="ij"), -1)
    points = -0.5 + (coords[:, None, None, None] * s + offsets) / (res * s) - centre
    return coords, np.clip((np.linalg.norm(points, axis=-1) - r) * res, -2.0, 2.0)


def random_voxels(lengths, resolution=8, parts=3, channels=4, seed=0, dtype=torch.float32) -> SparseVoxels:
    """A batch of random sparse voxel sets (rows sorted by [b, x, y, z]) with random features and parts."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for n in lengths:
        keys = torch.randperm(resolution**3, generator=g)[:n].sort().values
        xyz = torch.stack([keys // resolution**2, keys // resolution % resolution, keys % resolution], 1)
        coords = torch.cat([torch.zeros(n, 1, dtype=torch.int64), xyz], 1).to(torch.int32)
        feats = torch.randn(n, channels, generator=g, dtype=dtype)
        part = torch.randint(0, parts, (n,), generator=g)
        items.append(SparseVoxels(feats, cu_seqlens_from_lengths([n]), coords, resolution, part))
    return SparseVoxels.collate(items).validate()


def write_sphere(out, key, radius, seed, volume=True, icon=False):
    """A fake annotated record of a sphere: samples.npz (sharp flags on the last 100), volume.npz with
    exact signed distances, meta.json, optionally an icon (a disc of the sphere's size); its manifest row."""
    rec = out / "records" / key
    rec.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(600, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    sharp = np.zeros(600, bool)
    sharp[500:] = True
    np.savez(rec / "samples.npz", points=(radius * normals).astype(np.float32), normals=normals.astype(np.float32),
             part=np.zeros(600, np.int16), sharp=sharp)  # fmt: skip
    if volume:
        uniform = rng.uniform(-0.55, 0.55, (400, 3))
        near = radius * normals[:400] + rng.normal(size=(400, 3)) * 0.02
        queries = np.concatenate([uniform, near])
        sdf = np.linalg.norm(queries, axis=1) - radius
        near_flag = np.r_[np.zeros(400, bool), np.ones(400, bool)]
        np.savez(rec / "volume.npz", points=queries.astype(np.float32), sdf=sdf.astype(np.float32), near=near_flag)
    if icon:
        from PIL import Image

        (rec / "icon").mkdir()
        yy, xx = np.mgrid[:32, :32]
        disc = (xx - 15.5) ** 2 + (yy - 15.5) ** 2 < (radius * 64) ** 2
        rgba = np.zeros((32, 32, 4), np.uint8)
        rgba[disc] = [200, 60, 60, 255]
        Image.fromarray(rgba).save(rec / "icon" / "icon.png")
    source = f"/cache/sweethome3d/libraries/default/models/{key}.obj"
    meta = {"key": key, "source": source, "library": "default", "parts": {"names": ["body"], "flags": []}}
    (rec / "meta.json").write_text(json.dumps(meta))
    return {"key": key, "source": source, "status": "ok", "reason": "", "record": f"records/{key}"}
