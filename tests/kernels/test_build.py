"""Building and loading the compiled ops: required wherever a compiler is, switchable off, cached per machine."""

import os
import shutil
import subprocess
import sys

import pytest

from partgen.kernels import build, native_available


@pytest.mark.skipif(bool(os.environ.get("PARTGEN_NO_NATIVE")), reason="PARTGEN_NO_NATIVE is set: no build asked")
@pytest.mark.skipif(shutil.which("c++") is None, reason="no c++ compiler: the reference serves")
def test_cpu_op_builds_where_a_compiler_is_present():
    loaded, why_not = native_available("cpu")
    assert loaded, why_not  # a compiler is here (and ninja comes with partgen): a failed build is a bug


def test_no_native_switch_uses_the_dispatcher_fallback():
    code = (
        "import torch\n"
        "from partgen.kernels import native_available\n"
        "from partgen.nn.attention import AttentionInputs, select_backend\n"
        "from partgen.structures import part_groups\n"
        "print(native_available('cpu'))\n"
        "q = torch.randn(10, 2, 8); g = part_groups(torch.zeros(10, dtype=torch.long), torch.arange(10) % 2)\n"
        "print(select_backend(AttentionInputs(q, q, q, g, g, 0.3)).name)\n"
    )
    env = dict(os.environ, PARTGEN_NO_NATIVE="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["(False, 'PARTGEN_NO_NATIVE is set')", "sdpa_loop"]


def test_cache_is_keyed_by_torch_and_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PARTGEN_CACHE", str(tmp_path))
    assert build._cache_root() == tmp_path / "kernels"
    key = build._machine_key()
    assert len(key) == 12 and key == build._machine_key()
