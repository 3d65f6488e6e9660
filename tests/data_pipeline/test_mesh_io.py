"""Mesh ingest keeps authored structure and names the file and reason for bad input."""

import numpy as np
import pytest
import trimesh

from partgen.data_pipeline.mesh_io import MeshError, load_mesh, normalise

CUBE_OBJ = """# two groups, two materials, a quad and negative indices
mtllib cube.mtl
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 0 0 1
v 1 0 1
g seat
usemtl wood
f 1/1/1 2/2/1 3/3/1 4/4/1
g leg front
usemtl metal
f -3 -2 -1
f 1 2 6
"""


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if mode == "w":
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def test_obj_keeps_groups_materials_and_face_order(tmp_path):
    mesh = load_mesh(write(tmp_path, "cube.obj", CUBE_OBJ))
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3], [3, 4, 5], [0, 1, 5]]
    assert [mesh.group_names[g] for g in mesh.face_group] == ["seat", "seat", "leg front", "leg front"]
    assert [mesh.material_names[m] for m in mesh.face_material] == ["wood", "wood", "metal", "metal"]


def test_glb_keeps_node_names_and_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(extents=(1, 1, 1)), node_name="body", geom_name="b")
    scene.add_geometry(
        trimesh.creation.box(extents=(1, 1, 1)),
        node_name="lid",
        geom_name="l",
        transform=trimesh.transformations.translation_matrix((0, 0, 5)),
    )
    path = tmp_path / "box.glb"
    scene.export(path)
    mesh = load_mesh(path)
    names = {mesh.group_names[g] for g in mesh.face_group}
    assert names == {"body", "lid"}
    lid = mesh.faces[np.array([mesh.group_names[g] == "lid" for g in mesh.face_group])]
    assert np.allclose(mesh.vertices[lid][..., 2].mean(), 5.0)


@pytest.mark.parametrize("suffix", [".ply", ".stl", ".off"])
def test_other_formats_read(tmp_path, suffix):
    box = trimesh.creation.box()
    path = tmp_path / f"box{suffix}"
    box.export(path)
    mesh = load_mesh(path)
    assert len(mesh.faces) == 12 and mesh.group_names == [""]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.obj", "", "empty file"),
        ("a.xyz", "v 0 0 0", "unsupported extension '.xyz'"),
        ("a.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "empty mesh"),
        ("a.obj", "v 0 0 0\nv 1 0 0\nv 0 1 nan\nf 1 2 3\n", "NaN or inf"),
        ("a.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "outside"),
        ("a.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\nl 1 2 3\n", "empty mesh \\(3 vertices, 0 faces\\)"),
        ("a.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 0\n", "face index 0"),
        ("a.obj", "v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "zero area"),
        ("a.obj", "v 0 0 x\n", "malformed vertex"),
        ("a.obj", "v 0 0\n", "vertex with 2 coordinates"),
        ("a.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n", "cannot be read|no triangle"),
        ("a.glb", b"glTF\x02\x00\x00\x00garbage", "cannot be read|no triangle"),
    ],
)
def test_bad_input_names_file_and_reason(tmp_path, name, content, message):
    path = write(tmp_path, name, content, "wb" if isinstance(content, bytes) else "w")
    with pytest.raises(MeshError, match=message) as err:
        load_mesh(path)
    assert str(path) in str(err.value)


def test_obj_skips_two_vertex_faces_with_a_note(tmp_path):
    mesh = load_mesh(write(tmp_path, "edge.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\nf 1 2 3\n"))
    assert len(mesh.faces) == 1 and mesh.notes == ["skipped 1 faces with fewer than 3 vertices"]


def test_vertices_no_face_uses_are_dropped_so_they_do_not_widen_the_box(tmp_path):
    # a stray vertex 10 units off (as 9 Sweet Home 3D models have): the box, and so the normalised
    # shape, is the triangles' own
    text = "v 0 0 0\nv 10 10 10\nv 1 0 0\nv 0 2 0\ng seat\nf 1 3 4\nf 4 3 1\n"
    mesh = load_mesh(write(tmp_path, "stray.obj", text))
    assert np.array_equal(mesh.vertices, [[0, 0, 0], [1, 0, 0], [0, 2, 0]])
    assert mesh.faces.tolist() == [[0, 1, 2], [2, 1, 0]] and mesh.group_names[mesh.face_group[0]] == "seat"
    assert mesh.notes == ["dropped 1 vertices that no face uses"]
    t = normalise(mesh.vertices)
    assert np.allclose(t.apply(mesh.vertices).max(0), [0.25, 0.5, 0.0])


def test_huge_file_refused_before_reading(tmp_path):
    path = write(tmp_path, "big.obj", "v 0 0 0\n" * 100)
    with pytest.raises(MeshError, match="over the limit"):
        load_mesh(path, max_bytes=50)


def test_normalise_into_unit_cube():
    pts = np.array([[1.0, 2.0, 3.0], [5.0, 4.0, 3.5]])
    t = normalise(pts)
    out = t.apply(pts)
    assert np.allclose(out.max(0) - out.min(0), [1.0, 0.5, 0.125]) and np.allclose((out.max(0) + out.min(0)) / 2, 0)
    assert np.allclose(t.invert(out), pts)
    with pytest.raises(MeshError, match="degenerate"):
        normalise(np.zeros((3, 3)))


def test_obj_concave_polygons_are_ear_clipped_not_fanned(tmp_path):
    # a door frame: a U-shaped polygon (opening at the bottom middle), plus a convex quad
    u = [(0, 0), (1, 0), (1, 2), (2, 2), (2, 0), (3, 0), (3, 3), (0, 3)]
    lines = [f"v {x} {y} 0" for x, y in u] + ["v 5 0 0", "v 6 0 0", "v 6 1 0", "v 5 1 0"]
    lines += ["g frame", "f " + " ".join(str(i + 1) for i in range(8)), "g panel", "f 9 10 11 12"]
    path = tmp_path / "door.obj"
    path.write_text("\n".join(lines) + "\n")
    mesh = load_mesh(path)
    tri = mesh.vertices[mesh.faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (cross[:, 2] > 0).all()  # the polygons' counter-clockwise winding is kept
    frame = mesh.face_group == mesh.group_names.index("frame")
    assert frame.sum() == 6 and (~frame).sum() == 2
    assert np.isclose(0.5 * cross[frame, 2].sum(), 3 * 3 - 1 * 2)  # the opening stays open
    centroids = tri[frame].mean(1)
    in_opening = (centroids[:, 0] > 1) & (centroids[:, 0] < 2) & (centroids[:, 1] < 2)
    assert not in_opening.any()
