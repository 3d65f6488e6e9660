"""Per-point embeddings -> part labels: k-means (k-means++ init, restarts) with k given or chosen.

Legend: n points, D embedding channels, k clusters.

Model-agnostic and numpy-only, so it sits in eval, the layer both train (validation: cluster,
then score with the Rand index) and pipelines (the learned annotator behind parts.method=learned)
may import; train.losses makes the embeddings, this reads them.

With num_parts=None, k is the one in 2..max_parts whose k-means partition has the highest mean
silhouette (Rousseeuw 1987) on a fixed subsample, and 1 when even that one stays under
min_silhouette (0.25: "no substantial structure", Kaufman & Rousseeuw 1990). Why silhouette
rather than a mean-shift bandwidth or an agglomerative cut on cosine distance: those need a
distance threshold tied to how tightly a given model packs its parts (its temperature, its
margins), while the silhouette compares the within-part and between-part distances of the
embedding itself, so one default serves every checkpoint; and it reuses the k-means that the
known-k case needs anyway. It is O(m^2) in the subsample size m (1024 points: 1M distances).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _sq_dist(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n, k) squared Euclidean distances, clipped at 0 against rounding."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; 2 + log k trials per centre, as scikit-learn)."""
    n = len(x)
    trials = 2 + int(math.log(k))
    centers = [x[rng.integers(n)]]
    closest = _sq_dist(x, centers[0][None])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: repeat one (its cluster ends up empty and is reseeded)
            centers.append(x[rng.integers(n)])
            continue
        cand = np.searchsorted(np.cumsum(closest), rng.uniform(0, total, trials))
        cand = np.minimum(cand, n - 1)
        cand_closest = np.minimum(closest[None, :], _sq_dist(x, x[cand]).T)  # (trials, n)
        best = int(np.argmin(cand_closest.sum(1)))
        centers.append(x[cand[best]])
        closest = cand_closest[best]
    return np.stack(centers)


def kmeans(
    x: np.ndarray, k: int, seed: int = 0, n_init: int = 4, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd's k-means from k-means++ seeds, best of n_init restarts (each seeded by (seed, restart)).

    x: (n, D) float. Returns labels (n,) int64, centres (k, D) float64, inertia (sum of squared
    distances). Iterates until no label changes (or max_iter); an emptied cluster is reseeded at
    the point farthest from its centre.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    xx = (x * x).sum(1)  # (n,)
    rows = np.arange(n)
    best = None
    for restart in range(n_init):
        rng = np.random.default_rng([seed, restart])
        centers = _kmeans_pp(x, k, rng)
        labels = None
        for _ in range(max_iter):
            d = xx[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(1)[None, :]  # (n, k)
            new_labels = d.argmin(1)
            if labels is not None and np.array_equal(new_labels, labels):
                break
            labels = new_labels
            count = np.bincount(labels, minlength=k)
            for c in np.nonzero(count == 0)[0]:
                far = int(d[rows, labels].argmax())
                labels[far] = c
                count = np.bincount(labels, minlength=k)
            onehot = np.zeros((n, k))
            onehot[rows, labels] = 1.0
            centers = (onehot.T @ x) / count[:, None]  # (k, D)
        d = np.maximum(xx[:, None] - 2.0 * x @ centers.T + (centers * centers).sum(1)[None, :], 0.0)
        labels = d.argmin(1)
        inertia = float(d[rows, labels].sum())
        if best is None or inertia < best[2]:
            best = (labels.astype(np.int64), centers, inertia)
    return best


def silhouette_score(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Euclidean) of (n, D) points under (n,) labels; 0 for a point alone in its
    cluster, and 0 overall when there are fewer than 2 clusters. O(n^2) memory: subsample first."""
    x = np.asarray(x, dtype=np.float64)
    _, labels = np.unique(labels, return_inverse=True)
    k = labels.max() + 1 if len(labels) else 0
    if k < 2:
        return 0.0
    dist = np.sqrt(_sq_dist(x, x))  # (n, n)
    count = np.bincount(labels, minlength=k).astype(np.float64)
    onehot = np.zeros((len(x), k))
    onehot[np.arange(len(x)), labels] = 1.0
    sums = dist @ onehot  # (n, k): sums[i, c] = sum of distances from i to the points of cluster c
    own = count[labels]
    a = sums[np.arange(len(x)), labels] / np.maximum(own - 1, 1)
    mean_other = sums / count[None, :]
    mean_other[np.arange(len(x)), labels] = np.inf
    b = mean_other.min(1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters by decreasing size (ties: first appearance), so equal partitions read equal."""
    ids, first, count = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -count))
    remap = np.empty(ids.max() + 1 if len(ids) else 0, dtype=np.int64)
    remap[ids[order]] = np.arange(len(ids))
    return remap[labels]


def cluster_embeddings(
    embedding: np.ndarray | torch.Tensor,
    num_parts: int | None = None,
    max_parts: int = 16,
    seed: int = 0,
    n_init: int = 4,
    normalize: bool = True,
    min_silhouette: float = 0.25,
    max_fit_points: int = 20_000,
    select_points: int = 2048,
    silhouette_points: int = 1024,
) -> np.ndarray | torch.Tensor:
    """(n, D) per-point embedding -> (n,) int64 part labels 0..k-1, largest part first.

    num_parts:      k; None chooses it in 1..max_parts (silhouette, see the module docstring)
    normalize:      L2-normalise rows first (the contrastive embedding lives on the unit sphere)
    max_fit_points: k-means is fitted on at most this many points (a seeded subsample), then every
                    point takes its nearest centre; choosing k fits on select_points and scores
                    the silhouette on silhouette_points of those
    Deterministic for a given seed. A torch input gives a torch.long tensor on its device, numpy gives numpy.
    """
    is_torch = isinstance(embedding, torch.Tensor)
    x = embedding.detach().float().cpu().numpy() if is_torch else np.asarray(embedding, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embedding must be (n, D), got shape {x.shape}")
    if num_parts is not None and num_parts < 1:
        raise ValueError(f"num_parts must be positive or None, got {num_parts}")
    x = x.astype(np.float64)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    rng = np.random.default_rng(seed)
    fit = x if n <= max_fit_points else x[np.sort(rng.choice(n, max_fit_points, replace=False))]
    distinct = len(np.unique(fit.round(6), axis=0)) if len(fit) else 0

    if num_parts is not None:
        k = min(num_parts, distinct)
    else:
        k = _choose_k(fit, min(max_parts, distinct), seed, n_init, min_silhouette, select_points, silhouette_points)
    if n == 0 or k <= 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        _, centers, _ = kmeans(fit, k, seed=seed, n_init=n_init)
        labels = _canonical(_sq_dist(x, centers).argmin(1))
    return torch.from_numpy(labels).to(embedding.device) if is_torch else labels


def _choose_k(
    fit: np.ndarray, max_k: int, seed: int, n_init: int, min_silhouette: float, select_points: int, score_points: int
) -> int:
    """The k in 2..max_k with the best silhouette, or 1 when none reaches min_silhouette."""
    if max_k < 2:
        return 1
    rng = np.random.default_rng([seed, 1])
    sel = fit if len(fit) <= select_points else fit[np.sort(rng.choice(len(fit), select_points, replace=False))]
    score_idx = np.arange(len(sel)) if len(sel) <= score_points else np.sort(rng.choice(len(sel), score_points, False))
    best_k, best_s = 1, -1.0
    for k in range(2, max_k + 1):
        labels, _, _ = kmeans(sel, k, seed=seed, n_init=min(n_init, 2))
        s = silhouette_score(sel[score_idx], labels[score_idx])
        if s > best_s + 1e-9:  # ties keep the smaller k
            best_k, best_s = k, s
    return best_k if best_s >= min_silhouette else 1


__all__ = ["cluster_embeddings", "kmeans", "silhouette_score"]
