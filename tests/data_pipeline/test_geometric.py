import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, require_shared
from partgen.data_pipeline.geometric import GeometricConfig, dual_graph, segment_mesh, shape_diameter
from partgen.data_pipeline.parts import face_parts, learned_face_parts, register_learned_segmenter
from partgen.eval.rand_index import rand_index_error


def revolve(profile_z, profile_r, segments=48):
    """Closed surface of revolution about z: rings at (z, r) joined by quads, the ends capped."""
    z = np.asarray(profile_z, float)
    r = np.asarray(profile_r, float)
    theta = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(theta), np.sin(theta)], 1)
    verts = [np.column_stack([ring * ri, np.full(segments, zi)]) for zi, ri in zip(z, r, strict=True)]
    vertices = np.concatenate(verts + [[[0, 0, z[0]]], [[0, 0, z[-1]]]])
    faces = []
    for i in range(len(z) - 1):
        for j in range(segments):
            a, b = i * segments + j, i * segments + (j + 1) % segments
            c, d = a + segments, b + segments
            faces += [[a, b, d], [a, d, c]]
    bottom, top = len(vertices) - 2, len(vertices) - 1
    last = (len(z) - 1) * segments
    for j in range(segments):
        faces.append([bottom, (j + 1) % segments, j])
        faces.append([top, last + j, last + (j + 1) % segments])
    return vertices, np.array(faces)


def dumbbell():
    """Two fat drums joined by a thin neck; ground truth: drum, neck, drum by face height."""
    neck = np.linspace(-1, 1, 12)
    z = np.concatenate([np.linspace(-2, -1, 6), neck, np.linspace(1, 2, 6)])
    r = np.concatenate([np.ones(6), np.full(12, 0.25), np.ones(6)])  # flat rings where drums meet the neck
    vertices, faces = revolve(z, r)
    centre_z = vertices[faces].mean(1)[:, 2]
    truth = np.where(centre_z < -1 + 1e-9, 0, np.where(centre_z > 1 - 1e-9, 2, 1))
    return vertices, faces, truth


def test_dual_graph_of_a_cube_is_convex_and_closed():
    from trimesh.creation import box

    cube = box()
    graph = dual_graph(np.asarray(cube.vertices), np.asarray(cube.faces))
    assert len(graph.pairs) == 18  # 12 triangles x 3 edges / 2
    assert not graph.concave.any()
    folds = graph.one_minus_cos > 0.5  # the 12 cube edges are 90 degree folds; the 6 diagonals flat
    assert folds.sum() == 12
    assert np.allclose(graph.one_minus_cos[~folds], 0, atol=1e-9)


def test_dual_graph_marks_the_neck_creases_concave():
    vertices, faces, truth = dumbbell()
    graph = dual_graph(vertices, faces)
    a, b = graph.pairs.T
    crossing = truth[a] != truth[b]
    assert graph.concave[crossing].all()  # the drum shoulders fold inwards where the neck meets them
    assert graph.concave.mean() < 0.2


def test_shape_diameter_sees_the_thin_neck():
    vertices, faces, truth = dumbbell()
    sdf = shape_diameter(vertices, faces)
    assert np.isfinite(sdf).all()
    assert np.median(sdf[truth == 1]) < 0.4 * np.median(sdf[truth == 0])


@pytest.mark.parametrize("sdf_sigma", [0.3, 0.0])
def test_segments_a_dumbbell_into_drums_and_neck(sdf_sigma):
    vertices, faces, truth = dumbbell()
    labels = segment_mesh(vertices, faces, 3, GeometricConfig(sdf_sigma=sdf_sigma))
    assert len(np.unique(labels)) == 3
    assert rand_index_error(labels, [truth]) < 0.03


def test_automatic_part_count_cuts_along_the_creases():
    vertices, faces, truth = dumbbell()
    labels = segment_mesh(vertices, faces, None)
    assert 3 <= len(np.unique(labels)) <= 8
    # every part lies within one true piece: the neck is cut off at both concave creases
    for part in np.unique(labels):
        assert len(np.unique(truth[labels == part])) == 1


def test_disconnected_pieces_are_separate_parts():
    from trimesh.creation import box

    a, b = box(), box()
    vertices = np.concatenate([a.vertices, b.vertices + [3, 0, 0]])
    faces = np.concatenate([a.faces, b.faces + len(a.vertices)])
    labels = segment_mesh(vertices, faces, None)
    assert len(np.unique(labels)) == 2
    assert len(np.unique(labels[:12])) == 1 and labels[0] != labels[12]


def test_rejects_an_empty_mesh():
    with pytest.raises(ValueError, match="without faces"):
        segment_mesh(np.zeros((3, 3)), np.zeros((0, 3), np.int64))


def test_face_parts_dispatch_and_learned_hook(tmp_path):
    from partgen.data_pipeline.mesh_io import Mesh

    vertices, faces, _ = dumbbell()
    zeros = np.zeros(len(faces), np.int64)
    mesh = Mesh(vertices, faces, zeros, [""], zeros, [""])
    labels, names, source = face_parts(mesh, vertices, "geometric", 3)
    assert source == "geometric" and len(names) == 3 == len(np.unique(labels))
    with pytest.raises(ValueError, match="unknown parts.method"):
        face_parts(mesh, vertices, "magic")
    with pytest.raises(ValueError, match="parts.segmenter=partgen.no_such_module:segment: cannot import it"):
        learned_face_parts(vertices, faces, segmenter="partgen.no_such_module:segment")
    # a registered segmenter is what parts.method=learned calls
    register_learned_segmenter("test:halves", _halves)
    labels, names, source = face_parts(mesh, vertices, "learned", 2, segmenter="test:halves", checkpoint=None)
    assert source == "learned" and names == ["low", "high"]
    assert set(labels[vertices[faces].mean(1)[:, 2] > 0.5]) == {1}


def _halves(vertices, faces, num_parts, checkpoint):
    return (vertices[faces].mean(1)[:, 2] > 0).astype(int), ["low", "high"]


def test_eval_psb_script_prints_the_table_and_writes_json(tmp_path):
    data = require_shared("psb-dev.tar.gz")
    out = tmp_path / "psb.json"
    res = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "eval_psb.py"),
            "--method",
            "geometric",
            "--data",
            str(data),
            "--categories",
            "Plier,Glasses",
            "--limit",
            "1",
            "--workers",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "K-Means (published, all 380)" in res.stdout and "Randomized Cuts" in res.stdout
    result = json.loads(out.read_text())
    assert result["meshes"] == 2 and set(result["categories"]) == {"Plier", "Glasses"}
    # far better than putting every face in one segment (the benchmark's 0.655 baseline)
    assert result["rand_index_error"] < 0.3
    for row in result["meshes_detail"]:
        assert row["parts"] == row["parts_asked"]


def test_eval_psb_learned_with_a_missing_checkpoint_fails_in_one_line(tmp_path):
    # without --checkpoint the bundled segmenter runs (tests/pipelines covers it); a wrong path must
    # stop before any mesh is read, in one line that names it
    data = require_shared("psb-dev.tar.gz")
    script = str(REPO_ROOT / "scripts" / "eval_psb.py")
    missing = tmp_path / "no_such_run"
    args = [sys.executable, script, "--method", "learned", "--data", str(data), "--checkpoint", str(missing)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval_psb:") and str(missing) in lines[0]


def flat_grid(n=16):
    """A flat n x n square of 2 n^2 triangles in z = 0: no crease, no thickness jump anywhere."""
    xs = np.linspace(-1, 1, n + 1)
    gx, gy = np.meshgrid(xs, xs, indexing="ij")
    vertices = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return vertices, faces


def test_face_features_steer_the_cut_where_geometry_is_silent():
    vertices, faces = flat_grid()
    centre = vertices[faces].mean(1)
    # a descriptor that says "left" or "right" but not where the square is thinnest
    left = centre[:, 0] < -0.5
    features = np.where(left[:, None], [1.0, 0.0], [0.0, 1.0])
    cfg = GeometricConfig(sdf_sigma=0.0)
    labels = segment_mesh(vertices, faces, 2, cfg, face_features=features)
    assert rand_index_error(labels, [left.astype(int)]) == 0.0
    # without them the flat square is cut across its middle (the shortest balanced boundary)
    plain = segment_mesh(vertices, faces, 2, cfg)
    assert rand_index_error(plain, [left.astype(int)]) > 0.2
    with pytest.raises(ValueError, match="face_features"):
        segment_mesh(vertices, faces, 2, cfg, face_features=features[:-1])
    with pytest.raises(ValueError, match="face_features"):
        segment_mesh(vertices, faces, 2, cfg, face_features=np.full_like(features, np.nan))
