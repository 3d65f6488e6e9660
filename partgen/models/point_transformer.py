"""Point Transformer (Zhao, Jiang, Jia, Torr, Koltun, ICCV 2021) and a serialised patch-attention variant for per-point parts.

Legend: B batch items, N points (all items together), N_l points at U-Net level l, K neighbours,
C channels, S share_planes (channel groups that share one attention weight), G = C / S weight
channels, H heads, P patch size, E embedding dim, L classes.

Two backbones map Points (feats (N, C_in), coords (N, 3), cu_seqlens (B+1,)) to per-point
features (N, C_out):
  * PointTransformerSeg: the paper's U-Net of vector self-attention over kNN neighbourhoods,
    farthest-point-sampling transitions down and interpolating transitions up.
  * SerializedPointTransformer: in the spirit of Point Transformer V3, points ordered along a
    space-filling curve, dot-product attention within patches of consecutive points through
    partgen.nn.attention (so every varlen/part-attention backend serves it), a flat stack.
PointSegmenter puts a semantic head and a class-agnostic embedding head on either backbone (a
config group of its own, conf/point_backbone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from partgen.nn.blocks import TransformerBlock
from partgen.nn.point_ops import (
    CurveOrder,
    farthest_point_sampling,
    gather_rows,
    interpolate,
    knn,
    patch_cu_seqlens,
    serialize,
)
from partgen.structures import PartGroups, Points, batch_index

Norm = Literal["batch", "layer"]


class PointNorm(nn.Module):
    """Normalisation over the channel (last) dim of (..., C) rows.

    "batch": BatchNorm1d with statistics over every leading dim (the official code's BatchNorm1d
    on (N, C, K) tensors computes the same); "layer": LayerNorm per row (no batch coupling).
    """

    def __init__(self, channels: int, kind: Norm = "batch"):
        super().__init__()
        if kind not in ("batch", "layer"):
            raise ValueError(f"norm must be 'batch' or 'layer', got {kind!r}")
        self.kind = kind
        self.norm = nn.BatchNorm1d(channels) if kind == "batch" else nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer":
            return self.norm(x)
        return self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def _segment_mean(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """(N, C) rows, (B+1,) offsets -> (B, C) mean per item (zeros for an empty item)."""
    counts = (cu_seqlens[1:] - cu_seqlens[:-1]).to(x.dtype).clamp(min=1)
    total = x.new_zeros(cu_seqlens.numel() - 1, x.shape[1]).index_add(0, batch_index(cu_seqlens), x)
    return total / counts[:, None]


# --- Point Transformer (vector attention) -------------------------------------------------------------


class PointTransformerLayer(nn.Module):
    """Vector self-attention over the K nearest neighbours (the paper's Eq. 3).

    y_i = sum_j softmax_j(gamma(phi(x_i) - psi(x_j) + delta_ij)) * (alpha(x_j) + delta_ij), with
    delta_ij = theta(p_i - p_j). theta: Linear(3, 3), norm, ReLU, Linear(3, C); gamma: norm, ReLU,
    Linear(C, G), norm, ReLU, Linear(G, G) as in the official code. Grouped vector attention:
    channel c of the values uses weight channel c mod G (share_planes S = C / G channel groups).
    The official code forms psi(x_j) - phi(x_i) + theta'(p_j - p_i); the linear maps absorb the signs.

    x (N, C_in), coords (N, 3), neighbours (N, K) int64 rows of the same item -> (N, C_out).
    """

    def __init__(self, in_channels: int, out_channels: int, share_planes: int = 8, norm: Norm = "batch"):
        super().__init__()
        if out_channels % share_planes:
            raise ValueError(f"out_channels {out_channels} must be divisible by share_planes {share_planes}")
        self.share_planes = share_planes
        weight_channels = out_channels // share_planes
        self.to_q = nn.Linear(in_channels, out_channels)  # phi
        self.to_k = nn.Linear(in_channels, out_channels)  # psi
        self.to_v = nn.Linear(in_channels, out_channels)  # alpha
        self.pos = nn.Sequential(  # theta
            nn.Linear(3, 3), PointNorm(3, norm), nn.ReLU(inplace=True), nn.Linear(3, out_channels)
        )
        self.weight = nn.Sequential(  # gamma
            PointNorm(out_channels, norm),
            nn.ReLU(inplace=True),
            nn.Linear(out_channels, weight_channels),
            PointNorm(weight_channels, norm),
            nn.ReLU(inplace=True),
            nn.Linear(weight_channels, weight_channels),
        )

    def forward(self, x: torch.Tensor, coords: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        N, K = neighbours.shape
        q = self.to_q(x)  # (N, C)
        k = gather_rows(self.to_k(x), neighbours)  # (N, K, C)
        v = gather_rows(self.to_v(x), neighbours)  # (N, K, C)
        delta = self.pos(coords[:, None, :] - gather_rows(coords, neighbours))  # (N, K, C)
        # in-place adds on fresh (N, K, C) tensors whose producers do not keep them for backward
        w = self.weight((q[:, None, :] - k).add_(delta)).softmax(dim=1)  # (N, K, G)
        C, G = v.shape[-1], w.shape[-1]
        out = (v.add_(delta).view(N, K, self.share_planes, G) * w[:, :, None, :]).sum(1)  # (N, S, G)
        return out.reshape(N, C)


class PointTransformerBlock(nn.Module):
    """Residual block: Linear -> norm -> ReLU -> PointTransformerLayer -> norm -> ReLU -> Linear -> norm, + x, ReLU.

    x (N, C), coords (N, 3), neighbours (N, K) -> (N, C).
    """

    def __init__(self, channels: int, share_planes: int = 8, norm: Norm = "batch"):
        super().__init__()
        self.linear1 = nn.Linear(channels, channels, bias=False)
        self.norm1 = PointNorm(channels, norm)
        self.attn = PointTransformerLayer(channels, channels, share_planes=share_planes, norm=norm)
        self.norm2 = PointNorm(channels, norm)
        self.linear3 = nn.Linear(channels, channels, bias=False)
        self.norm3 = PointNorm(channels, norm)

    def forward(self, x: torch.Tensor, coords: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.linear1(x)))
        h = F.relu(self.norm2(self.attn(h, coords, neighbours)))
        return F.relu(x + self.norm3(self.linear3(h)))


class TransitionDown(nn.Module):
    """Farthest point sampling to 1/stride of each item, then max pooling of MLP features over kNN.

    Points (N, C_in) -> Points (M, C_out) at the sampled positions, M = sum_b max(1, floor(n_b / stride)).
    Each sample pools Linear([p_j - p_i, x_j]) -> norm -> ReLU over its K nearest input points.
    stride 1: a per-point Linear -> norm -> ReLU, positions unchanged.
    fps_start: "first" (deterministic) or "random" (a fresh start per call).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 4,
        neighbours: int = 16,
        norm: Norm = "batch",
        fps_start: Literal["first", "random"] = "first",
    ):
        super().__init__()
        self.stride, self.neighbours, self.fps_start = stride, neighbours, fps_start
        self.linear = nn.Linear(in_channels + (3 if stride > 1 else 0), out_channels, bias=False)
        self.norm = PointNorm(out_channels, norm)

    def forward(self, points: Points) -> Points:
        if self.stride == 1:
            return points.replace(feats=F.relu(self.norm(self.linear(points.feats))))
        idx, cu = farthest_point_sampling(
            points.coords, points.cu_seqlens, ratio=1.0 / self.stride, start=self.fps_start
        )
        coords = points.coords[idx]  # (M, 3)
        nbr = knn(coords, cu, points.coords, points.cu_seqlens, self.neighbours)  # (M, K)
        rel = gather_rows(points.coords, nbr) - coords[:, None, :]
        grouped = torch.cat([rel, gather_rows(points.feats, nbr)], -1)  # (M, K, 3 + C_in)
        feats = F.relu(self.norm(self.linear(grouped))).amax(dim=1)  # (M, C_out)
        return Points(feats=feats, cu_seqlens=cu, coords=coords)


class TransitionUp(nn.Module):
    """Coarse features interpolated (3-NN, inverse distance) onto the finer level, plus a skip linear.

    fine (N, C_out) and coarse (M, C_in) -> (N, C_out):
    relu(norm(Linear(x_fine))) + interpolate(relu(norm(Linear(x_coarse)))).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: Norm = "batch"):
        super().__init__()
        self.skip = nn.Sequential(nn.Linear(out_channels, out_channels), PointNorm(out_channels, norm), nn.ReLU())
        self.up = nn.Sequential(nn.Linear(in_channels, out_channels), PointNorm(out_channels, norm), nn.ReLU())

    def forward(self, fine: Points, coarse: Points) -> torch.Tensor:
        up = interpolate(fine.coords, fine.cu_seqlens, coarse.coords, coarse.cu_seqlens, self.up(coarse.feats))
        return self.skip(fine.feats) + up


class GlobalTransition(nn.Module):
    """The decoder's first step at the coarsest level: each point joined with its item's mean feature.

    x (N, C), cu_seqlens (B+1,) -> (N, C): relu(norm(Linear([x_i, relu(Linear(mean_b x))]))).
    """

    def __init__(self, channels: int, norm: Norm = "batch"):
        super().__init__()
        self.glob = nn.Sequential(nn.Linear(channels, channels), nn.ReLU())
        self.fuse = nn.Sequential(nn.Linear(2 * channels, channels), PointNorm(channels, norm), nn.ReLU())

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        glob = self.glob(_segment_mean(x, cu_seqlens))[batch_index(cu_seqlens)]  # (N, C)
        return self.fuse(torch.cat([x, glob], 1))


class PointTransformerSeg(nn.Module):
    """The paper's segmentation U-Net: Points (N, C_in) -> per-point features (N, widths[0]).

    Level l has widths[l] channels and N_l = N_{l-1} / stride points (level 0 keeps all points,
    with a per-point Linear in place of sampling). Encoder level l: TransitionDown, then
    encoder_blocks[l] PointTransformerBlocks over neighbours[l] nearest points; the decoder goes
    back up: GlobalTransition at the coarsest level, TransitionUp (interpolation + skip) at the
    others, each followed by decoder_blocks[l] blocks. TransitionDown pools over neighbours[l]
    points of the finer level. The paper: widths (32, 64, 128, 256, 512), encoder_blocks
    (1, 2, 3, 5, 2), decoder_blocks (1, 1, 1, 1, 1), neighbours (8, 16, 16, 16, 16); the defaults
    are a 4-level CPU size.
    kNN neighbourhoods are computed once per level and shared by its encoder and decoder blocks.
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        encoder_blocks: tuple[int, ...] = (1, 1, 1, 1),
        decoder_blocks: tuple[int, ...] = (1, 1, 1, 1),
        neighbours: tuple[int, ...] = (8, 16, 16, 16),
        stride: int = 4,
        share_planes: int = 8,
        norm: Norm = "batch",
        fps_start: Literal["first", "random"] = "first",
    ):
        super().__init__()
        levels = len(widths)
        for name, value in (("encoder_blocks", encoder_blocks), ("decoder_blocks", decoder_blocks)):
            if len(value) != levels:
                raise ValueError(f"{name} must give one count per level ({levels}), got {value}")
        if len(neighbours) != levels:
            raise ValueError(f"neighbours must give one count per level ({levels}), got {neighbours}")
        self.neighbours = tuple(neighbours)
        self.out_channels, self.head_norm = widths[0], norm  # the segmenter's heads: width and norm
        self.down = nn.ModuleList()
        self.encoders = nn.ModuleList()
        prev = in_channels
        for level, width in enumerate(widths):
            self.down.append(
                TransitionDown(
                    prev,
                    width,
                    stride=1 if level == 0 else stride,
                    neighbours=neighbours[level],
                    norm=norm,
                    fps_start=fps_start,
                )
            )
            self.encoders.append(
                nn.ModuleList(PointTransformerBlock(width, share_planes, norm) for _ in range(encoder_blocks[level]))
            )
            prev = width
        self.top = GlobalTransition(widths[-1], norm)
        self.up = nn.ModuleList(TransitionUp(widths[lv + 1], widths[lv], norm) for lv in range(levels - 1))
        self.decoders = nn.ModuleList(
            nn.ModuleList(PointTransformerBlock(widths[lv], share_planes, norm) for _ in range(decoder_blocks[lv]))
            for lv in range(levels)
        )

    def forward(self, points: Points) -> torch.Tensor:
        levels: list[Points] = []
        nbrs: list[torch.Tensor] = []
        x = points
        for level, (down, blocks) in enumerate(zip(self.down, self.encoders, strict=True)):
            x = down(x)
            nbr = knn(x.coords, x.cu_seqlens, x.coords, x.cu_seqlens, self.neighbours[level])  # (N_l, K)
            feats = x.feats
            for block in blocks:
                feats = block(feats, x.coords, nbr)
            x = x.replace(feats=feats)
            levels.append(x)
            nbrs.append(nbr)
        top = levels[-1]
        feats = self.top(top.feats, top.cu_seqlens)
        for block in self.decoders[-1]:
            feats = block(feats, top.coords, nbrs[-1])
        for level in range(len(levels) - 2, -1, -1):
            coarse = levels[level + 1].replace(feats=feats)
            fine = levels[level]
            feats = self.up[level](fine, coarse)
            for block in self.decoders[level]:
                feats = block(feats, fine.coords, nbrs[level])
        return feats


# --- serialised patch attention (PTv3 style) ---------------------------------------------------------


def local_shape(coords: torch.Tensor, neighbours: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, 3) positions, (N, K) neighbours -> (N, 9) first and second moments of (p_j - p_i) / scale.

    [mean dx, dy, dz, mean dx^2, dy^2, dz^2, dx dy, dx dz, dy dz]: where a point sits in its
    neighbourhood and how the neighbourhood spreads (no gradient).
    """
    with torch.no_grad():
        rel = (gather_rows(coords, neighbours) - coords[:, None, :]) / scale  # (N, K, 3)
        a, b = rel[..., [0, 1, 2, 0, 0, 1]], rel[..., [0, 1, 2, 1, 2, 2]]
        return torch.cat([rel.mean(1), (a * b).mean(1)], 1)


class NeighbourPositionEncoding(nn.Module):
    """A conditional position encoding standing in for PTv3's xCPE (a sparse conv, not available here).

    x (N, C), neighbours (N, K), shape (N, 9) from local_shape -> (N, C):
    LayerNorm(Linear([mean_j x_j, shape_i])). The neighbour mean goes through embedding_bag, so
    no (N, K, C) tensor is formed; like a submanifold conv it mixes each point with its
    neighbourhood, and the moments tell it where the point sits there.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.proj = nn.Linear(channels + 9, channels)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, neighbours: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        mean = F.embedding_bag(neighbours, x, mode="mean")  # (N, C)
        return self.norm(self.proj(torch.cat([mean, shape.to(x.dtype)], 1)))


class SerializedPointTransformer(nn.Module):
    """Patch attention along space-filling curves (Point Transformer V3 style), a flat stack.

    Points (N, C_in) -> per-point features (N, width).
    Layer i orders the points along orders[i % len(orders)] (partgen.nn.point_ops.serialize at
    grid_size) and attends within patches of patch_size consecutive points of one item (the last
    patch of an item may be shorter); with shift_patches, odd layers shift the patch borders by
    patch_size // 2, so information crosses borders through both the changing curve and the shift.
    Each layer: x += NeighbourPositionEncoding(x) over cpe_neighbours nearest points, then a
    pre-norm TransformerBlock (partgen.nn.blocks, attention through partgen.nn.attention over the
    patch groups). No pooling: every layer runs at full resolution (documented simplification of
    PTv3's grid-pooling U-Net). The point order does not change the output (serialize breaks
    ties by position).
    """

    def __init__(
        self,
        in_channels: int,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        patch_size: int = 256,
        grid_size: float = 0.01,
        orders: tuple[CurveOrder, ...] = ("z", "z-trans", "hilbert", "hilbert-trans"),
        shift_patches: bool = True,
        cpe_neighbours: int = 8,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if not orders:
            raise ValueError("orders must name at least one curve")
        self.out_channels, self.head_norm = width, "layer"  # the segmenter's heads: width and norm
        self.patch_size, self.grid_size = patch_size, grid_size
        self.orders, self.shift_patches, self.cpe_neighbours = tuple(orders), shift_patches, cpe_neighbours
        self.embed = nn.Sequential(nn.Linear(in_channels, width), nn.LayerNorm(width), nn.GELU())
        self.cpe = nn.ModuleList(NeighbourPositionEncoding(width) for _ in range(depth))
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def patch_groups(self, points: Points) -> list[PartGroups]:
        """One PartGroups per layer: the curve order as perm, patches as groups."""
        perms = {
            order: serialize(points.coords, points.cu_seqlens, self.grid_size, order)[1] for order in set(self.orders)
        }
        patches: dict[int, torch.Tensor] = {}
        groups = []
        for i in range(len(self.blocks)):
            shift = self.patch_size // 2 if self.shift_patches and i % 2 else 0
            if shift not in patches:
                patches[shift] = patch_cu_seqlens(points.cu_seqlens, self.patch_size, shift)
            cu = patches[shift]
            lengths = cu[1:] - cu[:-1]
            groups.append(
                PartGroups(
                    perm=perms[self.orders[i % len(self.orders)]],
                    cu_seqlens=cu,
                    max_seqlen=int(lengths.max()) if lengths.numel() else 0,
                )
            )
        return groups

    def forward(self, points: Points) -> torch.Tensor:
        nbr = knn(points.coords, points.cu_seqlens, points.coords, points.cu_seqlens, self.cpe_neighbours)  # (N, K)
        shape = local_shape(points.coords, nbr, self.grid_size)  # (N, 9)
        x = self.embed(points.feats)  # (N, C)
        for cpe, block, groups in zip(self.cpe, self.blocks, self.patch_groups(points), strict=True):
            x = x + cpe(x, nbr, shape)
            x = block(x, groups)
        return self.norm(x)


# --- the segmenter -----------------------------------------------------------------------------------


class PointSegmenter(nn.Module):
    """Per-point semantic logits and a class-agnostic embedding on a point backbone.

    forward(points) with points.coords (N, 3), optional normals (N, 3) and feats (N, feat_channels)
    -> {"logits": (N, L), "embedding": (N, E) unit rows}. The backbone input is
    [xyz, normals (with use_normals), feats]. backbone: a factory in_channels -> the backbone
    module (Hydra `_partial_: true`, conf/point_backbone: PointTransformerSeg, "vector", or
    SerializedPointTransformer, "serialized"), whose out_channels and head_norm the heads read.
    Heads: Linear -> norm -> ReLU -> Linear (the official classifier; the backbone's head_norm)
    for the logits; Linear -> ReLU -> Linear -> L2 normalise for the embedding.
    """

    def __init__(
        self,
        backbone: Callable[[int], nn.Module],
        num_classes: int,
        embed_dim: int = 32,
        feat_channels: int = 0,
        use_normals: bool = False,
    ):
        super().__init__()
        self.feat_channels, self.use_normals = feat_channels, use_normals
        self.backbone = backbone(3 + (3 if use_normals else 0) + feat_channels)
        c, head_norm = self.backbone.out_channels, self.backbone.head_norm
        self.classifier = nn.Sequential(
            nn.Linear(c, c), PointNorm(c, head_norm), nn.ReLU(inplace=True), nn.Linear(c, num_classes)
        )
        self.embedder = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, embed_dim))

    def forward(self, points: Points) -> dict[str, torch.Tensor]:
        if points.feats.shape[1] != self.feat_channels:
            raise ValueError(f"expected {self.feat_channels} feature channels, got {points.feats.shape[1]}")
        parts = [points.coords.to(points.feats.dtype)]
        if self.use_normals:
            if points.normals is None:
                raise ValueError("this segmenter reads normals (use_normals=True) but the points have none")
            parts.append(points.normals.to(points.feats.dtype))
        parts.append(points.feats)
        feats = self.backbone(points.replace(feats=torch.cat(parts, 1)))  # (N, C)
        return {"logits": self.classifier(feats), "embedding": F.normalize(self.embedder(feats), dim=-1)}
