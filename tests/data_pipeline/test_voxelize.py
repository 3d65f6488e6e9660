"""Exact surface voxels: equal to a brute-force overlap test, bounded by surface samples, parts voted."""

import numpy as np
import pytest
import trimesh

from partgen.data_pipeline.voxelize import _overlaps, voxelize_surface


def sphere():
    m = trimesh.creation.icosphere(subdivisions=2)
    return m.vertices / (2 * np.abs(m.vertices).max()) * 0.98, m.faces


def brute_force(v, f, r):
    """Every voxel whose closed cube meets a triangle's bounding box, tested without splitting."""
    g = (v + 0.5) * r
    hits = set()
    for tri in g[f]:
        lo = np.clip(np.ceil(tri.min(0)) - 1, 0, r - 1).astype(int)
        hi = np.clip(np.floor(tri.max(0)), 0, r - 1).astype(int)
        axes = [np.arange(lo[i], hi[i] + 1) for i in range(3)]
        cand = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        c = cand + 0.5
        ok = _overlaps(*(np.broadcast_to(tri[i], c.shape) - c for i in range(3)))
        hits |= set(map(tuple, cand[ok]))
    return hits


IMPLS = ["native", "numpy"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("r", [4, 13, 32])
def test_equals_brute_force_overlap(r, impl):
    v, f = sphere()
    got = voxelize_surface(v, f, r, impl=impl)
    assert set(map(tuple, got.coords)) == brute_force(v, f, r)


@pytest.mark.parametrize("impl", IMPLS)
def test_big_slanted_and_grid_aligned_triangles_are_exact(impl):
    v = np.array([[-0.5, -0.5, -0.5], [0.5, 0.5, -0.2], [-0.3, 0.5, 0.5], [-0.25, -0.25, 0.0], [0.25, -0.25, 0.0]])
    f = np.array([[0, 1, 2], [3, 4, 2], [0, 3, 4]])  # a big slanted one, and ones through grid planes
    for r in (8, 40):
        got = voxelize_surface(v, f, r, impl=impl)
        assert set(map(tuple, got.coords)) == brute_force(v, f, r)


def segment_voxels(a, b, r):
    """Voxels a segment meets (slab test), the exact answer for a zero-area triangle."""
    ga, gb = (a + 0.5) * r, (b + 0.5) * r
    d = gb - ga
    hits = set()
    for vox in np.stack(np.meshgrid(*[np.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3):
        t0, t1 = 0.0, 1.0
        for ax in range(3):
            ta, tb = (vox[ax] - ga[ax]) / d[ax], (vox[ax] + 1 - ga[ax]) / d[ax]
            t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
        if t0 <= t1:
            hits.add(tuple(vox))
    return hits


@pytest.mark.parametrize("impl", IMPLS)
def test_degenerate_diagonal_triangle_walks_the_segment(impl):
    a, b = np.array([-0.49, -0.47, -0.43]), np.array([0.48, 0.41, 0.497])  # off the grid lines
    v = np.stack([a, b, a + 0.6 * (b - a)])  # collinear: zero area
    got = voxelize_surface(v, np.array([[0, 1, 2]]), 32, impl=impl)
    assert set(map(tuple, got.coords)) == segment_voxels(a, b, 32)
    assert len(got.coords) < 200  # a line of voxels, not the box


def test_native_and_numpy_agree_on_a_real_shape():
    mesh = trimesh.creation.torus(0.3, 0.1)
    v = mesh.vertices / (2 * np.abs(mesh.vertices).max())
    part = (mesh.triangles_center[:, 0] > 0).astype(int)
    a = voxelize_surface(v, mesh.faces, 128, face_part=part, impl="native")
    b = voxelize_surface(v, mesh.faces, 128, face_part=part, impl="numpy")
    sa, sb = set(map(tuple, a.coords)), set(map(tuple, b.coords))
    # they may only disagree where a triangle merely touches a cube (this torus has vertices on
    # grid lines; the numpy twin's split midpoints round differently there)
    assert len(sa ^ sb) <= 1e-3 * len(sa)
    common = np.array(sorted(sa & sb))
    pa = dict(zip(map(tuple, a.coords), a.part, strict=True))
    pb = dict(zip(map(tuple, b.coords), b.part, strict=True))
    agree = np.mean([pa[tuple(c)] == pb[tuple(c)] for c in common])
    assert agree > 0.99  # votes weigh split pieces vs shared areas slightly differently


def test_face_on_a_grid_plane_marks_both_sides():
    v = np.array([[-0.3, -0.3, 0.0], [0.3, -0.3, 0.0], [0.0, 0.3, 0.0]])  # z = 0 is grid plane 4 at R=8
    got = voxelize_surface(v, np.array([[0, 1, 2]]), 8)
    assert set(got.coords[:, 2].tolist()) == {3, 4}


@pytest.mark.parametrize("r", [16, 64])
def test_contains_every_surface_sample_and_stays_near_the_surface(r):
    v, f = sphere()
    mesh = trimesh.Trimesh(v, f, process=False)
    got = voxelize_surface(v, f, r)
    ours = set(map(tuple, got.coords))
    pts, _ = trimesh.sample.sample_surface(mesh, 50000, seed=0)
    idx = np.clip(np.floor((pts + 0.5) * r), 0, r - 1).astype(int)
    assert all(tuple(i) in ours for i in idx)
    centres = (got.coords + 0.5) / r - 0.5
    dist = np.abs(trimesh.proximity.signed_distance(mesh, centres[::7]))
    assert (dist * r).max() <= np.sqrt(3) / 2 + 1e-9  # a touched voxel's centre is within half a diagonal
    assert np.array_equal(got.coords, np.unique(got.coords, axis=0))  # sorted, unique


@pytest.mark.parametrize("impl", IMPLS)
def test_parts_follow_area_majority(impl):
    # two unit squares in the plane z=0 side by side; part 1's square is split into many thin slivers
    v = np.array([[-0.5, -0.5, 0], [0, -0.5, 0], [0, 0.5, 0], [-0.5, 0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0]]) * 0.99
    f = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]])
    got = voxelize_surface(v, f, 8, face_part=np.array([0, 0, 1, 1]), impl=impl)
    x = got.coords[:, 0]
    assert (got.part[x <= 2] == 0).all() and (got.part[x >= 5] == 1).all()
    assert set(np.unique(got.part)) == {0, 1}


def test_empty_and_bad_resolution():
    assert len(voxelize_surface(np.zeros((0, 3)), np.zeros((0, 3), int), 8).coords) == 0
    with pytest.raises(ValueError, match="resolution"):
        voxelize_surface(np.zeros((3, 3)), np.array([[0, 1, 2]]), 0)
