"""Part attention in Triton: fused gather, online softmax, log-sum-exp saved; forward and backward.

Legend: N_q / N_k query / key tokens, H heads, D head dim, D_v value dim, G groups,
M_k grouped key rows (kv_groups.perm.numel()).

The contract of the CPU and CUDA ops (partgen.kernels.ops): q, k, v in token order; group g's
queries are q[q_perm[q_cu[g]:q_cu[g+1]]], its keys k[k_perm[k_cu[g]:k_cu[g+1]]]. Rows are gathered
through the permutations inside the kernels and results are written straight back to token order
(no permuted copies). A query whose group has no key gets zeros (log-sum-exp -inf).

Three layers, as flash-attention has them:
  torch.ops.partgen.triton_part_attention_fwd / _bwd   custom ops with fake twins (torch.compile)
  autograd registration                                backward from the saved log-sum-exp
  part_attention_triton(...)                           the public function

Kernels (G on grid axis 0, which has no 65535 limit; fp32 accumulation throughout):
  _fwd       (G, query tiles, H): flash-attention-2 forward, online softmax in base 2
  _bwd_dkdv  (G, key tiles, H):   dK, dV of a key tile over all its group's queries
  _bwd_dq    (G, query tiles, H): dQ of a query tile over all its group's keys
The backward recomputes probabilities from the log-sum-exp and splits dK/dV from dQ, so no kernel
uses atomics. dK, dV are written per grouped key row and summed into token order by index_add_:
with self-attention every key has one row, so the result is deterministic; with keys repeated
across groups (cross-attention) it is deterministic on CUDA under torch.use_deterministic_algorithms.

On CUDA the kernels are compiled. With TRITON_INTERPRET=1 in the environment before this module is
imported (triton decides when it decorates the kernels), the same source runs on CPU tensors in
Triton's interpreter: that is how CI tests it (tests/kernels/triton_part_attention/).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from partgen.structures import PartGroups

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256
LOG2E = 1.4426950408889634  # scores are scaled by scale * log2(e) so the kernels use exp2


@triton.jit
def _fwd(
    Q, K, V, Out, Lse,
    q_perm, q_cu, k_perm, k_cu,
    sq0, sq1, sk0, sk1, sv0, sv1, so0, so1, sl0,
    qk_scale, D, DV,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    tile = tl.program_id(1)
    h = tl.program_id(2)
    q_begin = tl.load(q_cu + g)
    nq = tl.load(q_cu + g + 1) - q_begin
    if tile * BLOCK_M >= nq:
        return
    k_begin = tl.load(k_cu + g)
    nk = tl.load(k_cu + g + 1) - k_begin

    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < nq
    tok_q = tl.load(q_perm + q_begin + rows, mask=row_ok, other=0)  # (BLOCK_M,) int64 token ids
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(
        Q + tok_q[:, None] * sq0 + h * sq1 + offs_d[None, :], mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0
    )  # (BLOCK_M, BLOCK_D)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max of the base-2 scores
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp2(score - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start in range(0, nk, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < nk
        tok_k = tl.load(k_perm + k_begin + cols, mask=col_ok, other=0)
        k = tl.load(
            K + tok_k[:, None] * sk0 + h * sk1 + offs_d[None, :],
            mask=col_ok[:, None] & (offs_d[None, :] < D),
            other=0.0,
        )  # (BLOCK_N, BLOCK_D)
        v = tl.load(
            V + tok_k[:, None] * sv0 + h * sv1 + offs_dv[None, :],
            mask=col_ok[:, None] & (offs_dv[None, :] < DV),
            other=0.0,
        )  # (BLOCK_N, BLOCK_DV)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every tile holds at least one key
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    out = acc / l_safe[:, None]  # a group without keys: acc is 0, so is its output
    lse = tl.where(has_keys, (m_i + tl.log2(l_safe)) / 1.4426950408889634, float("-inf"))  # natural log
    tl.store(
        Out + tok_q[:, None] * so0 + h * so1 + offs_dv[None, :],
        out.to(Out.dtype.element_ty),
        mask=row_ok[:, None] & (offs_dv[None, :] < DV),
    )
    tl.store(Lse + tok_q * sl0 + h, lse, mask=row_ok)


@triton.jit
def _bwd_dkdv(
    Q, K, V, DO, Lse, Delta, DK, DVout,
    q_perm, q_cu, k_perm, k_cu,
    sq0, sq1, sk0, sk1, sv0, sv1, sdo0, sdo1, sl0, sdk0, sdk1, sdv0, sdv1,
    qk_scale, scale, D, DV,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    tile = tl.program_id(1)
    h = tl.program_id(2)
    k_begin = tl.load(k_cu + g)
    nk = tl.load(k_cu + g + 1) - k_begin
    if tile * BLOCK_N >= nk:
        return
    q_begin = tl.load(q_cu + g)
    nq = tl.load(q_cu + g + 1) - q_begin

    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < nk
    tok_k = tl.load(k_perm + k_begin + cols, mask=col_ok, other=0)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    k = tl.load(
        K + tok_k[:, None] * sk0 + h * sk1 + offs_d[None, :], mask=col_ok[:, None] & (offs_d[None, :] < D), other=0.0
    )  # (BLOCK_N, BLOCK_D)
    v = tl.load(
        V + tok_k[:, None] * sv0 + h * sv1 + offs_dv[None, :], mask=col_ok[:, None] & (offs_dv[None, :] < DV), other=0.0
    )  # (BLOCK_N, BLOCK_DV)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for start in range(0, nq, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < nq
        tok_q = tl.load(q_perm + q_begin + rows, mask=row_ok, other=0)
        q = tl.load(
            Q + tok_q[:, None] * sq0 + h * sq1 + offs_d[None, :],
            mask=row_ok[:, None] & (offs_d[None, :] < D),
            other=0.0,
        )  # (BLOCK_M, BLOCK_D)
        do = tl.load(
            DO + tok_q[:, None] * sdo0 + h * sdo1 + offs_dv[None, :],
            mask=row_ok[:, None] & (offs_dv[None, :] < DV),
            other=0.0,
        )  # (BLOCK_M, BLOCK_DV)
        lse2 = tl.load(Lse + tok_q * sl0 + h, mask=row_ok, other=0.0) * 1.4426950408889634
        delta = tl.load(Delta + tok_q * sl0 + h, mask=row_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        p = tl.where(row_ok[:, None] & col_ok[None, :], tl.exp2(s - lse2[:, None]), 0.0)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    dk = dk * scale
    grouped = (k_begin + cols).to(tl.int64)  # this group's own rows of the (M_k, H, .) buffers
    tl.store(
        DK + grouped[:, None] * sdk0 + h * sdk1 + offs_d[None, :], dk, mask=col_ok[:, None] & (offs_d[None, :] < D)
    )
    tl.store(
        DVout + grouped[:, None] * sdv0 + h * sdv1 + offs_dv[None, :],
        dv,
        mask=col_ok[:, None] & (offs_dv[None, :] < DV),
    )


@triton.jit
def _bwd_dq(
    Q, K, V, DO, Lse, Delta, DQ,
    q_perm, q_cu, k_perm, k_cu,
    sq0, sq1, sk0, sk1, sv0, sv1, sdo0, sdo1, sl0, sdq0, sdq1,
    qk_scale, scale, D, DV,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    tile = tl.program_id(1)
    h = tl.program_id(2)
    q_begin = tl.load(q_cu + g)
    nq = tl.load(q_cu + g + 1) - q_begin
    if tile * BLOCK_M >= nq:
        return
    k_begin = tl.load(k_cu + g)
    nk = tl.load(k_cu + g + 1) - k_begin

    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < nq
    tok_q = tl.load(q_perm + q_begin + rows, mask=row_ok, other=0)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(
        Q + tok_q[:, None] * sq0 + h * sq1 + offs_d[None, :], mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0
    )  # (BLOCK_M, BLOCK_D)
    do = tl.load(
        DO + tok_q[:, None] * sdo0 + h * sdo1 + offs_dv[None, :],
        mask=row_ok[:, None] & (offs_dv[None, :] < DV),
        other=0.0,
    )  # (BLOCK_M, BLOCK_DV)
    lse2 = tl.load(Lse + tok_q * sl0 + h, mask=row_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(Delta + tok_q * sl0 + h, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, nk, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < nk
        tok_k = tl.load(k_perm + k_begin + cols, mask=col_ok, other=0)
        k = tl.load(
            K + tok_k[:, None] * sk0 + h * sk1 + offs_d[None, :],
            mask=col_ok[:, None] & (offs_d[None, :] < D),
            other=0.0,
        )
        v = tl.load(
            V + tok_k[:, None] * sv0 + h * sv1 + offs_dv[None, :],
            mask=col_ok[:, None] & (offs_dv[None, :] < DV),
            other=0.0,
        )
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.where(row_ok[:, None] & col_ok[None, :], tl.exp2(s - lse2[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * scale
    tl.store(DQ + tok_q[:, None] * sdq0 + h * sdq1 + offs_d[None, :], dq, mask=row_ok[:, None] & (offs_d[None, :] < D))


def _config(dtype: torch.dtype, head_dim: int, value_dim: int, backward: bool) -> dict:
    """Tile sizes and launch options (constexprs). Untuned: plain flash-attention-2 choices."""
    block_d = max(16, triton.next_power_of_2(head_dim))  # tl.dot needs every dim >= 16
    block_dv = max(16, triton.next_power_of_2(value_dim))
    widest = max(block_d, block_dv)
    if backward:
        block_m = block_n = 64 if widest <= 64 else 32
    else:
        block_m, block_n = (128, 64) if widest <= 64 else (64, 64 if widest <= 128 else 32)
    return {
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_D": block_d,
        "BLOCK_DV": block_dv,
        # fp32 inputs: true fp32 products (TF32 would miss the fp32 reference by ~1e-3)
        "PRECISION": "ieee" if dtype == torch.float32 else "tf32",
        "num_warps": 4 if widest <= 64 or backward else 8,
        "num_stages": 2,
    }


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


@torch.library.custom_op("partgen::triton_part_attention_fwd", mutates_args=())
def _fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_perm: torch.Tensor,
    q_cu: torch.Tensor,
    k_perm: torch.Tensor,
    k_cu: torch.Tensor,
    max_q: int,
    max_k: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    n_q, heads, head_dim = q.shape
    value_dim = v.shape[2]
    out = torch.zeros(n_q, heads, value_dim, dtype=q.dtype, device=q.device)  # (N_q, H, D_v)
    lse = torch.full((n_q, heads), float("-inf"), dtype=torch.float32, device=q.device)  # (N_q, H)
    groups = q_cu.numel() - 1
    if n_q == 0 or groups == 0 or max_q == 0:
        return out, lse
    cfg = _config(q.dtype, head_dim, value_dim, backward=False)
    grid = (groups, triton.cdiv(max_q, cfg["BLOCK_M"]), heads)
    _fwd[grid](
        q, k, v, out, lse,
        q_perm, q_cu, k_perm, k_cu,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), lse.stride(0),
        scale * LOG2E, head_dim, value_dim,
        **cfg,
    )  # fmt: skip
    return out, lse


@_fwd_op.register_fake
def _fwd_fake(q, k, v, q_perm, q_cu, k_perm, k_cu, max_q, max_k, scale):
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[2])
    lse = q.new_empty(q.shape[0], q.shape[1], dtype=torch.float32)
    return out, lse


@torch.library.custom_op("partgen::triton_part_attention_bwd", mutates_args=())
def _bwd_op(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    q_perm: torch.Tensor,
    q_cu: torch.Tensor,
    k_perm: torch.Tensor,
    k_cu: torch.Tensor,
    max_q: int,
    max_k: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    dout = dout.contiguous()
    n_q, heads, head_dim = q.shape
    value_dim = v.shape[2]
    m_k = k_perm.numel()
    f32 = {"dtype": torch.float32, "device": q.device}
    dq = torch.zeros(n_q, heads, head_dim, **f32)  # (N_q, H, D) token order
    dk_grouped = torch.zeros(m_k, heads, head_dim, **f32)  # (M_k, H, D) grouped key order
    dv_grouped = torch.zeros(m_k, heads, value_dim, **f32)  # (M_k, H, D_v)
    groups = q_cu.numel() - 1
    if groups and n_q and m_k:
        lse = lse.contiguous()
        delta = (dout.float() * out.float()).sum(-1).contiguous()  # (N_q, H): rowsum(dO * O)
        cfg = _config(q.dtype, head_dim, value_dim, backward=True)
        common = (q_perm, q_cu, k_perm, k_cu)
        strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1))
        strides += (dout.stride(0), dout.stride(1), lse.stride(0))
        if max_k:
            _bwd_dkdv[(groups, triton.cdiv(max_k, cfg["BLOCK_N"]), heads)](
                q, k, v, dout, lse, delta, dk_grouped, dv_grouped, *common, *strides,
                dk_grouped.stride(0), dk_grouped.stride(1), dv_grouped.stride(0), dv_grouped.stride(1),
                scale * LOG2E, scale, head_dim, value_dim, **cfg,
            )  # fmt: skip
        if max_q:
            _bwd_dq[(groups, triton.cdiv(max_q, cfg["BLOCK_M"]), heads)](
                q, k, v, dout, lse, delta, dq, *common, *strides, dq.stride(0), dq.stride(1),
                scale * LOG2E, scale, head_dim, value_dim, **cfg,
            )  # fmt: skip
    # keys back to token order; a key seen by several groups sums their rows
    dk = torch.zeros(k.shape[0], heads, head_dim, **f32).index_add_(0, k_perm, dk_grouped)
    dv = torch.zeros(v.shape[0], heads, value_dim, **f32).index_add_(0, k_perm, dv_grouped)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


@_bwd_op.register_fake
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
    dq, dk, dv = _bwd_op(dout, q, k, v, out, lse, q_perm, q_cu, k_perm, k_cu, ctx.max_q, ctx.max_k, ctx.scale)
    return dq, dk, dv, None, None, None, None, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def not_supported_reasons(q: torch.Tensor, v: torch.Tensor) -> list[str]:
    """Why these kernels cannot run q (N_q, H, D) with values v (N_k, H, D_v); [] when they can."""
    reasons = []
    if q.dtype not in DTYPES:
        reasons.append(f"the Triton kernels take {', '.join(map(str, DTYPES))}, got {q.dtype}")
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        reasons.append(f"the Triton kernels take head dims up to {MAX_HEAD_DIM}, got {q.shape[-1]} and {v.shape[-1]}")
    return reasons


def part_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    groups: PartGroups,
    kv_groups: PartGroups | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Group attention in Triton with fused gather/scatter. Token order in, token order out.

    q:         (N_q, H, D)   float16, bfloat16 or float32 (fp32 accumulation), D <= 256, any
               strides (a last dim with stride != 1 is copied first)
    k, v:      (N_k, H, D), (N_k, H, D_v), q's dtype and device, D_v <= 256
    groups:    PartGroups over the queries; perm (N_q,) int64 a permutation, cu_seqlens (G+1,) int32
    kv_groups: PartGroups over the keys with G groups (None: groups, self-attention); its perm
               (M_k,) int64 may select or repeat keys (per-part visible image tokens)
    scale:     softmax scale, default D ** -0.5
    returns    (N_q, H, D_v) in q's dtype; a query whose group has no key gets zeros.
               Differentiable in q, k, v (gradients in their dtypes, accumulated in fp32).

    Inputs are not validated here (partgen.nn.attention checks shapes; PARTGEN_DEBUG=1 checks the
    groups). Runs on CUDA, or on CPU tensors under TRITON_INTERPRET=1.
    """
    kv_groups = groups if kv_groups is None else kv_groups
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    out, _ = _fwd_op(
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
