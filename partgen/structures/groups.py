"""Part groups: tokens sorted by (batch, part) into contiguous groups for Part Attention.

Legend: N tokens, M gathered rows (N for a permutation), G groups, B batch, P parts per item.
A PartGroups says: row i of the grouped order is token perm[i]; group g owns grouped rows
cu_seqlens[g]:cu_seqlens[g+1]. Query groups are permutations (outputs go back through the
inverse); key groups may select a subset of tokens or repeat them (per-part visible image
tokens), so they need not be permutations.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Self

import torch

from partgen.structures.varlen import check_cu_seqlens, cu_seqlens_from_lengths


@dataclasses.dataclass(eq=False)
class PartGroups:
    """G contiguous groups over gathered tokens.

    perm:       (M,) int64 token index of each grouped row
    cu_seqlens: (G+1,) int32 group offsets into the grouped rows, leading 0, ends at M
    max_seqlen: the largest group size (0 when there is no token)
    """

    perm: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int

    @property
    def num_groups(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def seqlens(self) -> torch.Tensor:
        """(G,) int64 group sizes."""
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).to(torch.int64)

    @property
    def device(self) -> torch.device:
        return self.perm.device

    @functools.cached_property
    def inverse(self) -> torch.Tensor:
        """(N,) int64 inverse permutation: token t sits at grouped row inverse[t]."""
        inv = torch.empty_like(self.perm)
        inv[self.perm] = torch.arange(self.perm.numel(), device=self.perm.device)
        return inv

    def group_index(self) -> torch.Tensor:
        """(M,) int64 group id of each grouped row."""
        return torch.repeat_interleave(torch.arange(self.num_groups, device=self.device), self.seqlens)

    def validate(self, num_tokens: int | None = None, permutation: bool = True) -> Self:
        """Raise ValueError naming the problem. num_tokens: how many tokens perm indexes into."""
        if not isinstance(self.perm, torch.Tensor) or self.perm.dim() != 1:
            raise ValueError("perm must be a 1-D tensor")
        if self.perm.dtype != torch.int64:
            raise ValueError(f"perm must be int64, got {self.perm.dtype}")
        m = self.perm.numel()
        check_cu_seqlens(self.cu_seqlens, m, name="groups.cu_seqlens")
        if self.cu_seqlens.device != self.perm.device:
            raise ValueError(f"groups.cu_seqlens is on {self.cu_seqlens.device} but perm on {self.perm.device}")
        true_max = int(self.seqlens.max()) if self.num_groups else 0
        if self.max_seqlen != true_max:
            raise ValueError(f"max_seqlen is {self.max_seqlen} but the largest group has {true_max} tokens")
        if num_tokens is not None and permutation and m != num_tokens:
            raise ValueError(f"perm must be a permutation of {num_tokens} tokens, got {m} entries")
        if m:
            lo, hi = int(self.perm.min()), int(self.perm.max())
            if lo < 0 or (num_tokens is not None and hi >= num_tokens):
                raise ValueError(f"perm indexes outside [0, {num_tokens}): min {lo}, max {hi}")
            if permutation:
                seen = torch.zeros(max(hi + 1, num_tokens or 0), dtype=torch.bool, device=self.device)
                seen[self.perm] = True
                if int(seen.sum()) != m or (num_tokens is not None and not bool(seen.all())):
                    raise ValueError("perm is not a permutation: some token appears twice or not at all")
        return self

    def to(self, device: torch.device | str) -> Self:
        return PartGroups(perm=self.perm.to(device), cu_seqlens=self.cu_seqlens.to(device), max_seqlen=self.max_seqlen)


def _from_sorted_counts(perm: torch.Tensor, counts: torch.Tensor) -> PartGroups:
    cu = cu_seqlens_from_lengths(counts, device=perm.device)
    return PartGroups(perm=perm, cu_seqlens=cu, max_seqlen=int(counts.max()) if counts.numel() else 0)


def part_groups(
    batch: torch.Tensor,
    part: torch.Tensor | None = None,
    num_parts: int | None = None,
    batch_size: int | None = None,
) -> PartGroups:
    """Sort tokens stably by (batch, part) into groups.

    batch:      (N,) integer batch index per token
    part:       (N,) integer part label per token (>= 0); None puts each batch item in one group
    num_parts:  None -> one group per (batch, part) pair that occurs (no empty groups);
                P    -> exactly batch_size * P groups in (b, p) order, empty ones included
    batch_size: B for the num_parts layout (default: max(batch) + 1)
    Within a group tokens keep their input order (the sort is stable).
    """
    batch = batch.to(torch.int64)
    part = torch.zeros_like(batch) if part is None else part.to(torch.int64)
    if batch.shape != part.shape or batch.dim() != 1:
        raise ValueError(f"batch and part must both be (N,), got {tuple(batch.shape)} and {tuple(part.shape)}")
    n = batch.numel()
    if n and (int(part.min()) < 0 or int(batch.min()) < 0):
        raise ValueError("batch indices and part labels must be >= 0")
    width = num_parts if num_parts is not None else (int(part.max()) + 1 if n else 1)
    if n and int(part.max()) >= width:
        raise ValueError(f"part label {int(part.max())} >= num_parts {width}")
    key = batch * width + part
    perm = torch.sort(key, stable=True).indices
    if num_parts is None:
        counts = torch.unique_consecutive(key[perm], return_counts=True)[1]
    else:
        b = batch_size if batch_size is not None else (int(batch.max()) + 1 if n else 0)
        if n and int(batch.max()) >= b:
            raise ValueError(f"batch index {int(batch.max())} >= batch_size {b}")
        counts = torch.bincount(key, minlength=b * width)
    return _from_sorted_counts(perm, counts)


def groups_from_cu_seqlens(cu_seqlens: torch.Tensor) -> PartGroups:
    """Plain batches as groups: item b is group b and the permutation is the identity."""
    n = int(cu_seqlens[-1])
    counts = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    return PartGroups(
        perm=torch.arange(n, device=cu_seqlens.device),
        cu_seqlens=cu_seqlens.to(torch.int32),
        max_seqlen=int(counts.max()) if counts.numel() else 0,
    )


def groups_from_mask(visible: torch.Tensor) -> PartGroups:
    """(G, M) bool: group g sees token m -> key groups (tokens may belong to several groups)."""
    if visible.dim() != 2 or visible.dtype != torch.bool:
        raise ValueError(f"visible must be a (G, M) bool tensor, got {visible.dtype} {tuple(visible.shape)}")
    g_idx, m_idx = torch.nonzero(visible, as_tuple=True)  # row-major: grouped by g, m ascending
    return _from_sorted_counts(m_idx, visible.sum(1).to(torch.int64))
