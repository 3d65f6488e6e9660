"""CI's run of the Triton part-attention kernels: tests/kernels/triton_part_attention/ under Triton's interpreter.

TRITON_INTERPRET=1 has to be in the environment before triton decorates the kernels, and must not
leak into the rest of the suite, so that folder runs in a child pytest that has it from the start.
Under the interpreter the kernels' own source runs on CPU tensors (about half a minute on 2 cores).
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


def test_triton_kernels_pass_under_the_interpreter():
    if importlib.util.find_spec("triton") is None:
        if os.environ.get("CI"):
            pytest.fail("triton is missing on CI (the test extra in pyproject.toml pins it)")
        pytest.skip("triton not installed")
    cmd = [sys.executable, "-m", "pytest", "tests/kernels/triton_part_attention", "-q", "-p", "no:cacheprovider"]
    res = subprocess.run(
        cmd, cwd=REPO_ROOT, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=900
    )
    report = res.stdout[-8000:] + res.stderr[-2000:]
    assert res.returncode == 0, report
    summary = res.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "deselected" not in summary, report
