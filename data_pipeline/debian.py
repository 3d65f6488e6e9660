"""Real data from Debian's archive: download packages with apt-get and unpack them into a cache.

Used by the dataset recipes (Sweet Home 3D furniture, assimp's test models). Downloads go
through the machine's apt sources; nothing is installed system-wide.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def download(packages: tuple[str, ...], dest: Path) -> list[Path]:
    """The .deb files of packages in dest, downloading the missing ones (apt-get download)."""
    dest.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not sorted(dest.glob(f"{p}_*.deb"))]
    if missing:
        cmd = ["apt-get", "download", *missing]
        if subprocess.run(cmd, cwd=dest, capture_output=True).returncode != 0 and os.geteuid() == 0:
            # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        if missing_again := [p for p in missing if not sorted(dest.glob(f"{p}_*.deb"))]:
            subprocess.run(["apt-get", "download", *missing_again], cwd=dest, check=True, capture_output=True)
    return [sorted(dest.glob(f"{p}_*.deb"))[-1] for p in packages]


def unpack(packages: tuple[str, ...], dest: Path) -> Path:
    """Download and extract packages into dest/root (once; a finished extraction is marked)."""
    root = dest / "root"
    if (dest / ".unpacked").exists():
        return root
    debs = download(packages, dest / "debs")
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=".unpack-"))
    try:
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
        (dest / ".unpacked").touch()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
