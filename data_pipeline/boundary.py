"""Descriptors of the face graph's edges for a learned part-boundary model (parts.method=learned on meshes).

Legend: F faces, E dual-graph edges (pairs of faces sharing a mesh edge), D edge descriptors.

A person cuts a shape where a concave crease runs round it, where the thickness changes (a limb
meets a body), and at places that only make sense at the scale of the whole part (the neck of a
bust, the waist of a vase). One dihedral angle sees the first only. So each edge gets:
  - local terms: signed dihedral angle (concave > 0), 1 - cos, the concave flag, the log shape
    diameter (SDF, Shapira et al. 2008) of both faces relative to the mesh's median (min, max,
    jump);
  - context at four scales: per-face concavity, convexity, log SDF and a centrality term (the
    mean distance to the rest of the surface, normalised; extremities are large: a proxy for the
    average geodesic distance that Kalogerakis et al. 2010 and Benhabiles et al. 2011 use) are
    diffused over the face graph (1, 4, 16 and 64 steps of a length-weighted random walk); an
    edge takes their mean and jump across it. A concave crease in a concave region that closes
    round a thin part looks different from a fold on a flat panel at these scales.
All terms are invariant to the mesh's scale, position and rotation, and to its face count as far
as the random walk allows. human_boundary gives the target: the share of human segmentations
whose labels differ across each edge.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from partgen.data_pipeline.geometric import DualGraph, dual_graph, shape_diameter

SCALES = (1, 4, 16, 64)
FACE_TERMS = ("concavity", "convexity", "log_sdf", "centrality")
LOCAL_TERMS = ("angle", "one_minus_cos", "concave", "log_sdf_min", "log_sdf_max", "log_sdf_jump")
FEATURE_NAMES = LOCAL_TERMS + tuple(
    f"{term}_{kind}_{k}" for k in SCALES for term in FACE_TERMS for kind in ("mean", "jump")
)
NUM_FEATURES = len(FEATURE_NAMES)


def _centrality(graph: DualGraph, samples: int = 512, seed: int = 0) -> np.ndarray:
    """(F,) mean Euclidean distance from each face centroid to area-sampled faces, over its mean."""
    rng = np.random.default_rng(seed)
    p = graph.areas / max(graph.areas.sum(), 1e-30)
    pick = rng.choice(len(p), size=min(samples, len(p)), p=p)
    anchors = graph.centroids[pick]
    total = np.zeros(len(graph.centroids))
    for start in range(0, len(anchors), 64):  # (F, 64) blocks keep memory small on big meshes
        total += np.linalg.norm(graph.centroids[:, None] - anchors[None, start : start + 64], axis=-1).sum(1)
    mean = total / len(anchors)
    return mean / max(float((mean * p).sum()), 1e-30)


def edge_features(
    vertices: np.ndarray, faces: np.ndarray, graph: DualGraph | None = None, sdf: np.ndarray | None = None
) -> tuple[DualGraph, np.ndarray]:
    """The face graph and its (E, NUM_FEATURES) float32 edge descriptors (see the module doc)."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    graph = graph if graph is not None else dual_graph(vertices, faces)
    sdf = sdf if sdf is not None else shape_diameter(vertices, faces)
    nf = len(faces)
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    angle = np.arccos(np.clip(1.0 - graph.one_minus_cos, -1.0, 1.0)) * np.where(graph.concave, 1.0, -1.0)
    log_sdf = np.log(sdf / max(float(np.median(sdf)), 1e-30))

    # per face: length-weighted mean of the concave (convex) angles of its edges
    length = np.maximum(graph.length, 1e-12)
    w = np.concatenate([length, length])
    rows = np.concatenate([a, b])
    cols = np.concatenate([b, a])
    edge_sum = np.bincount(rows, weights=w, minlength=nf) + 1e-30
    concavity = np.bincount(rows, weights=np.concatenate([np.maximum(angle, 0)] * 2) * w, minlength=nf) / edge_sum
    convexity = np.bincount(rows, weights=np.concatenate([np.maximum(-angle, 0)] * 2) * w, minlength=nf) / edge_sum
    face = np.stack([concavity, convexity, log_sdf, _centrality(graph)], 1)

    walk = sp.csr_matrix((w, (rows, cols)), shape=(nf, nf))
    walk = sp.diags(1.0 / edge_sum) @ walk
    columns = [angle, graph.one_minus_cos, graph.concave.astype(np.float64)]
    columns += [np.minimum(log_sdf[a], log_sdf[b]), np.maximum(log_sdf[a], log_sdf[b]), np.abs(log_sdf[a] - log_sdf[b])]
    smooth, done = face, 0
    for k in SCALES:
        for _ in range(k - done):
            # half-lazy walk: isolated faces (no neighbours) keep their value
            smooth = 0.5 * smooth + 0.5 * (walk @ smooth + (edge_sum < 1e-20)[:, None] * smooth)
        done = k
        for t in range(len(FACE_TERMS)):
            columns += [0.5 * (smooth[a, t] + smooth[b, t]), np.abs(smooth[a, t] - smooth[b, t])]
    features = np.stack(columns, 1).astype(np.float32)
    return graph, np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)


def human_boundary(graph: DualGraph, segmentations: list[np.ndarray]) -> np.ndarray:
    """(E,) share of the segmentations whose labels differ across each edge."""
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    return np.mean([s[a] != s[b] for s in segmentations], axis=0).astype(np.float32)
