"""Rand index: equal to pair counting, invariant to relabelling, and the benchmark's baselines on psb-dev."""

import itertools

import numpy as np
import pytest

from conftest import require_shared
from partgen.eval.rand_index import adjusted_rand_index, rand_index, rand_index_error


def brute(a, b):
    pairs = list(itertools.combinations(range(len(a)), 2))
    return np.mean([(a[i] == a[j]) == (b[i] == b[j]) for i, j in pairs])


@pytest.mark.parametrize("seed", range(5))
def test_matches_pair_counting(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 4, 60), rng.integers(0, 7, 60)
    assert rand_index(a, b) == pytest.approx(brute(a, b))


def test_relabelling_and_edge_cases():
    a = np.array([0, 0, 1, 1, 2])
    assert rand_index(a, (a + 5) * 3) == 1.0
    assert rand_index(a, np.zeros(5)) == pytest.approx(brute(a, np.zeros(5)))
    assert rand_index(np.array([3]), np.array([9])) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        rand_index(a, a[:3])
    assert rand_index_error(a, [a, np.arange(5)]) == pytest.approx(0.5 * (1 - brute(a, np.arange(5))))


def test_psb_dev_baselines_match_the_benchmark():
    """The benchmark's reference errors on its full set: one segment 0.655, one face per segment
    0.345, humans against each other 0.103 (psb-dev is 228 of its 380 meshes, so close, not equal)."""
    from partgen.data_pipeline.psb import PSBDataset

    ds = PSBDataset(require_shared("psb-dev.tar.gz"))
    one, every, human = [], [], []
    for i in range(0, len(ds), 12):  # one mesh per category keeps the test quick
        m = ds[i]
        segs = m.segmentations
        one.append(rand_index_error(np.zeros(len(m.faces), int), segs))
        every.append(rand_index_error(np.arange(len(m.faces)), segs))
        human.append(
            np.mean([rand_index_error(s, [r for j, r in enumerate(segs) if j != k]) for k, s in enumerate(segs)])
        )
    assert abs(np.mean(one) - 0.655) < 0.06
    assert abs(np.mean(every) - 0.345) < 0.06
    assert abs(np.mean(human) - 0.103) < 0.04


def test_adjusted_rand_index():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(a, a) == pytest.approx(1.0)
    assert adjusted_rand_index(a, 5 - a) == pytest.approx(1.0)  # label names do not matter
    assert adjusted_rand_index(np.zeros(6), np.zeros(6)) == 1.0
    # scikit-learn's adjusted_rand_score([0, 0, 1, 1], [0, 1, 0, 1]) = -0.5
    assert adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(-0.5)
    # and adjusted_rand_score([0, 0, 1, 2], [0, 0, 1, 1]) = 0.5714285714285715
    assert adjusted_rand_index(np.array([0, 0, 1, 2]), np.array([0, 0, 1, 1])) == pytest.approx(4 / 7)
    with pytest.raises(ValueError, match="length"):
        adjusted_rand_index(np.zeros(3), np.zeros(4))
