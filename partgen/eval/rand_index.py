"""Rand index of two labellings of the same elements (faces, points), as the Princeton
Segmentation Benchmark (Chen et al. 2009) scores mesh segmentations.

RI = fraction of element pairs on which two labellings agree (both together or both apart);
the benchmark reports 1 - RI averaged over a mesh's human segmentations, then over meshes.
Computed from the contingency table in O(n log n), never over the n^2 pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def _pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float] | None:
    """(pairs together in both, together in a, together in b, all pairs) from the contingency
    table of two (n,) labellings; None when there are fewer than two elements."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labellings differ in length: {a.size} vs {b.size}")
    n = a.size
    if n < 2:
        return None
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.unique(ai.astype(np.int64) * (bi.max() + 1) + bi, return_counts=True)[1]
    return _pairs(joint), _pairs(np.bincount(ai)), _pairs(np.bincount(bi)), n * (n - 1) / 2


def rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """RI in [0, 1] of two (n,) integer labellings; 1.0 when there are fewer than two elements."""
    counts = _pair_counts(a, b)
    if counts is None:
        return 1.0
    together_both, together_a, together_b, total = counts
    return (total + 2 * together_both - together_a - together_b) / total


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """ARI (Hubert & Arabie 1985) of two (n,) integer labellings: 1 for equal partitions, ~0 for chance.

    As scikit-learn computes it; 1.0 when both labellings are the same trivial partition (one
    cluster, or all singletons), where the formula is 0/0, and for fewer than two elements.
    """
    counts = _pair_counts(a, b)
    if counts is None:
        return 1.0
    together_both, together_a, together_b, total = counts
    expected = together_a * together_b / total
    maximum = (together_a + together_b) / 2
    if maximum == expected:
        return 1.0
    return (together_both - expected) / (maximum - expected)


def rand_index_error(prediction: np.ndarray, references: Sequence[np.ndarray]) -> float:
    """1 - RI of a prediction averaged over reference labellings (the benchmark's per-mesh score)."""
    if not len(references):
        raise ValueError("need at least one reference labelling")
    return float(np.mean([1.0 - rand_index(prediction, ref) for ref in references]))
