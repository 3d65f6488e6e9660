"""Geometric reconstruction metrics: Chamfer distance, F-score, voxel IoU / recall.

Legend: n, m points of two clouds; V voxels.

Conventions (stated in every report that uses them, since papers differ):
    chamfer_distance  mean nearest-neighbour distance a -> b plus b -> a, halved (L1-Chamfer in
                      the units of the points: the normalised cube of side 1 for partgen shapes)
    f_score           at threshold tau: harmonic mean of precision (share of a within tau of b)
                      and recall (share of b within tau of a), as Tatarchenko et al. 2019
    chamfer_l2        the same with squared distances
    normal_consistency  mean |cos| between a sample's face normal and its nearest neighbour's on
                      the other surface, both ways (0.5 for random normals: it sees noise that
                      a fuzzy shell of the right size hides from F-score at 0.05)
    voxel_iou         |A n B| / |A u B| of two voxel coordinate sets; voxel_recall |A n B| / |B|
sample_mesh draws area-weighted surface points so that meshes are compared as surfaces;
surface_metrics normalises both meshes the same way (bounding-box centre 0, longest side 1) first.
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
    return _f_score(*nearest_distances(a, b), tau)


def _f_score(d_ab: np.ndarray, d_ba: np.ndarray, tau: float) -> float:
    precision, recall = float((d_ab < tau).mean()), float((d_ba < tau).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def sample_mesh(
    vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0, normals: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(count, 3) points uniform by area on a triangle mesh; with normals=True also (count, 3) the
    unit normal of the face each point lies on."""
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    if len(faces) == 0:
        raise ValueError("cannot sample a mesh without faces")
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    if not area.sum() > 0:
        raise ValueError("cannot sample a mesh of zero area")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(faces), count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    if not normals:
        return points
    return points, cross[face] / (2 * area[face])[:, None]


def normalise_box(vertices: np.ndarray, faces: np.ndarray | None = None) -> np.ndarray:
    """The vertices moved and scaled uniformly so their bounding box is centred at 0 with longest
    side 1 (how partgen compares shapes: a generated mesh and the truth in the same frame). Given
    the faces, the box is that of the vertices they use: a vertex no face uses is no surface."""
    vertices = np.asarray(vertices, np.float64)
    used = vertices if faces is None else vertices[np.asarray(faces).ravel()]
    lo, hi = used.min(0), used.max(0)
    side = float((hi - lo).max())
    if not side > 0:
        raise ValueError("cannot normalise a mesh whose vertices are one point")
    return (vertices - (lo + hi) / 2) / side


def chamfer_l2(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared nearest-neighbour distance a -> b plus b -> a, halved (Chamfer-L2)."""
    d_ab, d_ba = nearest_distances(a, b)
    return 0.5 * float((d_ab**2).mean() + (d_ba**2).mean())


def normal_consistency(
    a: np.ndarray, normals_a: np.ndarray, b: np.ndarray, normals_b: np.ndarray, trees: tuple | None = None
) -> float:
    """Mean |cos| between each sample's unit normal and that of its nearest neighbour on the other
    surface, over both directions (a -> b and b -> a, each weighted 1/2). Orientation is ignored
    (|cos|): 1 for matching surfaces, about 0.5 for random normals. trees: (cKDTree of a, of b),
    when the caller scores one surface against many and keeps them."""
    from scipy.spatial import cKDTree

    a, b = _check_cloud(a, "a"), _check_cloud(b, "b")
    if normals_a.shape != a.shape or normals_b.shape != b.shape:
        raise ValueError("need one normal per point")
    tree_a, tree_b = trees if trees is not None else (cKDTree(a), cKDTree(b))
    ab = np.abs((normals_a * normals_b[tree_b.query(a, k=1)[1]]).sum(1))
    ba = np.abs((normals_b * normals_a[tree_a.query(b, k=1)[1]]).sum(1))
    return 0.5 * float(ab.mean() + ba.mean())


def surface_metrics(
    predicted: tuple[np.ndarray, np.ndarray],
    truth: tuple[np.ndarray, np.ndarray],
    count: int = 20000,
    taus: tuple[float, ...] = (0.05, 0.02, 0.01),
    seed: int = 0,
) -> dict[str, float]:
    """Two meshes ((V, 3) vertices, (F, 3) faces) compared as surfaces, each normalised by
    normalise_box (the box of its faces' vertices) first and sampled with `count` points: chamfer
    (L1, halved), chamfer_l2, f_<tau> (e.g. f_0.02) and normal_consistency."""
    pa, na = sample_mesh(normalise_box(*predicted[:2]), predicted[1], count, seed=seed, normals=True)
    pb, nb = sample_mesh(normalise_box(*truth[:2]), truth[1], count, seed=seed + 1, normals=True)
    d_ab, d_ba = nearest_distances(pa, pb)
    out = {
        "chamfer": 0.5 * float(d_ab.mean() + d_ba.mean()),
        "chamfer_l2": 0.5 * float((d_ab**2).mean() + (d_ba**2).mean()),
    }
    out |= {f"f_{tau:g}": _f_score(d_ab, d_ba, tau) for tau in taus}
    out["normal_consistency"] = normal_consistency(pa, na, pb, nb)
    return out


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
    "chamfer_l2",
    "f_score",
    "inside_profile",
    "nearest_distances",
    "normal_consistency",
    "normalise_box",
    "sample_mesh",
    "surface_metrics",
    "voxel_iou",
    "voxel_recall",
]
