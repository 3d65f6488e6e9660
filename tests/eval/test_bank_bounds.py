"""scripts/bank_bounds.py: the bank shape nearest a truth by normal consistency is found."""

import numpy as np
import trimesh

from conftest import load_script


def test_best_of_bank_finds_the_shape_that_matches_the_truth():
    bounds = load_script("bank_bounds")
    shapes = [
        trimesh.creation.icosphere(subdivisions=3),
        trimesh.creation.box(extents=(1.0, 0.5, 0.3)),
        trimesh.creation.cylinder(radius=0.2, height=1.0, sections=32),
    ]
    meshes = [(np.asarray(s.vertices, np.float64), np.asarray(s.faces, np.int64)) for s in shapes]
    screened = [bounds.sampled(v, f, 2000, seed=1) for v, f in meshes]
    # the same box, moved and scaled: normalise_box puts it on the bank's box
    box = shapes[1].copy()
    box.apply_scale(3.0)
    box.apply_translation((5.0, -2.0, 1.0))
    index, score = bounds.best_of_bank((box.vertices, box.faces), screened, meshes, 2000, 5000, top=2)
    assert index == 1 and score > 0.95  # not 1: near an edge the nearest sample can lie on the next face
    sphere = trimesh.creation.icosphere(subdivisions=4)  # a finer sphere than the bank's
    index, score = bounds.best_of_bank((sphere.vertices, sphere.faces), screened, meshes, 2000, 5000, top=3)
    assert index == 0 and 0.9 < score < 1.0
    # a plate is nothing in the bank: its best is well below a match
    plate = trimesh.creation.box(extents=(1.0, 1.0, 0.02))
    _, score = bounds.best_of_bank((plate.vertices, plate.faces), screened, meshes, 2000, 5000, top=3)
    assert score < 0.9
