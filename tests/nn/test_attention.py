"""Group attention: every CPU backend against a dense masked fp64 computation, and dispatch rules."""

import logging

import pytest
import torch

from partgen.kernels import native_available, part_attention_reference
from partgen.nn import attention as attn
from partgen.nn.attention import BACKENDS, attention, use_attention_backend
from partgen.structures import cu_seqlens_from_lengths, groups_from_cu_seqlens, groups_from_mask, part_groups

CPU_BACKENDS = ["reference", "sdpa_loop", "flex"]  # fp64-capable; partgen_cpu is tested in tests/kernels
GRAD_BACKENDS = ["reference", "sdpa_loop"]


def dense_masked(q, k, v, visible, scale=None):
    """Ground truth by a different route: full scores, mask (N_q, N_k), softmax; rows with no key -> 0."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, -1).nan_to_num(0.0)
    return torch.einsum("hqk,khd->qhd", probs, v)


def self_case(n, heads, dim, batch_size=2, parts=4, num_parts=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, batch_size, (n,), generator=g)
    part = torch.randint(0, parts, (n,), generator=g)
    groups = part_groups(batch, part, num_parts=num_parts, batch_size=batch_size if num_parts else None)
    q, k, v = (torch.randn(n, heads, dim, generator=g, dtype=torch.float64) for _ in range(3))
    visible = (batch[:, None] == batch[None]) & (part[:, None] == part[None])
    return q, k, v, groups, None, visible


def cross_case(n, m, heads, dim, seed=0):
    """Voxels in 5 part groups, image tokens each visible to a random subset of groups (some to none)."""
    g = torch.Generator().manual_seed(seed)
    part = torch.randint(0, 5, (n,), generator=g)
    q_groups = part_groups(torch.zeros(n, dtype=torch.long), part, num_parts=5, batch_size=1)
    seen = torch.rand(5, m, generator=g) < 0.4
    seen[3] = False  # a group that sees no image token: its queries get zeros
    kv_groups = groups_from_mask(seen)
    q = torch.randn(n, heads, dim, generator=g, dtype=torch.float64)
    k, v = (torch.randn(m, heads, dim, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, v, q_groups, kv_groups, seen[part]


CASES = {
    "one-token": lambda: self_case(1, 2, 8),
    "n7-odd-dim": lambda: self_case(7, 3, 7),
    "n97-empty-groups": lambda: self_case(97, 2, 16, batch_size=3, parts=3, num_parts=5),
    "n1025": lambda: self_case(1025, 2, 32, batch_size=2, parts=6),
    "singletons": lambda: self_case(64, 2, 8, batch_size=1, parts=600),
    "plain-batches": lambda: (
        *(torch.randn(9, 2, 8, dtype=torch.float64) for _ in range(3)),
        groups_from_cu_seqlens(cu_seqlens_from_lengths([4, 0, 5])),
        None,
        torch.block_diag(torch.ones(4, 4), torch.ones(5, 5)).bool(),
    ),
    "cross-per-part-images": lambda: cross_case(50, 33, 2, 16),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_forward_matches_dense_fp64(backend, case):
    q, k, v, qg, kg, visible = CASES[case]()
    out = attention(q, k, v, qg, kg, backend=backend)
    assert out.shape == q.shape[:2] + v.shape[2:]
    torch.testing.assert_close(out, dense_masked(q, k, v, visible), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", ["n7-odd-dim", "n97-empty-groups", "singletons", "cross-per-part-images"])
@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_gradients_match_dense_fp64(backend, case):
    q, k, v, qg, kg, visible = CASES[case]()
    weight = torch.randn(q.shape[0], q.shape[1], v.shape[2], dtype=torch.float64)
    grads = []
    for fn in (lambda *t: attention(*t, qg, kg, backend=backend), lambda *t: dense_masked(*t, visible)):
        inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
        (fn(*inputs) * weight).sum().backward()
        grads.append([t.grad for t in inputs])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", ["sdpa_loop", "flex"])
def test_fp32_backends_close_to_fp64(backend):
    q, k, v, qg, _, visible = self_case(300, 4, 64, parts=5)
    out = attention(q.float(), k.float(), v.float(), qg, backend=backend)
    want = dense_masked(q, k, v, visible)
    assert (out.double() - want).abs().max() < 1e-5


def test_custom_scale_is_used():
    q, k, v, qg, _, visible = self_case(40, 2, 8)
    for backend in CPU_BACKENDS:
        torch.testing.assert_close(
            attention(q, k, v, qg, scale=0.3, backend=backend), dense_masked(q, k, v, visible, 0.3)
        )


def test_no_nan_with_equal_or_huge_logits():
    q = torch.full((20, 2, 8), 1e4)
    k = torch.full((20, 2, 8), 1e4)
    v = torch.randn(20, 2, 8)
    groups = part_groups(torch.zeros(20, dtype=torch.long), torch.arange(20) % 3)
    for backend in ["reference", "sdpa_loop"]:
        out = attention(q, k, v, groups, backend=backend)
        assert torch.isfinite(out).all()
        # all logits equal within a group: the output is the group's mean value
        torch.testing.assert_close(out[0], v[torch.arange(20) % 3 == 0].mean(0))


def test_flex_refuses_backward_on_cpu_with_reason():
    q, k, v, qg, _, _ = self_case(10, 2, 8)
    q.requires_grad_(True)
    with pytest.raises(ValueError, match="flex_attention has no backward on CPU"):
        attention(q, k, v, qg, backend="flex")


def test_auto_picks_first_capable_backend_and_defaults_can_be_set(monkeypatch):
    q, k, v, qg, _, _ = self_case(10, 2, 8)
    inp = attn._make_inputs(q.float(), k.float(), v.float(), qg, None, None)
    native_cpu = native_available("cpu")[0]
    assert attn.select_backend(inp, "auto").name == ("partgen_cpu" if native_cpu else "sdpa_loop")
    assert attn.select_backend(attn._make_inputs(q, k, v, qg, None, None), "auto").name == "sdpa_loop"  # fp64
    with use_attention_backend("reference"):
        assert attn.default_backend() == "reference"
        assert attn.select_backend(inp).name == "reference"
    assert attn.default_backend() == "auto"
    monkeypatch.setenv(attn.ENV_VAR, "flex")
    assert attn.select_backend(inp).name == "flex"
    monkeypatch.setenv(attn.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="unknown attention backend 'nonsense'"):
        attn.select_backend(inp)


def test_every_backend_says_why_not_and_errors_list_reasons(monkeypatch):
    q, k, v, qg, _, _ = self_case(10, 2, 8)
    inp = attn._make_inputs(q, k, v, qg, None, None)
    reasons = attn.supported_backends(inp)
    assert set(reasons) == set(BACKENDS)
    assert reasons["reference"] == [] and reasons["sdpa_loop"] == []
    assert any("CUDA" in r for r in reasons["flash_attn"]) and any("CUDA" in r for r in reasons["xformers"])
    assert reasons["partgen_cpu"] == ["partgen_cpu takes torch.float32, torch.bfloat16, got torch.float64"]
    assert reasons["partgen_cuda"] == ["partgen_cuda runs on cuda, input on cpu"]
    assert any("partgen_triton runs on CUDA" in r for r in reasons["partgen_triton"])
    with pytest.raises(ValueError, match="flash_attn cannot run this input: .*CUDA"):
        attention(q, k, v, qg, backend="flash_attn")
    monkeypatch.setattr(attn, "BACKENDS", {"xformers": BACKENDS["xformers"]})
    with pytest.raises(ValueError, match="no attention backend can run this input:\n  xformers: "):
        attention(q, k, v, qg)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda q, k, v, g: (q[:, :1], k, v, g), "head counts differ"),
        (lambda q, k, v, g: (q, k[..., :3], v, g), "head dims differ"),
        (lambda q, k, v, g: (q, k, v[:5], g), "token counts differ"),
        (lambda q, k, v, g: (q, k.float(), v, g), "share one floating dtype"),
        (lambda q, k, v, g: (q[:5], k[:5], v[:5], g), "must order all 5 queries"),
        (lambda q, k, v, g: (q[..., 0], k, v, g), "3-D"),
    ],
)
def test_bad_inputs_raise_value_error(mutate, message):
    q, k, v, qg, _, _ = self_case(10, 2, 8)
    with pytest.raises(ValueError, match=message):
        attention(*mutate(q, k, v, qg))


def test_mismatched_group_counts_raise():
    q, k, v, _, _, _ = self_case(10, 2, 8)
    qg = groups_from_cu_seqlens(cu_seqlens_from_lengths([10]))
    kg = groups_from_cu_seqlens(cu_seqlens_from_lengths([4, 6]))
    with pytest.raises(ValueError, match="group count"):
        attention(q, k, v, qg, kg)


def test_debug_mode_validates_groups(monkeypatch):
    q, k, v, qg, _, _ = self_case(10, 2, 8)
    monkeypatch.setenv("PARTGEN_DEBUG", "1")
    bad = type(qg)(perm=torch.zeros(10, dtype=torch.long), cu_seqlens=qg.cu_seqlens, max_seqlen=qg.max_seqlen)
    with pytest.raises(ValueError, match="not a permutation"):
        attention(q, k, v, bad)


class FakeBackend(attn.AttentionBackend):
    """The reference, optionally wrong (forward or gradient only) or crashing; counts its calls."""

    def __init__(self, name, wrong_forward=False, wrong_grad=False, crash=False):
        self.name, self.wrong_forward, self.wrong_grad, self.crash = name, wrong_forward, wrong_grad, crash
        self.calls = 0

    def not_supported_reasons(self, inp):
        return []

    def forward(self, inp):
        self.calls += 1
        if self.crash:
            raise RuntimeError("an illegal memory access was encountered")
        out = part_attention_reference(inp.q, inp.k, inp.v, inp.q_groups, inp.kv_groups, inp.scale)
        if self.wrong_grad:  # right values, half the gradient
            return out.detach() + 0.5 * (out - out.detach())
        return out * 1.5 if self.wrong_forward else out


@pytest.fixture
def self_checked_cpu(monkeypatch):
    """Self-checks on CPU (as on CUDA), an empty cache, and BACKENDS set by the test."""
    monkeypatch.setattr(attn, "SELF_CHECK_DEVICES", ("cpu",))
    monkeypatch.setattr(attn, "_self_checks", {})

    def use(*backends):
        monkeypatch.setattr(attn, "BACKENDS", {b.name: b for b in (*backends, BACKENDS["reference"])})

    return use


def test_self_checks_guard_cuda_only_by_default():
    assert attn.SELF_CHECK_DEVICES == ("cuda",)
    assert not BACKENDS["reference"].self_checked
    assert BACKENDS["partgen_triton"].auto_devices == ("cuda",)
    # the CUDA order: flash_attn varlen, partgen_triton, partgen_cuda, xformers, the SDPA loop
    order = list(BACKENDS)
    assert [n for n in order if n in ("flash_attn", "partgen_triton", "partgen_cuda", "xformers", "sdpa_loop")] == [
        "flash_attn",
        "partgen_triton",
        "partgen_cuda",
        "xformers",
        "sdpa_loop",
    ]


def test_auto_skips_backends_failing_their_self_check_with_one_warning_each(self_checked_cpu, monkeypatch, caplog):
    wrong, crashing, good = (
        FakeBackend("wrong", wrong_forward=True),
        FakeBackend("crashing", crash=True),
        FakeBackend("good"),
    )
    self_checked_cpu(wrong, crashing, good)
    q, k, v, qg, _, visible = self_case(50, 2, 8)
    with caplog.at_level(logging.WARNING, logger="partgen.nn.attention"):
        for _ in range(3):
            out = attention(q, k, v, qg)
    torch.testing.assert_close(out, dense_masked(q, k, v, visible))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert "backend wrong failed its self-check" in warned[0] and "self out: error" in warned[0]
    assert "backend crashing failed its self-check" in warned[1] and "raised RuntimeError: an illegal" in warned[1]
    # each check ran once: wrong and crashing stopped at their first case; good ran both cases,
    # then the three calls
    assert (wrong.calls, crashing.calls, good.calls) == (1, 1, 2 + 3)
    monkeypatch.setattr(attn, "BACKENDS", {"wrong": wrong})
    with pytest.raises(ValueError, match="no attention backend .*\n  wrong: failed its self-check in this process"):
        attention(q, k, v, qg)
    assert attention(q, k, v, qg, backend="wrong").sub(out).abs().max() > 0.1  # named: runs, unchecked


def test_self_check_covers_gradients_when_inputs_need_them(self_checked_cpu, caplog):
    bad_grad = FakeBackend("bad_grad", wrong_grad=True)
    self_checked_cpu(bad_grad)
    q, k, v, qg, _, _ = self_case(30, 2, 8)
    assert attn.select_backend(attn._make_inputs(q, k, v, qg, None, None)).name == "bad_grad"  # forward is right
    leaf = q.clone().requires_grad_(True)
    with caplog.at_level(logging.WARNING, logger="partgen.nn.attention"):
        assert attn.select_backend(attn._make_inputs(leaf, k, v, qg, None, None)).name == "reference"
    assert "grad=True" in caplog.text and "self dq: error" in caplog.text
    assert len(attn._self_checks) == 2  # one entry per (backend, device, dtype, D, D_v, grad)


def test_self_check_passes_the_real_cpu_backends():
    cpu = torch.device("cpu")
    assert attn.self_check(BACKENDS["sdpa_loop"], cpu, torch.float32, 16, 16, grad=True) == ""
    assert attn.self_check(BACKENDS["sdpa_loop"], cpu, torch.bfloat16, 16, 8, grad=True) == ""
    assert attn.self_check(BACKENDS["flex"], cpu, torch.float32, 16, 16, grad=False) == ""
    if native_available("cpu")[0]:
        assert attn.self_check(BACKENDS["partgen_cpu"], cpu, torch.float32, 64, 64, grad=True) == ""
        assert attn.self_check(BACKENDS["partgen_cpu"], cpu, torch.bfloat16, 64, 64, grad=True) == ""


def test_sdpa_loop_batches_equal_sets_as_the_reference(monkeypatch):
    """Equal-size query and key sets (a batch of latent sets cross-attending to image tokens) take
    sdpa_loop's single batched call: outputs and gradients match the reference, and the same sets
    with one shorter still match (the per-group loop, one call per set)."""
    calls = []
    sdpa = attn.F.scaled_dot_product_attention
    monkeypatch.setattr(attn.F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or sdpa(*a, **kw))
    g = torch.Generator().manual_seed(3)
    for q_lengths, kv_lengths, want_calls in (([6, 6, 6], [4, 4, 4], 1), ([6, 5, 6], [4, 4, 4], 3)):
        calls.clear()
        q, k, v = (
            torch.randn(sum(n), 2, 8, generator=g, dtype=torch.float64, requires_grad=True)
            for n in (q_lengths, kv_lengths, kv_lengths)
        )
        q_groups = groups_from_cu_seqlens(cu_seqlens_from_lengths(q_lengths))
        kv_groups = groups_from_cu_seqlens(cu_seqlens_from_lengths(kv_lengths))
        got = attention(q, k, v, q_groups, kv_groups, backend="sdpa_loop")
        assert len(calls) == want_calls
        want = attention(q, k, v, q_groups, kv_groups, backend="reference")
        torch.testing.assert_close(got, want)
        grads = torch.autograd.grad((got * torch.arange(got.numel()).view_as(got)).sum(), (q, k, v))
        want_grads = torch.autograd.grad((want * torch.arange(want.numel()).view_as(want)).sum(), (q, k, v))
        for a, b in zip(grads, want_grads, strict=True):
            torch.testing.assert_close(a, b)
