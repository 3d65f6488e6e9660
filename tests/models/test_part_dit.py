"""PartDiT: Part Attention equals block-masked global attention (reference backend), one part gives
the same output under part and global schedules, per-part image tokens from a camera, gradients,
determinism and save/load."""

import json

import pytest
import torch

from conftest import random_voxels
from partgen.models.io import load_model, save_model
from partgen.models.part_dit import PartDiT, part_image_groups
from partgen.nn.attention import use_attention_backend
from partgen.structures import SparseVoxels, cu_seqlens_from_lengths

CONFIG = {
    "_target_": "partgen.models.part_dit.PartDiT",
    "in_channels": 4,
    "width": 32,
    "depth": 2,
    "heads": 4,
    "context_dim": 16,
    "pos_channels": 4,
    "freq_channels": 32,
    "num_part_embeddings": 8,
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny(**overrides) -> PartDiT:
    torch.manual_seed(0)
    model = PartDiT(**{k: v for k, v in (CONFIG | overrides).items() if k != "_target_"})
    for p in model.parameters():  # leave the adaLN-Zero start: an identity network tests nothing
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def context(b: int, t: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b * t, 16, generator=g), cu_seqlens_from_lengths([t] * b)


def test_part_attention_equals_block_masked_global_attention():
    model = tiny(context_dim=None)
    x = random_voxels([40], resolution=8, parts=3, channels=4, seed=1)
    # global attention over a sequence that holds one part is attention with the block mask of the
    # parts: split the shape into one batch item per part and run every layer global
    order = torch.argsort(x.part, stable=True)
    counts = torch.bincount(x.part, minlength=3).tolist()
    coords = x.coords[order].clone()
    coords[:, 0] = x.part[order].to(torch.int32)
    split = SparseVoxels(x.feats[order], cu_seqlens_from_lengths(counts), coords, x.resolution, x.part[order])
    with use_attention_backend("reference"), torch.no_grad():
        part = model(x, torch.tensor([0.4]), schedule="part")
        masked = model(split, torch.tensor([0.4]), schedule="global")
        full = model(x, torch.tensor([0.4]), schedule="global")
    assert torch.allclose(part[order], masked, atol=1e-5)
    assert not torch.allclose(part, full, atol=1e-3)  # the schedules do differ when there are parts


def test_one_part_gives_the_same_output_under_both_schedules():
    model = tiny()
    x = random_voxels([30, 20], resolution=8, parts=1, channels=4, seed=2)
    ctx = context(2)
    with torch.no_grad():
        a = model(x, torch.tensor([0.2, 0.7]), context=ctx, schedule="part")
        b = model(x, torch.tensor([0.2, 0.7]), context=ctx, schedule="global")
        c = model(x, torch.tensor([0.2, 0.7]), context=ctx, schedule="alternate")
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


def test_each_part_sees_the_image_tokens_its_voxels_project_onto():
    # two parts: x < 0 and x > 0; an orthographic camera u = x + 0.5, v = 0.5 - y, over 4 x 4 patches
    coords = torch.tensor([[0, 1, 4, 4], [0, 2, 4, 4], [0, 13, 4, 4], [0, 14, 5, 4]], dtype=torch.int32)
    x = SparseVoxels(torch.zeros(4, 4), cu_seqlens_from_lengths([4]), coords, 16, torch.tensor([0, 0, 1, 1]))
    groups = x.part_groups()
    camera = torch.tensor([[[1.0, 0, 0, 0.5], [0, -1.0, 0, 0.5], [0, 0, 0, 1.0]]])
    ctx_cu = cu_seqlens_from_lengths([1 + 16])  # a CLS token, then 4 x 4 patches
    kv = part_image_groups(x, groups, ctx_cu, camera, patch_grid=4, dilate=0)
    seen = [set(kv.perm[kv.cu_seqlens[g] : kv.cu_seqlens[g + 1]].tolist()) for g in range(2)]
    assert 0 in seen[0] and 0 in seen[1]  # the CLS token is everyone's
    cols = [{(tok - 1) % 4 for tok in s if tok > 0} for s in seen]
    assert cols[0] == {0} and cols[1] == {3}  # the left part sees left patches, the right part right ones
    rows = [{(tok - 1) // 4 for tok in s if tok > 0} for s in seen]
    assert rows[0] == rows[1] == {2}  # y = -0.22 -> v = 0.72: the third row of patches
    grown = part_image_groups(x, groups, ctx_cu, camera, patch_grid=4, dilate=1)
    assert grown.seqlens.tolist() == [1 + 6, 1 + 6]  # 2 columns x 3 rows each, and the CLS token
    every = part_image_groups(x, groups, ctx_cu, None, patch_grid=4)
    assert every.seqlens.tolist() == [17, 17]
    # a part projecting nowhere sees its whole image rather than nothing
    behind = camera.clone()
    behind[0, 2, 3] = -1.0
    assert part_image_groups(x, groups, ctx_cu, behind, patch_grid=4).seqlens.tolist() == [17, 17]


def test_gradients_determinism_null_image_and_save_load(tmp_path):
    model = tiny().train()
    x = random_voxels([25, 15], resolution=8, parts=3, channels=4, seed=3)
    ctx = context(2)
    v = model(x, torch.tensor([0.3, 0.6]), context=ctx, drop=torch.tensor([True, False]))
    assert v.shape == (40, 4)
    v.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        a = model(x, torch.tensor([0.3, 0.6]), context=ctx)
        assert torch.equal(a, model(x, torch.tensor([0.3, 0.6]), context=ctx))
        other = (ctx[0] + 1.0, ctx[1])
        dropped = torch.tensor([True, True])
        assert torch.equal(
            model(x, torch.tensor(0.5), context=ctx, drop=dropped),
            model(x, torch.tensor(0.5), context=other, drop=dropped),
        )
    save_model(tmp_path / "dit", model, CONFIG)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "dit").eval()(x, torch.tensor([0.3, 0.6]), context=ctx), a)
    with pytest.raises(ValueError, match="pass images"):
        model(x, torch.tensor(0.5))
    with pytest.raises(ValueError, match="one time per shape"):
        model(x, torch.rand(3), context=ctx)


def test_bench_script_writes_the_ablation_json(tmp_path):
    from conftest import load_script

    bench = load_script("bench_part_dit")
    out = tmp_path / "dit.json"
    args = "--tokens 96 --parts 4 --width 32 --depth 2 --heads 4 --steps 2 --repeats 1 --threads 1"
    assert bench.main([*args.split(), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tokens"] == 96 and result["parts"] == 4 and result["ideal_attention_speedup"] == 4.0
    for name in ("global", "part"):
        assert result[name]["fwd_ms"] > 0 and result[name]["sample_ms"] > 0
    assert result["speedup_fwd"] == pytest.approx(result["global"]["fwd_ms"] / result["part"]["fwd_ms"], rel=1e-2)
    assert bench.main([*args.split(), "--no-sample", "--autocast", "bf16", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["speedup_sample"] is None and result["autocast"] == "bf16" and result["part"]["fwd_ms"] > 0


def test_local_convs_see_neighbours_within_a_shape_only_and_round_trip(tmp_path):
    model = tiny(local_convs=2)
    a = random_voxels([30], resolution=6, parts=2, channels=4, seed=5)
    b = random_voxels([30], resolution=6, parts=2, channels=4, seed=6)
    both = SparseVoxels.collate([a, b])
    ctx1, ctx2 = context(1), context(2)
    ctx2 = (torch.cat([ctx1[0], context(1, seed=1)[0]]), ctx2[1])
    with torch.no_grad():
        alone = model(a, torch.tensor(0.4), context=ctx1)
        together = model(both, torch.tensor(0.4), context=ctx2)
        torch.testing.assert_close(together[: len(a)], alone, atol=1e-5, rtol=1e-5)  # no leak across shapes
        no_conv = tiny()
        no_conv.load_state_dict({k: v for k, v in model.state_dict().items() if "local_" not in k})
        assert not torch.allclose(no_conv(a, torch.tensor(0.4), context=ctx1), alone)
    x = model.train()(both, torch.tensor([0.3, 0.6]), context=ctx2)
    x.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.local_convs.parameters())
    save_model(tmp_path / "dit", model.eval(), CONFIG | {"local_convs": 2})
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "dit").eval()(a, torch.tensor(0.4), context=ctx1), alone)
