"""Variable-length batches flattened into one tensor: VarLen (feats + cu_seqlens).

Legend: B batch, N tokens (all batch items together), C channels.
The one varlen convention of partgen: cu_seqlens is (B+1,) int32, starts at 0, never
decreases, and ends at N; item b owns rows cu_seqlens[b]:cu_seqlens[b+1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Self

import torch


def cu_seqlens_from_lengths(lengths: Sequence[int] | torch.Tensor, device=None) -> torch.Tensor:
    """(B,) lengths -> (B+1,) int32 cumulative offsets with a leading 0."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64, device=device)
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths, 0, out=cu[1:])
    return cu.to(torch.int32)


def check_cu_seqlens(cu_seqlens: torch.Tensor, total: int, name: str = "cu_seqlens") -> None:
    """Raise ValueError unless cu_seqlens is a valid (B+1,) int32 offset vector ending at total."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(f"{name} must be int32, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"{name} must be 1-D with at least one entry, got shape {tuple(cu_seqlens.shape)}")
    if int(cu_seqlens[0]) != 0:
        raise ValueError(f"{name} must start at 0, got {int(cu_seqlens[0])}")
    if cu_seqlens.numel() > 1 and bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
        bad = int(torch.nonzero(cu_seqlens[1:] < cu_seqlens[:-1])[0])
        raise ValueError(
            f"{name} must not decrease: entry {bad + 1} ({int(cu_seqlens[bad + 1])}) < entry {bad} ({int(cu_seqlens[bad])})"
        )
    if int(cu_seqlens[-1]) != total:
        raise ValueError(f"{name} must end at the number of rows {total}, got {int(cu_seqlens[-1])}")


def batch_index(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """(B+1,) offsets -> (N,) int64 batch index of every row."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths)


@dataclasses.dataclass(eq=False)
class VarLen:
    """A batch of B variable-length sequences of C-channel rows.

    feats:      (N, C) any float dtype
    cu_seqlens: (B+1,) int32, leading 0, ends at N
    """

    feats: torch.Tensor
    cu_seqlens: torch.Tensor

    # --- shape helpers -------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.cu_seqlens.numel() - 1

    @property
    def seqlens(self) -> torch.Tensor:
        """(B,) int64 lengths."""
        return (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).to(torch.int64)

    @property
    def max_seqlen(self) -> int:
        return int(self.seqlens.max()) if self.batch_size > 0 else 0

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def __len__(self) -> int:
        return self.feats.shape[0]

    def batch_index(self) -> torch.Tensor:
        """(N,) int64 batch index of every row."""
        return batch_index(self.cu_seqlens)

    # --- checks ----------------------------------------------------------------------------
    def validate(self) -> Self:
        """Raise ValueError naming the first inconsistency; return self so calls chain."""
        if not isinstance(self.feats, torch.Tensor) or self.feats.dim() != 2:
            shape = tuple(self.feats.shape) if isinstance(self.feats, torch.Tensor) else type(self.feats).__name__
            raise ValueError(f"feats must be a 2-D (N, C) tensor, got {shape}")
        check_cu_seqlens(self.cu_seqlens, self.feats.shape[0])
        if self.cu_seqlens.device != self.feats.device:
            raise ValueError(f"cu_seqlens is on {self.cu_seqlens.device} but feats on {self.feats.device}")
        return self

    # --- immutable updates and moves ----------------------------------------------------------
    def replace(self, **changes) -> Self:
        """A copy with some fields changed (the only way to make a new one from an old one)."""
        return dataclasses.replace(self, **changes)

    def _tensor_fields(self) -> dict[str, torch.Tensor]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Self:
        """Move every tensor to device; cast only the floating-point payload to dtype."""
        changes = {}
        for name, t in self._tensor_fields().items():
            new = t.to(device) if device is not None else t
            if dtype is not None and new.is_floating_point():
                new = new.to(dtype)
            changes[name] = new
        return self.replace(**changes)

    def cpu(self) -> Self:
        return self.to("cpu")

    # --- batching --------------------------------------------------------------------------
    @classmethod
    def collate(cls, items: Sequence[Self]) -> Self:
        """Concatenate batches (each may hold several items) into one."""
        if not items:
            raise ValueError(f"{cls.__name__}.collate needs at least one item")
        lengths = torch.cat([it.seqlens for it in items])
        feats = torch.cat([it.feats for it in items])
        return cls(feats=feats, cu_seqlens=cu_seqlens_from_lengths(lengths, device=feats.device))

    def unbatch(self) -> list[Self]:
        """Split into B single-item batches (views of the rows)."""
        cu = self.cu_seqlens.tolist()
        return [self._slice(cu[b], cu[b + 1]) for b in range(self.batch_size)]

    def _slice(self, start: int, end: int) -> Self:
        return type(self)(
            feats=self.feats[start:end],
            cu_seqlens=torch.tensor([0, end - start], dtype=torch.int32, device=self.device),
        )
