"""assimp's test models (Debian package assimp-testmodels): many formats, many deliberately odd
files, for loader robustness tests.

    python -m partgen.data_pipeline.assimp_models     # fetch into $PARTGEN_CACHE/assimp-testmodels
"""

from __future__ import annotations

import sys
from pathlib import Path

from partgen.data_pipeline.debian import unpack
from partgen.data_pipeline.mesh_io import FORMATS
from partgen.native import cache_root

PACKAGE = "assimp-testmodels"


def fetch(dest: Path | None = None) -> Path:
    """Download and unpack the package (once); returns its model folder."""
    root = Path(dest) if dest else cache_root() / PACKAGE
    return unpack((PACKAGE,), root) / "usr" / "share" / "assimp" / "models"


def mesh_files(folder: Path) -> list[Path]:
    """Every file with an extension partgen reads."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)


if __name__ == "__main__":
    files = mesh_files(fetch())
    print(f"{len(files)} files in partgen formats")
    sys.exit(0 if files else 1)
