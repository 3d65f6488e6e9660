"""Point Transformer segmenters: shapes, gradients, equivariance, batch independence, determinism,
safetensors round trip, and a tiny overfit."""

import functools

import pytest
import torch
from safetensors.torch import load_file, save_file

from partgen.models.point_transformer import (
    PointSegmenter,
    PointTransformerLayer,
    PointTransformerSeg,
    SerializedPointTransformer,
)
from partgen.nn.point_ops import knn
from partgen.structures import Points, cu_seqlens_from_lengths

TINY = {
    "vector": functools.partial(
        PointTransformerSeg,
        widths=(16, 32, 64),
        encoder_blocks=(1, 1, 1),
        decoder_blocks=(1, 1, 1),
        neighbours=(8, 8, 8),
    ),
    "serialized": functools.partial(
        SerializedPointTransformer, width=32, depth=4, heads=2, patch_size=16, grid_size=0.02, cpe_neighbours=6
    ),
}
BACKBONES = ["vector", "serialized"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models; a shared 2-core machine runs them faster on one


def make_points(lengths, seed=0, normals=False, channels=0) -> Points:
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    nrm = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1) if normals else None
    return Points(
        feats=torch.randn(n, channels, generator=g),
        cu_seqlens=cu_seqlens_from_lengths(lengths),
        coords=torch.rand(n, 3, generator=g) - 0.5,
        normals=nrm,
    ).validate()


def make_model(backbone, seed=0, **extra) -> PointSegmenter:
    torch.manual_seed(seed)
    return PointSegmenter(TINY[backbone], num_classes=5, embed_dim=8, **extra)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_shapes_and_unit_embeddings(backbone):
    pts = make_points([61, 40], normals=True, channels=2)
    model = make_model(backbone, use_normals=True, feat_channels=2).eval()
    out = model(pts)
    assert out["logits"].shape == (101, 5) and out["embedding"].shape == (101, 8)
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(101))
    with pytest.raises(ValueError, match="feature channels"):
        model(make_points([61, 40], normals=True, channels=3))
    with pytest.raises(ValueError, match="normals"):
        model(make_points([61, 40], channels=2))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_parameter_gets_a_finite_gradient(backbone):
    model = make_model(backbone).train()
    out = model(make_points([61, 40]))
    (out["logits"].square().mean() + out["embedding"][:, 0].sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert bool(torch.isfinite(p.grad).all()), f"{name} has a non-finite gradient"
    assert any(float(p.grad.abs().max()) > 0 for p in model.parameters())


def permuted(pts: Points, perm: torch.Tensor) -> Points:
    return pts.replace(feats=pts.feats[perm], coords=pts.coords[perm])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_outputs_follow_a_permutation_of_points_within_each_cloud(backbone):
    # The serialized model is equivariant under any permutation: serialize sorts by curve code and
    # breaks ties by position, kNN and patches depend on positions only. The vector model samples
    # with start="first" (each cloud's first point seeds farthest point sampling), so it is
    # equivariant only for permutations that keep each cloud's first point first; after that the
    # samples, their order, and every kNN neighbourhood are functions of the positions.
    pts = make_points([61, 40], seed=1)
    g = torch.Generator().manual_seed(2)
    if backbone == "serialized":
        perm = torch.cat([torch.randperm(61, generator=g), 61 + torch.randperm(40, generator=g)])
    else:
        perm = torch.cat(
            [
                torch.tensor([0]),
                1 + torch.randperm(60, generator=g),
                torch.tensor([61]),
                62 + torch.randperm(39, generator=g),
            ]
        )
    model = make_model(backbone).eval()
    with torch.no_grad():
        base, moved = model(pts), model(permuted(pts, perm))
    for key in ("logits", "embedding"):
        torch.testing.assert_close(moved[key], base[key][perm], rtol=1e-4, atol=1e-5)


def test_vector_model_depends_on_which_point_seeds_sampling():
    # the reason the vector test above keeps the first points: a different seed point changes the samples
    pts = make_points([61, 40], seed=1)
    perm = torch.cat([torch.arange(60, -1, -1), 61 + torch.arange(40)])
    model = make_model("vector").eval()
    with torch.no_grad():
        base, moved = model(pts)["logits"], model(permuted(pts, perm))["logits"]
    assert not torch.allclose(moved[:61], base[perm][:61], atol=1e-4)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_items_do_not_see_each_other(backbone):
    a = make_points([61, 40], seed=3)
    b = make_points([61, 25], seed=4)
    b = b.replace(coords=torch.cat([a.coords[:61], b.coords[61:]]), feats=torch.cat([a.feats[:61], b.feats[61:]]))
    model = make_model(backbone).eval()
    with torch.no_grad():
        out_a, out_b = model(a), model(b)
    for key in ("logits", "embedding"):
        torch.testing.assert_close(out_b[key][:61], out_a[key][:61], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(out_b[key][61:86], out_a[key][61:86])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_eval_is_deterministic(backbone):
    pts = make_points([61, 40], seed=5)
    model = make_model(backbone).eval()
    with torch.no_grad():
        first, second = model(pts), model(pts)
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_state_dict_round_trip_through_safetensors(backbone, tmp_path):
    pts = make_points([61, 40], seed=6)
    model = make_model(backbone, seed=0)
    model.train()
    model(pts)  # moves BatchNorm running statistics away from their initial values
    model.eval()
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    other = make_model(backbone, seed=1).eval()
    with torch.no_grad():
        assert not torch.allclose(other(pts)["logits"], model(pts)["logits"])
        other.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
        assert torch.equal(other(pts)["logits"], model(pts)["logits"])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_learns_to_separate_two_blobs(backbone):
    # each cloud: a compact ball (label 0) and a flat disc (label 1), placed at random per cloud,
    # so position alone does not tell them apart
    g = torch.Generator().manual_seed(7)
    clouds, labels = [], []
    for _ in range(4):
        ball = 0.05 * torch.randn(64, 3, generator=g)
        disc = torch.cat([0.12 * torch.randn(64, 2, generator=g), 0.004 * torch.randn(64, 1, generator=g)], 1)
        centres = 0.25 * (torch.rand(2, 3, generator=g) - 0.5)
        centres[1, 0] += 0.3 if bool(torch.rand(1, generator=g) < 0.5) else -0.3
        clouds.append(torch.cat([ball + centres[0], disc + centres[1]]))
        labels.append(torch.cat([torch.zeros(64), torch.ones(64)]).long())
    pts = Points(feats=torch.zeros(512, 0), cu_seqlens=cu_seqlens_from_lengths([128] * 4), coords=torch.cat(clouds))
    target = torch.cat(labels)
    model = make_model(backbone).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(model(pts)["logits"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(pts)["logits"].argmax(1) == target).float().mean()
    assert float(accuracy) > 0.95


def test_layer_is_grouped_vector_attention():
    # the layer's output is a softmax-weighted sum over neighbours: with a zero position encoding
    # and constant values it returns exactly those values whatever the weights
    layer = PointTransformerLayer(8, 16, share_planes=4, norm="layer").eval()
    with torch.no_grad():
        for p in layer.pos.parameters():
            p.zero_()
        layer.to_v.weight.zero_()
        layer.to_v.bias.copy_(torch.arange(16.0))
    pts = make_points([30])
    x = torch.randn(30, 8)
    nbr = knn(pts.coords, pts.cu_seqlens, pts.coords, pts.cu_seqlens, 8)
    with torch.no_grad():
        out = layer(x, pts.coords, nbr)
    torch.testing.assert_close(out, torch.arange(16.0).expand(30, 16))
    assert sum(p.numel() for p in layer.weight.parameters() if p.dim() == 2) == 16 * 4 + 4 * 4  # C -> C/S -> C/S


def test_backbones_reject_bad_configurations():
    with pytest.raises(ValueError, match="one count per level"):
        PointTransformerSeg(3, widths=(16, 32), encoder_blocks=(1,), decoder_blocks=(1, 1), neighbours=(8, 8))
    with pytest.raises(ValueError, match="divisible"):
        PointTransformerLayer(8, 12, share_planes=8)
    with pytest.raises(ValueError, match="orders"):
        SerializedPointTransformer(3, orders=())
    with pytest.raises(TypeError):  # the backbone is a factory (conf/point_backbone), not a name
        PointSegmenter("vector", num_classes=2)  # type: ignore[arg-type]
