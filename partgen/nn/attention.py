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
from partgen.structures import PartGroups

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

    def not_supported_reasons(self, inp: AttentionInputs) -> list[str]:
        raise NotImplementedError

    def forward(self, inp: AttentionInputs) -> torch.Tensor:
        raise NotImplementedError


def _missing(module: str) -> list[str]:
    return [] if importlib.util.find_spec(module) is not None else [f"package {module} is not installed"]


class ReferenceBackend(AttentionBackend):
    """partgen.kernels' exact PyTorch reference: always available, slow, any dtype."""

    name = "reference"

    def not_supported_reasons(self, inp):
        return []

    def forward(self, inp):
        return part_attention_reference(inp.q, inp.k, inp.v, inp.q_groups, inp.kv_groups, inp.scale)


class SdpaLoopBackend(AttentionBackend):
    """One torch scaled_dot_product_attention call per group (any device, forward and backward)."""

    name = "sdpa_loop"

    def not_supported_reasons(self, inp):
        if inp.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            return [f"dtype {inp.dtype} is not a floating type SDPA takes"]
        return []

    def forward(self, inp):
        q, k, v = inp.grouped()
        q_cu, kv_cu = inp.q_groups.cu_seqlens.tolist(), inp.kv_groups.cu_seqlens.tolist()
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
        why[b.name] = b.not_supported_reasons(inp)
        if not why[b.name]:
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
