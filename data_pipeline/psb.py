"""Princeton Segmentation Benchmark (Chen et al. 2009): meshes, categories, human segmentations.

Reads the psb-dev layout (a tarball or an extracted folder):
    psb/index.csv               id,category
    psb/off/<id>.off            the mesh
    psb/seg/<id>/<id>_<k>.seg   one human segmentation: line i = segment id of face i
A tarball is extracted once into a cache folder (atomically) and read from there.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from partgen.data_pipeline.mesh_io import read_off
from partgen.native import cache_root

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_psb_path() -> Path:
    """$PARTGEN_PSB, else the shared psb-dev tarball beside the checkout."""
    env = os.environ.get("PARTGEN_PSB")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "psb-dev.tar.gz"


def read_seg(path: str | Path, num_faces: int) -> np.ndarray:
    """.seg file -> (F,) int64 segment id per face."""
    labels = np.loadtxt(path, dtype=np.int64, ndmin=1)
    if labels.shape != (num_faces,):
        raise ValueError(f"{path}: {labels.shape[0]} labels for a mesh with {num_faces} faces")
    return labels


@dataclasses.dataclass
class PSBMesh:
    """One benchmark mesh. vertices (V, 3) float64, faces (F, 3) int64, segmentations: (F,) int64 each."""

    id: str
    category: str
    vertices: np.ndarray
    faces: np.ndarray
    segmentations: list[np.ndarray]


def _extract_once(tarball: Path) -> Path:
    """Extract a psb tarball into the cache (keyed by name, size, mtime); return the psb/ folder."""
    st = tarball.stat()
    key = hashlib.sha1(f"{tarball.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    dest = cache_root() / f"psb-{key}"
    if not (dest / "psb" / "index.csv").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".psb-"))
        try:
            with tarfile.open(tarball) as tf:
                tf.extractall(tmp, filter="data")
            if not (tmp / "psb" / "index.csv").exists():
                raise ValueError(f"{tarball}: no psb/index.csv inside: not a psb-dev tarball")
            try:
                tmp.rename(dest)
            except OSError:  # another process finished first
                if not (dest / "psb" / "index.csv").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / "psb"


class PSBDataset(Sequence[PSBMesh]):
    """The benchmark as a sequence of PSBMesh, in index.csv order.

    path:       a psb-dev tarball, or a folder holding index.csv (or psb/index.csv); None: default_psb_path()
    categories: keep only these categories
    limit:      keep at most this many meshes per category
    """

    def __init__(
        self, path: str | Path | None = None, categories: Sequence[str] | None = None, limit: int | None = None
    ):
        path = Path(path) if path is not None else default_psb_path()
        if not path.exists():
            raise FileNotFoundError(f"{path}: PSB data not found (pass path= or set PARTGEN_PSB)")
        root = _extract_once(path) if path.is_file() else path
        if not (root / "index.csv").exists() and (root / "psb" / "index.csv").exists():
            root = root / "psb"
        if not (root / "index.csv").exists():
            raise ValueError(f"{path}: no index.csv: not a psb-dev folder")
        self.root = root
        with open(root / "index.csv", newline="") as f:
            rows = [(r["id"], r["category"]) for r in csv.DictReader(f)]
        if categories is not None:
            unknown = set(categories) - {c for _, c in rows}
            if unknown:
                raise ValueError(f"unknown PSB categories {sorted(unknown)}")
            rows = [r for r in rows if r[1] in set(categories)]
        if limit is not None:
            per_category: dict[str, list] = {}
            for r in rows:
                per_category.setdefault(r[1], []).append(r)
            rows = [r for group in per_category.values() for r in group[:limit]]
        self.index = rows

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(c for _, c in self.index))

    def __len__(self) -> int:
        return len(self.index)

    def folds(self, k: int) -> np.ndarray:
        """(len,) cross-validation fold of every mesh: its index within its category cut into k
        contiguous blocks (12 meshes, k=4: 0-2, 3-5, 6-8, 9-11), so every category is in every fold."""
        if k < 2:
            raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
        sizes = {c: sum(1 for _, cat in self.index if cat == c) for c in self.categories}
        if min(sizes.values()) < k:
            raise ValueError(f"{k} folds need at least {k} meshes per category; smallest has {min(sizes.values())}")
        seen: dict[str, int] = {}
        fold = np.empty(len(self.index), np.int64)
        for i, (_, cat) in enumerate(self.index):
            fold[i] = seen.get(cat, 0) * k // sizes[cat]
            seen[cat] = seen.get(cat, 0) + 1
        return fold

    def __getitem__(self, i: int) -> PSBMesh:
        mesh_id, category = self.index[i]
        vertices, faces = read_off(self.root / "off" / f"{mesh_id}.off")
        seg_dir = self.root / "seg" / mesh_id
        seg_files = sorted(seg_dir.glob(f"{mesh_id}_*.seg"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        if not seg_files:
            raise ValueError(f"{seg_dir}: no human segmentation for mesh {mesh_id}")
        segs = [read_seg(p, len(faces)) for p in seg_files]
        return PSBMesh(id=mesh_id, category=category, vertices=vertices, faces=faces, segmentations=segs)
