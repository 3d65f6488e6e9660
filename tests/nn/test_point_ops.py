"""point_ops: kNN against brute force, farthest point sampling (native == torch, FPS properties),
interpolation, space-filling-curve serialisation and patches."""

import itertools
import os

import pytest
import torch

from partgen.nn import point_ops
from partgen.nn.point_ops import (
    farthest_point_sampling,
    fps_reference,
    hilbert_code,
    interpolate,
    knn,
    patch_cu_seqlens,
    serialize,
)
from partgen.structures import batch_index, cu_seqlens_from_lengths


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the ops are small; a shared 2-core machine runs them faster on one


def cloud(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(sum(lengths), 3, generator=g) - 0.5, cu_seqlens_from_lengths(lengths)


def native_library():
    lib, why_not = point_ops._fps_library()
    if lib is None:
        if os.environ.get("CI"):
            pytest.fail(f"native fps must build on CI: {why_not}")
        pytest.skip(f"native fps unavailable: {why_not}")
    return lib


# --- knn ----------------------------------------------------------------------------------------------


def brute_knn(query, q_cu, ref, r_cu, k):
    out = []
    for b in range(q_cu.numel() - 1):
        q, r = query[q_cu[b] : q_cu[b + 1]], ref[r_cu[b] : r_cu[b + 1]]
        if q.shape[0] == 0:
            continue
        d = ((q[:, None, :].double() - r[None].double()) ** 2).sum(-1)
        order = d.argsort(1)[:, :k]
        if order.shape[1] < k:
            order = torch.cat([order, order[:, :1].expand(-1, k - order.shape[1])], 1)
        out.append(order + int(r_cu[b]))
    return torch.cat(out)


@pytest.mark.parametrize("impl", ["kdtree", "torch"])
@pytest.mark.parametrize("k", [1, 5, 16])
@pytest.mark.parametrize(("q_lengths", "r_lengths"), [((7, 97), (97, 7)), ((1, 97), (1, 97)), ((97, 1), (7, 1))])
def test_knn_matches_brute_force(impl, k, q_lengths, r_lengths):
    query, q_cu = cloud(q_lengths, seed=1)
    ref, r_cu = cloud(r_lengths, seed=2)
    idx = knn(query, q_cu, ref, r_cu, k, impl=impl)
    assert idx.shape == (sum(q_lengths), k) and idx.dtype == torch.int64
    torch.testing.assert_close(idx, brute_knn(query, q_cu, ref, r_cu, k), rtol=0, atol=0)
    # neighbours stay inside their own batch item
    assert torch.equal(batch_index(r_cu)[idx], batch_index(q_cu)[:, None].expand(-1, k))


def test_knn_self_query_is_nearest_and_short_items_repeat_the_nearest():
    pts, cu = cloud([1, 7, 97])
    idx = knn(pts, cu, pts, cu, 8)
    assert torch.equal(idx[:, 0], torch.arange(pts.shape[0]))  # every point is its own nearest neighbour
    assert torch.equal(idx[0], torch.zeros(8, dtype=torch.int64))  # the 1-point item repeats its only point
    assert torch.equal(idx[1:8, 7], idx[1:8, 0])  # the 7-point item fills its 8th column with the nearest


def test_knn_rejects_an_item_without_reference_points():
    query, q_cu = cloud([3, 4])
    ref, r_cu = cloud([5, 0])
    with pytest.raises(ValueError, match="no reference point"):
        knn(query, q_cu, ref, r_cu, 2)


# --- farthest point sampling ----------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [(1, 7, 97, 1025), (97,), (0, 7, 0, 40)])
@pytest.mark.parametrize("start", ["first", "random"])
def test_fps_native_equals_torch(lengths, start):
    native_library()
    pts, cu = cloud(lengths, seed=3)
    a, a_cu = farthest_point_sampling(
        pts, cu, ratio=0.25, start=start, generator=torch.Generator().manual_seed(5), impl="native"
    )
    b, b_cu = farthest_point_sampling(
        pts, cu, ratio=0.25, start=start, generator=torch.Generator().manual_seed(5), impl="torch"
    )
    assert torch.equal(a, b) and torch.equal(a_cu, b_cu)
    full_a, _ = farthest_point_sampling(pts, cu, counts=list(lengths), impl="native")
    full_b, _ = farthest_point_sampling(pts, cu, counts=list(lengths), impl="torch")
    assert torch.equal(full_a, full_b)


def test_fps_native_equals_torch_on_duplicate_points():
    native_library()
    g = torch.Generator().manual_seed(0)
    pts = torch.randint(0, 3, (200, 3), generator=g).float()  # 27 distinct positions: ties everywhere
    cu = cu_seqlens_from_lengths([120, 80])
    a, _ = farthest_point_sampling(pts, cu, counts=[60, 80], impl="native")
    b, _ = farthest_point_sampling(pts, cu, counts=[60, 80], impl="torch")
    assert torch.equal(a, b)


def test_fps_counts_first_sample_and_uniqueness():
    lengths = [1, 7, 97, 1025]
    pts, cu = cloud(lengths)
    idx, new_cu = farthest_point_sampling(pts, cu, ratio=0.25)
    assert new_cu.dtype == torch.int32
    assert (new_cu[1:] - new_cu[:-1]).tolist() == [1, 1, 24, 256]  # floor(n / 4), at least 1
    for b, n in enumerate(lengths):
        sel = idx[new_cu[b] : new_cu[b + 1]]
        assert int(sel[0]) == int(cu[b])  # start="first": each item starts at its first point
        assert bool(((sel >= cu[b]) & (sel < cu[b] + n)).all())
        assert sel.unique().numel() == sel.numel()
    counted, counted_cu = farthest_point_sampling(pts, cu, counts=[1, 3, 0, 10])
    assert (counted_cu[1:] - counted_cu[:-1]).tolist() == [1, 3, 0, 10]
    with pytest.raises(ValueError, match="count"):
        farthest_point_sampling(pts, cu, counts=[2, 3, 0, 10])


def test_fps_is_the_greedy_farthest_point_rule():
    pts, cu = cloud([97], seed=7)
    idx, _ = farthest_point_sampling(pts, cu, counts=[40])
    chosen = [0]
    dist = ((pts.double() - pts[0].double()) ** 2).sum(1)
    for _ in range(39):
        chosen.append(int(dist.argmax()))
        dist = torch.minimum(dist, ((pts.double() - pts[chosen[-1]].double()) ** 2).sum(1))
    assert idx.tolist() == chosen
    assert torch.equal(fps_reference(pts, cu, [40], [0]), idx)


def test_fps_spreads_points_wider_than_random_subsets():
    pts, cu = cloud([500], seed=11)
    idx, _ = farthest_point_sampling(pts, cu, counts=[50])

    def min_gap(sel):
        d = torch.cdist(pts[sel], pts[sel])
        return float(d[~torch.eye(len(sel), dtype=torch.bool)].min())

    g = torch.Generator().manual_seed(0)
    random_gaps = [min_gap(torch.randperm(500, generator=g)[:50]) for _ in range(200)]
    assert min_gap(idx) > max(random_gaps)


# --- interpolation ----------------------------------------------------------------------------------------


def test_interpolate_reproduces_a_linear_function_at_the_reference_points():
    pts, cu = cloud([7, 97])
    a = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]])
    f = pts @ a + torch.tensor([0.3, -0.7])  # (N, 2) linear in position
    assert torch.equal(interpolate(pts, cu, pts, cu, f), f)


def test_interpolate_is_a_convex_combination_of_the_three_nearest_in_the_same_item():
    ref, r_cu = cloud([7, 97], seed=1)
    query, q_cu = cloud([13, 29], seed=2)
    one_hot = torch.eye(ref.shape[0])  # interpolating the identity exposes the weights
    w = interpolate(query, q_cu, ref, r_cu, one_hot)  # (M, N)
    assert bool((w >= 0).all())
    torch.testing.assert_close(w.sum(1), torch.ones(query.shape[0]))
    support = torch.zeros_like(w, dtype=torch.bool)
    support.scatter_(1, knn(query, q_cu, ref, r_cu, 3), True)
    assert not bool(w[~support].any())  # only the three nearest reference points of the same item
    w_nearer = torch.gather(w, 1, knn(query, q_cu, ref, r_cu, 3))
    assert bool((w_nearer[:, 0] >= w_nearer[:, 2]).all())  # nearer points weigh more


def test_interpolate_passes_gradients_to_reference_features():
    ref, r_cu = cloud([7, 97], seed=1)
    query, q_cu = cloud([13, 29], seed=2)
    feats = torch.randn(ref.shape[0], 4, requires_grad=True)
    interpolate(query, q_cu, ref, r_cu, feats).sum().backward()
    assert feats.grad is not None and bool(torch.isfinite(feats.grad).all())
    torch.testing.assert_close(feats.grad.sum(), torch.tensor(4.0 * query.shape[0]))  # weights sum to 1


# --- serialisation -------------------------------------------------------------------------------------


def test_z_order_of_a_2x2x2_grid():
    cells = torch.tensor(list(itertools.product(range(2), repeat=3)), dtype=torch.float32)  # (x, y, z), z fastest
    shuffle = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    coords = cells[shuffle] + 0.5  # cell centres, grid size 1
    codes, perm = serialize(coords, cu_seqlens_from_lengths([8]), grid_size=1.0, order="z")
    assert coords[perm].tolist() == (cells + 0.5).tolist()  # (0,0,0), (0,0,1), (0,1,0), ... (1,1,1)
    assert codes[perm].tolist() == list(range(8))


@pytest.mark.parametrize("order", ["hilbert", "hilbert-trans"])
def test_hilbert_curve_visits_grid_neighbours_in_turn(order):
    r = 8
    cells = torch.tensor(list(itertools.product(range(r), repeat=3)), dtype=torch.float32)
    codes, perm = serialize(cells + 0.5, cu_seqlens_from_lengths([r**3]), grid_size=1.0, order=order)
    assert sorted(codes.tolist()) == list(range(r**3))  # the curve fills the 8^3 cube first
    steps = (cells[perm][1:] - cells[perm][:-1]).abs().sum(1)
    assert bool((steps == 1).all())  # consecutive cells share a face
    assert bool((hilbert_code(torch.zeros(1, 3, dtype=torch.int64)) == 0).all())


def test_z_order_is_not_a_neighbour_walk():
    # the contrast that makes the Hilbert test meaningful: Morton order jumps
    cells = torch.tensor(list(itertools.product(range(4), repeat=3)), dtype=torch.float32)
    _, perm = serialize(cells + 0.5, cu_seqlens_from_lengths([64]), grid_size=1.0, order="z")
    assert float((cells[perm][1:] - cells[perm][:-1]).abs().sum(1).max()) > 1


@pytest.mark.parametrize("order", ["z", "z-trans", "hilbert", "hilbert-trans"])
def test_serialize_sorts_codes_and_keeps_items_contiguous(order):
    lengths = [1, 7, 97]
    pts, cu = cloud(lengths)
    codes, perm = serialize(pts, cu, grid_size=0.05, order=order)
    assert torch.equal(perm.sort().values, torch.arange(pts.shape[0]))
    assert bool((codes[perm][1:] >= codes[perm][:-1]).all())
    assert torch.equal(batch_index(cu)[perm], batch_index(cu))  # item b keeps rows cu[b]:cu[b+1]
    # the order is a function of the point set, not of the input order
    shuffle = torch.cat([torch.randperm(n) + int(cu[b]) for b, n in enumerate(lengths)])
    _, perm2 = serialize(pts[shuffle], cu, grid_size=0.05, order=order)
    assert torch.equal(pts[shuffle][perm2], pts[perm])
    # an item's codes do not depend on the other items
    other, other_cu = cloud([1, 7, 50], seed=9)
    other[:8] = pts[:8]
    codes2, _ = serialize(other, other_cu, grid_size=0.05, order=order)
    assert torch.equal(codes2[:8], codes[:8])


def test_serialize_rejects_grids_beyond_the_code_width():
    pts, cu = cloud([10])
    with pytest.raises(ValueError, match="larger grid_size"):
        serialize(pts, cu, grid_size=1e-6)


def test_patches_never_cross_items_and_shift_moves_borders():
    cu = cu_seqlens_from_lengths([1, 7, 97])
    plain = patch_cu_seqlens(cu, 16).tolist()
    assert plain == [0, 1, 8, 24, 40, 56, 72, 88, 104, 105]
    shifted = patch_cu_seqlens(cu, 16, shift=8).tolist()
    assert shifted == [0, 1, 8, 16, 32, 48, 64, 80, 96, 105]
    for bounds in (plain, shifted):
        assert set(cu.tolist()) <= set(bounds)  # item borders are patch borders
        assert max(b - a for a, b in itertools.pairwise(bounds)) <= 16
