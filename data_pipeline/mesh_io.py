"""Mesh ingest: OBJ (+ groups, objects, materials), OFF, PLY, STL, GLB/GLTF (+ node names), normalisation.

Legend: V vertices, F triangles, G authored groups.

Every reader returns a Mesh whose faces keep their file order and carry the authored structure
the file has: OBJ `g`/`o` names and `usemtl` materials (trimesh drops these, so OBJ is parsed
here), GLB/GLTF scene-graph node names with their transforms applied. Malformed input raises
MeshError naming the file and the reason.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

MAX_BYTES = 1 << 30  # refuse files over 1 GiB unless asked (a corrupt header can claim anything)
FORMATS = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")


class MeshError(ValueError):
    """A mesh file that cannot be used; the message names the file and the reason."""


@dataclasses.dataclass
class Mesh:
    """A triangle mesh with its authored part structure.

    vertices:       (V, 3) float64
    faces:          (F, 3) int64, file order (OBJ polygons: convex fanned, concave ear-clipped)
    face_group:     (F,) int64 index into group_names (OBJ g/o, GLB node); 0 = "" when the file has none
    group_names:    list[str]
    face_material:  (F,) int64 index into material_names; 0 = "" when none
    material_names: list[str]
    source:         the file it came from
    notes:          what was repaired on the way in (e.g. skipped degenerate faces)
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_group: np.ndarray
    group_names: list[str]
    face_material: np.ndarray
    material_names: list[str]
    source: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)

    def check(self) -> Mesh:
        """Raise MeshError for what no later stage can use; drop the vertices no face uses (they
        carry no surface, but would widen the bounding box that normalise frames the shape by: 9 of
        the 517 Sweet Home 3D training-library models have such vertices, up to twice the object's
        size away); return self."""
        src = self.source or "mesh"
        if len(self.vertices) == 0 or len(self.faces) == 0:
            raise MeshError(f"{src}: empty mesh ({len(self.vertices)} vertices, {len(self.faces)} faces)")
        if not np.isfinite(self.vertices).all():
            raise MeshError(f"{src}: vertices hold NaN or inf")
        if self.faces.min() < 0 or self.faces.max() >= len(self.vertices):
            raise MeshError(f"{src}: face indices outside [0, {len(self.vertices)})")
        tri = self.vertices[self.faces]
        area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        if not (area > 0).any():
            raise MeshError(f"{src}: every face has zero area")
        used = np.zeros(len(self.vertices), bool)
        used[self.faces.ravel()] = True
        if not used.all():
            index = np.cumsum(used) - 1
            self.vertices, self.faces = self.vertices[used], index[self.faces]
            self.notes.append(f"dropped {int((~used).sum())} vertices that no face uses")
        return self


def _table(names: dict[str, int]) -> list[str]:
    return sorted(names, key=names.get)


def _ear_clip(points: np.ndarray) -> list[tuple[int, int, int]]:
    """Triangles (local indices) of a simple polygon given as (n, 2) points, by ear clipping;
    falls back to a fan when the polygon is not simple (no ear found)."""
    n = len(points)
    area = 0.5 * np.sum(points[:, 0] * np.roll(points[:, 1], -1) - np.roll(points[:, 0], -1) * points[:, 1])
    order = list(range(n)) if area >= 0 else list(range(n))[::-1]  # counter-clockwise
    tris = []
    guard = 0
    while len(order) > 3 and guard < 2 * n * n:
        guard += 1
        m = len(order)
        for k in range(m):
            i, j, h = order[k - 1], order[k], order[(k + 1) % m]
            a, b, c = points[i], points[j], points[h]
            if (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]) <= 0:
                continue  # reflex or flat corner: not an ear
            others = [o for o in order if o not in (i, j, h)]
            p = points[others]
            d1 = (b[0] - a[0]) * (p[:, 1] - a[1]) - (b[1] - a[1]) * (p[:, 0] - a[0])
            d2 = (c[0] - b[0]) * (p[:, 1] - b[1]) - (c[1] - b[1]) * (p[:, 0] - b[0])
            d3 = (a[0] - c[0]) * (p[:, 1] - c[1]) - (a[1] - c[1]) * (p[:, 0] - c[0])
            if len(p) and ((d1 >= 0) & (d2 >= 0) & (d3 >= 0)).any():
                continue  # another vertex inside: not an ear
            tris.append((i, j, h))
            order.pop(k)
            break
        else:
            break  # no ear: not a simple polygon
    if len(order) > 3:
        tris += [(order[0], order[q], order[q + 1]) for q in range(1, len(order) - 1)]
    elif len(order) == 3:
        tris.append(tuple(order))
    return tris


def triangulate_polygons(vertices: np.ndarray, polys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, n) polygons of n vertices each -> triangles (T, 3) and the polygon each came from (T,).

    Convex polygons (the vast majority) are fanned, vectorised; concave ones (door frames, letter
    shapes: a fan would fill their openings) are ear-clipped in their best-fit plane (Newell normal).
    Triangles keep the polygon's winding.
    """
    p, n = polys.shape
    pts = vertices[polys]  # (P, n, 3)
    nxt = np.roll(pts, -1, axis=1)
    normal = np.stack(
        [
            ((pts[..., 1] - nxt[..., 1]) * (pts[..., 2] + nxt[..., 2])).sum(1),
            ((pts[..., 2] - nxt[..., 2]) * (pts[..., 0] + nxt[..., 0])).sum(1),
            ((pts[..., 0] - nxt[..., 0]) * (pts[..., 1] + nxt[..., 1])).sum(1),
        ],
        1,
    )
    # convex: every corner turns the same way as the polygon's normal
    corner = np.cross(nxt - pts, np.roll(pts, -2, axis=1) - nxt)
    convex = ((corner * normal[:, None, :]).sum(-1) >= -1e-12 * np.abs(normal).sum(1, keepdims=True) ** 2).all(1)
    fan = np.stack([np.zeros(n - 2, np.int64), np.arange(1, n - 1), np.arange(2, n)], 1)  # (n-2, 3)
    tris = [polys[convex][:, fan].reshape(-1, 3)]
    owner = [np.repeat(np.nonzero(convex)[0], n - 2)]
    for q in np.nonzero(~convex)[0]:
        nrm = normal[q] / max(np.linalg.norm(normal[q]), 1e-300)
        u = np.cross(nrm, [1.0, 0, 0] if abs(nrm[0]) < 0.9 else [0, 1.0, 0])
        u /= np.linalg.norm(u)
        v = np.cross(nrm, u)
        flat = np.stack([pts[q] @ u, pts[q] @ v], 1)  # counter-clockwise seen from the normal
        local = np.array(_ear_clip(flat), dtype=np.int64).reshape(-1, 3)
        tris.append(polys[q][local])
        owner.append(np.full(len(local), q))
    return np.concatenate(tris), np.concatenate(owner)


def read_obj(path: str | Path) -> Mesh:
    """OBJ with `g`/`o` groups and `usemtl` materials; negative (relative) indices supported."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")  # some exporters write Latin-1 names
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    face_group: list[int] = []
    face_mat: list[int] = []
    groups: dict[str, int] = {"": 0}
    materials: dict[str, int] = {"": 0}
    group = material = 0
    short_faces = 0
    polygons: dict[int, list[tuple[list[int], int, int, int]]] = {}  # by vertex count, triangulated at the end
    face_seq: list[int] = []  # each triangle's position among the file's faces
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        tag = parts[0]
        if tag == "v":
            try:
                verts.append([float(x) for x in parts[1:4]])
            except ValueError:
                raise MeshError(f"{path}:{lineno}: malformed vertex {line.strip()!r}") from None
            if len(verts[-1]) != 3:
                raise MeshError(f"{path}:{lineno}: vertex with {len(verts[-1])} coordinates")
        elif tag == "f":
            n = len(verts)
            idx = []
            for token in parts[1:]:
                try:
                    i = int(token.split("/", 1)[0])
                except ValueError:
                    raise MeshError(f"{path}:{lineno}: malformed face index {token!r}") from None
                if i == 0:
                    raise MeshError(f"{path}:{lineno}: face index 0 (OBJ indices start at 1)")
                idx.append(i - 1 if i > 0 else n + i)
            if len(idx) < 3:  # exporters write loose edges this way: no surface, skip
                short_faces += 1
                continue
            if len(idx) == 3:
                faces.append(idx)
                face_group.append(group)
                face_mat.append(material)
                face_seq.append(len(face_seq))
            else:
                polygons.setdefault(len(idx), []).append((idx, group, material, len(face_seq)))
                face_seq.append(-1)  # a placeholder: its triangles take this place in the file order
        elif tag in ("g", "o"):
            name = " ".join(parts[1:])
            group = groups.setdefault(name, len(groups))
        elif tag == "usemtl":
            name = " ".join(parts[1:])
            material = materials.setdefault(name, len(materials))
    vertices = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    for polys in polygons.values():
        idx = np.array([p[0] for p in polys], dtype=np.int64)
        if idx.min() < 0 or idx.max() >= len(vertices):
            raise MeshError(f"{path}: a face index is outside the {len(vertices)} vertices")
        tris, owner = triangulate_polygons(vertices, idx)
        faces.extend(tris.tolist())
        face_group.extend(polys[i][1] for i in owner)
        face_mat.extend(polys[i][2] for i in owner)
        face_seq.extend(polys[i][3] for i in owner)
    seq = np.asarray([q for q in face_seq if q >= 0] if polygons else face_seq, dtype=np.int64)
    order = np.argsort(seq, kind="stable")  # file order; a polygon's triangles stay in their order
    mesh = Mesh(
        vertices=vertices,
        faces=np.asarray(faces, dtype=np.int64).reshape(-1, 3)[order],
        face_group=np.asarray(face_group, dtype=np.int64)[order],
        group_names=_table(groups),
        face_material=np.asarray(face_mat, dtype=np.int64)[order],
        material_names=_table(materials),
        source=str(path),
        notes=[f"skipped {short_faces} faces with fewer than 3 vertices"] if short_faces else [],
    )
    return mesh.check()


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """OFF file -> vertices (V, 3) float64, faces (F, 3) int64 in file order (polygons fan-triangulated).

    Values after a face's indices (face colours) are ignored. Raises MeshError naming the file
    and the reason for a malformed file.
    """
    path = Path(path)
    with open(path, encoding="ascii", errors="replace") as f:
        lines = [ln.split("#", 1)[0].split() for ln in f]
    lines = [ln for ln in lines if ln]
    if not lines or lines[0][0].upper() != "OFF":
        raise MeshError(f"{path}: not an OFF file (first word must be OFF)")
    counts = lines[0][1:] or (lines[1] if len(lines) > 1 else [])
    body = lines[1:] if lines[0][1:] else lines[2:]
    try:
        n_vert, n_face = int(counts[0]), int(counts[1])
    except (IndexError, ValueError):
        raise MeshError(f"{path}: missing or malformed vertex/face counts") from None
    if n_vert <= 0 or n_face <= 0:
        raise MeshError(f"{path}: empty mesh ({n_vert} vertices, {n_face} faces)")
    if len(body) < n_vert + n_face:
        raise MeshError(f"{path}: truncated: {len(body)} data lines for {n_vert} vertices and {n_face} faces")
    try:
        verts = np.asarray([ln[:3] for ln in body[:n_vert]], dtype=np.float64)
    except ValueError:
        raise MeshError(f"{path}: malformed vertex line") from None
    if verts.shape != (n_vert, 3):
        raise MeshError(f"{path}: a vertex line has fewer than 3 coordinates")
    if not np.isfinite(verts).all():
        raise MeshError(f"{path}: vertices hold NaN or inf")
    faces = []
    for i, ln in enumerate(body[n_vert : n_vert + n_face]):
        try:
            k = int(ln[0])
            idx = [int(t) for t in ln[1 : 1 + k]]
        except ValueError:
            raise MeshError(f"{path}: malformed face {i}") from None
        if k < 3 or len(idx) != k:
            raise MeshError(f"{path}: face {i} has {len(idx)} of {k} indices (need >= 3)")
        faces.extend([idx[0], idx[j], idx[j + 1]] for j in range(1, k - 1))
    faces = np.asarray(faces, dtype=np.int64)
    if faces.min() < 0 or faces.max() >= n_vert:
        raise MeshError(f"{path}: face indices outside [0, {n_vert})")
    return verts, faces


def _single(vertices, faces, path) -> Mesh:
    f = len(faces)
    return Mesh(
        vertices=np.asarray(vertices, dtype=np.float64).reshape(-1, 3),
        faces=np.asarray(faces, dtype=np.int64).reshape(-1, 3),
        face_group=np.zeros(f, np.int64),
        group_names=[""],
        face_material=np.zeros(f, np.int64),
        material_names=[""],
        source=str(path),
    ).check()


def _read_with_trimesh(path: Path) -> Mesh:
    """PLY, STL (one piece), GLB/GLTF (one group per scene-graph node, transforms applied)."""
    import trimesh

    try:
        scene = trimesh.load(str(path), force="scene", process=False)
    except Exception as err:  # trimesh raises many types for corrupt files
        raise MeshError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None
    verts, faces, fgroup, fmat = [], [], [], []
    groups: dict[str, int] = {"": 0}
    materials: dict[str, int] = {"": 0}
    offset = 0
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        geom = scene.geometry.get(geom_name)
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            continue  # point clouds and lines carry no surface
        v = trimesh.transform_points(np.asarray(geom.vertices, dtype=np.float64), transform)
        verts.append(v)
        faces.append(np.asarray(geom.faces, dtype=np.int64) + offset)
        offset += len(v)
        name = "" if path.suffix.lower() in (".ply", ".stl") else str(node)
        fgroup.append(np.full(len(geom.faces), groups.setdefault(name, len(groups))))
        material = getattr(getattr(geom.visual, "material", None), "name", None) or ""
        fmat.append(np.full(len(geom.faces), materials.setdefault(str(material), len(materials))))
    if not faces:
        raise MeshError(f"{path}: no triangle surface in the file")
    return Mesh(
        vertices=np.concatenate(verts),
        faces=np.concatenate(faces),
        face_group=np.concatenate(fgroup).astype(np.int64),
        group_names=_table(groups),
        face_material=np.concatenate(fmat).astype(np.int64),
        material_names=_table(materials),
        source=str(path),
    ).check()


def load_mesh(path: str | Path, max_bytes: int = MAX_BYTES) -> Mesh:
    """Read any supported mesh file; MeshError naming the file and the reason otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise MeshError(f"{path}: unsupported extension {suffix or '(none)'!r}; expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise MeshError(f"{path}: no such file")
    size = os.path.getsize(path)
    if size == 0:
        raise MeshError(f"{path}: empty file")
    if size > max_bytes:
        raise MeshError(f"{path}: {size} bytes is over the limit of {max_bytes}")
    if suffix == ".obj":
        return read_obj(path)
    if suffix == ".off":
        return _single(*read_off(path), path)
    return _read_with_trimesh(path)


@dataclasses.dataclass
class Normalisation:
    """p_normalised = (p - center) * scale: bounding-box centre to 0, longest side to 1."""

    center: np.ndarray
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (points - self.center) * self.scale

    def invert(self, points: np.ndarray) -> np.ndarray:
        return points / self.scale + self.center

    def to_dict(self) -> dict:
        return {"center": [float(x) for x in self.center], "scale": float(self.scale)}


def normalise(vertices: np.ndarray, faces: np.ndarray | None = None) -> Normalisation:
    """The transform that puts vertices into [-0.5, 0.5]^3 (DESIGN.md's space); given the faces, the
    vertices they use (a vertex no face uses is no surface)."""
    used = np.asarray(vertices) if faces is None else np.asarray(vertices)[np.asarray(faces).ravel()]
    lo, hi = used.min(0), used.max(0)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise MeshError(f"degenerate bounding box (extent {extent})")
    return Normalisation(center=(lo + hi) / 2, scale=1.0 / extent)
