"""VecSetVAE: shapes and gradients, variable L, determinism, save/load, hierarchical grid decoding
against a dense decode, voxel coordinates and meshes from a grid, a short fit of a sphere, bad input."""

import dataclasses

import numpy as np
import pytest
import torch

from partgen.models.io import load_model, save_model
from partgen.models.vecset_vae import GridValues, VecSetVAE, anchor_voxels, extract_mesh, occupancy_to_voxels
from partgen.structures import cu_seqlens_from_lengths

TINY = {
    "_target_": "partgen.models.vecset_vae.VecSetVAE",
    "num_latents": 16,
    "latent_channels": 4,
    "width": 32,
    "heads": 4,
    "encoder_depth": 1,
    "decoder_depth": 1,
    "num_freqs": 4,
}
RADIUS = 0.35


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny(**overrides) -> VecSetVAE:
    torch.manual_seed(0)
    return VecSetVAE(**{k: v for k, v in (TINY | overrides).items() if k != "_target_"})


def sphere_points(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    normals = torch.randn(n, 3, generator=generator)
    normals = normals / normals.norm(dim=1, keepdim=True)
    return RADIUS * normals, normals


def clouds(lengths=(200, 150), seed=0):
    g = torch.Generator().manual_seed(seed)
    pts, nrm = sphere_points(sum(lengths), g)
    sharp = torch.zeros(len(pts), dtype=torch.bool)
    sharp[::5] = True
    return pts, nrm, sharp, cu_seqlens_from_lengths(list(lengths))


@pytest.mark.parametrize("options", [{}, {"cross_qk_norm": False}])
def test_forward_shapes_and_finite_gradients(options):
    model = tiny(**options)
    assert model.query_cross.mlp is None
    normed = not isinstance(model.query_cross.attn.q_norm, torch.nn.Identity)
    assert normed == ("cross_qk_norm" not in options)
    pts, nrm, sharp, cu = clouds()
    queries = torch.rand(90, 3) - 0.5
    q_cu = cu_seqlens_from_lengths([50, 40])
    out = model(pts, cu, queries, q_cu, normals=nrm, sharp=sharp, generator=torch.Generator().manual_seed(1))
    assert out["values"].shape == (90,) and out["latents"].shape == (32, 4) and out["kl"].dim() == 0
    (out["values"].square().mean() + out["kl"]).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_queries_mix_sharp_and_uniform_points_and_L_is_free_at_inference():
    model = tiny(sharp_fraction=0.5)
    pts, nrm, sharp, cu = clouds()
    rows, q_cu = model.select_queries(pts, cu, 16, sharp)
    assert q_cu.tolist() == [0, 16, 32]
    assert int(sharp[rows[:16]].sum()) == 8 and int(sharp[rows[16:]].sum()) == 8  # half from the sharp edges
    assert len(set(rows[:16].tolist())) == 16 and bool((rows[:16] < 200).all()) and bool((rows[16:] >= 200).all())
    # more tokens at inference than in training, and more than a shape has points: capped at its size
    post = model.encode(pts, cu, nrm, num_latents=180)
    assert post.cu_seqlens.tolist() == [0, 180, 330] and post.mean.shape == (330, 4)
    tokens = model.decode(post.mean, post.cu_seqlens)
    values = model.query(tokens, post.cu_seqlens, torch.zeros(2, 3), cu_seqlens_from_lengths([1, 1]))
    assert torch.isfinite(values).all()


def test_anchored_latents_lead_with_the_token_positions_outside_the_kl(tmp_path):
    model = tiny(anchored=True)
    pts, nrm, sharp, cu = clouds()
    post = model.encode(pts, cu, nrm, sharp)
    rows, _ = model.select_queries(pts, cu, 16, sharp)
    assert model.latent_dim == 7 and post.mean.shape == (32, 7)
    assert torch.equal(post.mean[:, :3], pts[rows])  # the encoder queries' surface points
    z = post.sample(torch.Generator().manual_seed(0))
    assert torch.equal(z[:, :3], pts[rows]) and not torch.equal(z[:, 3:], post.mean[:, 3:])
    # the KL is the channels' alone: moving the anchors leaves it, moving a channel changes it
    moved = dataclasses.replace(post, mean=post.mean + torch.tensor([0.1, 0.1, 0.1, 0, 0, 0, 0]))
    assert torch.allclose(moved.kl(), post.kl())
    assert not torch.allclose(dataclasses.replace(post, mean=post.mean + 0.1).kl(), post.kl())
    # the decoder reads the positions: the same channels at other anchors decode differently
    q, q_cu = torch.rand(20, 3) - 0.5, cu_seqlens_from_lengths([10, 10])
    with torch.no_grad():
        a = model.query(model.decode(post.mean, post.cu_seqlens), post.cu_seqlens, q, q_cu)
        b = model.query(model.decode(moved.mean, post.cu_seqlens), post.cu_seqlens, q, q_cu)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match=r"\(M, 7\)"):
        model.decode(post.mean[:, 3:], post.cu_seqlens)
    save_model(tmp_path / "vae", model, TINY | {"anchored": True})
    loaded = load_model(tmp_path / "vae")
    with torch.no_grad():
        c = loaded.query(loaded.decode(post.mean, post.cu_seqlens), post.cu_seqlens, q, q_cu)
    assert torch.equal(a, c)


def test_deterministic_in_eval_and_under_a_seed(tmp_path):
    model = tiny().eval()
    pts, nrm, sharp, cu = clouds()
    q, q_cu = torch.rand(20, 3) - 0.5, cu_seqlens_from_lengths([10, 10])
    with torch.no_grad():
        a = model(pts, cu, q, q_cu, normals=nrm, sample_posterior=False)["values"]
        b = model(pts, cu, q, q_cu, normals=nrm, sample_posterior=False)["values"]
        s1 = model(pts, cu, q, q_cu, normals=nrm, generator=torch.Generator().manual_seed(3))["values"]
        s2 = model(pts, cu, q, q_cu, normals=nrm, generator=torch.Generator().manual_seed(3))["values"]
    assert torch.equal(a, b) and torch.equal(s1, s2) and not torch.equal(a, s1)
    save_model(tmp_path / "vae", model, TINY)
    loaded = load_model(tmp_path / "vae").eval()
    with torch.no_grad():
        c = loaded(pts, cu, q, q_cu, normals=nrm, sample_posterior=False)["values"]
    assert torch.equal(a, c)


def _sphere_level(xyz: torch.Tensor) -> torch.Tensor:
    return RADIUS - xyz.norm(dim=1)  # positive inside


def test_hierarchical_decoding_matches_a_dense_decode_with_far_fewer_queries(monkeypatch):
    model = tiny()
    calls = []

    def analytic(tokens, token_cu, xyz, query_cu):
        calls.append(len(xyz))
        return _sphere_level(xyz) * 10.0  # an occupancy logit

    monkeypatch.setattr(model, "query", analytic)
    tokens = torch.zeros(4, 32)
    fine = model.decode_grid(tokens, resolution=64, coarse=8, chunk=5000)
    dense = model.decode_grid(tokens, resolution=64, coarse=64, chunk=5000)
    assert fine.values.shape == dense.values.shape == (67, 67, 67)
    assert dense.queried == 67**3 and fine.queried < 0.35 * 67**3
    assert max(calls) <= 5000  # chunked
    # the sign (what marching cubes and the voxels read) is the same everywhere
    assert torch.equal(fine.values > 0, dense.values > 0)
    # and the values are exact wherever the surface is near
    near = _sphere_level(fine.positions.reshape(-1, 3)).abs().reshape(67, 67, 67) < 2.0 / 64
    assert torch.allclose(fine.values[near], dense.values[near])
    with pytest.raises(ValueError, match="power of 2"):
        model.decode_grid(tokens, resolution=48, coarse=32)


def _analytic_grid(r: int) -> GridValues:
    axis = -0.5 + (torch.arange(r + 3, dtype=torch.float32) - 1.0) / r
    xyz = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    return GridValues(_sphere_level(xyz.reshape(-1, 3)).reshape(r + 3, r + 3, r + 3), r, (r + 3) ** 3)


def _sphere_voxels(resolution: int) -> set:
    """Voxels whose cube the sphere's surface crosses (nearest and farthest corner about the centre)."""
    idx = torch.stack(torch.meshgrid(*(torch.arange(resolution),) * 3, indexing="ij"), -1).reshape(-1, 3)
    lo, hi = idx.float() / resolution - 0.5, (idx.float() + 1) / resolution - 0.5
    nearest = torch.clamp(torch.zeros(3), lo, hi).norm(dim=1)
    farthest = torch.maximum(lo.abs(), hi.abs()).norm(dim=1)
    return set(map(tuple, idx[(nearest < RADIUS) & (farthest > RADIUS)].tolist()))


def test_voxels_and_mesh_from_a_grid():
    grid = _analytic_grid(64)
    got = set(map(tuple, occupancy_to_voxels(grid, 16, dilation=0).tolist()))
    truth = _sphere_voxels(16)
    assert len(got & truth) / len(got | truth) > 0.95
    dilated = occupancy_to_voxels(grid, 16, dilation=1)
    assert dilated.dtype == torch.int32 and len(dilated) > len(got) and got <= set(map(tuple, dilated.tolist()))
    assert int(dilated.min()) >= 0 and int(dilated.max()) < 16
    vertices, faces = extract_mesh(grid)
    assert np.abs(np.linalg.norm(vertices, axis=1) - RADIUS).max() < 0.01
    tri = vertices[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0  # > 0: faces wind outward
    assert volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.03)
    with pytest.raises(ValueError, match="multiple"):
        occupancy_to_voxels(grid, 48)
    empty = extract_mesh(GridValues(-torch.ones(11, 11, 11), 8, 0))
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3)


def test_anchor_voxels_are_the_band_around_the_anchor_points():
    # two anchors, one in voxel (2, 2, 2) of 8, one at the cube's corner (clamped into voxel 7)
    anchors = torch.tensor([[-0.5 + 2.5 / 8, -0.5 + 2.5 / 8, -0.5 + 2.5 / 8, 9.0], [0.6, 0.6, 0.6, -9.0]])
    assert set(map(tuple, anchor_voxels(anchors, 8, band=0).tolist())) == {(2, 2, 2), (7, 7, 7)}
    band = anchor_voxels(anchors, 8, band=1)
    cube = {(2 + i, 2 + j, 2 + k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)}
    corner = {(7 - i, 7 - j, 7 - k) for i in (0, 1) for j in (0, 1) for k in (0, 1)}
    assert band.dtype == torch.int32 and set(map(tuple, band.tolist())) == cube | corner
    for bad, reason in ((torch.zeros(4, 2), r"\(L, 3\+\)"), (torch.full((2, 3), float("nan")), "NaN")):
        with pytest.raises(ValueError, match=reason):
            anchor_voxels(bad, 8)


def test_a_short_fit_encodes_a_sphere_to_the_right_voxels():
    g = torch.Generator().manual_seed(0)
    model = tiny(num_latents=32, width=48, num_freqs=6)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    cu, q_cu = cu_seqlens_from_lengths([512]), cu_seqlens_from_lengths([1024])
    for _ in range(120):
        pts, nrm = sphere_points(512, g)
        near = sphere_points(512, g)[0] * (1 + 0.1 * torch.randn(512, 1, generator=g))
        queries = torch.cat([torch.rand(512, 3, generator=g) - 0.5, near])
        out = model(pts, cu, queries, q_cu, normals=nrm, generator=g)
        target = (_sphere_level(queries) > 0).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["values"], target) + 1e-3 * out["kl"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    pts, nrm = sphere_points(512, g)
    with torch.no_grad():
        post = model.encode(pts, cu, nrm)
        # one shape to learn carries no information for the latents: the KL term rightly makes the
        # posterior the prior, and the decoder learned on its samples, so decode one
        grid = model.decode_grid(model.decode(post.sample(g), post.cu_seqlens), resolution=32, coarse=8)
    got = set(map(tuple, occupancy_to_voxels(grid, 16, dilation=0).tolist()))
    truth = _sphere_voxels(16)
    assert len(got & truth) / len(got | truth) > 0.6


@pytest.mark.parametrize(
    "points, normals, message",
    [
        (torch.zeros(0, 3), torch.zeros(0, 3), "empty point cloud"),
        (torch.full((10, 3), float("nan")), torch.ones(10, 3), "NaN"),
        (torch.zeros(10, 3), torch.full((10, 3), float("inf")), "normals hold NaN"),
        (torch.zeros(10, 2), torch.zeros(10, 2), r"\(N, 3\)"),
    ],
)
def test_bad_input_is_refused_with_a_reason(points, normals, message):
    model = tiny()
    with pytest.raises(ValueError, match=message):
        model.encode(points, cu_seqlens_from_lengths([len(points)]), normals)


def test_normals_are_required_when_the_model_reads_them():
    model = tiny()
    pts, _, _, cu = clouds()
    with pytest.raises(ValueError, match="reads normals"):
        model.encode(pts, cu)
    with pytest.raises(ValueError, match="NaN"):
        model.decode(torch.full((4, 4), float("nan")), cu_seqlens_from_lengths([4]))
