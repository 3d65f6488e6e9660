"""VarLen, SparseVoxels, Points and PartGroups: round trips, moves, and validate() messages."""

import pytest
import torch

from conftest import random_voxels
from partgen.structures import (
    PartGroups,
    Points,
    SparseVoxels,
    VarLen,
    cu_seqlens_from_lengths,
    groups_from_cu_seqlens,
    groups_from_mask,
    part_groups,
    voxel_centers,
    voxel_index,
)


def test_cu_seqlens_from_lengths():
    cu = cu_seqlens_from_lengths([3, 0, 2])
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 3, 5]
    assert cu_seqlens_from_lengths([]).tolist() == [0]


def test_varlen_collate_unbatch_round_trip():
    a = VarLen(torch.randn(3, 2), cu_seqlens_from_lengths([3]))
    b = VarLen(torch.randn(0, 2), cu_seqlens_from_lengths([0]))
    c = VarLen(torch.randn(5, 2), cu_seqlens_from_lengths([2, 3]))
    batch = VarLen.collate([a, b, c]).validate()
    assert batch.batch_size == 4 and batch.seqlens.tolist() == [3, 0, 2, 3] and batch.max_seqlen == 3
    parts = batch.unbatch()
    assert [len(p) for p in parts] == [3, 0, 2, 3]
    assert torch.equal(VarLen.collate(parts).feats, batch.feats)
    assert batch.batch_index().tolist() == [0, 0, 0, 2, 2, 3, 3, 3]


@pytest.mark.parametrize(
    "cu, message",
    [
        (torch.tensor([0, 2, 1, 3], dtype=torch.int32), "must not decrease"),
        (torch.tensor([0, 2], dtype=torch.int32), "must end at the number of rows 3"),
        (torch.tensor([1, 3], dtype=torch.int32), "must start at 0"),
        (torch.tensor([0, 3], dtype=torch.int64), "must be int32"),
        (torch.tensor([[0, 3]], dtype=torch.int32), "must be 1-D"),
    ],
)
def test_varlen_validate_names_bad_cu_seqlens(cu, message):
    with pytest.raises(ValueError, match=message):
        VarLen(torch.randn(3, 2), cu).validate()


def test_sparse_voxels_round_trip_and_moves():
    sv = random_voxels([5, 1, 9]).validate()
    assert sv.batch_size == 3 and sv.coords[:, 0].tolist() == [0] * 5 + [1] + [2] * 9
    items = sv.unbatch()
    assert all(int(it.coords[:, 0].max()) == 0 for it in items)
    again = SparseVoxels.collate(items).validate()
    for name in ("feats", "coords", "part", "cu_seqlens"):
        assert torch.equal(getattr(again, name), getattr(sv, name))
    half = sv.to(dtype=torch.float64)
    assert half.feats.dtype == torch.float64 and half.coords.dtype == torch.int32 and half.part.dtype == torch.int64
    moved = sv.replace(feats=sv.feats * 2)
    assert moved.cache is sv.cache  # same coords share the neighbour cache
    assert sv.replace(coords=sv.coords.clone()).cache is not sv.cache


def test_sparse_voxels_sorted_is_canonical():
    sv = random_voxels([6, 4])
    shuffled_rows = torch.cat([torch.randperm(6), 6 + torch.randperm(4)])
    shuffled = sv.replace(feats=sv.feats[shuffled_rows], coords=sv.coords[shuffled_rows], part=sv.part[shuffled_rows])
    back = shuffled.sorted().validate()
    assert torch.equal(back.coords, sv.coords) and torch.equal(back.feats, sv.feats) and torch.equal(back.part, sv.part)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sv: sv.replace(coords=sv.coords.to(torch.int64)), "coords must be int32"),
        (lambda sv: sv.replace(coords=sv.coords[:, :3]), r"coords must be \(N, 4\)"),
        (lambda sv: sv.replace(coords=sv.coords.flip(0)), "does not match cu_seqlens"),
        (lambda sv: sv.replace(resolution=2), "out of range"),
        (lambda sv: sv.replace(coords=torch.cat([sv.coords[:1], sv.coords[:1], sv.coords[2:]])), "duplicate"),
        (lambda sv: sv.replace(part=-sv.part - 1), "part labels must be >= 0"),
        (lambda sv: sv.replace(part=sv.part.float()), "integer labels"),
        (lambda sv: sv.replace(part=sv.part[:-1]), "part must be an"),
    ],
)
def test_sparse_voxels_validate_catches_bad_coords(change, message):
    with pytest.raises(ValueError, match=message):
        change(random_voxels([4, 6])).validate()


def test_collate_refuses_mixed_resolutions():
    with pytest.raises(ValueError, match="different resolutions"):
        SparseVoxels.collate([random_voxels([3], resolution=8), random_voxels([3], resolution=16)])


def test_voxel_index_convention():
    pts = torch.tensor([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], [0.0, 0.1, -0.26]])
    idx = voxel_index(pts, 4)
    assert idx.tolist() == [[0, 0, 0], [3, 3, 3], [2, 2, 0]]
    centers = voxel_centers(idx, 4)
    assert torch.equal(voxel_index(centers, 4), idx)


def test_points_round_trip_and_validate():
    a = Points(
        torch.randn(4, 0),
        cu_seqlens_from_lengths([4]),
        coords=torch.rand(4, 3),
        normals=torch.randn(4, 3),
        part=torch.zeros(4, dtype=torch.long),
    )
    b = Points(
        torch.randn(2, 0),
        cu_seqlens_from_lengths([2]),
        coords=torch.rand(2, 3),
        normals=torch.randn(2, 3),
        part=torch.ones(2, dtype=torch.long),
    )
    batch = Points.collate([a, b]).validate()
    assert batch.batch_size == 2 and batch.part.tolist() == [0] * 4 + [1] * 2
    assert torch.equal(batch.unbatch()[1].coords, b.coords)
    bad = batch.replace(coords=batch.coords.clone())
    bad.coords[0, 0] = float("nan")
    with pytest.raises(ValueError, match="coords hold NaN"):
        bad.validate()
    with pytest.raises(ValueError, match="only some items have normals"):
        Points.collate([a, b.replace(normals=None)])


def test_part_groups_sorts_stably_by_batch_then_part():
    batch = torch.tensor([1, 0, 1, 0, 0, 1])
    part = torch.tensor([0, 2, 0, 0, 2, 1])
    g = part_groups(batch, part).validate(num_tokens=6)
    assert g.perm.tolist() == [3, 1, 4, 0, 2, 5]  # (0,0) (0,2)(0,2) (1,0)(1,0) (1,1), input order kept within
    assert g.cu_seqlens.tolist() == [0, 1, 3, 5, 6] and g.max_seqlen == 2
    tokens = torch.arange(6)
    assert torch.equal(tokens[g.perm][g.inverse], tokens)


def test_part_groups_with_num_parts_keeps_empty_and_singleton_groups():
    batch = torch.tensor([0, 0, 1])
    part = torch.tensor([2, 2, 0])
    g = part_groups(batch, part, num_parts=3, batch_size=3).validate(num_tokens=3)
    assert g.num_groups == 9
    assert g.seqlens.tolist() == [0, 0, 2, 1, 0, 0, 0, 0, 0]
    assert g.group_index().tolist() == [2, 2, 3]
    empty = part_groups(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), num_parts=2, batch_size=1)
    assert empty.seqlens.tolist() == [0, 0] and empty.max_seqlen == 0
    with pytest.raises(ValueError, match="num_parts"):
        part_groups(batch, part, num_parts=2)


def test_part_groups_from_voxels_without_parts_is_one_group_per_item():
    sv = random_voxels([3, 4]).replace(part=None)
    g = sv.part_groups()
    assert g.seqlens.tolist() == [3, 4] and torch.equal(g.perm, torch.arange(7))


def test_groups_from_cu_seqlens_and_mask():
    g = groups_from_cu_seqlens(cu_seqlens_from_lengths([2, 0, 3]))
    assert g.perm.tolist() == [0, 1, 2, 3, 4] and g.max_seqlen == 3 and g.num_groups == 3
    visible = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    k = groups_from_mask(visible).validate(num_tokens=3, permutation=False)
    assert k.perm.tolist() == [0, 2, 0, 1, 2] and k.seqlens.tolist() == [2, 0, 3]


@pytest.mark.parametrize(
    "groups, message",
    [
        (PartGroups(torch.tensor([0, 0, 2]), torch.tensor([0, 3], dtype=torch.int32), 3), "not a permutation"),
        (PartGroups(torch.tensor([0, 1, 3]), torch.tensor([0, 3], dtype=torch.int32), 3), "outside"),
        (PartGroups(torch.tensor([0, 1, 2]), torch.tensor([0, 2], dtype=torch.int32), 2), "must end at"),
        (PartGroups(torch.tensor([0, 1, 2]), torch.tensor([0, 3], dtype=torch.int32), 2), "max_seqlen"),
        (PartGroups(torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([0, 3], dtype=torch.int32), 3), "int64"),
    ],
)
def test_part_groups_validate_names_the_problem(groups, message):
    with pytest.raises(ValueError, match=message):
        groups.validate(num_tokens=3)
