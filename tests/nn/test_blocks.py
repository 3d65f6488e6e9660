"""Transformer blocks: part layers are masked global attention, schedules, determinism, gradients."""

import pytest
import torch

from conftest import random_voxels
from partgen.nn.attention import use_attention_backend
from partgen.nn.blocks import (
    AdaLNBlock,
    AdaLNOutput,
    FeedForward,
    HeadRMSNorm,
    MultiHeadAttention,
    SparseTransformer,
    resolve_schedule,
    sinusoidal_embedding,
)
from partgen.structures import cu_seqlens_from_lengths, groups_from_cu_seqlens


def voxels(lengths=(30, 20), parts=3):
    return random_voxels(lengths, resolution=16, parts=parts)


def test_part_attention_layer_equals_masked_global_attention():
    x = voxels()
    mha = MultiHeadAttention(16, 4).double()
    h = torch.randn(len(x), 16, dtype=torch.float64)
    out = mha(h, x.part_groups())
    # the same layer computed densely with a (batch, part) mask
    q = mha.q_norm(mha.to_q(h).view(-1, 4, 4))
    k, v = mha.to_kv(h).view(-1, 2, 4, 4).unbind(1)
    k = mha.k_norm(k)
    b, p = x.coords[:, 0], x.part
    mask = (b[:, None] == b[None]) & (p[:, None] == p[None])
    scores = torch.einsum("qhd,khd->hqk", q, k) / 2.0
    dense = torch.einsum("hqk,khd->qhd", scores.masked_fill(~mask, float("-inf")).softmax(-1), v)
    torch.testing.assert_close(out, mha.proj(dense.reshape(-1, 16)))


def test_one_part_input_gives_same_output_under_part_and_global():
    x = voxels(parts=1)
    model = SparseTransformer(4, 4, width=32, depth=2, heads=2).double()
    x = x.to(dtype=torch.float64)
    torch.testing.assert_close(model(x, schedule="part").feats, model(x, schedule="global").feats)


def test_part_and_global_differ_with_several_parts():
    x = voxels(parts=3)
    model = SparseTransformer(4, 4, width=32, depth=2, heads=2)
    assert not torch.allclose(model(x, schedule="part").feats, model(x, schedule="global").feats)


def test_backends_agree_inside_the_model_and_gradients_are_finite():
    x = voxels()
    model = SparseTransformer(4, 4, width=32, depth=2, heads=2, schedule="alternate").double()
    x = x.to(dtype=torch.float64)
    with use_attention_backend("reference"):
        ref = model(x).feats
    out = model(x).feats
    torch.testing.assert_close(out, ref)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_eval_is_deterministic():
    x = voxels()
    model = SparseTransformer(4, 4, width=32, depth=2, heads=2).eval()
    torch.testing.assert_close(model(x).feats, model(x).feats, rtol=0, atol=0)


def test_cross_attention_block_needs_context():
    from partgen.nn.blocks import TransformerBlock

    block = TransformerBlock(16, 2, context_dim=8)
    groups = groups_from_cu_seqlens(cu_seqlens_from_lengths([5]))
    with pytest.raises(ValueError, match="pass context"):
        block(torch.randn(5, 16), groups)
    ctx_groups = groups_from_cu_seqlens(cu_seqlens_from_lengths([3]))
    assert block(torch.randn(5, 16), groups, torch.randn(3, 8), ctx_groups).shape == (5, 16)


def test_schedules():
    assert resolve_schedule("alternate", 3) == ["part", "global", "part"]
    assert resolve_schedule(["global", "part"], 2) == ["global", "part"]
    with pytest.raises(ValueError, match="each of 3 layers"):
        resolve_schedule(["part"], 3)


def test_sinusoidal_embedding_shape_and_values():
    e = sinusoidal_embedding(torch.tensor([[0.0, 1.0]]), 4)
    assert e.shape == (1, 8)
    torch.testing.assert_close(e[0, :4], torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_adaln_per_shape_conditioning_equals_per_row():
    """cond (B, D) with owner gives what the same cond repeated per row gives, gates open."""
    torch.manual_seed(0)
    block, out = AdaLNBlock(16, 2), AdaLNOutput(16, 3)
    for layer in (block.ada[1], out.ada[1], out.proj):
        torch.nn.init.normal_(layer.weight, std=0.1)
    x = torch.randn(7, 16)
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    groups = groups_from_cu_seqlens(cu)
    cond = torch.randn(2, 16)
    owner = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    per_row = out(block(x, cond[owner], groups), cond[owner])
    per_shape = out(block(x, cond, groups, owner=owner), cond, owner)
    torch.testing.assert_close(per_shape, per_row)
    assert per_shape[:3].std() > 0 and not torch.allclose(per_shape[:3], per_shape[3:6])
    # one shape: a (1, D) cond broadcasts over the rows without an owner
    first = groups_from_cu_seqlens(cu[:2])
    torch.testing.assert_close(block(x[:3], cond[:1], first), block(x[:3], cond[:1].expand(3, -1), first))


def test_feed_forward_row_chunks_give_the_unchunked_values():
    torch.manual_seed(0)
    ff = FeedForward(8)
    ff.chunk = 5  # 13 rows: chunks of 5, 5, 3
    x = torch.randn(13, 8, requires_grad=True)
    whole = ff(x)  # autograd: one pass
    with torch.no_grad():
        chunked = ff(x)
    torch.testing.assert_close(chunked, whole.detach())
    whole.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_head_rms_norm_matches_torch_without_autograd_on_strided_heads():
    torch.manual_seed(0)
    norm, ref = HeadRMSNorm(16), torch.nn.RMSNorm(16)
    with torch.no_grad():
        norm.weight.normal_()
    ref.load_state_dict(norm.state_dict())
    k = torch.randn(9, 2, 3, 16).unbind(1)[0]  # (9, 3, 16) keys: a strided view, as MultiHeadAttention has
    with torch.no_grad():
        torch.testing.assert_close(norm(k), ref(k))
    k = k.clone().requires_grad_()
    torch.testing.assert_close(norm(k), ref(k))  # the autograd path
    norm(k).square().sum().backward()
    assert torch.isfinite(k.grad).all()


@pytest.mark.parametrize("cross", [False, True])
def test_adaln_block_in_row_chunks_gives_the_one_pass_values(cross):
    """Without autograd a long input runs in row chunks (AdaLNBlock._forward_in_chunks): same output."""
    torch.manual_seed(0)
    block = AdaLNBlock(16, 2, context_dim=8 if cross else None)
    torch.nn.init.normal_(block.ada[1].weight, std=0.3)
    block.chunk = 4  # 11 rows: chunks of 4, 4, 3
    x = torch.randn(11, 16, requires_grad=True)
    cu = torch.tensor([0, 5, 11], dtype=torch.int32)
    groups = groups_from_cu_seqlens(cu)
    owner = torch.tensor([0] * 5 + [1] * 6)
    cond = torch.randn(2, 16)
    kwargs = {}
    if cross:
        ctx_cu = torch.tensor([0, 3, 7], dtype=torch.int32)
        kwargs = {"context": torch.randn(7, 8), "context_groups": groups_from_cu_seqlens(ctx_cu)}
    one_pass = block(x, cond, groups, owner=owner, **kwargs)  # autograd: the one-pass path
    with torch.no_grad():
        chunked = block(x, cond, groups, owner=owner, **kwargs)
    torch.testing.assert_close(chunked, one_pass.detach())
    assert not torch.allclose(one_pass, x)  # the block did something
