"""Part attention, PyTorch reference: exact, readable, any dtype (float64 included).

Legend: N_q query tokens, N_k key tokens, H heads, D head dim, D_v value dim, G groups.
Group g's queries (rows q_groups.cu_seqlens[g]:[g+1] of the grouped order, tokens
q_groups.perm[...]) attend only to group g's keys (tokens kv_groups.perm[...]). A query
whose group has no key gets a zero output. This is the ground truth every fast backend and
kernel is tested against.
"""

from __future__ import annotations

import torch

from partgen.structures import PartGroups


def part_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_groups: PartGroups,
    kv_groups: PartGroups | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """q (N_q, H, D), k (N_k, H, D), v (N_k, H, D_v) in token order -> (N_q, H, D_v) in token order.

    kv_groups defaults to q_groups (self-attention). scale defaults to D ** -0.5.
    Computed in q's dtype, one group at a time; differentiable by autograd.
    """
    kv_groups = q_groups if kv_groups is None else kv_groups
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q_cu, kv_cu = q_groups.cu_seqlens.tolist(), kv_groups.cu_seqlens.tolist()
    outs = []
    for g in range(q_groups.num_groups):
        qi = q_groups.perm[q_cu[g] : q_cu[g + 1]]
        ki = kv_groups.perm[kv_cu[g] : kv_cu[g + 1]]
        if ki.numel() == 0:
            outs.append(v.new_zeros(qi.numel(), v.shape[1], v.shape[2]))
            continue
        scores = torch.einsum("qhd,khd->hqk", q[qi], k[ki]) * scale  # (H, n_q, n_k)
        probs = torch.softmax(scores, dim=-1)
        outs.append(torch.einsum("hqk,khd->qhd", probs, v[ki]))  # (n_q, H, D_v)
    grouped = torch.cat(outs) if outs else v.new_zeros(0, v.shape[1], v.shape[2])
    return grouped[q_groups.inverse]  # back to token order
