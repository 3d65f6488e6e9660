"""Typed containers shared by every part of partgen (torch only)."""

from partgen.structures.groups import PartGroups, groups_from_cu_seqlens, groups_from_mask, part_groups
from partgen.structures.sparse_voxels import Points, SparseVoxels, voxel_centers, voxel_index
from partgen.structures.varlen import VarLen, batch_index, check_cu_seqlens, cu_seqlens_from_lengths

__all__ = [
    "PartGroups",
    "Points",
    "SparseVoxels",
    "VarLen",
    "batch_index",
    "check_cu_seqlens",
    "cu_seqlens_from_lengths",
    "groups_from_cu_seqlens",
    "groups_from_mask",
    "part_groups",
    "voxel_centers",
    "voxel_index",
]
