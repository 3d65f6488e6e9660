"""Point-cloud operations over flattened batches: kNN, farthest point sampling, interpolation, serialisation.

Legend: B batch items, N reference points (all items together), M query points (all items
together), K neighbours, C channels. Every batch is flattened the partgen way: rows of item b
are ref[ref_cu[b]:ref_cu[b+1]] with cu_seqlens (B+1,) int32 and a leading 0. Neighbours,
samples and patches never cross batch items. Index outputs are int64 row indices into the
flattened tensors and carry no gradient.

CPU paths avoid O(N^2) memory: kNN uses scipy's cKDTree per item, farthest point sampling a
small C++ library (csrc/fps.cpp, built on first use by partgen.native) with a vectorised
torch twin that returns the same indices.
"""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from partgen.native import load_library

log = logging.getLogger(__name__)

CurveOrder = Literal["z", "z-trans", "hilbert", "hilbert-trans"]
CODE_BITS = 16  # bits per axis of serialisation codes: grids up to 65536 cells a side
_CDIST_CHUNK = 1 << 24  # query x reference distances evaluated at once on the torch kNN path


def _check_cloud(points: torch.Tensor, cu_seqlens: torch.Tensor, name: str) -> None:
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must be (rows, 3), got {tuple(points.shape)}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1 or int(cu_seqlens[-1]) != points.shape[0]:
        raise ValueError(f"{name} cu_seqlens must be (B+1,) offsets ending at {points.shape[0]}")


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (N, C), idx (M, K) int64 -> (M, K, C) rows x[idx] (index_select: ~2x faster than x[idx] on CPU)."""
    return x.index_select(0, idx.reshape(-1)).view(*idx.shape, x.shape[-1])


# --- k nearest neighbours ---------------------------------------------------------------------


def knn(
    query: torch.Tensor,
    query_cu: torch.Tensor,
    ref: torch.Tensor,
    ref_cu: torch.Tensor,
    k: int,
    *,
    impl: Literal["auto", "kdtree", "torch"] = "auto",
) -> torch.Tensor:
    """The k nearest reference points of every query point within its batch item, nearest first.

    query (M, 3) with query_cu (B+1,); ref (N, 3) with ref_cu (B+1,) -> (M, K) int64 row indices
    into ref. An item with fewer than K reference points repeats its nearest one to fill the row;
    an item with queries but no reference point is an error.
    impl: "kdtree" (scipy cKDTree per item, CPU), "torch" (chunked exact distances + topk, any
          device, O(chunk) memory), "auto" (kdtree on CPU, torch elsewhere).
    """
    _check_cloud(query, query_cu, "query")
    _check_cloud(ref, ref_cu, "ref")
    if query_cu.numel() != ref_cu.numel():
        raise ValueError(f"query and ref batches differ: {query_cu.numel() - 1} vs {ref_cu.numel() - 1} items")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q_cu, r_cu = query_cu.tolist(), ref_cu.tolist()
    for b in range(len(q_cu) - 1):
        if q_cu[b + 1] > q_cu[b] and r_cu[b + 1] == r_cu[b]:
            raise ValueError(f"batch item {b} has query points but no reference point")
    if impl == "auto":
        impl = "kdtree" if query.device.type == "cpu" else "torch"
    with torch.no_grad():
        if impl == "kdtree":
            return _knn_kdtree(query, q_cu, ref, r_cu, k)
        if impl == "torch":
            return _knn_torch(query, q_cu, ref, r_cu, k)
    raise ValueError(f"unknown knn impl {impl!r}")


def _fill(idx: torch.Tensor, k: int) -> torch.Tensor:
    """(m, k') nearest-first indices -> (m, k), repeating the nearest one when k' < k."""
    if idx.shape[1] == k:
        return idx
    return torch.cat([idx, idx[:, :1].expand(-1, k - idx.shape[1])], 1)


def _knn_kdtree(query, q_cu: list[int], ref, r_cu: list[int], k: int) -> torch.Tensor:
    from scipy.spatial import cKDTree

    q_np = query.detach().cpu().double().numpy()
    r_np = ref.detach().cpu().double().numpy()
    out = torch.empty(query.shape[0], k, dtype=torch.int64)
    for b in range(len(q_cu) - 1):
        (q0, q1), (r0, r1) = q_cu[b : b + 2], r_cu[b : b + 2]
        if q1 == q0:
            continue
        kk = min(k, r1 - r0)
        _, idx = cKDTree(r_np[r0:r1]).query(q_np[q0:q1], k=kk, workers=-1)
        idx = torch.from_numpy(idx.reshape(q1 - q0, kk).astype("int64", copy=False))
        out[q0:q1] = _fill(idx, k) + r0
    return out.to(query.device)


def _knn_torch(query, q_cu: list[int], ref, r_cu: list[int], k: int) -> torch.Tensor:
    out = torch.empty(query.shape[0], k, dtype=torch.int64, device=query.device)
    for b in range(len(q_cu) - 1):
        (q0, q1), (r0, r1) = q_cu[b : b + 2], r_cu[b : b + 2]
        kk, r = min(k, r1 - r0), ref[r0:r1]
        step = max(1, _CDIST_CHUNK // max(1, r1 - r0))
        for s in range(q0, q1, step):
            e = min(q1, s + step)
            # exact differences (no |a|^2 + |b|^2 - 2ab expansion): near neighbours keep their order
            d = torch.cdist(query[s:e], r, compute_mode="donot_use_mm_for_euclid_dist")  # (m, n_b)
            out[s:e] = _fill(d.topk(kk, dim=1, largest=False, sorted=True).indices, k) + r0
    return out


# --- farthest point sampling ----------------------------------------------------------------------


def sample_counts(cu_seqlens: torch.Tensor, ratio: float) -> list[int]:
    """Samples per item for a ratio: floor(n * ratio), at least 1 for a non-empty item, at most n."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    return [min(n, max(1, math.floor(n * ratio))) if n else 0 for n in lengths]


def _fps_library():
    source = Path(__file__).parent / "csrc" / "fps.cpp"
    if not source.exists():  # an install without the C++ sources
        return None, f"{source} is missing"
    lib, why_not = load_library(str(source))
    if lib is not None and not getattr(lib, "_partgen_typed", False):
        lib.pg_fps.restype = ctypes.c_int
        lib.pg_fps.argtypes = (
            [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64] + [ctypes.c_void_p] * 4 + [ctypes.c_int]
        )
        lib._partgen_typed = True
    return lib, why_not


def farthest_point_sampling(
    points: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    ratio: float | None = None,
    counts: Sequence[int] | torch.Tensor | None = None,
    start: Literal["first", "random"] = "first",
    generator: torch.Generator | None = None,
    impl: Literal["auto", "native", "torch"] = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterative farthest point sampling per batch item.

    points (N, 3) with cu_seqlens (B+1,) -> (indices (M,) int64 rows of points in selection
    order, item by item; new_cu_seqlens (B+1,) int32 over the samples).
    ratio / counts: exactly one; ratio gives floor(n * ratio) samples (at least 1) per item,
        counts the number per item (each <= the item's size).
    start: "first" starts each item at its first point (deterministic), "random" at a uniformly
        drawn point (from generator, a CPU generator).
    impl: "native" (csrc/fps.cpp, CPU, OpenMP), "torch" (vectorised twin, any device: O(N * M)
        time, O(N) memory), "auto" (native for CPU tensors when it builds, else torch).
    Distances are squared Euclidean in float32; ties go to the lowest index, so both
    implementations return identical indices for the same starts. An item with fewer distinct
    positions than samples repeats points once every position is taken.
    """
    _check_cloud(points, cu_seqlens, "points")
    if (ratio is None) == (counts is None):
        raise ValueError("pass exactly one of ratio and counts")
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    num = sample_counts(cu_seqlens, ratio) if ratio is not None else [int(c) for c in counts]
    if len(num) != len(lengths) or any(c < 0 or c > n for c, n in zip(num, lengths, strict=False)):
        raise ValueError(f"counts {num} must give 0 <= count <= item size for the item sizes {lengths}")
    if start == "first":
        starts = [0] * len(lengths)
    elif start == "random":
        starts = [int(torch.randint(n, (), generator=generator)) if n else 0 for n in lengths]
    else:
        raise ValueError(f"start must be 'first' or 'random', got {start!r}")
    new_cu = torch.tensor([0, *torch.tensor(num, dtype=torch.int64).cumsum(0).tolist()], dtype=torch.int32)
    with torch.no_grad():
        xyz = points.detach().to(torch.float32)
        lib = None
        if impl in ("auto", "native") and points.device.type == "cpu":
            lib, why_not = _fps_library()
            if lib is None and impl == "native":
                raise RuntimeError(f"native farthest point sampling unavailable: {why_not}")
            if lib is None:
                log.debug("farthest_point_sampling: native library unavailable (%s); using torch", why_not)
        elif impl == "native":
            raise RuntimeError(f"native farthest point sampling runs on CPU tensors, got {points.device.type}")
        elif impl not in ("auto", "torch"):
            raise ValueError(f"unknown fps impl {impl!r}")
        if lib is not None:
            idx = _fps_native(lib, xyz, cu_seqlens, num, starts, new_cu)
        else:
            idx = _fps_torch(xyz, cu_seqlens, num, starts)
    return idx.to(points.device), new_cu.to(points.device)


def _fps_native(lib, xyz, cu_seqlens, num: list[int], starts: list[int], new_cu) -> torch.Tensor:
    xyz = xyz.contiguous()
    cu = cu_seqlens.to(torch.int64).contiguous()
    counts = torch.tensor(num, dtype=torch.int64)
    first = torch.tensor(starts, dtype=torch.int64)
    out_cu = new_cu.to(torch.int64)
    out = torch.empty(int(out_cu[-1]), dtype=torch.int64)
    rc = lib.pg_fps(
        xyz.data_ptr(),
        cu.data_ptr(),
        len(num),
        counts.data_ptr(),
        first.data_ptr(),
        out_cu.data_ptr(),
        out.data_ptr(),
        torch.get_num_threads(),
    )
    if rc != 0:
        raise RuntimeError(f"pg_fps rejected its arguments (code {rc})")
    return out


def fps_reference(points: torch.Tensor, cu_seqlens: torch.Tensor, counts: Sequence[int], starts: Sequence[int]):
    """The torch twin of the native sampler: (M,) int64 indices (see farthest_point_sampling)."""
    return _fps_torch(points.detach().to(torch.float32), cu_seqlens, list(counts), list(starts))


def _fps_torch(xyz, cu_seqlens, num: list[int], starts: list[int]) -> torch.Tensor:
    """All items advance together, one sample per step: O(N) work and memory per step."""
    dev, n = xyz.device, xyz.shape[0]
    cu = cu_seqlens.to(dev, torch.int64)
    lengths = cu[1:] - cu[:-1]
    batch = torch.repeat_interleave(torch.arange(len(num), device=dev), lengths)  # (N,)
    counts = torch.tensor(num, dtype=torch.int64, device=dev)
    out_cu = torch.zeros(len(num) + 1, dtype=torch.int64, device=dev)
    torch.cumsum(counts, 0, out=out_cu[1:])
    out = torch.empty(int(out_cu[-1]), dtype=torch.int64, device=dev)
    steps = max(num, default=0)
    if steps == 0:
        return out
    x, y, z = xyz.unbind(1)
    dist = torch.full((n,), math.inf, device=dev)
    rows = torch.arange(n, device=dev)
    sel = cu[:-1] + torch.tensor(starts, dtype=torch.int64, device=dev)  # (B,) global row of each item's sample
    live = counts > 0
    for i in range(steps):
        taking = live & (counts > i)
        out[out_cu[:-1][taking] + i] = sel[taking]
        if i + 1 == steps:
            break
        safe = sel.clamp(max=max(n - 1, 0))  # items already done (or empty) point anywhere valid
        last = xyz[safe]  # (B, 3); one item broadcasts, several gather per point
        lx, ly, lz = (last if len(num) == 1 else last[batch]).unbind(1)
        dx, dy, dz = x - lx, y - ly, z - lz
        d = (dx * dx + dy * dy) + dz * dz  # separate roundings, as in fps.cpp (no FMA)
        torch.minimum(dist, d, out=dist)
        if len(num) == 1:
            sel = dist.argmax().reshape(1)  # the first maximum
            continue
        top = torch.full((len(num),), -1.0, device=dev).scatter_reduce(0, batch, dist, "amax")
        cand = torch.where(dist == top[batch], rows, n)
        sel = torch.full((len(num),), n, dtype=torch.int64, device=dev).scatter_reduce(0, batch, cand, "amin")
    return out


# --- interpolation ---------------------------------------------------------------------------------


def interpolate(
    query: torch.Tensor,
    query_cu: torch.Tensor,
    ref: torch.Tensor,
    ref_cu: torch.Tensor,
    ref_feats: torch.Tensor,
    k: int = 3,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Inverse-distance-weighted interpolation from the k nearest reference points (PointNet++ upsampling).

    query (M, 3), query_cu (B+1,); ref (N, 3), ref_cu (B+1,); ref_feats (N, C) -> (M, C).
    Weights are 1 / (|q - r| + eps) normalised over the k neighbours (a convex combination);
    a query that coincides with a reference point takes that point's features exactly. The
    weights carry no gradient (as in the official pointops); ref_feats do.
    """
    if ref_feats.dim() != 2 or ref_feats.shape[0] != ref.shape[0]:
        raise ValueError(f"ref_feats must be (N, C) with N = {ref.shape[0]}, got {tuple(ref_feats.shape)}")
    idx = knn(query, query_cu, ref, ref_cu, k)  # (M, K)
    with torch.no_grad():
        d = (query.detach()[:, None, :] - gather_rows(ref.detach(), idx)).norm(dim=-1)  # (M, K)
        hit = d == 0
        w = torch.where(hit.any(1, keepdim=True), hit.to(d.dtype), 1.0 / (d + eps))
        w = (w / w.sum(1, keepdim=True)).to(ref_feats.dtype)
    return (gather_rows(ref_feats, idx) * w[..., None]).sum(1)


# --- serialisation along space-filling curves ------------------------------------------------------


def grid_coords(coords: torch.Tensor, cu_seqlens: torch.Tensor, grid_size: float) -> torch.Tensor:
    """(N, 3) float positions -> (N, 3) int64 cells floor((p - item min) / grid_size), >= 0 per item."""
    _check_cloud(coords, cu_seqlens, "coords")
    if grid_size <= 0:
        raise ValueError(f"grid_size must be > 0, got {grid_size}")
    batch = torch.repeat_interleave(
        torch.arange(cu_seqlens.numel() - 1, device=coords.device), (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    )
    lo = torch.full((cu_seqlens.numel() - 1, 3), math.inf, dtype=coords.dtype, device=coords.device)
    lo = lo.scatter_reduce(0, batch[:, None].expand(-1, 3), coords.detach(), "amin")
    cells = torch.floor((coords.detach() - lo[batch]) / grid_size).to(torch.int64)
    if cells.numel() and int(cells.max()) >= 1 << CODE_BITS:
        raise ValueError(
            f"a batch item spans {int(cells.max()) + 1} cells of size {grid_size}; serialisation codes hold "
            f"{1 << CODE_BITS}: use a larger grid_size"
        )
    return cells


def _spread3(v: torch.Tensor) -> torch.Tensor:
    """Bits b of v (< 2^21) moved to bits 3b."""
    v = v & 0x1FFFFF
    v = (v | (v << 32)) & 0x1F00000000FFFF
    v = (v | (v << 16)) & 0x1F0000FF0000FF
    v = (v | (v << 8)) & 0x100F00F00F00F00F
    v = (v | (v << 4)) & 0x10C30C30C30C30C3
    return (v | (v << 2)) & 0x1249249249249249


def morton_code(cells: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 cells [x, y, z] -> (N,) Z-order codes with x the most significant axis.

    On a 2x2x2 grid the order is (0,0,0), (0,0,1), (0,1,0), (0,1,1), (1,0,0), ... (as linear_index).
    """
    return (_spread3(cells[:, 0]) << 2) | (_spread3(cells[:, 1]) << 1) | _spread3(cells[:, 2])


def hilbert_code(cells: torch.Tensor, bits: int = CODE_BITS) -> torch.Tensor:
    """(N, 3) int64 cells in [0, 2^bits) -> (N,) Hilbert indices (Skilling's transpose algorithm).

    Consecutive indices are face-adjacent cells; the curve starts at the origin, so the first
    8^j indices fill the cube [0, 2^j)^3 for every j.
    """
    x = [cells[:, 0].clone(), cells[:, 1].clone(), cells[:, 2].clone()]
    q = 1 << (bits - 1)
    while q > 1:  # inverse undo of the excess work
        p = q - 1
        for i in range(3):
            high = (x[i] & q) != 0
            if i == 0:
                x[0] = torch.where(high, x[0] ^ p, x[0])
                continue
            t = (x[0] ^ x[i]) & p
            x[0], x[i] = torch.where(high, x[0] ^ p, x[0] ^ t), torch.where(high, x[i], x[i] ^ t)
        q >>= 1
    x[1] = x[1] ^ x[0]  # Gray encode
    x[2] = x[2] ^ x[1]
    t = torch.zeros_like(x[0])
    q = 1 << (bits - 1)
    while q > 1:
        t = torch.where((x[2] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    return morton_code(torch.stack([x[0] ^ t, x[1] ^ t, x[2] ^ t], 1))  # the transpose's bits interleaved


def serialize(
    coords: torch.Tensor,
    cu_seqlens: torch.Tensor,
    grid_size: float,
    order: CurveOrder = "z",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Space-filling-curve codes and the order that sorts points along the curve, item by item.

    coords (N, 3) float, cu_seqlens (B+1,) -> (codes (N,) int64, perm (N,) int64).
    Cells are floor((p - item min) / grid_size) with CODE_BITS bits per axis, so an item's codes
    do not depend on the other items. codes = batch << 3*CODE_BITS | curve index.
    order: "z" (Morton), "hilbert", and their "-trans" variants (x and y swapped, as in
        Point Transformer V3).
    perm sorts by (code, x, y, z): items stay contiguous in batch order, and points sharing a cell
    are ordered by position, so the order does not depend on the input order of the points.
    """
    cells = grid_coords(coords, cu_seqlens, grid_size)
    if order.endswith("-trans"):
        cells = cells[:, [1, 0, 2]]
    if order in ("z", "z-trans"):
        curve = morton_code(cells)
    elif order in ("hilbert", "hilbert-trans"):
        curve = hilbert_code(cells)
    else:
        raise ValueError(f"unknown curve order {order!r}; known: z, z-trans, hilbert, hilbert-trans")
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    batch = torch.repeat_interleave(torch.arange(lengths.numel(), device=coords.device), lengths)
    codes = (batch << (3 * CODE_BITS)) | curve
    perm = torch.arange(coords.shape[0], device=coords.device)
    for column in (coords[:, 2], coords[:, 1], coords[:, 0], codes):  # least significant key first
        perm = perm[torch.sort(column.detach()[perm], stable=True).indices]
    return codes, perm


def patch_cu_seqlens(cu_seqlens: torch.Tensor, patch_size: int, shift: int = 0) -> torch.Tensor:
    """Offsets (P+1,) int32 of patches of patch_size consecutive rows that never cross items.

    Each item starts with a patch of `shift` rows when 0 < shift < its size, then full patches;
    its last patch may be shorter.
    """
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    bounds = [0]
    cu = cu_seqlens.tolist()
    for b in range(len(cu) - 1):
        s, e = cu[b], cu[b + 1]
        first = s + shift if 0 < shift < e - s else s
        if first > s:
            bounds.append(first)
        bounds.extend(range(first + patch_size, e, patch_size))
        if e > s:
            bounds.append(e)
    return torch.tensor(bounds, dtype=torch.int32, device=cu_seqlens.device)
