"""Sparse 3D convolutions on SparseVoxels: the only module in partgen that touches spconv.

Legend: B batch, N active voxels, C channels, K kernel size, R resolution.

Three layers (spconv 2.3 underneath, weights (C_out, K, K, K, C_in)):
  SubMConv3d           submanifold: outputs exactly at the input voxels
  SparseDownConv3d     strided: R -> R / stride, outputs wherever the kernel touches an input
  SparseInverseConv3d  the inverse of a named SparseDownConv3d: back to its input voxels

Known spconv 2.3.8 faults on CPU, handled here:
  * its ops ask torch.cuda.current_stream() even on CPU, which asserts in backward on a CPU
    torch: the stream getter is patched to return 0 when CUDA is absent;
  * its CPU kernels give wrong results when torch runs more than one thread: every spconv
    call (forward and backward) runs with one torch thread, and the caller's count is
    restored afterwards;
  * in eval mode it fuses the bias into a kernel its CPU build does not have: on CPU the
    layers run spconv's training path (bias added after the conv; nothing else differs).
spconv tensors never leave this module; neighbour maps live in SparseVoxels.cache.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from partgen.structures import SparseVoxels, cu_seqlens_from_lengths
from partgen.structures.sparse_voxels import linear_index

_CACHE_PAIRS = "spconv_indice_dict"  # spconv's neighbour maps for this coordinate set
_CACHE_ORDER = "spconv_order"  # row i of these voxels is row order[i] of spconv's output
_CACHE_PARENTS = "spconv_parents"  # indice_key -> the finer SparseVoxels a down conv came from


def _drop_fx_tracing_notice(record: logging.LogRecord) -> bool:
    # spconv's modules call torch.fx's is_fx_tracing(), which logs a deprecation notice once
    return not str(record.msg).startswith("is_fx_tracing will return true")


@functools.cache
def _spconv():
    """Import spconv once, patch its CUDA stream lookup for CPU-only torch, quiet its fx notice."""
    logging.getLogger("torch.fx._symbolic_trace").addFilter(_drop_fx_tracing_notice)
    import spconv.pytorch as spconv
    import spconv.pytorch.hash as spconv_hash
    import spconv.pytorch.ops as spconv_ops

    if not torch.cuda.is_available():

        def no_stream() -> int:
            return 0

        spconv_ops.get_current_stream = no_stream
        spconv_hash.get_current_stream = no_stream
    return spconv


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _SetThreadsInBackward(torch.autograd.Function):
    """Identity whose backward sets torch's thread count (brackets spconv's CPU backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threads: int) -> torch.Tensor:
        ctx.threads = threads
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        torch.set_num_threads(ctx.threads)
        return grad, None


def _run_spconv(
    module: nn.Module, feats: torch.Tensor, indices: torch.Tensor, resolution: int, batch_size: int, pairs: dict
):
    """Run one spconv module; on CPU, forward and backward run single-threaded."""
    spconv = _spconv()
    on_cpu = feats.device.type == "cpu"
    if on_cpu and torch.is_grad_enabled():
        caller = torch.get_num_threads()
        if not feats.requires_grad:
            # the gate below only runs in backward when its input needs a gradient
            feats = feats.detach().requires_grad_(True)
        feats = _SetThreadsInBackward.apply(feats, caller)  # backward: restore after spconv
    x = spconv.SparseConvTensor(feats, indices, [resolution] * 3, batch_size)
    x.indice_dict = pairs
    ctx = _torch_threads(1) if on_cpu else contextlib.nullcontext()
    # in eval mode spconv fuses the bias into its kernel, which its CPU build refuses ("cpu don't
    # support act and bias"); its training path adds the bias after the conv, same result
    evaluating = on_cpu and not module.training
    with ctx:
        if evaluating:
            module.train()
        try:
            out = module(x)
        finally:
            if evaluating:
                module.eval()
    out_feats = out.features
    if on_cpu and out_feats.requires_grad:
        out_feats = _SetThreadsInBackward.apply(out_feats, 1)  # backward: one thread for spconv
    return out, out_feats


def _check_input(x: SparseVoxels, in_channels: int, layer: str) -> None:
    if x.feats.shape[1] != in_channels:
        raise ValueError(f"{layer} expects {in_channels} input channels, got feats {tuple(x.feats.shape)}")


class SubMConv3d(nn.Module):
    """Submanifold convolution: (N, C_in) -> (N, C_out) at the same voxels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"submanifold kernel_size must be odd, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        # one key per kernel size: every layer on the same coordinates shares the neighbour map
        self.conv = _spconv().SubMConv3d(
            in_channels, out_channels, kernel_size, bias=bias, indice_key=f"subm{kernel_size}"
        )

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight  # (C_out, K, K, K, C_in)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        _check_input(x, self.in_channels, "SubMConv3d")
        pairs = x.cache.setdefault(_CACHE_PAIRS, {})
        _, feats = _run_spconv(self.conv, x.feats, x.coords, x.resolution, x.batch_size, pairs)
        return x.replace(feats=feats)


def _majority_part(
    fine: SparseVoxels, coarse_coords: torch.Tensor, coarse_resolution: int, stride: int
) -> torch.Tensor:
    """(N_coarse,) part of each coarse voxel: the most common part among its children (ties: lower label)."""
    c = fine.coords.to(torch.int64)
    parent = torch.cat([c[:, :1], c[:, 1:] // stride], 1)
    keys = linear_index(coarse_coords, coarse_resolution)  # sorted
    rows = torch.searchsorted(keys, linear_index(parent, coarse_resolution))
    width = int(fine.part.max()) + 1
    pairs, counts = torch.unique(rows * width + fine.part, return_counts=True)  # ascending (row, part)
    order = torch.sort(-counts, stable=True).indices  # most votes first, lower part on ties
    order = order[torch.sort(pairs[order] // width, stable=True).indices]  # then group by row
    pairs = pairs[order]
    first = torch.ones_like(pairs, dtype=torch.bool)
    first[1:] = pairs[1:] // width != pairs[:-1] // width
    return pairs[first] % width


class SparseDownConv3d(nn.Module):
    """Strided convolution R -> R / stride. Its indice_key names it for SparseInverseConv3d.

    With kernel_size == stride (patch merging, the default) every coarse voxel is the union of
    its children and inherits their majority part label; otherwise part labels are dropped.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        indice_key: str,
        kernel_size: int = 2,
        stride: int = 2,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.indice_key = kernel_size, stride, padding, indice_key
        self.conv = _spconv().SparseConv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, indice_key=indice_key
        )

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight  # (C_out, K, K, K, C_in)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        _check_input(x, self.in_channels, "SparseDownConv3d")
        pairs = x.cache.setdefault(_CACHE_PAIRS, {})
        out, feats = _run_spconv(self.conv, x.feats, x.coords, x.resolution, x.batch_size, pairs)
        resolution = int(out.spatial_shape[0])
        order = torch.argsort(linear_index(out.indices, resolution), stable=True)  # spconv's output is unordered
        coords = out.indices[order]
        cu = cu_seqlens_from_lengths(torch.bincount(coords[:, 0].to(torch.int64), minlength=x.batch_size))
        parents = dict(x.cache.get(_CACHE_PARENTS, {}))
        parents[self.indice_key] = x
        part = None
        if x.part is not None and self.kernel_size == self.stride and self.padding == 0 and len(x):
            part = _majority_part(x, coords, resolution, self.stride)
        cache: dict[str, Any] = {_CACHE_PAIRS: out.indice_dict, _CACHE_ORDER: order, _CACHE_PARENTS: parents}
        return SparseVoxels(
            feats=feats[order], cu_seqlens=cu, coords=coords, resolution=resolution, part=part, cache=cache
        )


class SparseInverseConv3d(nn.Module):
    """Upsampling that inverts the SparseDownConv3d with the same indice_key: back to its input voxels."""

    def __init__(self, in_channels: int, out_channels: int, indice_key: str, kernel_size: int = 2, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size, self.indice_key = (
            in_channels,
            out_channels,
            kernel_size,
            indice_key,
        )
        self.conv = _spconv().SparseInverseConv3d(
            in_channels, out_channels, kernel_size, indice_key=indice_key, bias=bias
        )

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight  # (C_out, K, K, K, C_in)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        _check_input(x, self.in_channels, "SparseInverseConv3d")
        fine = x.cache.get(_CACHE_PARENTS, {}).get(self.indice_key)
        if fine is None or _CACHE_ORDER not in x.cache:
            raise ValueError(
                f"SparseInverseConv3d: these voxels did not come from a SparseDownConv3d with indice_key={self.indice_key!r}"
            )
        order = x.cache[_CACHE_ORDER]
        spconv_rows = torch.empty_like(order)
        spconv_rows[order] = torch.arange(order.numel(), device=order.device)
        feats_in_spconv_order = x.feats[spconv_rows]
        _, feats = _run_spconv(
            self.conv, feats_in_spconv_order, x.coords[spconv_rows], x.resolution, x.batch_size, x.cache[_CACHE_PAIRS]
        )
        return fine.replace(feats=feats)


# --- dense twin (for tests): the same maps computed with torch's dense conv3d ---------------------


def _densify(x: SparseVoxels) -> torch.Tensor:
    """SparseVoxels -> (B, C, R, R, R) dense grid, zeros where inactive."""
    r = x.resolution
    grid = x.feats.new_zeros(x.batch_size, x.feats.shape[1], r, r, r)
    b, i, j, k = x.coords.to(torch.int64).unbind(1)
    grid[b, :, i, j, k] = x.feats
    return grid


def _sample(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    b, i, j, k = coords.to(torch.int64).unbind(1)
    return grid[b, :, i, j, k]


def dense_twin(layer: nn.Module, x: SparseVoxels, out_coords: torch.Tensor, out_resolution: int) -> torch.Tensor:
    """What `layer` computes at out_coords (N_out, 4), through dense conv3d: (N_out, C_out)."""
    w = layer.weight.permute(0, 4, 1, 2, 3)  # (C_out, C_in, K, K, K)
    bias = layer.conv.bias
    grid = _densify(x)
    if isinstance(layer, SubMConv3d):
        y = F.conv3d(grid, w, bias, padding=layer.kernel_size // 2)
    elif isinstance(layer, SparseDownConv3d):
        y = F.conv3d(grid, w, bias, stride=layer.stride, padding=layer.padding)
    elif isinstance(layer, SparseInverseConv3d):
        down = x.cache[_CACHE_PAIRS][layer.indice_key]
        stride, padding = down.stride[0], down.padding[0]
        natural = (x.resolution - 1) * stride - 2 * padding + layer.kernel_size
        wt = layer.weight.permute(4, 0, 1, 2, 3)  # (C_in, C_out, K, K, K)
        y = F.conv_transpose3d(grid, wt, bias, stride=stride, padding=padding, output_padding=out_resolution - natural)
    else:
        raise TypeError(f"no dense twin for {type(layer).__name__}")
    return _sample(y, out_coords)


def dense_active_sites(x: SparseVoxels, kernel_size: int, stride: int, padding: int) -> torch.Tensor:
    """(M, 4) int32 coarse voxels a strided sparse conv must output (kernel touches an input), sorted."""
    occ = _densify(x.replace(feats=x.feats.new_ones(len(x), 1)))
    ones = occ.new_ones(1, 1, kernel_size, kernel_size, kernel_size)
    hit = F.conv3d(occ, ones, stride=stride, padding=padding)[:, 0] > 0
    return torch.nonzero(hit).to(torch.int32)
