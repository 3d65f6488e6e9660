"""Exact surface voxelisation: every voxel a triangle touches (triangle-box overlap), with parts.

Legend: F faces, V vertices, M candidate (triangle, voxel) pairs, N voxels, R resolution.

Vertices live in the normalised cube [-0.5, 0.5]^3; voxel (i, j, k) at resolution R is the cube
[i, i+1] x [j, j+1] x [k, k+1] in grid units g = (p + 0.5) * R. A triangle marks every voxel whose
closed cube it overlaps (separating-axis test of Akenine-Moeller: 3 box axes, the triangle's
normal, 9 edge-axis cross products), clamped to the grid: a face lying exactly on a grid plane
marks the voxels on both sides, and the set is the same however the triangle is subdivided.
The voxel of any surface point under DESIGN.md's floor((p + 0.5) * R) convention is always in it.

Memory follows the surface, not R^3. The native path (csrc/voxelize.cpp, C++ with OpenMP) walks
a large triangle column by column along its dominant normal axis; the numpy twin splits
triangles longer than a few voxels at their edge midpoints and tests bounded chunks.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from partgen.native import load_library

log = logging.getLogger(__name__)

SPLIT_EXTENT = 4.0  # split triangles whose bounding box spans more voxels than this on some axis
CHUNK = 1 << 21  # candidate pairs tested at once


@dataclasses.dataclass
class VoxelSet:
    """coords (N, 3) int32 voxel indices (sorted by x, y, z); part (N,) int64 or None."""

    coords: np.ndarray
    resolution: int
    part: np.ndarray | None = None


def _split_large(tri: np.ndarray, face: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Split triangles (T, 3, 3) in grid units until every bounding box spans <= limit voxels."""
    done_tri, done_face = [], []
    while len(tri):
        extent = (tri.max(1) - tri.min(1)).max(1)
        small = extent <= limit
        done_tri.append(tri[small])
        done_face.append(face[small])
        big, big_face = tri[~small], face[~small]
        if not len(big):
            break
        a, b, c = big[:, 0], big[:, 1], big[:, 2]
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        tri = np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
        face = np.tile(big_face, 4)
    return np.concatenate(done_tri), np.concatenate(done_face)


def _overlaps(v0: np.ndarray, v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """(M, 3) triangle vertices relative to unit-voxel centres -> (M,) bool closed overlap."""
    h = 0.5
    e0, e1, e2 = v1 - v0, v2 - v1, v0 - v2
    keep = np.ones(len(v0), dtype=bool)
    # box axes (the bounding boxes already overlap on the candidate grid, but clamping and the
    # closed-cube test can disagree at the border: test them too, cheaply)
    for ax in range(3):
        lo = np.minimum(np.minimum(v0[:, ax], v1[:, ax]), v2[:, ax])
        hi = np.maximum(np.maximum(v0[:, ax], v1[:, ax]), v2[:, ax])
        keep &= (lo <= h) & (hi >= -h)
    # the triangle's plane
    n = np.cross(e0, e1)
    keep &= np.abs((n * v0).sum(1)) <= h * np.abs(n).sum(1)
    # the nine edge x axis directions: axis a = e x unit_j
    for e in (e0, e1, e2):
        for j in range(3):
            a = np.zeros_like(e)
            k1, k2 = (j + 1) % 3, (j + 2) % 3
            a[:, k1], a[:, k2] = e[:, k2], -e[:, k1]  # e x unit_j
            p0, p1, p2 = (a * v0).sum(1), (a * v1).sum(1), (a * v2).sum(1)
            r = h * np.abs(a).sum(1)
            keep &= (np.minimum(np.minimum(p0, p1), p2) <= r) & (np.maximum(np.maximum(p0, p1), p2) >= -r)
    return keep


def _pairs_numpy(grid: np.ndarray, faces: np.ndarray, r: int):
    """(voxel key, face, weight) of every overlap; the readable twin of csrc/voxelize.cpp."""
    tri, face_id = _split_large(grid[faces], np.arange(len(faces)), SPLIT_EXTENT)
    lo = np.clip(np.ceil(tri.min(1)) - 1, 0, r - 1).astype(np.int64)  # (T, 3): closed cubes touching the box
    hi = np.clip(np.floor(tri.max(1)), 0, r - 1).astype(np.int64)
    span = hi - lo + 1
    counts = span.prod(1)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    keys, owners = [], []
    starts = np.concatenate([[0], np.cumsum(counts)])
    t0 = 0
    while t0 < len(tri):  # chunks of whole triangles with about CHUNK candidates
        t1 = min(max(int(np.searchsorted(starts, starts[t0] + CHUNK, side="right")) - 1, t0 + 1), len(tri))
        c = counts[t0:t1]
        owner = np.repeat(np.arange(t0, t1), c)  # (M,) triangle of each candidate
        local = np.arange(len(owner)) - np.repeat(starts[t0:t1] - starts[t0], c)
        sx, sy = span[owner, 0], span[owner, 1]
        vox = lo[owner] + np.stack([local % sx, (local // sx) % sy, local // (sx * sy)], 1)  # (M, 3)
        centre = vox + 0.5
        hit = _overlaps(tri[owner, 0] - centre, tri[owner, 1] - centre, tri[owner, 2] - centre)
        vox, owner = vox[hit], owner[hit]
        keys.append((vox[:, 0] * r + vox[:, 1]) * r + vox[:, 2])
        owners.append(owner)
        t0 = t1
    owner = np.concatenate(owners)
    return np.concatenate(keys), face_id[owner], area[owner]


def _pairs_native(grid: np.ndarray, faces: np.ndarray, r: int, lib):
    v = np.ascontiguousarray(grid, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    handle = lib.pg_vox_run(v.ctypes.data, len(v), f.ctypes.data, len(f), r, 0)
    try:
        m = lib.pg_vox_count(handle)
        key, face, weight = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.float64)
        lib.pg_vox_copy(handle, key.ctypes.data, face.ctypes.data, weight.ctypes.data)
    finally:
        lib.pg_vox_free(handle)
    return key, face, weight


def _native_library():
    lib, why_not = load_library(str(Path(__file__).parent / "csrc" / "voxelize.cpp"))
    if lib is not None and not getattr(lib, "_partgen_typed", False):
        lib.pg_vox_run.restype = ctypes.c_void_p
        lib.pg_vox_run.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int,
        ]
        lib.pg_vox_count.restype = ctypes.c_int64
        lib.pg_vox_count.argtypes = [ctypes.c_void_p]
        lib.pg_vox_copy.argtypes = [ctypes.c_void_p] * 4
        lib.pg_vox_free.argtypes = [ctypes.c_void_p]
        lib._partgen_typed = True
    return lib, why_not


def voxelize_surface(
    vertices: np.ndarray,
    faces: np.ndarray,
    resolution: int,
    face_part: np.ndarray | None = None,
    impl: Literal["auto", "native", "numpy"] = "auto",
) -> VoxelSet:
    """Voxels a triangle surface overlaps, with the area-majority part of each voxel.

    vertices:  (V, 3) in [-0.5, 0.5]^3 (normalised); faces (F, 3) int
    face_part: optional (F,) int part label per face; a voxel takes the part whose triangles
               (weighted by the area they bring to it) dominate inside it
    impl:      "native" (C++, OpenMP), "numpy" (the readable twin), "auto" (native when it builds)
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    r = resolution
    if len(faces) == 0:
        return VoxelSet(np.zeros((0, 3), np.int32), r, None if face_part is None else np.zeros(0, np.int64))
    grid = (np.asarray(vertices, np.float64) + 0.5) * r
    faces = np.asarray(faces, np.int64)
    lib = None
    if impl != "numpy":
        lib, why_not = _native_library()
        if lib is None and impl == "native":
            raise RuntimeError(f"native voxeliser unavailable: {why_not}")
        if lib is None:
            log.debug("voxelize_surface: native voxeliser unavailable (%s); using numpy", why_not)
    key, face, weight = _pairs_native(grid, faces, r, lib) if lib is not None else _pairs_numpy(grid, faces, r)
    uniq, inverse = np.unique(key, return_inverse=True)
    coords = np.stack([uniq // (r * r), (uniq // r) % r, uniq % r], 1).astype(np.int32)
    if face_part is None:
        return VoxelSet(coords, r)
    return VoxelSet(coords, r, _vote(inverse, np.asarray(face_part, np.int64)[face], weight))


def _vote(voxel: np.ndarray, part: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per voxel, the part with the most weight (ties: the lower label)."""
    width = int(part.max()) + 1
    pair, pair_inv = np.unique(voxel * width + part, return_inverse=True)
    votes = np.bincount(pair_inv, weights=weight + 1e-12)  # + eps: zero-area pieces still vote
    order = np.lexsort((pair % width, -votes, pair // width))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (pair[order][1:] // width) != (pair[order][:-1] // width)
    return (pair[order][first] % width).astype(np.int64)
