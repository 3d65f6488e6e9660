"""Geometric reconstruction metrics: Chamfer distance, F-score, voxel IoU / recall.

Legend: n, m points of two clouds; V voxels.

Conventions (stated in every report that uses them, since papers differ):
    chamfer_distance  mean nearest-neighbour distance a -> b plus b -> a, halved (L1-Chamfer in
                      the units of the points: the normalised cube of side 1 for partgen shapes)
    f_score           at threshold tau: harmonic mean of precision (share of a within tau of b)
                      and recall (share of b within tau of a), as Tatarchenko et al. 2019
    voxel_iou         |A n B| / |A u B| of two voxel coordinate sets; voxel_recall |A n B| / |B|
sample_mesh draws area-weighted surface points so that meshes are compared as surfaces.
"""

from __future__ import annotations

import numpy as np


def _check_cloud(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must be (n, 3), got {points.shape}")
    if len(points) == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} hold NaN or inf values")
    return points


def nearest_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) distance of each point of a to b, and (m,) of each point of b to a."""
    from scipy.spatial import cKDTree

    a, b = _check_cloud(a, "a"), _check_cloud(b, "b")
    return cKDTree(b).query(a, k=1)[0], cKDTree(a).query(b, k=1)[0]


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    d_ab, d_ba = nearest_distances(a, b)
    return 0.5 * float(d_ab.mean() + d_ba.mean())


def f_score(a: np.ndarray, b: np.ndarray, tau: float) -> float:
    d_ab, d_ba = nearest_distances(a, b)
    precision, recall = float((d_ab < tau).mean()), float((d_ba < tau).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """(count, 3) points uniform by area on a triangle mesh."""
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    if len(faces) == 0:
        raise ValueError("cannot sample a mesh without faces")
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not area.sum() > 0:
        raise ValueError("cannot sample a mesh of zero area")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(faces), count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])


def _voxel_keys(coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords, np.int64).reshape(-1, 3)
    return (coords[:, 0] << 42) | (coords[:, 1] << 21) | coords[:, 2]


def voxel_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two (V, 3) integer voxel coordinate sets (1.0 when both are empty)."""
    a, b = set(_voxel_keys(predicted).tolist()), set(_voxel_keys(truth).tolist())
    return 1.0 if not a | b else len(a & b) / len(a | b)


def voxel_recall(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true voxels that the predicted set holds (1.0 when there is none to find)."""
    a, b = set(_voxel_keys(predicted).tolist()), set(_voxel_keys(truth).tolist())
    return 1.0 if not b else len(a & b) / len(b)


# signed distance bands in stage-2 voxels (1/64 of the cube) for inside_profile
PROFILE_EDGES = (-np.inf, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0, 10.0, np.inf)


def inside_profile(
    inside: np.ndarray, sdf: np.ndarray, voxel: float = 1.0 / 64, edges=PROFILE_EDGES
) -> tuple[np.ndarray, np.ndarray]:
    """How sharp a decoded occupancy is: (queries, predicted-inside queries) per band of signed
    distance sdf / voxel between consecutive edges (len(edges) - 1 bands each). A sharp model's
    inside share (the ratio) falls from 1 to 0 across the target's level; a blurred one stays high
    for bands well outside it."""
    inside, sdf = np.asarray(inside, bool).ravel(), np.asarray(sdf, np.float64).ravel()
    if inside.shape != sdf.shape:
        raise ValueError(f"inside ({inside.size}) and sdf ({sdf.size}) must hold one value per query")
    band = np.digitize(sdf / voxel, np.asarray(edges[1:-1], np.float64))
    bands = len(edges) - 1
    return np.bincount(band, minlength=bands), np.bincount(band, weights=inside, minlength=bands).astype(np.int64)


__all__ = [
    "PROFILE_EDGES",
    "chamfer_distance",
    "f_score",
    "inside_profile",
    "nearest_distances",
    "sample_mesh",
    "voxel_iou",
    "voxel_recall",
]
