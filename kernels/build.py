"""Build and load the compiled part-attention ops, once per machine, with a cache.

    python -m partgen.kernels            # build now (make's install step runs this)

The CPU op compiles on first use (or here) with torch.utils.cpp_extension into
$PARTGEN_CACHE/kernels (default ~/.cache/partgen/kernels), keyed by torch version and CPU
flags (it is built with -march=native). The CUDA op builds only where a CUDA torch and nvcc are
present. Set PARTGEN_NO_NATIVE=1 to never build or load them. Failures are logged at debug
level, and partgen.nn.attention picks another backend (sdpa_loop, the reference) with the reason.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

from partgen import native

log = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"


def _cache_root() -> Path:
    return native.cache_root() / "kernels"


def _machine_key() -> str:
    return native.machine_key(torch.__version__, str(sys.version_info[:2]))


def _build(name: str, sources: list[Path], **kwargs) -> None:
    from torch.utils.cpp_extension import load

    build_dir = _cache_root() / f"{name}-{_machine_key()}"
    build_dir.mkdir(parents=True, exist_ok=True)
    load(
        name=name,
        sources=[str(s) for s in sources],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
        **kwargs,
    )


@functools.cache
def load_cpu_op() -> tuple[bool, str]:
    """Build (if needed) and load the CPU op. Returns (loaded, reason when not)."""
    if os.environ.get("PARTGEN_NO_NATIVE"):
        return False, "PARTGEN_NO_NATIVE is set"
    missing = [tool for tool in ("c++", "ninja") if shutil.which(tool) is None and not _ninja_module(tool)]
    if missing:
        reason = f"no {' and '.join(missing)} to build the CPU op"
        log.debug("partgen.kernels: %s; the attention dispatcher will pick another backend", reason)
        return False, reason
    try:
        _build(
            "partgen_part_attention_cpu",
            [CSRC / "part_attention_cpu.cpp"],
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"],
            extra_ldflags=["-fopenmp"],
        )
    except Exception as err:  # a broken toolchain must not break partgen: fall back, say why
        reason = f"building the CPU op failed: {type(err).__name__}: {str(err).strip().splitlines()[-1:]}"
        log.debug("partgen.kernels: %s; the attention dispatcher will pick another backend", reason)
        return False, reason
    return True, ""


def _ninja_module(tool: str) -> bool:
    """pip's ninja package puts the binary beside the interpreter, which may not be on PATH."""
    if tool != "ninja":
        return False
    candidate = Path(sys.executable).parent / "ninja"
    if candidate.exists():
        os.environ["PATH"] = f"{candidate.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return True
    return False


@functools.cache
def load_cuda_op() -> tuple[bool, str]:
    """Build (if needed) and load the CUDA op. Returns (loaded, reason when not)."""
    if os.environ.get("PARTGEN_NO_NATIVE"):
        return False, "PARTGEN_NO_NATIVE is set"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    if torch.version.cuda is None:
        return False, "this torch has no CUDA"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None or not (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        return False, "no nvcc (set CUDA_HOME)"
    try:
        _build(
            "partgen_part_attention_cuda",
            [CSRC / "part_attention_cuda.cu", CSRC / "part_attention_cuda_binding.cpp"],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "--use_fast_math", "-std=c++17"],
        )
    except Exception as err:
        reason = f"building the CUDA op failed: {type(err).__name__}: {str(err).strip().splitlines()[-1:]}"
        log.debug("partgen.kernels: %s; the whole error:\n%s", reason, err)  # nvcc's messages, for gpu_check
        return False, reason
    return True, ""


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from partgen.kernels import ops  # noqa: F401  (defines the op schemas first)

    ok, reason = load_cpu_op()
    print(f"partgen CPU part-attention op: {'ready' if ok else 'not built: ' + reason}")
    if torch.cuda.is_available():
        ok_cuda, reason_cuda = load_cuda_op()
        print(f"partgen CUDA part-attention op: {'ready' if ok_cuda else 'not built: ' + reason_cuda}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
