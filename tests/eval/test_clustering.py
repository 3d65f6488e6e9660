"""Clustering per-point embeddings into parts: k-means (k given) and the silhouette choice of k."""

import numpy as np
import pytest
import torch

from partgen.eval.clustering import cluster_embeddings, kmeans, silhouette_score
from partgen.eval.rand_index import rand_index


def blobs(sizes=(120, 70, 33), dim=8, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][: len(sizes)]  # orthonormal: far apart on the sphere
    labels = np.repeat(np.arange(len(sizes)), sizes)
    perm = rng.permutation(len(labels))
    labels = labels[perm]
    return centres[labels] + noise * rng.normal(size=(len(labels), dim)), labels


def test_recovers_three_separated_clusters_exactly():
    x, truth = blobs()
    for num_parts in (3, None):  # given, and chosen automatically
        labels = cluster_embeddings(x, num_parts=num_parts)
        assert labels.dtype == np.int64 and labels.shape == truth.shape
        assert rand_index(labels, truth) == 1.0
        assert len(np.unique(labels)) == 3
        assert np.array_equal(labels, truth)  # canonical ids: largest part first (sizes 120, 70, 33)


def test_chooses_one_part_for_one_blob_and_is_deterministic():
    rng = np.random.default_rng(1)
    one = np.eye(16)[0] + 0.2 * rng.normal(size=(400, 16))
    assert np.unique(cluster_embeddings(one)).tolist() == [0]
    x, _ = blobs(sizes=(50, 50, 50, 50, 50), dim=12, noise=0.15, seed=2)
    a, b = cluster_embeddings(x, seed=3), cluster_embeddings(x, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 5


def test_torch_in_torch_out_and_edge_cases():
    x, truth = blobs()
    labels = cluster_embeddings(torch.from_numpy(x).float(), num_parts=3)
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.int64
    assert np.array_equal(labels.numpy(), truth)
    assert cluster_embeddings(np.zeros((0, 4))).shape == (0,)
    assert cluster_embeddings(np.ones((5, 4)), num_parts=3).tolist() == [0] * 5  # one distinct point
    assert cluster_embeddings(x[:1], num_parts=None).tolist() == [0]
    with pytest.raises(ValueError):
        cluster_embeddings(x[:, 0])
    # max_parts caps the choice; subsampled fitting still labels every point
    assert len(np.unique(cluster_embeddings(x, max_parts=2))) <= 2
    big = cluster_embeddings(np.repeat(x, 10, axis=0), num_parts=3, max_fit_points=500)
    assert np.array_equal(big, np.repeat(truth, 10))


def test_kmeans_and_silhouette_basics():
    x, truth = blobs(noise=0.01)
    labels, centres, inertia = kmeans(x, 3, seed=0)
    assert rand_index(labels, truth) == 1.0 and centres.shape == (3, 8)
    assert inertia < 1.5 * x.size * 0.01**2  # about the noise: n * D * sigma^2
    assert silhouette_score(x, truth) > 0.9
    assert silhouette_score(x, np.zeros(len(x))) == 0.0
    rng = np.random.default_rng(0)
    assert silhouette_score(x, rng.integers(0, 3, len(x))) < 0.1
    with pytest.raises(ValueError):
        kmeans(x[:2], 3)
