"""Shared test helpers: seeds, thread counts, and where the shared data lives."""

import os
from pathlib import Path

import pytest
import torch

from partgen.structures import SparseVoxels, cu_seqlens_from_lengths

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def require_shared(name: str) -> Path:
    """Path of a file in ../shared/data; skip locally when absent, fail on CI (it must be there)."""
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared data {path} is missing on CI")
        pytest.skip(f"shared data {path} not present")
    return path


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
