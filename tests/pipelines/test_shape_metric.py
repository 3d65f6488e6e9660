"""The reference bank's learned retrieval projection (partgen.pipelines.shape_metric): 3D measures
between meshes, and a projection that makes image features retrieve by shape, not by what else the
images share."""

import numpy as np
import pytest
import torch
import trimesh

from partgen.pipelines.references import ReferenceBank, ReferenceMesh
from partgen.pipelines.shape_metric import fit_projection, project, shape_similarities


def test_shape_measures_see_shape_not_size_or_place():
    box = trimesh.creation.box((0.6, 0.3, 0.2))
    moved = trimesh.creation.box((1.2, 0.6, 0.4))  # the same box twice the size, elsewhere
    moved.apply_translation((3.0, -1.0, 0.5))
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    flat = trimesh.creation.box((0.6, 0.02, 0.6))  # a slab
    chamfer, nc = shape_similarities([box, moved, sphere, (flat.vertices, flat.faces)], points=512)
    assert chamfer.shape == nc.shape == (4, 4)
    assert np.allclose(chamfer, chamfer.T) and np.allclose(nc, nc.T)
    assert chamfer[0, 1] < 0.03 and nc[0, 1] > 0.9  # normalised to their boxes, the two boxes agree
    assert chamfer[0, 2] > 3 * chamfer[0, 1] and nc[0, 2] < nc[0, 1] - 0.1
    assert np.argsort(chamfer[3])[1] == 0  # the slab is nearer the flat box than the sphere
    with pytest.raises(ValueError, match="mesh 1 has no faces"):
        shape_similarities([box, (np.zeros((3, 3)), np.zeros((0, 3), np.int64))])


def synthetic_features(
    count: int, rng: np.random.Generator, colours: tuple[int, ...]
) -> tuple[torch.Tensor, np.ndarray]:
    """Unit features (count, 16) of images of 4 shape kinds, and the kinds: a weak kind signal in 8
    dimensions and a strong nuisance (say the colour) in 8 others; kind k is drawn in the colours
    (k + c) % 4 for c in `colours` (the kinds' and colours' values are fixed; rng draws the rest)."""
    prototypes = np.random.default_rng(42)
    signal, nuisance = prototypes.normal(size=(4, 8)), prototypes.normal(size=(4, 8)) * 3
    kind = rng.integers(0, 4, count)
    colour = (kind + np.asarray(colours)[rng.integers(0, len(colours), count)]) % 4
    x = np.concatenate([signal[kind], nuisance[colour]], 1) + rng.normal(size=(count, 16)) * 0.2
    return torch.nn.functional.normalize(torch.tensor(x, dtype=torch.float32), dim=1), kind


def nearest_same_kind(features: torch.Tensor, kind: np.ndarray, keys: torch.Tensor, key_kind: np.ndarray) -> float:
    similarity = features @ keys.T
    return float(np.mean(key_kind[similarity.argmax(1).numpy()] == kind))


def test_the_projection_retrieves_by_shape_on_images_it_did_not_see():
    rng = np.random.default_rng(0)
    features, kind = synthetic_features(80, rng, (0, 1))  # kind k in colours k and k + 1
    same = kind[:, None] == kind[None]
    chamfer = np.where(same, 0.02, 0.3).astype(np.float32)
    nc = np.where(same, 0.9, 0.5).astype(np.float32)
    projection = fit_projection(features, chamfer, nc, dim=8, steps=400, lr=1e-2, seed=0)
    assert projection.shape == (16, 8)
    # new images of the kinds in colours the bank never shows them in: by the plain features each
    # finds an icon of its colour, of another kind; through the projection, one of its kind
    queries, query_kind = synthetic_features(40, np.random.default_rng(1), (2, 3))
    plain = nearest_same_kind(queries, query_kind, features, kind)
    projected = nearest_same_kind(project(queries, projection), query_kind, project(features, projection), kind)
    assert plain < 0.2 and projected > 0.9
    again = fit_projection(features, chamfer, nc, dim=8, steps=400, lr=1e-2, seed=0)
    assert torch.equal(projection, again)  # seeded
    with pytest.raises(ValueError, match="shape measures"):
        fit_projection(features, chamfer[:10, :10], nc, dim=8)


def test_a_bank_keeps_and_retrieves_through_its_projection(tmp_path):
    rng = np.random.default_rng(0)
    features, _ = synthetic_features(12, rng, (0,))
    box = trimesh.creation.box((0.5, 0.5, 0.5))
    meshes = [ReferenceMesh(box.vertices.astype(np.float32), box.faces, np.zeros(12, np.int64), ["body"])] * 12
    keys = [f"shape{i}" for i in range(12)]
    bank = ReferenceBank(keys, torch.zeros(12, 4, 7), features, torch.zeros(12, 5), meshes, (1.0, 1.0))
    projection = torch.tensor(rng.normal(size=(16, 4)), dtype=torch.float32)
    projected = bank.with_projection(projection)
    keys_seen = project(features, projection)
    assert projected.scales[0] == pytest.approx(float(torch.median(1 - keys_seen @ keys_seen.T)))
    query = features[3] + 0.01
    expected = (1 - keys_seen @ project(query, projection)) / projected.scales[0]
    assert torch.allclose(projected.distances(query, torch.zeros(5)), expected, atol=1e-6)
    back = ReferenceBank.load(projected.save(tmp_path / "bank.safetensors"))
    assert torch.allclose(back.projection, projection) and back.scales == projected.scales
    assert torch.allclose(back.distances(query, torch.zeros(5)), expected, atol=1e-3)  # embeddings kept in fp16
    assert ReferenceBank.load(bank.save(tmp_path / "plain.safetensors")).projection is None
    with pytest.raises(ValueError, match="projection must be"):
        bank.with_projection(torch.zeros(5, 4))
