"""Sparse voxels and point sets: VarLen plus geometry (coords, resolution, part labels).

Legend: B batch, N voxels or points (all items together), C channels, R resolution.
Voxel coords are (N, 4) int32 [b, x, y, z] with x, y, z in [0, R); the voxel of a point p in
the normalised cube [-0.5, 0.5]^3 is floor((p + 0.5) * R), clamped to [0, R-1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Self

import torch

from partgen.structures.groups import PartGroups, part_groups
from partgen.structures.varlen import VarLen, batch_index, cu_seqlens_from_lengths


def voxel_index(points: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, 3) points in [-0.5, 0.5]^3 -> (N, 3) int32 voxel indices at the given resolution."""
    idx = torch.floor((points + 0.5) * resolution).to(torch.int64)
    return idx.clamp_(0, resolution - 1).to(torch.int32)


def linear_index(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, 4) [b, x, y, z] -> (N,) int64 key b*R^3 + x*R^2 + y*R + z, increasing in [b, x, y, z] order."""
    c = coords.to(torch.int64)
    return ((c[:, 0] * resolution + c[:, 1]) * resolution + c[:, 2]) * resolution + c[:, 3]


def voxel_centers(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, 4) int [b, x, y, z] (or (N, 3) xyz) -> (N, 3) float32 centres in [-0.5, 0.5]^3."""
    xyz = coords[:, -3:].to(torch.float32)
    return (xyz + 0.5) / resolution - 0.5


def _check_part(part: torch.Tensor | None, n: int, device: torch.device) -> None:
    if part is None:
        return
    if not isinstance(part, torch.Tensor) or part.shape != (n,):
        shape = tuple(part.shape) if isinstance(part, torch.Tensor) else type(part).__name__
        raise ValueError(f"part must be an (N,) = ({n},) tensor, got {shape}")
    if part.is_floating_point() or part.is_complex() or part.dtype == torch.bool:
        raise ValueError(f"part must hold integer labels, got {part.dtype}")
    if part.device != device:
        raise ValueError(f"part is on {part.device} but feats on {device}")
    if n and int(part.min()) < 0:
        raise ValueError(f"part labels must be >= 0, found {int(part.min())}")


@dataclasses.dataclass(eq=False)
class SparseVoxels(VarLen):
    """Active voxels of B shapes at one resolution, rows grouped by batch item.

    feats:      (N, C) float
    cu_seqlens: (B+1,) int32
    coords:     (N, 4) int32 [b, x, y, z]; b matches cu_seqlens, xyz in [0, resolution)
    resolution: R, the grid side
    part:       optional (N,) int64 part label per voxel (>= 0)
    cache:      per-coordinate-set scratch owned by the adapters that compute it (e.g.
                partgen.nn.sparse_conv keeps its neighbour maps here); shared by copies that
                keep the coords, dropped when coords change. Never holds model state.
    """

    coords: torch.Tensor
    resolution: int
    part: torch.Tensor | None = None
    cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def validate(self) -> Self:
        super().validate()
        n = self.feats.shape[0]
        c = self.coords
        if not isinstance(c, torch.Tensor) or c.shape != (n, 4):
            shape = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
            raise ValueError(f"coords must be (N, 4) = ({n}, 4) [b, x, y, z], got {shape}")
        if c.dtype != torch.int32:
            raise ValueError(f"coords must be int32, got {c.dtype}")
        if c.device != self.feats.device:
            raise ValueError(f"coords are on {c.device} but feats on {self.feats.device}")
        if not isinstance(self.resolution, int) or self.resolution < 1:
            raise ValueError(f"resolution must be a positive int, got {self.resolution!r}")
        if n:
            if not torch.equal(c[:, 0].to(torch.int64), batch_index(self.cu_seqlens)):
                raise ValueError(
                    "coords[:, 0] (batch index) does not match cu_seqlens: rows must be grouped by batch item"
                )
            xyz = c[:, 1:]
            if bool((xyz < 0).any()) or bool((xyz >= self.resolution).any()):
                lo, hi = int(xyz.min()), int(xyz.max())
                raise ValueError(f"coords out of range [0, {self.resolution}): found min {lo}, max {hi}")
            keys = self.linear_index()
            if torch.unique(keys).numel() != n:
                raise ValueError("coords hold duplicate voxels within a batch item")
        _check_part(self.part, n, self.feats.device)
        return self

    def linear_index(self) -> torch.Tensor:
        """(N,) int64 key b*R^3 + x*R^2 + y*R + z, unique per voxel and increasing in [b,x,y,z] order."""
        return linear_index(self.coords, self.resolution)

    def replace(self, **changes) -> Self:
        if "coords" in changes and "cache" not in changes:
            changes["cache"] = {}
        return dataclasses.replace(self, **changes)

    def part_groups(self, num_parts: int | None = None) -> PartGroups:
        """Voxels grouped by (batch, part); without part labels each batch item is one group."""
        return part_groups(self.coords[:, 0], self.part, num_parts=num_parts, batch_size=self.batch_size)

    def centers(self) -> torch.Tensor:
        """(N, 3) float32 voxel centres in the normalised cube."""
        return voxel_centers(self.coords, self.resolution)

    def sorted(self) -> Self:
        """Rows in [b, x, y, z] order (a canonical order for comparisons and caching)."""
        order = torch.argsort(self.linear_index(), stable=True)
        return self.replace(
            feats=self.feats[order],
            coords=self.coords[order],
            part=None if self.part is None else self.part[order],
        )

    @classmethod
    def collate(cls, items: Sequence[Self]) -> Self:
        if not items:
            raise ValueError("SparseVoxels.collate needs at least one item")
        resolutions = {it.resolution for it in items}
        if len(resolutions) != 1:
            raise ValueError(f"cannot collate sparse voxels of different resolutions {sorted(resolutions)}")
        has_part = {it.part is not None for it in items}
        if len(has_part) != 1:
            raise ValueError("cannot collate sparse voxels where only some items have part labels")
        lengths = torch.cat([it.seqlens for it in items])
        feats = torch.cat([it.feats for it in items])
        coords = torch.cat([it.coords for it in items]).clone()
        cu = cu_seqlens_from_lengths(lengths, device=feats.device)
        coords[:, 0] = batch_index(cu).to(torch.int32)
        part = torch.cat([it.part for it in items]) if has_part == {True} else None
        return cls(feats=feats, cu_seqlens=cu, coords=coords, resolution=items[0].resolution, part=part)

    def _slice(self, start: int, end: int) -> Self:
        coords = self.coords[start:end].clone()
        coords[:, 0] = 0
        return type(self)(
            feats=self.feats[start:end],
            cu_seqlens=torch.tensor([0, end - start], dtype=torch.int32, device=self.device),
            coords=coords,
            resolution=self.resolution,
            part=None if self.part is None else self.part[start:end],
        )


@dataclasses.dataclass(eq=False)
class Points(VarLen):
    """B point clouds, rows grouped by batch item (the keys a point model reads).

    feats:      (N, C) float per-point features (C may be 0)
    cu_seqlens: (B+1,) int32
    coords:     (N, 3) float positions (the normalised cube for shapes from the pipeline)
    normals:    optional (N, 3) float unit normals
    part:       optional (N,) int64 part label per point (>= 0)
    """

    coords: torch.Tensor
    normals: torch.Tensor | None = None
    part: torch.Tensor | None = None

    def validate(self) -> Self:
        super().validate()
        n = self.feats.shape[0]
        for name in ("coords", "normals"):
            t = getattr(self, name)
            if t is None and name == "normals":
                continue
            if not isinstance(t, torch.Tensor) or t.shape != (n, 3):
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must be (N, 3) = ({n}, 3), got {shape}")
            if not t.is_floating_point():
                raise ValueError(f"{name} must be floating point, got {t.dtype}")
            if t.device != self.feats.device:
                raise ValueError(f"{name} is on {t.device} but feats on {self.feats.device}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} hold NaN or inf values")
        _check_part(self.part, n, self.feats.device)
        return self

    @classmethod
    def collate(cls, items: Sequence[Self]) -> Self:
        if not items:
            raise ValueError("Points.collate needs at least one item")
        for name in ("normals", "part"):
            if len({getattr(it, name) is not None for it in items}) != 1:
                raise ValueError(f"cannot collate points where only some items have {name}")
        lengths = torch.cat([it.seqlens for it in items])

        def cat(name):
            return None if getattr(items[0], name) is None else torch.cat([getattr(it, name) for it in items])

        return cls(
            feats=cat("feats"),
            cu_seqlens=cu_seqlens_from_lengths(lengths, device=items[0].device),
            coords=cat("coords"),
            normals=cat("normals"),
            part=cat("part"),
        )

    def _slice(self, start: int, end: int) -> Self:
        def cut(t):
            return None if t is None else t[start:end]

        return type(self)(
            feats=self.feats[start:end],
            cu_seqlens=torch.tensor([0, end - start], dtype=torch.int32, device=self.device),
            coords=self.coords[start:end],
            normals=cut(self.normals),
            part=cut(self.part),
        )
