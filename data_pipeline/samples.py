"""Surface samples for the generative stages: uniform area-weighted points plus sharp-edge points (as Dora does).

Legend: F faces, S samples.
Every sample carries its position, a unit normal and the part label of the face it came from.
Sharp edges are mesh edges whose adjacent faces meet at more than `sharp_degrees`; sampling
along them keeps thin, crisp features that uniform samples miss.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class SurfaceSamples:
    """points (S, 3) float32, normals (S, 3) float32, part (S,) int64, sharp (S,) bool."""

    points: np.ndarray
    normals: np.ndarray
    part: np.ndarray
    sharp: np.ndarray


def _face_normals(tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1)
    return n / np.maximum(length, 1e-30)[:, None], 0.5 * length


def sample_surface(
    vertices: np.ndarray,
    faces: np.ndarray,
    face_part: np.ndarray,
    num_uniform: int,
    num_sharp: int = 0,
    sharp_degrees: float = 30.0,
    seed: int = 0,
) -> SurfaceSamples:
    """Uniform samples by area, then sharp-edge samples by edge length (uniform ones fill in
    when the mesh has no sharp edge), all reproducible from seed."""
    rng = np.random.default_rng(seed)
    tri = vertices[faces]
    normals, area = _face_normals(tri)
    if area.sum() <= 0:
        raise ValueError("the surface has zero area")
    face = rng.choice(len(faces), size=num_uniform, p=area / area.sum())
    u, v = rng.random(num_uniform), rng.random(num_uniform)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[face]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    out_p, out_n, out_part, out_sharp = [points], [normals[face]], [face_part[face]], [np.zeros(num_uniform, bool)]

    if num_sharp > 0:
        edge_p, edge_n, edge_part = _sharp_edge_samples(
            vertices, faces, normals, face_part, num_sharp, sharp_degrees, rng
        )
        if len(edge_p):
            out_p.append(edge_p)
            out_n.append(edge_n)
            out_part.append(edge_part)
            out_sharp.append(np.ones(len(edge_p), bool))
    return SurfaceSamples(
        points=np.concatenate(out_p).astype(np.float32),
        normals=np.concatenate(out_n).astype(np.float32),
        part=np.concatenate(out_part).astype(np.int64),
        sharp=np.concatenate(out_sharp),
    )


def sharp_edges(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, sharp_degrees: float):
    """(E, 2) vertex pairs of sharp edges and (E, 2) their two faces. Vertices are welded by
    position first, so meshes stored as separate triangles still have adjacency."""
    _, weld = np.unique(np.round(vertices, 9), axis=0, return_inverse=True)
    f = weld.reshape(-1)[faces]
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    owner = np.tile(np.arange(len(faces)), 3)
    edges = np.sort(edges, axis=1)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges, owner = edges[order], owner[order]
    same = (edges[1:] == edges[:-1]).all(1)  # consecutive equal edges: two faces share them
    i = np.nonzero(same)[0]
    fa, fb = owner[i], owner[i + 1]
    cos = (normals[fa] * normals[fb]).sum(1)
    sharp = cos < np.cos(np.radians(sharp_degrees))
    # back to original vertex indices through the first face's corners
    pairs = edges[i[sharp]]
    rep = np.zeros(weld.max() + 1, dtype=np.int64)
    rep[weld] = np.arange(len(weld))
    return rep[pairs], np.stack([fa[sharp], fb[sharp]], 1)


def _sharp_edge_samples(vertices, faces, normals, face_part, n, sharp_degrees, rng):
    pairs, adj = sharp_edges(vertices, faces, normals, sharp_degrees)
    if not len(pairs):
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64)
    a, b = vertices[pairs[:, 0]], vertices[pairs[:, 1]]
    length = np.linalg.norm(b - a, axis=1)
    if length.sum() <= 0:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64)
    edge = rng.choice(len(pairs), size=n, p=length / length.sum())
    t = rng.random(n)[:, None]
    points = a[edge] + t * (b[edge] - a[edge])
    nrm = normals[adj[edge, 0]] + normals[adj[edge, 1]]
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-30)
    return points, nrm, face_part[adj[edge, 0]]


@dataclasses.dataclass
class VolumeSamples:
    """points (Q, 3) float32, sdf (Q,) float32 (negative inside), near (Q,) bool (sampled near the surface)."""

    points: np.ndarray
    sdf: np.ndarray
    near: np.ndarray


def sample_volume(
    vertices: np.ndarray,
    faces: np.ndarray,
    surface_points: np.ndarray,
    num: int,
    near_sigmas: tuple[float, ...] = (0.005, 0.02),
    seed: int = 0,
) -> VolumeSamples:
    """Query points with signed distances for occupancy / SDF training (3DShape2VecSet, Dora):
    half uniform in the padded unit cube [-0.55, 0.55]^3, half near the surface (surface points
    plus Gaussian noise of each sigma in turn). Inside is decided by the generalised winding
    number (data_pipeline/inside.py), which holds up on open and duplicated shells."""
    from partgen.data_pipeline.inside import signed_distance

    rng = np.random.default_rng(seed)
    num_uniform = num // 2
    num_near = num - num_uniform
    uniform = rng.uniform(-0.55, 0.55, (num_uniform, 3))
    pick = rng.integers(0, len(surface_points), num_near)
    sigma = np.asarray(near_sigmas)[np.arange(num_near) % len(near_sigmas)]
    near = surface_points[pick] + rng.normal(size=(num_near, 3)) * sigma[:, None]
    points = np.concatenate([uniform, near])
    sdf = signed_distance(vertices, faces, points)
    is_near = np.zeros(num, bool)
    is_near[num_uniform:] = True
    return VolumeSamples(points.astype(np.float32), sdf.astype(np.float32), is_near)


def block_sdf(
    vertices: np.ndarray,
    faces: np.ndarray,
    coords: np.ndarray,
    resolution: int,
    subdiv: int = 4,
    truncation: float = 2.0,
    sheet: float = 0.0,
) -> np.ndarray:
    """Signed distance at the corners of each active voxel's subdiv^3 sub-cells (stage 2's target).

    coords: (N, 3) voxel indices at `resolution`. Returns (N, s+1, s+1, s+1) float32 with s = subdiv:
    value [n, a, b, c] is the signed distance (negative inside, winding number) at the point
    -0.5 + (coords[n] * s + (a, b, c)) / (resolution * s), in units of one voxel, clipped to
    [-truncation, truncation]. Corners shared by neighbouring voxels are computed once.

    sheet > 0 (voxel units, at most one voxel): every surface becomes a shell at least 2 x sheet
    thick (distance - sheet outside, as watertight remeshing by unsigned distance does), so surfaces
    with no inside on either side (a cup's single-sided wall, a glass pane, fan blades, a solid
    thinner than a sub-cell) are meshed instead of lost; a solid's outside surface moves out by
    `sheet`. A voxel whose own corners would lose their sign change by it (the moved surface left
    the active voxels) keeps its plain distances.
    """
    from partgen.data_pipeline.inside import signed_distance

    coords = np.asarray(coords, np.int64).reshape(-1, 3)
    if subdiv < 1 or truncation <= 0:
        raise ValueError(f"need subdiv >= 1 and truncation > 0, got {subdiv}, {truncation}")
    if not 0 <= sheet <= 1:
        raise ValueError(f"sheet must be in [0, 1] voxels, got {sheet}")
    s = int(subdiv)
    if len(coords) == 0:
        return np.zeros((0, s + 1, s + 1, s + 1), np.float32)
    fine = resolution * s
    offsets = np.stack(np.meshgrid(*(np.arange(s + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)  # (K, 3)
    corners = coords[:, None, :] * s + offsets[None]  # (N, K, 3) fine corner indices
    keys = (corners[..., 0] * (fine + 1) + corners[..., 1]) * (fine + 1) + corners[..., 2]
    unique, inverse = np.unique(keys.ravel(), return_inverse=True)
    idx = np.stack([unique // (fine + 1) ** 2, unique // (fine + 1) % (fine + 1), unique % (fine + 1)], 1)
    sdf = signed_distance(vertices, faces, -0.5 + idx / fine) * resolution
    values = np.clip(sdf, -truncation, truncation)[inverse].reshape(len(coords), -1)
    if sheet > 0:
        shell = np.clip(np.minimum(sdf, np.abs(sdf) - sheet), -truncation, truncation)[inverse].reshape(len(coords), -1)
        keep = (shell.max(1) <= 0) & (values.max(1) > 0) & (values.min(1) <= 0)  # the shell would empty it
        values = np.where(keep[:, None], values, shell)
    return values.reshape(len(coords), s + 1, s + 1, s + 1).astype(np.float32)


def stage2_blocks(
    vertices: np.ndarray, faces: np.ndarray, coords: np.ndarray, resolution: int, subdiv: int
) -> dict[str, np.ndarray]:
    """The arrays of a record's sdf_blocks.npz: `values` (block_sdf of the active voxels, float16)
    and `subdiv`."""
    return {
        "values": block_sdf(vertices, faces, coords, resolution, subdiv).astype(np.float16),
        "subdiv": np.int64(subdiv),
    }
