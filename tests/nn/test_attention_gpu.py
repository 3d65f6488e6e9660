"""CUDA attention backends against the fp64 reference (run by scripts/gpu_check.sh on a GPU machine).

Low-precision rule (flash-attention's): err(backend, ref64) <= 2 * err(reference in that dtype, ref64) + eps.
"""

import pytest
import torch

from partgen.nn.attention import BACKENDS, _make_inputs, attention, self_check
from partgen.structures import groups_from_mask, part_groups

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA_BACKENDS = ["flash_attn", "partgen_triton", "partgen_cuda", "xformers", "flex", "sdpa_loop"]
PARTGEN_KERNELS = ["partgen_triton", "partgen_cuda"]


def case(n, parts, heads, dim, cross=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, 2, (n,), generator=g)
    part = torch.randint(0, parts, (n,), generator=g)
    q_groups = part_groups(batch, part, num_parts=parts, batch_size=2)
    q = torch.randn(n, heads, dim, generator=g, dtype=torch.float64)
    if cross:
        m = 77
        visible = torch.rand(q_groups.num_groups, m, generator=g) < 0.5
        visible[q_groups.seqlens > 0] |= torch.arange(m) == 0  # every non-empty group sees a key
        kv_groups = groups_from_mask(visible)
        k, v = (torch.randn(m, heads, dim, generator=g, dtype=torch.float64) for _ in range(2))
    else:
        kv_groups = None
        k, v = (torch.randn(n, heads, dim, generator=g, dtype=torch.float64) for _ in range(2))
    dev = torch.device("cuda")
    return q.to(dev), k.to(dev), v.to(dev), q_groups.to(dev), None if kv_groups is None else kv_groups.to(dev)


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(
    "shape", [(1, 1, 2, 64), (97, 3, 4, 64), (1025, 8, 8, 128), (4096, 600, 2, 32), (300, 4, 2, 33), (5000, 2, 2, 64)]
)
@pytest.mark.parametrize("cross", [False, True])
def test_cuda_backend_within_twice_low_precision_reference_error(backend, dtype, shape, cross):
    q, k, v, qg, kg = case(*shape, cross=cross)
    low = [t.to(dtype) for t in (q, k, v)]
    reasons = BACKENDS[backend].not_supported_reasons(_make_inputs(*low, qg, kg, None))
    if reasons:
        pytest.skip("; ".join(reasons))
    ref64 = attention(q, k, v, qg, kg, backend="reference")
    ref_low = attention(*low, qg, kg, backend="reference").double()
    out = attention(*low, qg, kg, backend=backend).double()
    eps = 1e-5 if dtype == torch.float32 else 1e-3
    assert (out - ref64).abs().max() <= 2 * (ref_low - ref64).abs().max() + eps


@pytest.mark.parametrize("backend", PARTGEN_KERNELS)
def test_partgen_kernels_are_deterministic(backend):
    q, k, v, qg, kg = case(3000, 6, 4, 64)
    runs = []
    for _ in range(2):
        inputs = [t.to(torch.bfloat16).requires_grad_(True) for t in (q, k, v)]
        out = attention(*inputs, qg, kg, backend=backend)
        out.float().square().sum().backward()
        runs.append([out.detach()] + [t.grad for t in inputs])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_cuda_backend_gradients(backend):
    q, k, v, qg, kg = case(500, 5, 2, 64)
    low = [t.to(torch.bfloat16).requires_grad_(True) for t in (q, k, v)]
    reasons = BACKENDS[backend].not_supported_reasons(_make_inputs(*low, qg, kg, None))
    if reasons:
        pytest.skip("; ".join(reasons))
    grad_out = torch.randn_like(q)
    ref = [t.clone().requires_grad_(True) for t in (q, k, v)]
    attention(*ref, qg, kg, backend="reference").backward(grad_out)
    ref_low = [t.detach().clone().requires_grad_(True) for t in low]
    attention(*ref_low, qg, kg, backend="reference").backward(grad_out.to(torch.bfloat16))
    attention(*low, qg, kg, backend=backend).backward(grad_out.to(torch.bfloat16))
    for got, lowref, want in zip(low, ref_low, ref, strict=True):
        bound = 2 * (lowref.grad.double() - want.grad).abs().max() + 1e-3
        assert (got.grad.double() - want.grad).abs().max() <= bound


@pytest.mark.parametrize("backend", PARTGEN_KERNELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("dims", [(64, 64), (128, 128), (32, 32)])
def test_partgen_kernels_pass_the_auto_self_check(backend, dtype, dims):
    """What backend="auto" runs before it first takes a backend on CUDA: a pass here means auto uses it."""
    q, k, v, qg, kg = case(10, 2, 2, dims[0])
    reasons = BACKENDS[backend].not_supported_reasons(_make_inputs(q.to(dtype), k.to(dtype), v.to(dtype), qg, kg, None))
    if reasons:
        pytest.skip("; ".join(reasons))
    assert self_check(BACKENDS[backend], torch.device("cuda"), dtype, *dims, grad=True) == ""
