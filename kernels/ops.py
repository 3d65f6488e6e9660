"""Part attention as a registered torch op: schema, fake (meta) twin, autograd, public function.

Legend: N_q / N_k query / key tokens, H heads, D head dim, D_v value dim, G groups, M_k key rows.

Three layers, as flash-attention has them:
  torch.ops.partgen.part_attention_fwd / _bwd   registered ops (C++ kernels for CPU and CUDA,
                                                fake twins so torch.compile can trace them)
  autograd registration                         backward = part_attention_bwd from saved lse
  part_attention(...)                           validates, runs the native op (or says why it cannot)
"""

from __future__ import annotations

import torch

from partgen.kernels import build
from partgen.structures import PartGroups

_lib = torch.library.Library("partgen", "DEF")
_lib.define(
    "part_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor q_perm, Tensor q_cu, Tensor k_perm, Tensor k_cu, "
    "int max_q, int max_k, float scale) -> (Tensor, Tensor)"
)
_lib.define(
    "part_attention_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor q_perm, "
    "Tensor q_cu, Tensor k_perm, Tensor k_cu, int max_q, int max_k, float scale) -> (Tensor, Tensor, Tensor)"
)


@torch.library.register_fake("partgen::part_attention_fwd")
def _fwd_fake(q, k, v, q_perm, q_cu, k_perm, k_cu, max_q, max_k, scale):
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[2])
    lse = q.new_empty(q.shape[0], q.shape[1], dtype=torch.float32)
    return out, lse


@torch.library.register_fake("partgen::part_attention_bwd")
def _bwd_fake(dout, q, k, v, out, lse, q_perm, q_cu, k_perm, k_cu, max_q, max_k, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, q_perm, q_cu, k_perm, k_cu, max_q, max_k, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, q_perm, q_cu, k_perm, k_cu)
    ctx.max_q, ctx.max_k, ctx.scale = max_q, max_k, scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, q_perm, q_cu, k_perm, k_cu = ctx.saved_tensors
    dq, dk, dv = torch.ops.partgen.part_attention_bwd(
        dout.contiguous(), q, k, v, out, lse, q_perm, q_cu, k_perm, k_cu, ctx.max_q, ctx.max_k, ctx.scale
    )
    return dq, dk, dv, None, None, None, None, None, None, None


torch.library.register_autograd("partgen::part_attention_fwd", _backward, setup_context=_setup_context)

NATIVE_DTYPES = {
    "cpu": (torch.float32, torch.bfloat16),
    "cuda": (torch.float32, torch.bfloat16, torch.float16),
}


def native_available(device_type: str) -> tuple[bool, str]:
    """Whether the compiled op for a device type is loaded (building it on first ask)."""
    if device_type == "cpu":
        return build.load_cpu_op()
    if device_type == "cuda":
        return build.load_cuda_op()
    return False, f"no compiled part-attention op for device {device_type}"


def check_shapes(q, k, v, q_groups: PartGroups, kv_groups: PartGroups) -> None:
    """Cheap checks (no pass over the data) of an attention call; ValueError naming the problem."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a 3-D (tokens, heads, dim) tensor")
    if not (q.shape[1] == k.shape[1] == v.shape[1]):
        raise ValueError(f"shape mismatch: head counts differ: q {q.shape[1]}, k {k.shape[1]}, v {v.shape[1]}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"shape mismatch: q and k head dims differ: {q.shape[2]} vs {k.shape[2]}")
    if k.shape[0] != v.shape[0]:
        raise ValueError(f"shape mismatch: k and v token counts differ: {k.shape[0]} vs {v.shape[0]}")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device == q_groups.device == kv_groups.device):
        raise ValueError("q, k, v and the groups must be on one device")
    if q_groups.num_groups != kv_groups.num_groups:
        raise ValueError(
            f"query and key groupings differ in group count: {q_groups.num_groups} vs {kv_groups.num_groups}"
        )
    if q_groups.perm.numel() != q.shape[0]:
        raise ValueError(f"q_groups.perm must order all {q.shape[0]} queries, has {q_groups.perm.numel()} entries")
    if kv_groups is q_groups and k.shape[0] != q.shape[0]:
        raise ValueError(f"self-attention groups need as many keys as queries: {k.shape[0]} vs {q.shape[0]}")


def validate_inputs(q, k, v, q_groups: PartGroups, kv_groups: PartGroups) -> None:
    """check_shapes, then a full pass over the groups (cu_seqlens, permutation, index ranges)."""
    check_shapes(q, k, v, q_groups, kv_groups)
    q_groups.validate(num_tokens=q.shape[0], permutation=True)
    kv_groups.validate(num_tokens=k.shape[0], permutation=False)


def part_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    groups: PartGroups,
    kv_groups: PartGroups | None = None,
    scale: float | None = None,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """Group attention with fused gather/scatter by the compiled op. Token order in, token order out.

    q:         (N_q, H, D)  float32 or bfloat16 (float16 too on CUDA), any strides
    k, v:      (N_k, H, D), (N_k, H, D_v), same dtype
    groups:    PartGroups over the queries; its perm is a permutation of N_q
    kv_groups: PartGroups over the keys with the same group count (None: groups, self-attention);
               its perm may select or repeat keys (per-part visible image tokens)
    scale:     softmax scale, default D ** -0.5
    returns    (N_q, H, D_v) in q's dtype; a query whose group has no key gets zeros.

    Runs the native op for q's device or raises RuntimeError naming why it cannot (not built, a
    dtype it does not take). Choosing another way when it cannot is partgen.nn.attention's job
    (its backends, the reference among them); part_attention_reference is the exact twin.
    """
    kv_groups = groups if kv_groups is None else kv_groups
    if validate:
        validate_inputs(q, k, v, groups, kv_groups)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    loaded, why_not = native_available(q.device.type)
    if loaded and q.dtype not in NATIVE_DTYPES.get(q.device.type, ()):
        loaded, why_not = False, f"dtype {q.dtype} is not supported by the compiled op on {q.device.type}"
    if not loaded:
        raise RuntimeError(f"the compiled part-attention op cannot run: {why_not}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out, _ = torch.ops.partgen.part_attention_fwd(
        q,
        k,
        v,
        groups.perm,
        groups.cu_seqlens,
        kv_groups.perm,
        kv_groups.cu_seqlens,
        groups.max_seqlen,
        kv_groups.max_seqlen,
        scale,
    )
    return out
