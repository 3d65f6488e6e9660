"""Varlen group attention with backends chosen by capability.

Legend: N_q query tokens, N_k key tokens, H heads, D head dim, D_v value dim, G groups.

One entry point, `attention(q, k, v, q_groups, kv_groups)`, covers
  * plain batches            groups_from_cu_seqlens(cu_seqlens) for both sides,
  * Part Attention           q_groups = kv_groups = voxels.part_groups(),
  * part -> image tokens     q_groups over voxels, kv_groups over image tokens (a key may be
                             visible to several groups: groups_from_mask).
Group g's queries attend only to group g's keys; a query whose group has no key gets zeros.

Backends (xformers style): each one lists why it cannot run an input
(`not_supported_reasons`); `backend="auto"` walks BACKENDS in priority order and takes the
first with no reason. The default backend comes from `use_attention_backend(...)`, else the
environment variable PARTGEN_ATTENTION_BACKEND, else "auto".

On CUDA, `auto` takes a backend only after it has matched the reference on a small random case
in this process (`self_check`: once per backend, device, dtype, head dims and grad; cached). A
backend that fails logs one warning and `auto` falls back to the next. No CI machine has a GPU,
so no CUDA path is trusted untested. A backend named explicitly runs unchecked.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import importlib.util
import logging
import os
import warnings

import torch
import torch.nn.functional as F

from partgen.kernels import NATIVE_DTYPES, native_op, part_attention_reference
from partgen.kernels.ops import check_shapes, validate_inputs
from partgen.structures import PartGroups, cu_seqlens_from_lengths, groups_from_mask

log = logging.getLogger(__name__)

ENV_VAR = "PARTGEN_ATTENTION_BACKEND"
_default_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar("partgen_attention_backend", default=None)


@dataclasses.dataclass(eq=False)
class AttentionInputs:
    """One attention call. q (N_q, H, D), k (N_k, H, D), v (N_k, H, D_v), all in token order."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_groups: PartGroups
    kv_groups: PartGroups
    scale: float

    @property
    def device(self) -> torch.device:
        return self.q.device

    @property
    def dtype(self) -> torch.dtype:
        return self.q.dtype

    @property
    def requires_grad(self) -> bool:
        return torch.is_grad_enabled() and any(t.requires_grad for t in (self.q, self.k, self.v))

    @functools.cached_property
    def has_query_without_keys(self) -> bool:
        return bool(((self.q_groups.seqlens > 0) & (self.kv_groups.seqlens == 0)).any())

    def grouped(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v gathered into grouped order: (M_q, H, D), (M_k, H, D), (M_k, H, D_v)."""
        return self.q[self.q_groups.perm], self.k[self.kv_groups.perm], self.v[self.kv_groups.perm]

    def ungroup(self, out: torch.Tensor) -> torch.Tensor:
        """(M_q, H, D_v) in grouped order -> token order."""
        return out[self.q_groups.inverse]


class AttentionBackend:
    """A way to compute `attention`. Subclasses set `name` and implement both methods."""

    name: str = ""
    auto_devices: tuple[str, ...] | None = None  # device types `auto` may take it on (None: any)
    self_checked: bool = True  # on SELF_CHECK_DEVICES, `auto` takes it only once self_check passes

    def not_supported_reasons(self, inp: AttentionInputs) -> list[str]:
        raise NotImplementedError

    def forward(self, inp: AttentionInputs) -> torch.Tensor:
        raise NotImplementedError


def _missing(module: str) -> list[str]:
    return [] if importlib.util.find_spec(module) is not None else [f"package {module} is not installed"]


class ReferenceBackend(AttentionBackend):
    """partgen.kernels' exact PyTorch reference: always available, slow, any dtype."""

    name = "reference"
    self_checked = False  # the ground truth the self-checks compare against

    def not_supported_reasons(self, inp):
        return []

    def forward(self, inp):
        return part_attention_reference(inp.q, inp.k, inp.v, inp.q_groups, inp.kv_groups, inp.scale)


class SdpaLoopBackend(AttentionBackend):
    """One torch scaled_dot_product_attention call per group (any device, forward and backward); one
    batched call when every query group has the same length and every key group too (a batch of
    equal sets, as the layout flow's latents and image tokens are: no per-group launches on a GPU)."""

    name = "sdpa_loop"

    def not_supported_reasons(self, inp):
        if inp.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            return [f"dtype {inp.dtype} is not a floating type SDPA takes"]
        return []

    def forward(self, inp):
        q, k, v = inp.grouped()
        q_cu, kv_cu = inp.q_groups.cu_seqlens.tolist(), inp.kv_groups.cu_seqlens.tolist()
        groups = inp.q_groups.num_groups
        q_lengths = {b - a for a, b in zip(q_cu, q_cu[1:], strict=False)}
        kv_lengths = {b - a for a, b in zip(kv_cu, kv_cu[1:], strict=False)}
        if groups > 1 and len(q_lengths) == len(kv_lengths) == 1 and 0 not in q_lengths | kv_lengths:
            (n_q,), (n_k,), heads = q_lengths, kv_lengths, q.shape[1]
            out = F.scaled_dot_product_attention(
                q.view(groups, n_q, heads, -1).transpose(1, 2),
                k.view(groups, n_k, heads, -1).transpose(1, 2),
                v.view(groups, n_k, heads, -1).transpose(1, 2),
                scale=inp.scale,
            )  # (G, H, n_q, D_v)
            return inp.ungroup(out.transpose(1, 2).reshape(groups * n_q, heads, -1))
        outs = []
        for g in range(inp.q_groups.num_groups):
            # 4-D (1, H, n, D) views: torch's fused CPU kernel takes 4-D inputs only (3-D falls
            # back to the unfused math path, ~4x slower at n=2048)
            qg = q[q_cu[g] : q_cu[g + 1]].transpose(0, 1)[None]  # (1, H, n_q, D)
            if qg.shape[2] == 0:
                continue
            kg = k[kv_cu[g] : kv_cu[g + 1]].transpose(0, 1)[None]  # (1, H, n_k, D)
            vg = v[kv_cu[g] : kv_cu[g + 1]].transpose(0, 1)[None]
            if kg.shape[2] == 0:
                outs.append(v.new_zeros(qg.shape[2], v.shape[1], v.shape[2]))
                continue
            outs.append(F.scaled_dot_product_attention(qg, kg, vg, scale=inp.scale)[0].transpose(0, 1))
        grouped = torch.cat(outs) if outs else v.new_zeros(0, v.shape[1], v.shape[2])
        return inp.ungroup(grouped)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


class FlexBackend(AttentionBackend):
    """torch flex_attention with a group mask (forward only on CPU).

    Small CPU inputs run eagerly (which evaluates the whole N_q x N_k score matrix); larger ones
    and CUDA inputs through torch.compile (tens of seconds to compile, once per shape family).
    The block mask itself is built from an N_q x N_k boolean evaluation, hence the size limit.
    """

    name = "flex"
    eager_max_scores = 2**24  # H * M_q * M_k entries evaluated eagerly (64 MiB of fp32)
    max_mask_entries = 2**32  # M_q * M_k booleans evaluated to build the block mask

    def not_supported_reasons(self, inp):
        try:
            from torch.nn.attention import flex_attention  # noqa: F401
        except ImportError:
            return ["torch.nn.attention.flex_attention is not available in this torch"]
        reasons = []
        if inp.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            reasons.append(f"dtype {inp.dtype} is not supported by flex_attention")
        if inp.device.type == "cpu" and inp.requires_grad:
            reasons.append("flex_attention has no backward on CPU")
        if inp.device.type not in ("cpu", "cuda"):
            reasons.append(f"device {inp.device.type} is not supported by flex_attention")
        entries = inp.q_groups.perm.numel() * inp.kv_groups.perm.numel()
        if entries > self.max_mask_entries:
            reasons.append(f"the block mask needs {entries} mask evaluations (limit {self.max_mask_entries})")
        if inp.v.shape[-1] != inp.q.shape[-1]:
            reasons.append("flex_attention needs the value dim equal to the head dim")
        return reasons

    def forward(self, inp):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        q, k, v = inp.grouped()
        q_doc, kv_doc = inp.q_groups.group_index(), inp.kv_groups.group_index()

        def same_group(b, h, qi, ki):
            return q_doc[qi] == kv_doc[ki]

        mask = create_block_mask(same_group, None, None, q.shape[0], k.shape[0], device=str(inp.device))
        eager = inp.device.type == "cpu" and q.shape[1] * q.shape[0] * k.shape[0] <= self.eager_max_scores
        args = [t.transpose(0, 1)[None] for t in (q, k, v)]  # (1, H, M, D)
        if eager:
            with warnings.catch_warnings():  # it warns that eager mode is unfused: we know, inputs are small
                warnings.simplefilter("ignore", UserWarning)
                out = flex_attention(*args, block_mask=mask, scale=inp.scale)
        else:
            out = _compiled_flex()(*args, block_mask=mask, scale=inp.scale)
        return inp.ungroup(out[0].transpose(0, 1))


def _cuda_half_reasons(inp: AttentionInputs, who: str, dtypes: tuple[torch.dtype, ...]) -> list[str]:
    reasons = []
    if inp.device.type != "cuda":
        reasons.append(f"{who} runs on CUDA only (input on {inp.device.type})")
    if inp.dtype not in dtypes:
        reasons.append(f"{who} takes {', '.join(str(d) for d in dtypes)}, got {inp.dtype}")
    if inp.has_query_without_keys:
        reasons.append(f"{who}: some group has queries but no keys")
    return reasons


class XformersBackend(AttentionBackend):
    """xformers memory_efficient_attention with a BlockDiagonalMask over the groups (CUDA)."""

    name = "xformers"

    def not_supported_reasons(self, inp):
        return _missing("xformers") + _cuda_half_reasons(
            inp, "xformers", (torch.float16, torch.bfloat16, torch.float32)
        )

    def forward(self, inp):
        from xformers.ops import fmha

        q, k, v = inp.grouped()
        keep = (inp.q_groups.seqlens > 0).tolist()  # empty query groups contribute nothing
        q_lens = [n for n, kept in zip(inp.q_groups.seqlens.tolist(), keep, strict=True) if kept]
        kv_lens = [n for n, kept in zip(inp.kv_groups.seqlens.tolist(), keep, strict=True) if kept]
        kv_rows = torch.repeat_interleave(torch.tensor(keep, device=inp.device), inp.kv_groups.seqlens)
        k, v = k[kv_rows], v[kv_rows]
        bias = fmha.BlockDiagonalMask.from_seqlens(q_seqlen=q_lens, kv_seqlen=kv_lens)
        out = fmha.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias, scale=inp.scale)
        return inp.ungroup(out[0])


class FlashAttnBackend(AttentionBackend):
    """flash_attn_varlen_func over the groups (CUDA, fp16/bf16, head dim <= 256)."""

    name = "flash_attn"

    def not_supported_reasons(self, inp):
        reasons = _missing("flash_attn") + _cuda_half_reasons(inp, "flash_attn", (torch.float16, torch.bfloat16))
        if inp.q.shape[-1] > 256 or inp.q.shape[-1] % 8:
            reasons.append(f"flash_attn needs head dim <= 256 and a multiple of 8, got {inp.q.shape[-1]}")
        if inp.v.shape[-1] != inp.q.shape[-1]:
            reasons.append("flash_attn needs the value dim equal to the head dim")
        return reasons

    def forward(self, inp):
        from flash_attn import flash_attn_varlen_func

        q, k, v = inp.grouped()
        out = flash_attn_varlen_func(
            q,
            k,
            v,
            inp.q_groups.cu_seqlens,
            inp.kv_groups.cu_seqlens,
            inp.q_groups.max_seqlen,
            inp.kv_groups.max_seqlen,
            softmax_scale=inp.scale,
        )
        return inp.ungroup(out)


class TritonBackend(AttentionBackend):
    """partgen.kernels.triton's part-attention kernels (CUDA; CPU tensors under TRITON_INTERPRET=1).

    The interpreter runs the same kernel source on the CPU for tests, far slower than partgen_cpu:
    `auto` takes this backend on CUDA only.
    """

    name = "partgen_triton"
    auto_devices = ("cuda",)

    def not_supported_reasons(self, inp):
        reasons = _missing("triton")
        interpreted = os.environ.get("TRITON_INTERPRET") == "1"
        if inp.device.type != "cuda" and not (inp.device.type == "cpu" and interpreted):
            reasons.append(f"partgen_triton runs on CUDA (on CPU under TRITON_INTERPRET=1), input on {inp.device.type}")
        if reasons:
            return reasons
        from partgen.kernels.triton.part_attention import not_supported_reasons

        return not_supported_reasons(inp.q, inp.v)

    def forward(self, inp):
        from partgen.kernels.triton.part_attention import part_attention_triton

        return part_attention_triton(inp.q, inp.k, inp.v, inp.q_groups, inp.kv_groups, inp.scale)


class NativeBackend(AttentionBackend):
    """partgen.kernels' compiled op for one device type (built on first use, cached)."""

    def __init__(self, device_type: str):
        self.device_type = device_type
        self.name = f"partgen_{device_type}"

    def not_supported_reasons(self, inp):
        if inp.device.type != self.device_type:
            return [f"{self.name} runs on {self.device_type}, input on {inp.device.type}"]
        if inp.dtype not in NATIVE_DTYPES[self.device_type]:
            return [f"{self.name} takes {', '.join(str(d) for d in NATIVE_DTYPES[self.device_type])}, got {inp.dtype}"]
        op, why_not = native_op(self.device_type)
        return [] if op is not None else [why_not]

    def forward(self, inp):
        op, _ = native_op(self.device_type)
        return op(inp.q, inp.k, inp.v, inp.q_groups, inp.kv_groups, inp.scale)


# priority order for backend="auto": fastest first, the reference last (it always runs)
BACKENDS: dict[str, AttentionBackend] = {
    b.name: b
    for b in (
        FlashAttnBackend(),
        TritonBackend(),
        NativeBackend("cuda"),
        XformersBackend(),
        NativeBackend("cpu"),
        SdpaLoopBackend(),
        FlexBackend(),
        ReferenceBackend(),
    )
}


@contextlib.contextmanager
def use_attention_backend(name: str):
    """Within the block, attention(...) without backend= uses `name` ("auto" included)."""
    _check_name(name)
    token = _default_backend.set(name)
    try:
        yield
    finally:
        _default_backend.reset(token)


def default_backend() -> str:
    name = _default_backend.get() or os.environ.get(ENV_VAR) or "auto"
    _check_name(name)
    return name


def _check_name(name: str) -> None:
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; known: auto, {', '.join(BACKENDS)}")


_REFERENCE = BACKENDS["reference"]


def _make_inputs(q, k, v, q_groups, kv_groups, scale) -> AttentionInputs:
    kv_groups = q_groups if kv_groups is None else kv_groups
    if os.environ.get("PARTGEN_DEBUG"):
        validate_inputs(q, k, v, q_groups, kv_groups)
    else:
        check_shapes(q, k, v, q_groups, kv_groups)
    return AttentionInputs(q, k, v, q_groups, kv_groups, q.shape[-1] ** -0.5 if scale is None else float(scale))


def supported_backends(inp: AttentionInputs) -> dict[str, list[str]]:
    """Every backend's reasons for not running inp (an empty list: it can)."""
    return {name: b.not_supported_reasons(inp) for name, b in BACKENDS.items()}


# Device types on which `auto` takes a backend only after self_check: CUDA, where no CI machine
# has run anything. (CPU paths are tested by CI; tests patch this to exercise the logic on CPU.)
SELF_CHECK_DEVICES: tuple[str, ...] = ("cuda",)
# eps of the self-check rule, relative to the reference's largest magnitude; loose enough for TF32
# (a user may enable it) yet far below what a wrong kernel gives
SELF_CHECK_EPS = {torch.float64: 1e-6, torch.float32: 2e-3, torch.float16: 1e-2, torch.bfloat16: 2e-2}
_self_checks: dict[tuple, str] = {}  # (backend, device, dtype, D, D_v, grad) -> "" passed, else why not


def _self_check_cases(device: torch.device, head_dim: int, value_dim: int, heads: int = 2) -> dict[str, tuple]:
    """Small fp64 cases on device: (q, k, v, q_groups, kv_groups or None, weight of the output in the loss).

    self:  6 groups of 37, 1, 0, 150, 20, 5 tokens in shuffled token order (an empty group, a
           singleton, a group over several 64-row tiles)
    cross: the same queries; 41 keys, each seen by a random subset of the groups, every group
           seeing at least one (some backends refuse queries without keys)
    """
    g = torch.Generator().manual_seed(1234)
    lengths = [37, 1, 0, 150, 20, 5]
    n, m = sum(lengths), 41
    q_groups = PartGroups(
        perm=torch.randperm(n, generator=g), cu_seqlens=cu_seqlens_from_lengths(lengths), max_seqlen=max(lengths)
    ).to(device)
    visible = torch.rand(len(lengths), m, generator=g) < 0.4
    visible[:, 0] = True
    kv_groups = groups_from_mask(visible).to(device)

    def rand(rows, dim):
        return torch.randn(rows, heads, dim, generator=g, dtype=torch.float64).to(device)

    return {
        "self": (rand(n, head_dim), rand(n, head_dim), rand(n, value_dim), q_groups, None, rand(n, value_dim)),
        "cross": (rand(n, head_dim), rand(m, head_dim), rand(m, value_dim), q_groups, kv_groups, rand(n, value_dim)),
    }


def self_check(
    b: AttentionBackend, device: torch.device, dtype: torch.dtype, head_dim: int, value_dim: int, grad: bool
) -> str:
    """Run b on _self_check_cases against the reference: "" when it agrees, else what went wrong.

    Rule (flash-attention's): err(b, ref64) <= 2 * err(reference in dtype, ref64) + eps * max(1, |ref64|)
    for the output and, with grad, dq, dk, dv. Exceptions propagate (the caller counts them as failures).
    """
    eps = SELF_CHECK_EPS.get(dtype, 1e-2)
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        for case, (q, k, v, q_groups, kv_groups, weight) in _self_check_cases(device, head_dim, value_dim).items():
            kv_groups = q_groups if kv_groups is None else kv_groups
            results = {}
            for who, runner, dt in (("ref64", _REFERENCE, torch.float64), ("low", _REFERENCE, dtype), ("b", b, dtype)):
                inputs = [t.detach().to(dt).requires_grad_(grad) for t in (q, k, v)]
                inp = AttentionInputs(*inputs, q_groups, kv_groups, head_dim**-0.5)
                if who == "b" and (reasons := b.not_supported_reasons(inp)):
                    return f"{case}: cannot run the check case: {'; '.join(reasons)}"
                out = runner.forward(inp)
                if grad:
                    (out * weight.to(dt)).sum().backward()
                results[who] = [out.detach().double()] + ([t.grad.double() for t in inputs] if grad else [])
            for label, got, low, ref in zip(
                ("out", "dq", "dk", "dv"), results["b"], results["low"], results["ref64"], strict=False
            ):
                err = (got - ref).abs().max().item()
                bound = 2 * (low - ref).abs().max().item() + eps * max(1.0, ref.abs().max().item())
                if not err <= bound:  # NaN fails too
                    return f"{case} {label}: error {err:.3g} > bound {bound:.3g}"
    return ""


def self_check_failure(b: AttentionBackend, inp: AttentionInputs) -> str:
    """Why `auto` may not take b for inp, or "" when it may (no check needed there, or passed).

    The check runs once per (backend, device, dtype, D, D_v, grad) in this process; the result is cached.
    """
    if not b.self_checked or inp.device.type not in SELF_CHECK_DEVICES:
        return ""
    key = (b.name, str(inp.device), inp.dtype, inp.q.shape[-1], inp.v.shape[-1], inp.requires_grad)
    if key not in _self_checks:
        try:
            failure = self_check(b, inp.device, inp.dtype, inp.q.shape[-1], inp.v.shape[-1], inp.requires_grad)
        except Exception as err:  # a crashing kernel is a failing one: fall back, say why
            failure = f"raised {type(err).__name__}: {err}"
        if failure:
            log.warning(
                "attention: backend %s failed its self-check against the reference on %s %s (D=%d, D_v=%d, grad=%s): "
                "%s; auto will not use it in this process",
                b.name,
                inp.device,
                inp.dtype,
                inp.q.shape[-1],
                inp.v.shape[-1],
                inp.requires_grad,
                failure,
            )
        _self_checks[key] = failure
    return _self_checks[key]


def select_backend(inp: AttentionInputs, backend: str | None = None) -> AttentionBackend:
    name = backend or default_backend()
    _check_name(name)
    if name != "auto":
        reasons = BACKENDS[name].not_supported_reasons(inp)
        if reasons:
            raise ValueError(f"attention backend {name} cannot run this input: {'; '.join(reasons)}")
        return BACKENDS[name]
    why = {}
    for b in BACKENDS.values():
        reasons = b.not_supported_reasons(inp)
        if not reasons and b.auto_devices is not None and inp.device.type not in b.auto_devices:
            reasons = [f"auto takes {b.name} on {', '.join(b.auto_devices)} only"]
        if not reasons and (failure := self_check_failure(b, inp)):
            reasons = [f"failed its self-check in this process: {failure}"]
        why[b.name] = reasons
        if not reasons:
            return b
    lines = "\n".join(f"  {n}: {'; '.join(r)}" for n, r in why.items())
    raise ValueError(f"no attention backend can run this input:\n{lines}")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_groups: PartGroups,
    kv_groups: PartGroups | None = None,
    *,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Group attention. q (N_q, H, D), k (N_k, H, D), v (N_k, H, D_v) -> (N_q, H, D_v), token order.

    q_groups:  PartGroups over the queries (a permutation of N_q tokens)
    kv_groups: PartGroups over the keys with the same group count; None means q_groups
               (self-attention); its perm may select or repeat keys
    scale:     softmax scale, default D ** -0.5
    backend:   a name in BACKENDS, "auto", or None for the current default
    """
    inp = _make_inputs(q, k, v, q_groups, kv_groups, scale)
    chosen = select_backend(inp, backend)
    log.debug(
        "attention: %s for q %s, k %s, %d groups", chosen.name, tuple(q.shape), tuple(k.shape), q_groups.num_groups
    )
    return chosen.forward(inp)
