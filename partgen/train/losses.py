"""Losses for point part segmentation: semantic cross-entropy and class-agnostic embedding losses.

Legend: N points of a batch (all shapes together), B shapes, D embedding channels, K semantic
classes, P parts of one shape, M points sampled from one shape.

Batches follow the varlen convention: rows of shape b are cu_seqlens[b]:cu_seqlens[b+1]
((B+1,) int32, leading 0). Part ids are per shape (part 0 of shape 0 and part 0 of shape 1 are
different parts). Class-agnostic losses only ever compare points of the same shape.

    semantic_loss          cross-entropy over K classes, IGNORE labels left out, optional class weights
    part_contrastive_loss  supervised contrastive (InfoNCE) on L2-normalised embeddings: anchors pull
                           the points of their part, push the other parts of their shape
    discriminative_loss    De Brabandere et al. 2017: pull to the part mean within delta_v, push part
                           means apart beyond 2 delta_d, a small pull of the means to the origin
The clustering that turns embeddings into parts at inference is partgen.eval.clustering.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from partgen.data_pipeline.taxonomy import IGNORE


def _check_varlen(embedding: torch.Tensor, part: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    n = embedding.shape[0]
    if embedding.dim() != 2:
        raise ValueError(f"embedding must be (N, D), got {tuple(embedding.shape)}")
    if part.shape != (n,) or part.is_floating_point():
        raise ValueError(f"part must be (N,) = ({n},) integer part ids, got {tuple(part.shape)} {part.dtype}")
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or int(cu_seqlens[0]) != 0:
        raise ValueError("cu_seqlens must be (B+1,) int32 with a leading 0")
    if int(cu_seqlens[-1]) != n:
        raise ValueError(f"cu_seqlens ends at {int(cu_seqlens[-1])} but there are {n} points")


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph (so backward() works when a batch has nothing to learn from)."""
    return like.sum() * 0.0


def class_weights(counts: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    """(K,) weights from (K,) label counts: count^-power, mean 1 over the classes that occur; 0 for absent ones.

    power 0.5 (inverse square root frequency) tempers rare classes without letting a class seen
    a handful of times dominate.
    """
    counts = counts.to(torch.float64)
    w = torch.where(counts > 0, counts.clamp_min(1.0) ** -power, torch.zeros_like(counts))
    present = counts > 0
    if present.any():
        w = w / w[present].mean()
    return w.to(torch.float32)


def semantic_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of (N, K) logits against (N,) int64 labels; rows labelled ignore_index are left out.

    weight: optional (K,) class weights (see class_weights). Returns a scalar; 0 (with a graph) when
    every label is ignored, where F.cross_entropy would return NaN.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, K) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if not bool((labels != ignore_index).any()):
        return _zero(logits)
    return F.cross_entropy(
        logits.float(),
        labels,
        weight=None if weight is None else weight.to(logits.device, torch.float32),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )


def _sample_balanced(part: torch.Tensor, max_points: int, generator: torch.Generator | None) -> torch.Tensor:
    """Indices of at most max_points rows, each part equally likely (small parts are not drowned out)."""
    n = part.numel()
    if n <= max_points:
        return torch.arange(n, device=part.device)
    _, inverse, counts = torch.unique(part, return_inverse=True, return_counts=True)
    prob = (1.0 / counts.to(torch.float64))[inverse]
    # multinomial without replacement on CPU (deterministic under a generator on every device)
    return torch.multinomial(prob.cpu(), max_points, replacement=False, generator=generator).to(part.device)


def part_contrastive_loss(
    embedding: torch.Tensor,
    part: torch.Tensor,
    cu_seqlens: torch.Tensor,
    temperature: float = 0.1,
    max_points: int = 1024,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over the points of each shape.

    embedding:  (N, D) float, L2-normalised here (any scale may come in)
    part:       (N,) int part id per point, compared within a shape only
    cu_seqlens: (B+1,) int32
    max_points: M, points sampled per shape (part-balanced) so memory is O(B M^2), not O(N^2)

    For anchor i of a shape, with similarities s_ij = <z_i, z_j> / temperature over the other
    sampled points j of that shape, and positives P(i) = same part:
        l_i = -1/|P(i)| sum_{p in P(i)} (s_ip - log sum_{j != i} exp s_ij)
    averaged over the anchors of a shape, then over shapes. Anchors without a positive or a negative
    (one-part shapes, a part sampled once) carry no signal and are left out; 0 if none is left.
    """
    _check_varlen(embedding, part, cu_seqlens)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z_all = F.normalize(embedding.float(), dim=1)
    losses = []
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end - start < 2:
            continue
        idx = _sample_balanced(part[start:end], max_points, generator) + start
        z, p = z_all[idx], part[idx]  # (M, D), (M,)
        m = len(idx)
        sim = (z @ z.T) / temperature  # (M, M)
        eye = torch.eye(m, dtype=torch.bool, device=z.device)
        same = (p[:, None] == p[None, :]) & ~eye
        other = p[:, None] != p[None, :]
        valid = same.any(1) & other.any(1)
        if not bool(valid.any()):
            continue
        log_prob = sim - torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
        pos = same.to(sim.dtype)
        anchor = -(log_prob * pos).sum(1) / pos.sum(1).clamp_min(1.0)  # (M,)
        losses.append(anchor[valid].mean())
    return torch.stack(losses).mean() if losses else _zero(embedding)


def _norm(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean norm over the last dim with a finite gradient at 0 (equal means, a point on its mean)."""
    return torch.sqrt((v * v).sum(-1) + eps)


def discriminative_loss(
    embedding: torch.Tensor,
    part: torch.Tensor,
    cu_seqlens: torch.Tensor,
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.001,
) -> torch.Tensor:
    """Discriminative loss (De Brabandere, Neven, Van Gool 2017) per shape, averaged over shapes.

    embedding: (N, D) float, used as is (not normalised: the margins are in its units; with unit
               vectors keep 2 * delta_d <= 2)
    part:      (N,) int part id per point, within a shape
    With mu_c the mean embedding of part c of a shape (C parts):
        L_var  = 1/C sum_c mean_{i in c} max(0, |mu_c - x_i| - delta_v)^2
        L_dist = 1/(C(C-1)) sum_{c != c'} max(0, 2 delta_d - |mu_c - mu_c'|)^2   (0 when C = 1)
        L_reg  = 1/C sum_c |mu_c|
    loss = alpha L_var + beta L_dist + gamma L_reg. Zero for alpha, beta terms when every point lies
    within delta_v of its part mean and part means are over 2 delta_d apart.
    """
    _check_varlen(embedding, part, cu_seqlens)
    x = embedding.float()
    n = x.shape[0]
    if n == 0:
        return _zero(embedding)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    batch = torch.repeat_interleave(torch.arange(lengths.numel(), device=x.device), lengths.to(x.device))  # (N,)
    # one group per (shape, part): groups of a shape are contiguous after unique
    key = batch * (int(part.max()) + 1) + part.to(torch.int64)
    groups, group = torch.unique(key, return_inverse=True)  # (G,), (N,)
    g = groups.numel()
    group_shape = groups // (int(part.max()) + 1)  # (G,)
    count = torch.zeros(g, device=x.device).index_add_(0, group, torch.ones(n, device=x.device))
    mean = torch.zeros(g, x.shape[1], device=x.device).index_add_(0, group, x) / count[:, None]  # (G, D)

    pull = (_norm(x - mean[group]) - delta_v).clamp_min(0.0) ** 2  # (N,)
    var_group = torch.zeros(g, device=x.device).index_add_(0, group, pull) / count  # (G,)

    num_shapes = lengths.numel()
    parts_per_shape = torch.zeros(num_shapes, device=x.device).index_add_(
        0, group_shape, torch.ones(g, device=x.device)
    )
    var_shape = torch.zeros(num_shapes, device=x.device).index_add_(0, group_shape, var_group)
    has_points = parts_per_shape > 0
    l_var = var_shape[has_points] / parts_per_shape[has_points]

    dist = _norm(mean[:, None] - mean[None, :])  # (G, G); G is small (parts of B shapes)
    same_shape = (group_shape[:, None] == group_shape[None, :]) & ~torch.eye(g, dtype=torch.bool, device=x.device)
    push = ((2 * delta_d - dist).clamp_min(0.0) ** 2) * same_shape
    pairs = parts_per_shape * (parts_per_shape - 1)
    push_shape = torch.zeros(num_shapes, device=x.device).index_add_(0, group_shape, push.sum(1))
    l_dist = torch.where(pairs > 0, push_shape / pairs.clamp_min(1.0), torch.zeros_like(pairs))[has_points]

    reg_shape = torch.zeros(num_shapes, device=x.device).index_add_(0, group_shape, _norm(mean))
    l_reg = reg_shape[has_points] / parts_per_shape[has_points]
    return (alpha * l_var + beta * l_dist + gamma * l_reg).mean()


__all__ = ["class_weights", "discriminative_loss", "part_contrastive_loss", "semantic_loss"]
