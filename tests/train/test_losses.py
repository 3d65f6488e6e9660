"""Segmentation losses: semantic cross-entropy, part contrastive (SupCon) and discriminative losses on varlen batches."""

import pytest
import torch
import torch.nn.functional as F

from partgen.data_pipeline.taxonomy import IGNORE
from partgen.structures import cu_seqlens_from_lengths
from partgen.train.losses import class_weights, discriminative_loss, part_contrastive_loss, semantic_loss


def clustered(lengths, parts=3, dim=8, noise=0.05, seed=0):
    """Embeddings where each part of each shape sits near its own direction; (N, D), (N,), cu_seqlens."""
    g = torch.Generator().manual_seed(seed)
    emb, part = [], []
    for n in lengths:
        p = torch.arange(n) % parts
        centres = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0][:parts]  # orthonormal directions
        emb.append(centres[p] + noise * torch.randn(n, dim, generator=g))
        part.append(p)
    return torch.cat(emb), torch.cat(part), cu_seqlens_from_lengths(lengths)


def test_semantic_loss_matches_cross_entropy_and_ignores():
    logits = torch.randn(10, 5, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 4, IGNORE, 0, IGNORE, 1, 2])
    keep = labels != IGNORE
    expected = F.cross_entropy(logits[keep], labels[keep])
    assert torch.allclose(semantic_loss(logits, labels), expected)
    weight = class_weights(torch.tensor([100, 10, 1, 0, 50]))
    assert weight[3] == 0 and weight[2] > weight[1] > weight[0]
    weighted = semantic_loss(logits, labels, weight=weight)
    assert torch.allclose(weighted, F.cross_entropy(logits[keep], labels[keep], weight=weight))
    # every label ignored: 0 with a graph, not NaN
    none = semantic_loss(logits, torch.full((10,), IGNORE))
    none.backward()
    assert none.item() == 0.0 and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError):
        semantic_loss(logits, labels[:5])


def test_contrastive_lower_for_clustered_than_shuffled():
    lengths = [97, 7, 130]
    emb, part, cu = clustered(lengths)
    g = torch.Generator().manual_seed(1)
    shuffled = torch.cat([emb[s:e][torch.randperm(e - s, generator=g)] for s, e in zip(cu[:-1], cu[1:], strict=True)])
    good = part_contrastive_loss(emb, part, cu, temperature=0.1)
    bad = part_contrastive_loss(shuffled, part, cu, temperature=0.1)
    assert torch.isfinite(good) and torch.isfinite(bad)
    assert good < 0.5 * bad
    # scale-free: embeddings are normalised inside
    assert torch.allclose(part_contrastive_loss(3.0 * emb, part, cu), part_contrastive_loss(emb, part, cu), atol=1e-5)


def test_contrastive_gradient_finite_and_shapes_independent():
    emb, part, cu = clustered([1, 7, 97, 40], noise=0.5)
    emb.requires_grad_(True)
    loss = part_contrastive_loss(emb, part, cu, temperature=0.07)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    assert emb.grad[:1].abs().sum() == 0  # a one-point shape has nothing to compare with
    # part ids are per shape: the batch loss is the mean of the shapes' losses
    with torch.no_grad():
        a = part_contrastive_loss(emb[1:8], part[1:8], cu_seqlens_from_lengths([7]), temperature=0.07)
        b = part_contrastive_loss(emb[8:105], part[8:105], cu_seqlens_from_lengths([97]), temperature=0.07)
        c = part_contrastive_loss(emb[105:], part[105:], cu_seqlens_from_lengths([40]), temperature=0.07)
        assert torch.allclose(loss, (a + b + c) / 3, atol=1e-5)
    # one-part shapes carry no signal
    single = part_contrastive_loss(emb.detach(), torch.zeros_like(part), cu)
    assert single.item() == 0.0


def test_contrastive_sampling_bounds_points_and_is_seeded():
    emb, part, cu = clustered([3000, 50], noise=0.3)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a = part_contrastive_loss(emb, part, cu, max_points=256, generator=gen())
    b = part_contrastive_loss(emb, part, cu, max_points=256, generator=gen())
    c = part_contrastive_loss(emb, part, cu, max_points=256, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    full = part_contrastive_loss(emb, part, cu, max_points=4096)
    assert abs(a.item() - full.item()) < 0.25 * full.item()  # a sample estimates the full loss


def test_discriminative_zero_when_parts_separated_beyond_margins():
    delta_v, delta_d = 0.5, 1.5
    lengths = [60, 31]
    centres = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])  # > 2 delta_d apart
    part = torch.cat([torch.arange(60) % 3, torch.arange(31) % 2])
    g = torch.Generator().manual_seed(0)
    offsets = torch.randn(91, 3, generator=g)
    offsets = 0.4 * delta_v * offsets / offsets.norm(dim=1, keepdim=True)  # within delta_v of the mean
    offsets[:60] -= torch.stack([offsets[:60][part[:60] == c].mean(0) for c in range(3)])[part[:60]]
    offsets[60:] -= torch.stack([offsets[60:][part[60:] == c].mean(0) for c in range(2)])[part[60:]]
    emb = (centres[part] + offsets).requires_grad_(True)
    cu = cu_seqlens_from_lengths(lengths)
    loss = discriminative_loss(emb, part, cu, delta_v=delta_v, delta_d=delta_d, gamma=0.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-9)
    assert discriminative_loss(emb, part, cu, delta_v=delta_v, delta_d=delta_d) > 0  # the regulariser
    # parts that overlap, or points spread beyond delta_v, cost something
    assert discriminative_loss(0.1 * emb, part, cu, delta_v=delta_v, delta_d=delta_d, gamma=0.0) > 0
    assert discriminative_loss(emb * 3, part, cu, delta_v=0.01, delta_d=0.1, gamma=0.0) > 0


def test_discriminative_gradient_finite_even_when_collapsed():
    emb, part, cu = clustered([1, 7, 97], noise=0.3)
    for x in (emb.clone(), torch.zeros_like(emb)):  # all means coincide in the second case
        x.requires_grad_(True)
        loss = discriminative_loss(x, part, cu)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # per shape: the same part id in two shapes is two parts
    x = torch.cat([torch.zeros(10, 2), torch.full((10, 2), 5.0)])
    same_id = torch.zeros(20, dtype=torch.int64)
    assert discriminative_loss(x, same_id, cu_seqlens_from_lengths([10, 10]), gamma=0.0).item() == 0.0
