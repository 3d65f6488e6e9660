"""SLatVAE: shapes and gradients, window groups, determinism and save/load, a short fit that
reconstructs a sphere's blocks, marching cubes over sparse blocks (watertight, the right volume),
bad input."""

import numpy as np
import pytest
import torch
import trimesh

from conftest import sphere_blocks
from partgen.models.io import load_model, save_model
from partgen.models.slat_vae import SLatVAE, blocks_to_mesh, window_groups
from partgen.structures import SparseVoxels, cu_seqlens_from_lengths

CONFIG = {
    "_target_": "partgen.models.slat_vae.SLatVAE",
    "subdiv": 2,
    "latent_channels": 4,
    "width": 32,
    "heads": 4,
    "encoder_depth": 1,
    "decoder_depth": 1,
    "window_size": 4,
    "pos_channels": 4,
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def as_voxels(items, res: int) -> SparseVoxels:
    coords = torch.cat(
        [torch.cat([torch.full((len(c), 1), b), torch.from_numpy(c)], 1) for b, (c, _) in enumerate(items)]
    )
    feats = torch.cat([torch.from_numpy(v.reshape(len(v), -1)) for _, v in items]).float()
    return SparseVoxels(feats, cu_seqlens_from_lengths([len(c) for c, _ in items]), coords.to(torch.int32), res)


def tiny() -> SLatVAE:
    torch.manual_seed(0)
    return SLatVAE(**{k: v for k, v in CONFIG.items() if k != "_target_"})


def test_forward_shapes_gradients_and_bounded_output():
    x = as_voxels([sphere_blocks(12, 2), sphere_blocks(12, 2, 0.2)], 12)
    model = tiny()
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert out["values"].shape == x.feats.shape and out["latents"].shape == (len(x.feats), 4)
    assert float(out["values"].detach().abs().max()) < model.truncation
    (out["values"].square().mean() + out["kl"]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_window_groups_hold_the_voxels_of_one_window_of_one_shape():
    x = as_voxels([sphere_blocks(12, 2), sphere_blocks(12, 2)], 12)
    for shift in (0, 2):
        groups = window_groups(x, 4, shift)
        key = torch.cat([x.coords[:, :1], (x.coords[:, 1:] + shift) // 4], 1)[groups.perm]
        gid = groups.group_index()
        for g in range(groups.num_groups):
            assert len(torch.unique(key[gid == g], dim=0)) == 1
        assert len(torch.unique(key, dim=0)) == groups.num_groups
    assert not torch.equal(window_groups(x, 4, 0).seqlens, window_groups(x, 4, 2).seqlens)  # shifting regroups


def test_deterministic_in_eval_and_save_load(tmp_path):
    x = as_voxels([sphere_blocks(12, 2)], 12)
    model = tiny().eval()
    with torch.no_grad():
        a = model(x, sample_posterior=False)["values"]
        assert torch.equal(a, model(x, sample_posterior=False)["values"])
    save_model(tmp_path / "slat", model, CONFIG)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "slat").eval()(x, sample_posterior=False)["values"], a)


def test_a_short_fit_reconstructs_the_blocks_and_their_surface():
    res, s = 12, 2
    x = as_voxels([sphere_blocks(res, s, 0.3)], res)
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        out = model(x, generator=g)
        loss = (out["values"] - x.feats).abs().mean() + 1e-4 * out["kl"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        values = model.eval()(x, sample_posterior=False)["values"]
    assert float((values - x.feats).abs().mean()) < 0.15  # voxel units
    assert float(((values > 0) == (x.feats > 0)).float().mean()) > 0.95
    v, f = blocks_to_mesh(x.coords[:, 1:].numpy(), values.reshape(-1, s + 1, s + 1, s + 1).numpy(), res)
    assert len(f) and np.abs(np.linalg.norm(v, axis=1) - 0.3).mean() < 0.02


def test_blocks_to_mesh_is_watertight_with_the_right_volume():
    coords, values = sphere_blocks(32, 4)
    v, f = blocks_to_mesh(coords, values, 32)
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.volume == pytest.approx(4 / 3 * np.pi * 0.3**3, rel=0.01)
    assert np.abs(np.linalg.norm(v, axis=1) - 0.3).max() < 1e-3
    # a positive level grows the inside (the surface moves out by `level` voxels); disagreeing shared
    # corners are averaged, so noisy blocks still close up
    grown = trimesh.Trimesh(*blocks_to_mesh(coords, values, 32, level=0.1), process=False)
    assert np.linalg.norm(grown.vertices, axis=1).mean() == pytest.approx(0.3 + 0.1 / 32, abs=2e-4)
    noisy = values + np.random.default_rng(0).normal(0, 0.05, values.shape)
    assert trimesh.Trimesh(*blocks_to_mesh(coords, noisy, 32), process=False).is_watertight
    empty = blocks_to_mesh(np.zeros((0, 3)), np.zeros((0, 5, 5, 5)), 32)
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3)
    with pytest.raises(ValueError, match="values must be"):
        blocks_to_mesh(coords, values[:, :3], 32)


def test_bad_input_is_refused_with_a_reason():
    model = tiny()
    x = as_voxels([sphere_blocks(12, 2)], 12)
    with pytest.raises(ValueError, match="corner values"):
        model.encode(x.replace(feats=x.feats[:, :5]))
    with pytest.raises(ValueError, match="NaN"):
        model.encode(x.replace(feats=torch.full_like(x.feats, float("nan"))))
    with pytest.raises(ValueError, match="NaN"):
        model.decode(x.replace(feats=torch.full((len(x.feats), 4), float("inf"))))
    with pytest.raises(ValueError, match="schedule"):
        SLatVAE(schedule=["window"])
