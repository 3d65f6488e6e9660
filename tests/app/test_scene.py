"""partgen.app.scene: parts GLBs exploded and filtered, voxels as closed cube surfaces, zips."""

import zipfile

import numpy as np
import pytest
import trimesh

from partgen.app.scene import explode_offsets, load_parts, parts_zip, voxel_surface, write_parts, write_view


def _box(centre, size=0.1):
    box = trimesh.creation.box(extents=(size, size, size))
    box.apply_translation(centre)
    return box


@pytest.fixture
def two_parts(tmp_path):
    """A GLB with two named boxes at x = -0.3 and x = +0.1 (the second one three times the first's size)."""
    scene = trimesh.Scene()
    scene.add_geometry(_box((-0.3, 0, 0)), node_name="left", geom_name="left")
    scene.add_geometry(_box((0.1, 0, 0), size=0.3), node_name="right", geom_name="right")
    path = tmp_path / "parts.glb"
    path.write_bytes(scene.export(file_type="glb"))
    return path


def _centres(path):
    return {name: geometry.vertices.mean(0) for name, geometry in load_parts(path)}


def test_explode_moves_each_part_along_its_offset_from_the_area_weighted_centre(two_parts, tmp_path):
    parts = load_parts(two_parts)
    assert [name for name, _ in parts] == ["left", "right"]
    # areas 0.06 and 0.54: the whole's centroid is at x = (-0.3 * 0.06 + 0.1 * 0.54) / 0.6 = 0.06
    np.testing.assert_allclose(explode_offsets(parts, 1.0), [[-0.36, 0, 0], [0.04, 0, 0]], atol=1e-9)
    np.testing.assert_allclose(explode_offsets(parts, 0.0), 0.0)
    out = write_view(two_parts, tmp_path / "view.glb", explode=0.5)
    before, after = _centres(two_parts), _centres(out)
    np.testing.assert_allclose(after["left"] - before["left"], [-0.18, 0, 0], atol=1e-6)
    np.testing.assert_allclose(after["right"] - before["right"], [0.02, 0, 0], atol=1e-6)
    assert out.read_bytes() != two_parts.read_bytes()


def test_hidden_parts_leave_the_view_and_move_no_other(two_parts, tmp_path):
    out = write_view(two_parts, tmp_path / "view.glb", explode=1.0, keep=["right"])
    assert [name for name, _ in load_parts(out)] == ["right"]
    np.testing.assert_allclose(_centres(out)["right"] - _centres(two_parts)["right"], [0.04, 0, 0], atol=1e-6)
    assert write_view(two_parts, tmp_path / "none.glb", keep=[]) is None
    assert not (tmp_path / "none.glb").exists()


def test_parts_zip_holds_one_obj_per_part(two_parts, tmp_path):
    with zipfile.ZipFile(parts_zip(two_parts, tmp_path / "parts.zip")) as archive:
        assert sorted(archive.namelist()) == ["left.obj", "right.obj"]
        assert archive.read("left.obj").count(b"\nf ") == 12


@pytest.mark.parametrize(
    "coords, faces",
    [([[0, 0, 0]], 12), ([[0, 0, 0], [1, 0, 0]], 20), ([[1, 1, 1], [1, 2, 1], [2, 2, 1], [3, 3, 3]], 12 * 4 - 8)],
)
def test_voxel_surface_is_the_closed_outward_skin_of_the_voxels(coords, faces):
    resolution = 4
    vertices, tri, owner = voxel_surface(np.asarray(coords), resolution)
    assert len(tri) == faces and owner.max() == len(coords) - 1
    mesh = trimesh.Trimesh(vertices, tri)
    mesh.merge_vertices()
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx(len(coords) / resolution**3)  # positive: faces point outwards
    assert vertices.min() >= -0.5 and vertices.max() <= 0.5


def test_write_parts_splits_a_mesh_by_its_face_labels(tmp_path):
    box = trimesh.creation.box()
    part = (np.arange(12) >= 4).astype(np.int64)
    colours = np.array([[255, 0, 0, 255], [0, 0, 255, 255]], np.uint8)
    out = write_parts(tmp_path / "p.glb", box.vertices, box.faces, part, ["a", "b"], colours)
    assert {name: len(g.faces) for name, g in load_parts(out)} == {"a": 4, "b": 8}
