"""Winding numbers, occupancy and distances: exact on closed shapes, robust on open and doubled shells."""

import numpy as np
import pytest
import trimesh

from partgen.data_pipeline import inside
from partgen.data_pipeline.inside import occupancy, signed_distance, unsigned_distance, winding_number


def cube(subdivisions=0):
    m = trimesh.creation.box(extents=(1.0, 1.0, 1.0))  # [-0.5, 0.5]^3, outward faces
    for _ in range(subdivisions):
        m = m.subdivide()  # 12 * 4^k triangles: the fast path then approximates whole BVH nodes
    return np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64)


def sphere(subdivisions=4, radius=0.4):
    m = trimesh.creation.icosphere(subdivisions=subdivisions)  # vertices on the unit sphere, outward faces
    return np.asarray(m.vertices) * radius, np.asarray(m.faces, np.int64)


def inside_and_outside_of_cube(n, margin, seed=0):
    rng = np.random.default_rng(seed)
    qin = rng.uniform(-0.5 + margin, 0.5 - margin, (n, 3))
    qout = rng.uniform(-1.5, 1.5, (2 * n, 3))
    return qin, qout[np.abs(qout).max(1) > 0.5 + margin][:n]


# (impl, beta, tolerance): the exact sums agree with 0/1 to rounding, the fast one to its bound
MODES = [("native", 0.0, 1e-9), ("native", 2.0, 1e-2), ("numpy", 0.0, 1e-9)]


@pytest.mark.parametrize(("impl", "beta", "tol"), MODES)
def test_closed_cube_is_one_inside_zero_outside(impl, beta, tol):
    v, f = cube(subdivisions=3)
    assert len(f) == 768
    qin, qout = inside_and_outside_of_cube(300, margin=0.02)
    assert len(qout) == 300
    np.testing.assert_allclose(winding_number(v, f, qin, beta=beta, impl=impl), 1.0, atol=tol)
    np.testing.assert_allclose(winding_number(v, f, qout, beta=beta, impl=impl), 0.0, atol=tol)


@pytest.mark.parametrize(("impl", "beta", "tol"), MODES)
def test_closed_sphere_is_one_inside_zero_outside(impl, beta, tol):
    v, f = sphere(subdivisions=2 if impl == "numpy" else 4)
    rng = np.random.default_rng(1)
    q = rng.uniform(-0.8, 0.8, (1000, 3))
    r = np.linalg.norm(q, axis=1)
    q, r = q[np.abs(r - 0.4) > 0.05], r[np.abs(r - 0.4) > 0.05]  # clear of the facets' sagitta
    w = winding_number(v, f, q, beta=beta, impl=impl)
    np.testing.assert_allclose(w, (r < 0.4).astype(float), atol=tol)
    assert occupancy(v, f, q, impl=impl).tolist() == (r < 0.4).tolist()


def test_inward_faces_give_minus_one_and_occupancy_still_holds():
    v, f = sphere()
    q = np.array([[0.0, 0.0, 0.0], [0.1, -0.2, 0.15], [0.9, 0.0, 0.0]])
    w = winding_number(v, f[:, ::-1], q)
    np.testing.assert_allclose(w, [-1, -1, 0], atol=1e-2)
    assert occupancy(v, f[:, ::-1], q).tolist() == [True, True, False]


def test_native_exact_matches_numpy_on_a_soup_and_near_the_surface():
    rng = np.random.default_rng(2)
    v = rng.uniform(-0.5, 0.5, (60, 3))
    f = rng.integers(0, 60, (97, 3))  # a random soup: intersecting, inconsistent, some repeated corners
    vs, fs = sphere(subdivisions=2)
    q = np.concatenate([rng.uniform(-0.7, 0.7, (300, 3)), vs[fs].mean(1) * (1 + rng.normal(0, 1e-3, (320, 1)))])
    for verts, faces in ((v, f), (vs, fs)):
        a = winding_number(verts, faces, q, beta=0, impl="native")
        b = winding_number(verts, faces, q, impl="numpy")
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert np.abs(winding_number(v, f, q, beta=0)).max() > 0.1  # the soup is not trivially empty


def test_fast_approximation_is_within_1e_2_of_exact_and_improves_with_beta():
    v, f = sphere(subdivisions=4)  # 5120 faces
    assert len(f) == 5120
    q = np.random.default_rng(3).uniform(-0.5, 0.5, (3000, 3))
    exact = winding_number(v, f, q, beta=0, impl="native")
    err = {beta: np.abs(winding_number(v, f, q, beta=beta, impl="native") - exact).max() for beta in (1.5, 2, 3)}
    assert err[2] < 1e-2
    assert err[3] < err[2] < err[1.5]
    # order 3 (the default, Barill et al.'s) beats the bare dipole at the same beta
    dipole = np.abs(winding_number(v, f, q, beta=2, order=1, impl="native") - exact).max()
    assert err[2] < dipole / 3


def test_open_sphere_still_classifies_the_inside():
    v, f = sphere(subdivisions=4, radius=1.0)
    cap = v[f].mean(1)[:, 2] > 0.9  # a hole of ~5% of the solid angle at the north pole
    open_f = f[~cap]
    assert 0 < cap.sum() < 0.08 * len(f)
    rng = np.random.default_rng(4)
    deep = rng.normal(size=(200, 3))
    deep *= rng.uniform(0, 0.5, (200, 1)) / np.linalg.norm(deep, axis=1, keepdims=True)
    w = winding_number(v, open_f, deep)
    assert (w > 0.8).all() and (w < 0.99).all()  # still inside, and the hole is seen
    # the solid angles add: the open shell plus the removed cap is the closed sphere
    w_cap = winding_number(v, f[cap], deep, beta=0)
    np.testing.assert_allclose(w + w_cap, 1.0, atol=1e-2)
    assert occupancy(v, open_f, deep).all()
    far = np.array([[0.0, 0.0, 1.3], [1.5, 0.0, 0.0], [0.0, -2.0, 0.5]])  # above the hole and elsewhere outside
    assert not occupancy(v, open_f, far).any()


def test_duplicated_shell_counts_twice_and_stays_occupied():
    v, f = sphere(subdivisions=3)
    q = np.array([[0.0, 0.0, 0.0], [0.2, 0.1, -0.1], [0.6, 0.0, 0.0]])
    twice = np.concatenate([f, f])
    np.testing.assert_allclose(winding_number(v, twice, q), [2, 2, 0], atol=2e-2)
    assert occupancy(v, twice, q).tolist() == [True, True, False]
    # the known limit: a shell duplicated with opposite orientation cancels to 0 (documented, not fixed)
    np.testing.assert_allclose(winding_number(v, np.concatenate([f, f[:, ::-1]]), q), 0, atol=2e-2)


@pytest.mark.parametrize("impl", ["native", "numpy"])
def test_queries_exactly_on_the_surface_are_finite(impl):
    v, f = cube()
    on_faces = v[f].mean(1)  # centroids lie on the triangles
    centres = np.array([[0.5, 0, 0], [0, -0.5, 0], [0, 0, 0.5]])  # face centres lie on the diagonal edges
    w = winding_number(v, f, np.concatenate([v, on_faces, centres]), beta=0, impl=impl)
    assert np.isfinite(w).all()
    assert ((w > -1e-9) & (w < 1 + 1e-9)).all()
    # a point on a flat face sees the rest of the closed cube as half the sphere
    np.testing.assert_allclose(w[len(v) :], 0.5, atol=1e-9)
    if impl == "native":  # the fast path opens every node whose sphere holds the query: finite too
        vs, fs = cube(subdivisions=3)
        w = winding_number(vs, fs, np.concatenate([vs, vs[fs].mean(1)]), beta=2.0, impl=impl)
        assert np.isfinite(w).all() and ((w > -0.02) & (w < 1.02)).all()


def test_signed_distance_of_a_sphere_is_radius_offset():
    r = 0.4
    v, f = sphere(subdivisions=4, radius=r)
    # the inscribed polyhedron lies within `gap` of the sphere (its faces' planes dip below r by at most that)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    gap = r - np.abs((n * v[f[:, 0]]).sum(1) / np.linalg.norm(n, axis=1)).min()
    assert 0 < gap < 2e-3
    q = np.random.default_rng(5).uniform(-0.5, 0.5, (2000, 3))
    truth = np.linalg.norm(q, axis=1) - r
    sd = signed_distance(v, f, q)
    np.testing.assert_allclose(sd, truth, atol=gap + 1e-5, rtol=0)
    assert (sd < 0).sum() > 500  # both signs are exercised
    t = 0.05
    tsdf = signed_distance(v, f, q, truncation=t)
    np.testing.assert_array_equal(tsdf, np.clip(sd, -t, t))
    assert (tsdf == t).any() and (tsdf == -t).any()


def brute_force_distance(v, f, q):
    """Independent reference: trimesh's closest point on each triangle (Ericson's regions), minimum over all."""
    tri = v[f]  # (F, 3, 3)
    out = np.empty(len(q))
    for i, p in enumerate(q):
        closest = trimesh.triangles.closest_point(tri, np.repeat(p[None], len(tri), 0))
        out[i] = np.linalg.norm(closest - p, axis=1).min()
    return out


@pytest.mark.parametrize("impl", ["open3d", "numpy"])
def test_unsigned_distance_matches_brute_force_on_a_soup(impl):
    rng = np.random.default_rng(6)
    v = rng.uniform(-0.5, 0.5, (30, 3))
    f = np.stack([rng.choice(30, 3, replace=False) for _ in range(41)])  # 41 random, non-degenerate triangles
    q = np.concatenate([rng.uniform(-0.8, 0.8, (150, 3)), v[f].mean(1)[:20] + rng.normal(0, 0.01, (20, 3))])
    got = unsigned_distance(v, f, q, impl=impl)
    np.testing.assert_allclose(got, brute_force_distance(v, f, q), atol=2e-6 if impl == "open3d" else 1e-12, rtol=0)


@pytest.mark.parametrize("impl", ["open3d", "numpy"])
def test_unsigned_distance_to_degenerate_triangles(impl):
    v = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [5, 5, 5]])
    f = np.array([[0, 1, 2], [3, 3, 3]])  # a segment from 0 to 2 along x, and a single point
    q = np.array([[0.5, 1.0, 0.0], [3.0, 0.0, 0.0], [5.0, 5.0, 6.5], [1.5, 0.0, 0.0]])
    np.testing.assert_allclose(unsigned_distance(v, f, q, impl=impl), [1.0, 1.0, 1.5, 0.0], atol=1e-6)
    assert np.isfinite(winding_number(v, f, q, beta=0)).all()
    assert np.abs(winding_number(v, f, q)).max() < 1e-12  # zero-area triangles subtend nothing


def test_threads_and_empty_queries():
    v, f = sphere(subdivisions=3)
    q = np.random.default_rng(7).uniform(-0.5, 0.5, (257, 3))
    np.testing.assert_array_equal(winding_number(v, f, q, threads=1), winding_number(v, f, q, threads=2))
    assert winding_number(v, f, np.zeros((0, 3))).shape == (0,)
    assert signed_distance(v, f, np.zeros((0, 3))).shape == (0,)


def test_numpy_fallback_when_the_native_library_is_missing(monkeypatch):
    v, f = sphere(subdivisions=1)
    q = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    monkeypatch.setattr(inside, "_native_library", lambda: (None, "PARTGEN_NO_NATIVE is set"))
    np.testing.assert_allclose(winding_number(v, f, q), [1, 0], atol=1e-9)
    with pytest.raises(RuntimeError, match="PARTGEN_NO_NATIVE"):
        winding_number(v, f, q, impl="native")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda v, f, q: (v, f[:0], q), "empty mesh"),
        (lambda v, f, q: (v[:0], f, q), "vertices is empty"),
        (lambda v, f, q: (v, f, np.vstack([q, [[np.nan, 0, 0]]])), "queries hold NaN"),
        (lambda v, f, q: (np.vstack([v, [[0, np.inf, 0]]]), f, q), "vertices hold NaN or inf"),
        (lambda v, f, q: (v, np.vstack([f, [[0, 1, len(v)]]]), q), "face indices outside"),
        (lambda v, f, q: (v, np.vstack([f, [[0, -1, 2]]]), q), "face indices outside"),
        (lambda v, f, q: (v, f.astype(float), q), "faces must hold integers"),
        (lambda v, f, q: (v, f, q[:, :2]), r"queries must have shape \(N, 3\)"),
        (lambda v, f, q: (v, f[:, :2], q), r"faces must have shape \(F, 3\)"),
    ],
)
@pytest.mark.parametrize("fn", [winding_number, unsigned_distance, signed_distance])
def test_bad_input_names_the_problem(fn, change, match):
    v, f = cube()
    q = np.zeros((4, 3))
    with pytest.raises(ValueError, match=match):
        fn(*change(v, f, q))


def test_bad_parameters_name_the_problem():
    v, f = cube()
    q = np.zeros((2, 3))
    with pytest.raises(ValueError, match="beta must be 0"):
        winding_number(v, f, q, beta=0.5)
    with pytest.raises(ValueError, match="order must be"):
        winding_number(v, f, q, order=4)
    with pytest.raises(ValueError, match="truncation must be > 0"):
        signed_distance(v, f, q, truncation=0.0)


def test_block_sdf_gives_each_voxel_its_sub_grid_of_signed_distances():
    from partgen.data_pipeline.samples import block_sdf
    from partgen.data_pipeline.voxelize import voxelize_surface

    r, res, s = 0.3, 16, 4
    v, f = sphere(subdivisions=4, radius=r)
    coords = voxelize_surface(v, f, res).coords
    values = block_sdf(v, f, coords, res, subdiv=s)
    assert values.shape == (len(coords), s + 1, s + 1, s + 1) and values.dtype == np.float32
    offsets = np.stack(np.meshgrid(*(np.arange(s + 1),) * 3, indexing="ij"), -1)
    points = -0.5 + (coords[:, None, None, None, :] * s + offsets) / (res * s)
    truth = np.clip((np.linalg.norm(points, axis=-1) - r) * res, -2.0, 2.0)  # voxel units
    np.testing.assert_allclose(values, truth, atol=3e-3 * res)  # the polyhedron's gap, in voxel units
    # a voxel the surface crosses has both signs among its corners; shared corners agree exactly
    crossed = (values.reshape(len(coords), -1) < 0).any(1) & (values.reshape(len(coords), -1) > 0).any(1)
    assert crossed.mean() > 0.9
    key = {tuple(c): i for i, c in enumerate(coords.tolist())}
    pairs = [(i, key[(a + 1, b, c)]) for i, (a, b, c) in enumerate(coords.tolist()) if (a + 1, b, c) in key]
    assert pairs and all(np.array_equal(values[i, -1], values[j, 0]) for i, j in pairs)


def test_block_sdf_sheet_meshes_a_single_sided_wall_and_keeps_a_solid_in_place():
    """A single-sided square (a pane: no inside) has no sign change in its plain distances, so it
    meshes to nothing; with `sheet` it becomes a closed shell about 2 x sheet thick round the square.
    A solid's surface moves out by at most `sheet`, and a voxel the moved surface would leave empty
    keeps its plain distances."""
    from partgen.data_pipeline.samples import block_sdf
    from partgen.data_pipeline.voxelize import voxelize_surface
    from partgen.models.slat_vae import blocks_to_mesh

    res, s, sheet = 16, 4, 0.3
    # the pane mid-way through a layer of voxels, so both sides of its shell lie in the active voxels
    pane_v = np.array([[-0.3, -0.3, 0.031], [0.3, -0.3, 0.031], [0.3, 0.3, 0.031], [-0.3, 0.3, 0.031]])
    pane_f = np.array([[0, 1, 2], [0, 2, 3]])
    coords = voxelize_surface(pane_v, pane_f, res).coords
    plain = block_sdf(pane_v, pane_f, coords, res, s)
    assert (plain >= 0).all() and len(blocks_to_mesh(coords, plain, res)[1]) == 0
    shell_v, shell_f = blocks_to_mesh(coords, block_sdf(pane_v, pane_f, coords, res, s, sheet=sheet), res)
    mesh = trimesh.Trimesh(shell_v, shell_f)
    assert abs(mesh.area / (2 * 0.6 * 0.6) - 1) < 0.15  # both sides of the pane
    assert np.abs(shell_v[:, 2] - 0.031).max() <= (sheet + 0.25 / s) / res  # within sheet (+ a sub-cell's slack)
    assert np.abs(shell_v[:, :2]).max() <= 0.3 + (sheet + 0.25 / s) / res

    v, f = sphere(subdivisions=4, radius=0.3)
    coords = voxelize_surface(v, f, res).coords
    plain, shell = (block_sdf(v, f, coords, res, s, sheet=t) for t in (0.0, sheet))
    moved = shell != plain
    assert moved.any() and (shell <= plain).all() and (plain[moved] - shell[moved] <= sheet + 1e-6).all()
    radius = np.linalg.norm(blocks_to_mesh(coords, shell, res)[0], axis=1)
    assert 0.3 - 0.01 < radius.mean() < 0.3 + sheet / res + 0.01
    # a voxel whose own corners lie outside within `sheet` would be emptied by the shell: kept plain
    flat = plain.reshape(len(coords), -1)
    emptied = (flat.max(1) <= sheet) & (flat.max(1) > 0) & (flat.min(1) <= 0)
    assert emptied.any() and np.array_equal(shell[emptied], plain[emptied])
    with pytest.raises(ValueError, match="sheet must be in"):
        block_sdf(v, f, coords, res, s, sheet=1.5)
