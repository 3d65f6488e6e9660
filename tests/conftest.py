"""Shared test helpers: seeds, thread counts, and where the shared data lives."""

import os
from pathlib import Path

import pytest
import torch

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
