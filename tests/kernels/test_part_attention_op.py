"""The compiled CPU part-attention op against the fp64 reference: forward, gradients, edge cases.

Precision rule (flash-attention's): err(op, ref64) <= 2 * err(reference in op's dtype, ref64) + eps.
"""

import pytest
import torch

from partgen.kernels import build, native_available, part_attention, part_attention_reference
from partgen.structures import PartGroups, groups_from_mask, part_groups

LOADED, WHY_NOT = native_available("cpu")
pytestmark = pytest.mark.skipif(not LOADED, reason=f"CPU op not built: {WHY_NOT}")


EPS = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def make_case(n, heads, dim, parts=4, batch_size=2, num_parts=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, batch_size, (n,), generator=g)
    part = torch.randint(0, parts, (n,), generator=g)
    groups = part_groups(batch, part, num_parts=num_parts, batch_size=batch_size if num_parts else None)
    q, k, v = (torch.randn(n, heads, dim, generator=g, dtype=torch.float64) for _ in range(3))
    return q, k, v, groups, None


def cross_case(n=60, m=41, heads=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    part = torch.randint(0, 6, (n,), generator=g)
    q_groups = part_groups(torch.zeros(n, dtype=torch.long), part, num_parts=6, batch_size=1)
    visible = torch.rand(6, m, generator=g) < 0.35
    visible[2] = False  # a group that sees no key: zeros out, no gradient
    q = torch.randn(n, heads, dim, generator=g, dtype=torch.float64)
    k, v = (torch.randn(m, heads, dim, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, v, q_groups, groups_from_mask(visible)


def check_against_reference(q, k, v, groups, kv_groups, dtype, grads=True):
    """Forward (and gradients) of the native op in dtype vs the reference in fp64 and in dtype."""
    w = torch.randn(q.shape[0], q.shape[1], v.shape[2], dtype=torch.float64)
    results = {}
    for name, fn, dt in (
        ("ref64", part_attention_reference, torch.float64),
        ("reflow", part_attention_reference, dtype),
        ("op", part_attention, dtype),
    ):
        inputs = [t.detach().to(dt).requires_grad_(grads) for t in (q, k, v)]
        out = fn(*inputs, groups, kv_groups)
        if grads:
            (out * w.to(dt)).sum().backward()
        results[name] = [out.detach().double()] + ([t.grad.double() for t in inputs] if grads else [])
    for i, (op, low, ref) in enumerate(zip(results["op"], results["reflow"], results["ref64"], strict=True)):
        err, bound = (op - ref).abs().max().item(), 2 * (low - ref).abs().max().item() + EPS[dtype]
        assert err <= bound, f"{['out', 'dq', 'dk', 'dv'][i]}: error {err:.3g} > bound {bound:.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 7, 97, 1025])
def test_odd_token_counts(n, dtype):
    check_against_reference(*make_case(n, 3, 64), dtype)


@pytest.mark.parametrize("dim", [32, 64, 128, 33])
def test_head_dims(dim):
    check_against_reference(*make_case(200, 2, dim), torch.float32)


def test_empty_and_one_token_groups_and_batches():
    # 3 batch items x 6 parts with 40 tokens: several empty groups and singletons
    q, k, v, groups, _ = make_case(40, 2, 16, parts=6, batch_size=3, num_parts=6, seed=3)
    assert (groups.seqlens == 0).any() and (groups.seqlens == 1).any()
    check_against_reference(q, k, v, groups, None, torch.float32)


def test_many_tiny_groups():
    q, k, v, groups, _ = make_case(1500, 2, 32, parts=600, batch_size=1)
    assert groups.num_groups >= 512
    check_against_reference(q, k, v, groups, None, torch.float32)


def test_groups_larger_than_a_tile():
    # one group spans several key tiles and query chunks (online softmax across tiles)
    q, k, v, groups, _ = make_case(1400, 1, 16, parts=1, batch_size=1)
    check_against_reference(q, k, v, groups, None, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_attention_with_shared_and_missing_keys(dtype):
    check_against_reference(*cross_case(), dtype)


def test_non_contiguous_inputs():
    q, k, v, groups, _ = make_case(97, 4, 32)
    big = [torch.randn(97, 8, 64, dtype=torch.float32) for _ in range(3)]
    for b, t in zip(big, (q, k, v), strict=True):
        b[:, ::2, 1::2] = t.float()
    views = [b[:, ::2, 1::2] for b in big]  # strided in every dim, last dim too
    assert not views[0].is_contiguous()
    out = part_attention(*views, groups)
    ref = part_attention_reference(q, k, v, groups)
    assert (out.double() - ref).abs().max() < 1e-5
    heads_view = [b[:, ::2, :32] for b in big]  # strided heads, contiguous last dim: read in place
    out = part_attention(*heads_view, groups)
    torch.testing.assert_close(
        out, part_attention_reference(*(t.float() for t in heads_view), groups), rtol=1e-5, atol=1e-5
    )


def test_deterministic():
    q, k, v, groups, _ = make_case(700, 4, 64, parts=5)
    runs = []
    for _ in range(2):
        inputs = [t.float().requires_grad_(True) for t in (q, k, v)]
        out = part_attention(*inputs, groups)
        out.square().sum().backward()
        runs.append([out.detach()] + [t.grad for t in inputs])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_no_nan_with_equal_or_huge_logits():
    n = 300
    groups = part_groups(torch.zeros(n, dtype=torch.long), torch.arange(n) % 3)
    v = torch.randn(n, 2, 16)
    for fill in (0.0, 1e4):
        q = torch.full((n, 2, 16), fill, requires_grad=True)
        k = torch.full((n, 2, 16), fill, requires_grad=True)
        out = part_attention(q, k, v, groups)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
        torch.testing.assert_close(out[0], v[torch.arange(n) % 3 == 0].mean(0), rtol=1e-5, atol=1e-5)
    q = torch.randn(n, 2, 16) * 1e3  # very large, unequal logits: a hard max, still finite
    out = part_attention(q, q, v, groups)
    assert torch.isfinite(out).all()


def test_custom_scale():
    q, k, v, groups, _ = make_case(120, 2, 16)
    out = part_attention(q.float(), k.float(), v.float(), groups, scale=0.05)
    torch.testing.assert_close(
        out.double(), part_attention_reference(q, k, v, groups, scale=0.05), rtol=1e-5, atol=1e-5
    )


def test_opcheck_schema_fake_and_autograd():
    q, k, v, groups, _ = make_case(50, 2, 16)
    args = [t.float().requires_grad_(True) for t in (q, k, v)]
    args += [groups.perm, groups.cu_seqlens, groups.perm, groups.cu_seqlens, groups.max_seqlen, groups.max_seqlen, 0.25]
    torch.library.opcheck(torch.ops.partgen.part_attention_fwd.default, args)


def test_torch_compile_traces_the_op_without_graph_breaks():
    q, k, v, groups, _ = make_case(64, 2, 16)
    q, k, v = (t.float() for t in (q, k, v))

    g = groups

    def fn(q, k, v):
        out, _ = torch.ops.partgen.part_attention_fwd(
            q, k, v, g.perm, g.cu_seqlens, g.perm, g.cu_seqlens, g.max_seqlen, g.max_seqlen, 0.25
        )
        return out * 2

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), fn(q, k, v))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda q, k, v, g: (q[:, :1], k, v, g), "shape mismatch: head counts"),
        (lambda q, k, v, g: (q, k[..., :8], v, g), "shape mismatch: q and k head dims differ"),
        (lambda q, k, v, g: (q, k, v[:-1], g), "shape mismatch: k and v token counts"),
        (lambda q, k, v, g: (q, k.double(), v, g), "share one floating dtype"),
        (lambda q, k, v, g: (q.long(), k.long(), v.long(), g), "share one floating dtype"),
        (
            lambda q, k, v, g: (q, k, v, PartGroups(g.perm, g.cu_seqlens.flip(0).contiguous(), g.max_seqlen)),
            "must start at 0|must not decrease",
        ),
        (
            lambda q, k, v, g: (q, k, v, PartGroups(g.perm, torch.tensor([0, 10], dtype=torch.int32), 10)),
            "must end at the number of rows 20",
        ),
        (
            lambda q, k, v, g: (q, k, v, PartGroups(torch.zeros(20, dtype=torch.long), g.cu_seqlens, g.max_seqlen)),
            "not a permutation",
        ),
        (lambda q, k, v, g: (q, k, v, PartGroups(g.perm.int(), g.cu_seqlens, g.max_seqlen)), "perm must be int64"),
        (
            lambda q, k, v, g: (q, k, v, PartGroups(g.perm, g.cu_seqlens.long(), g.max_seqlen)),
            "cu_seqlens must be int32",
        ),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_problem(mutate, message):
    q, k, v = (torch.randn(20, 2, 16) for _ in range(3))
    g = part_groups(torch.zeros(20, dtype=torch.long), torch.arange(20) % 4)
    with pytest.raises(ValueError, match=message):
        part_attention(*mutate(q, k, v, g))


def test_fails_naming_why_when_the_op_cannot_run(monkeypatch):
    """No fallback here: the dispatcher (partgen.nn.attention) chooses another backend."""
    q, k, v, groups, _ = make_case(30, 2, 8)
    with pytest.raises(RuntimeError, match="cannot run: dtype torch.float64 is not supported"):
        part_attention(q, k, v, groups)
    monkeypatch.setattr(build, "load_cpu_op", lambda: (False, "no c++ to build the CPU op"))
    with pytest.raises(RuntimeError, match="cannot run: no c\\+\\+"):
        part_attention(q.float(), k.float(), v.float(), groups)
