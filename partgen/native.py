"""Compile small framework-free C++ sources to shared libraries, once per machine, with a cache.

Used by the data pipeline's native paths (loaded with ctypes). Libraries are built with
-march=native, so the cache key holds the source, the flags and the CPU's feature flags; a
build writes to a temporary file and renames it, so parallel workers never see half a library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC")


def cache_root() -> Path:
    return Path(os.environ.get("PARTGEN_CACHE", Path.home() / ".cache" / "partgen"))


@functools.cache
def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return ""


def machine_key(*parts: str) -> str:
    """12 hex digits naming what a native build depends on: the parts given, the machine, the CPU."""
    raw = "|".join([*parts, platform.machine(), cpu_flags()])
    return hashlib.sha1(raw.encode()).hexdigest()[:12]


@functools.cache
def load_library(source: str) -> tuple[ctypes.CDLL | None, str]:
    """Build (if needed) and load a C++ source as a shared library: (library, "") or (None, why not)."""
    if os.environ.get("PARTGEN_NO_NATIVE"):
        return None, "PARTGEN_NO_NATIVE is set"
    src = Path(source)
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        return None, "no C++ compiler"
    key = machine_key(src.read_text(), " ".join(FLAGS))
    target = cache_root() / "native" / f"{src.stem}-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
        os.close(fd)
        res = subprocess.run([compiler, *FLAGS, str(src), "-o", tmp], capture_output=True, text=True)
        if res.returncode != 0:
            os.unlink(tmp)
            why = f"compiling {src.name} failed: {res.stderr.strip().splitlines()[-1:]}"
            log.debug("partgen.native: %s", why)
            return None, why
        os.replace(tmp, target)
    return ctypes.CDLL(str(target)), ""
