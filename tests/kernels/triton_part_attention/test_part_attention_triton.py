"""The Triton part-attention kernels against the fp64 reference: forward, gradients, edge cases.

Runs on CUDA, or on the CPU under Triton's interpreter (TRITON_INTERPRET=1 from the start: CI's
tests/kernels/test_triton_interpreter.py runs this folder in a child pytest with it; see tests/conftest.py).
Precision rule (flash-attention's): err(kernel, ref64) <= 2 * err(reference in that dtype, ref64) + eps.
bfloat16 is tested on CUDA only: Triton's interpreter (3.7.1) mishandles bf16 dots (outputs off by
~1e9), so under it this file tests float32 and float16, the same kernel source at other widths.
"""

import logging
import os

import pytest
import torch

from partgen.kernels import part_attention_reference
from partgen.kernels.triton.part_attention import part_attention_triton
from partgen.nn import attention as attn
from partgen.structures import PartGroups, cu_seqlens_from_lengths, groups_from_mask

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")
DTYPES = [torch.float32, torch.float16] + ([] if INTERPRETED else [torch.bfloat16])
EPS = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def grouped_case(lengths, heads, dim, value_dim=None, keys=None, seed=0):
    """Queries in groups of the given sizes, shuffled in token order (fp64 on DEVICE).

    keys=None: self-attention. keys=M: M key tokens, each seen by a random subset of the groups
    (tokens repeat across groups), the second group seeing none (its queries get zeros).
    """
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    groups = PartGroups(
        perm=torch.randperm(n, generator=g), cu_seqlens=cu_seqlens_from_lengths(lengths), max_seqlen=max(lengths)
    )
    value_dim = dim if value_dim is None else value_dim
    q = torch.randn(n, heads, dim, generator=g, dtype=torch.float64)
    kv_groups, m = None, n
    if keys is not None:
        visible = torch.rand(len(lengths), keys, generator=g) < 0.4
        visible[1] = False
        kv_groups, m = groups_from_mask(visible).to(DEVICE), keys
    k = torch.randn(m, heads, dim, generator=g, dtype=torch.float64)
    v = torch.randn(m, heads, value_dim, generator=g, dtype=torch.float64)
    return q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), groups.to(DEVICE), kv_groups


def check_against_reference(q, k, v, groups, kv_groups, dtype):
    """Output and dq, dk, dv of the kernels in dtype vs the reference in fp64 and in dtype."""
    weight = torch.randn(q.shape[0], q.shape[1], v.shape[2], dtype=torch.float64, device=DEVICE)
    results = {}
    for who, fn, dt in (
        ("ref64", part_attention_reference, torch.float64),
        ("reflow", part_attention_reference, dtype),
        ("triton", part_attention_triton, dtype),
    ):
        inputs = [t.detach().to(dt).requires_grad_(True) for t in (q, k, v)]
        out = fn(*inputs, groups, kv_groups)
        assert out.dtype == dt and out.shape == (q.shape[0], q.shape[1], v.shape[2])
        (out * weight.to(dt)).sum().backward()
        results[who] = [out.detach().double()] + [t.grad.double() for t in inputs]
    for label, got, low, ref in zip(
        ("out", "dq", "dk", "dv"), results["triton"], results["reflow"], results["ref64"], strict=True
    ):
        err, bound = (got - ref).abs().max().item(), 2 * (low - ref).abs().max().item() + EPS[dtype]
        assert err <= bound, f"{label}: error {err:.3g} > bound {bound:.3g}"


CASES = {
    # odd group sizes, an empty group and one-token groups, 1 head, D 32
    "odd-sizes-h1-d32": lambda: grouped_case([7, 1, 0, 97, 1, 33], heads=1, dim=32),
    # one group over several query tiles (128 rows) and key tiles (64 rows), 4 heads, D 64
    "tiles-h4-d64": lambda: grouped_case([300, 5], heads=4, dim=64),
    "one-token": lambda: grouped_case([1], heads=4, dim=64),
    # cross-attention to 41 shared keys; the second group sees none
    "cross-h4-d32": lambda: grouped_case([37, 6, 0, 90, 5, 13], heads=4, dim=32, keys=41),
    "cross-h1-d64": lambda: grouped_case([20, 3, 70], heads=1, dim=64, keys=77),
    # a value dim unlike the head dim, and a head dim that is no power of two (masked lanes)
    "dv16-d40": lambda: grouped_case([50, 0, 19], heads=2, dim=40, value_dim=16),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case, dtype):
    check_against_reference(*CASES[case](), dtype)


def test_queries_without_keys_get_zeros_and_no_gradient():
    q, k, v, groups, kv_groups = grouped_case([10, 4, 6], heads=2, dim=32, keys=20)
    inputs = [t.float().requires_grad_(True) for t in (q, k, v)]
    out = part_attention_triton(*inputs, groups, kv_groups)
    out.sum().backward()
    lonely = groups.perm[10:14]  # the second group's tokens
    assert torch.equal(out[lonely], torch.zeros_like(out[lonely]))
    assert torch.equal(inputs[0].grad[lonely], torch.zeros_like(inputs[0].grad[lonely]))
    assert torch.isfinite(inputs[1].grad).all() and torch.isfinite(inputs[2].grad).all()


def test_deterministic():
    q, k, v, groups, kv_groups = grouped_case([150, 7, 60], heads=2, dim=32)
    runs = []
    for _ in range(2):
        inputs = [t.float().requires_grad_(True) for t in (q, k, v)]
        out = part_attention_triton(*inputs, groups, kv_groups)
        out.square().sum().backward()
        runs.append([out.detach()] + [t.grad for t in inputs])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_strided_inputs():
    q, k, v, groups, _ = grouped_case([40, 17], heads=2, dim=32)
    big = [torch.randn(57, 4, 64, dtype=torch.float32, device=DEVICE) for _ in range(3)]
    for b, t in zip(big, (q, k, v), strict=True):
        b[:, ::2, 1::2] = t.float()
    for views in ([b[:, ::2, 1::2] for b in big], [b[:, ::2, :32] for b in big]):  # last dim strided / not
        assert not views[0].is_contiguous()
        out = part_attention_triton(*views, groups)
        want = part_attention_reference(*(t.double() for t in views), groups)
        assert (out.double() - want).abs().max() < 1e-5


def test_no_nan_with_equal_or_huge_logits():
    n = 90
    groups = PartGroups(torch.arange(n, device=DEVICE), cu_seqlens_from_lengths([30, 30, 30]).to(DEVICE), 30)
    v = torch.randn(n, 2, 16, device=DEVICE)
    for fill in (0.0, 1e4):
        q = torch.full((n, 2, 16), fill, device=DEVICE, requires_grad=True)
        k = torch.full((n, 2, 16), fill, device=DEVICE, requires_grad=True)
        out = part_attention_triton(q, k, v, groups)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
        torch.testing.assert_close(out[0], v[:30].mean(0), rtol=1e-5, atol=1e-5)


def test_custom_scale_and_empty_input():
    q, k, v, groups, _ = grouped_case([25, 9], heads=2, dim=32)
    out = part_attention_triton(q.float(), k.float(), v.float(), groups, scale=0.05)
    assert (out.double() - part_attention_reference(q, k, v, groups, scale=0.05)).abs().max() < 1e-5
    empty = PartGroups(
        torch.zeros(0, dtype=torch.long, device=DEVICE), torch.zeros(3, dtype=torch.int32, device=DEVICE), 0
    )
    none = torch.zeros(0, 2, 32, device=DEVICE)
    assert part_attention_triton(none, none, none, empty).shape == (0, 2, 32)


def test_opcheck_schema_fake_and_autograd():
    q, k, v, groups, _ = grouped_case([20, 11], heads=2, dim=16)
    args = [t.float().requires_grad_(True) for t in (q, k, v)]
    args += [groups.perm, groups.cu_seqlens, groups.perm, groups.cu_seqlens, groups.max_seqlen, groups.max_seqlen, 0.25]
    torch.library.opcheck(torch.ops.partgen.triton_part_attention_fwd.default, args)


def test_dispatcher_runs_it_by_name_and_its_self_check_passes(monkeypatch, caplog):
    q, k, v, groups, kv_groups = grouped_case([30, 4, 12], heads=2, dim=32, keys=25)
    low = [t.float() for t in (q, k, v)]
    out = attn.attention(*low, groups, kv_groups, backend="partgen_triton")
    assert (out.double() - part_attention_reference(q, k, v, groups, kv_groups)).abs().max() < 1e-5
    backend = attn.BACKENDS["partgen_triton"]
    assert attn.self_check(backend, DEVICE, torch.float32, 32, 32, grad=True) == ""
    if INTERPRETED:  # auto takes it on CUDA only: on the CPU it is the (slow) interpreter
        inp = attn._make_inputs(*low, groups, kv_groups, None)
        assert backend.not_supported_reasons(inp) == []
        monkeypatch.setattr(attn, "BACKENDS", {"partgen_triton": backend, "reference": attn.BACKENDS["reference"]})
        assert attn.select_backend(inp, "auto").name == "reference"
    else:  # on CUDA, auto checks it (once) and takes it unless flash_attn comes first
        monkeypatch.setattr(attn, "_self_checks", {})
        monkeypatch.setattr(attn, "BACKENDS", {n: b for n, b in attn.BACKENDS.items() if n != "flash_attn"})
        with caplog.at_level(logging.WARNING, logger="partgen.nn.attention"):
            assert attn.select_backend(attn._make_inputs(*low, groups, kv_groups, None), "auto") is backend
        assert caplog.text == ""
