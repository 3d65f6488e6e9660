import numpy as np
import pytest

from partgen.eval.geometry import chamfer_distance, f_score, inside_profile, sample_mesh, voxel_iou, voxel_recall


def test_chamfer_and_f_score_of_a_shifted_cloud():
    rng = np.random.default_rng(0)
    a = rng.uniform(-0.5, 0.5, (2000, 3)) * [1, 1, 0]  # a flat square: every point's neighbour moves with it
    assert chamfer_distance(a, a) == 0.0 and f_score(a, a, 1e-6) == 1.0
    b = a + [0, 0, 0.02]
    assert chamfer_distance(a, b) == pytest.approx(0.02)
    assert f_score(a, b, 0.01) == 0.0 and f_score(a, b, 0.03) == 1.0
    with pytest.raises(ValueError, match="empty"):
        chamfer_distance(a, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        f_score(a, np.full((3, 3), np.nan), 0.1)


def test_mesh_samples_lie_on_the_mesh_by_area():
    # two triangles of areas 1/2 and 1/8 in the z = 0 plane
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [2.5, 0, 0], [2, 0.5, 0]], float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    p = sample_mesh(vertices, faces, 10000)
    assert np.all(p[:, 2] == 0)
    big = (p[:, 0] <= 1) & (p[:, 0] + p[:, 1] <= 1 + 1e-9)
    assert big.mean() == pytest.approx(0.8, abs=0.02)
    with pytest.raises(ValueError, match="zero area"):
        sample_mesh(vertices, np.array([[0, 0, 1]]), 10)


def test_voxel_iou_and_recall():
    a = np.array([[0, 0, 0], [1, 2, 3], [4, 5, 6]])
    b = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 1]])
    assert voxel_iou(a, b) == pytest.approx(2 / 5)
    assert voxel_recall(a, b) == pytest.approx(2 / 4)
    assert voxel_iou(np.zeros((0, 3)), np.zeros((0, 3))) == 1.0


def test_inside_profile_counts_queries_and_inside_ones_per_distance_band():
    voxel = 1.0 / 64
    sdf = np.array([-1.5, -0.5, -0.3, 0.2, 0.7, 1.5, 1.5, 3.0, 7.0, 50.0]) * voxel
    inside = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0], bool)
    total, got = inside_profile(inside, sdf, voxel, edges=(-np.inf, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0, 10.0, np.inf))
    assert total.tolist() == [1, 2, 1, 1, 2, 1, 1, 1]
    assert got.tolist() == [1, 2, 1, 0, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="one value per query"):
        inside_profile(inside[:3], sdf, voxel)
