"""What the app's 3D view shows: GLB scenes of named parts, exploded or filtered, voxels as cubes.

Legend: V vertices, F faces, N voxels, P parts, R voxel resolution.

Plain numpy + trimesh (no gradio, no models): the pipelines write parts.glb with one named node per
part; these functions read such a file back and write the variant the view asks for.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


def glb_node_names(data: bytes) -> list[str]:
    """The names of a GLB's nodes, in file order (its JSON chunk)."""
    import json
    import struct

    magic, _, _ = struct.unpack("<4sII", data[:12])
    length, kind = struct.unpack("<II", data[12:20])
    if magic != b"glTF" or kind != 0x4E4F534A:
        raise ValueError("not a GLB file")
    return [node.get("name", "") for node in json.loads(data[20 : 20 + length]).get("nodes", [])]


def load_parts(path: str | Path) -> list[tuple[str, object]]:
    """The (name, geometry) of each node of a parts GLB, in file order (the pipelines write parts in
    their order), with the node's transform applied (trimesh Trimesh or PointCloud copies)."""
    import trimesh

    path = Path(path)
    scene = trimesh.load(str(path), file_type="glb", force="scene", process=False)
    order = {name: i for i, name in enumerate(glb_node_names(path.read_bytes()))}
    parts = []
    for node in sorted(scene.graph.nodes_geometry, key=lambda n: order.get(n, len(order))):
        transform, geometry_name = scene.graph[node]
        geometry = scene.geometry[geometry_name].copy()
        geometry.apply_transform(transform)
        parts.append((str(node), geometry))
    return parts


def centroid(geometry) -> tuple[np.ndarray, float]:
    """(3,) the area-weighted surface centroid of a mesh (the mean of a point cloud's points) and its
    weight (the area, or the point count)."""
    faces = getattr(geometry, "faces", None)
    if faces is not None and len(faces):
        area = np.asarray(geometry.area_faces, np.float64)
        if area.sum() > 0:
            return (np.asarray(geometry.triangles_center) * area[:, None]).sum(0) / area.sum(), float(area.sum())
    vertices = np.asarray(geometry.vertices, np.float64)
    return vertices.mean(0), float(len(vertices))


def explode_offsets(parts: list[tuple[str, object]], factor: float) -> np.ndarray:
    """(P, 3) how far each part moves: factor * (part centroid - whole centroid), the whole's centroid
    weighted by the parts' areas (0 moves nothing; 1 doubles each part's distance from the centre)."""
    if not parts:
        return np.zeros((0, 3))
    centres, weights = zip(*(centroid(g) for _, g in parts), strict=True)
    centres, weights = np.asarray(centres), np.asarray(weights)
    whole = (centres * weights[:, None]).sum(0) / max(weights.sum(), 1e-12)
    return float(factor) * (centres - whole)


def write_view(source: str | Path, out: str | Path, explode: float = 0.0, keep: list[str] | None = None) -> Path | None:
    """The parts GLB at source with its parts moved apart (explode_offsets) and only the parts named in
    keep (None: all), as a GLB at out; None (nothing written) when no part is kept. Offsets are computed
    over all parts, so hiding one moves no other."""
    import trimesh

    parts = load_parts(source)
    offsets = explode_offsets(parts, explode)
    scene = trimesh.Scene()
    for (name, geometry), offset in zip(parts, offsets, strict=True):
        if keep is not None and name not in keep:
            continue
        moved = geometry.copy()
        moved.apply_translation(offset)
        scene.add_geometry(moved, node_name=name, geom_name=name)
    if not scene.geometry:
        return None  # (trimesh exports no empty scene)
    out = Path(out)
    out.write_bytes(scene.export(file_type="glb"))
    return out


def parts_zip(source: str | Path, out: str | Path) -> Path:
    """A zip with one OBJ per part (<name>.obj) of the parts GLB at source."""
    out = Path(out)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, geometry in load_parts(source):
            if getattr(geometry, "faces", None) is None:
                archive.writestr(f"{name}.ply", geometry.export(file_type="ply"))
            else:
                archive.writestr(f"{name}.obj", geometry.export(file_type="obj"))
    return out


def write_parts(
    out: str | Path, vertices: np.ndarray, faces: np.ndarray, part: np.ndarray, names: list[str], colours: np.ndarray
) -> Path:
    """A GLB at out with one named node per part: the (F,) part labels split the mesh ((V, 3) vertices,
    (F, 3) faces), coloured by part ((P, 4) uint8 RGBA)."""
    import trimesh

    scene = trimesh.Scene()
    for p, name in enumerate(names):
        piece = trimesh.Trimesh(vertices, faces[part == p], process=False)
        piece.remove_unreferenced_vertices()
        piece.visual.face_colors = colours[p]
        scene.add_geometry(piece, node_name=name, geom_name=name)
    out = Path(out)
    out.write_bytes(scene.export(file_type="glb"))
    return out


_FACES = (  # per cube side: the outward axis and sign, and its four corners (counter-clockwise seen from outside)
    (0, -1, ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0))),
    (0, 1, ((1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1))),
    (1, -1, ((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1))),
    (1, 1, ((0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0))),
    (2, -1, ((0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0))),
    (2, 1, ((0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1))),
)


def voxel_surface(coords: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) integer voxel coords at resolution R -> the cube faces no other voxel covers, as a mesh in
    the normalised cube [-0.5, 0.5]^3: (4M, 3) float64 vertices, (2M, 3) int64 faces and (2M,) the voxel
    each face belongs to (index into coords)."""
    coords = np.asarray(coords, np.int64).reshape(-1, 3)
    side = resolution + 2
    key = ((coords[:, 0] + 1) * side + coords[:, 1] + 1) * side + coords[:, 2] + 1
    occupied = np.sort(key)
    vertices, faces, owner = [], [], []
    count = 0
    for axis, sign, corners in _FACES:
        step = sign * (side ** (2 - axis))
        exposed = np.nonzero(~np.isin(key + step, occupied))[0]
        if len(exposed) == 0:
            continue
        quad = coords[exposed, None, :] + np.asarray(corners)[None]  # (E, 4, 3)
        vertices.append(quad.reshape(-1, 3))
        base = count + 4 * np.arange(len(exposed))[:, None]
        faces.append(np.concatenate([base + [0, 1, 2], base + [0, 2, 3]]))
        owner.append(np.concatenate([exposed, exposed]))
        count += 4 * len(exposed)
    if not vertices:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    vertices = np.concatenate(vertices).astype(np.float64) / resolution - 0.5
    return vertices, np.concatenate(faces), np.concatenate(owner)


def write_voxels(
    out: str | Path, coords: np.ndarray, part: np.ndarray, names: list[str], resolution: int, colours: np.ndarray
) -> Path | None:
    """A GLB at out with one node per part: its voxels as cubes (outer faces only), coloured by part
    ((P, 4) uint8 RGBA colours); None (nothing written) without voxels."""
    import trimesh

    vertices, faces, owner = voxel_surface(coords, resolution)
    face_part = np.asarray(part, np.int64)[owner]
    scene = trimesh.Scene()
    for p, name in enumerate(names):
        mine = face_part == p
        if not mine.any():
            continue
        piece = trimesh.Trimesh(vertices, faces[mine], process=False)
        piece.remove_unreferenced_vertices()
        piece.visual.face_colors = colours[p]
        scene.add_geometry(piece, node_name=name, geom_name=name)
    if not scene.geometry:
        return None
    out = Path(out)
    out.write_bytes(scene.export(file_type="glb"))
    return out


def zip_folder(folder: str | Path, out: str | Path) -> Path:
    """A zip of every file under folder, with paths relative to it."""
    folder, out = Path(folder), Path(out)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return out


__all__ = [
    "explode_offsets",
    "glb_node_names",
    "load_parts",
    "parts_zip",
    "voxel_surface",
    "write_parts",
    "write_view",
    "write_voxels",
    "zip_folder",
]
