"""Transformer blocks over flattened tokens with group attention, and a sparse-voxel transformer.

Legend: N tokens (voxels), M context tokens, C channels, H heads, D head dim, R resolution.
Attention goes through partgen.nn.attention, so every block runs on any backend.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from partgen.nn.attention import attention
from partgen.structures import PartGroups, SparseVoxels, batch_index, groups_from_cu_seqlens

AttentionScope = Literal["part", "global"]


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention over groups: (N, C) queries, (M, C_ctx) context -> (N, C).

    qk_norm: RMS-normalise queries and keys per head (stabilises large-token training).
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, qk_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim)
        self.q_norm = HeadRMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = HeadRMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        groups: PartGroups,
        context: torch.Tensor | None = None,
        context_groups: PartGroups | None = None,
    ) -> torch.Tensor:
        q, k, v = self.qkv(x, context)
        out = attention(q, k, v, groups, groups if context is None else context_groups)
        return self.proj(out.reshape(x.shape))

    def qkv(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Normalised queries (N, H, D) from x, normalised keys and values (M, H, D) from the context (or x)."""
        q = self.q_norm(self.to_q(x).view(x.shape[0], self.heads, self.head_dim))
        src = x if context is None else context
        k, v = self.to_kv(src).view(src.shape[0], 2, self.heads, self.head_dim).unbind(1)
        return q, self.k_norm(k), v


def recorded(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether autograd records this call (grad mode on and x or the module's weights need grads):
    the inference fast paths below run only when it does not."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


class FeedForward(nn.Sequential):
    """Linear -> GELU -> Linear. Without autograd, (N, C) inputs of more than `chunk` rows run in row
    chunks, so the (chunk, hidden) activations stay in cache: 28% faster at N = 65536, width 256 on
    2 CPU cores (one PartDiT layer's MLP, 609 -> 439 ms), same values."""

    chunk = 512

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[0] <= self.chunk or recorded(x, self):
            return super().forward(x)
        fc1, act, fc2 = self
        out = x.new_empty(x.shape[0], fc2.out_features)
        for rows, dst in zip(x.split(self.chunk), out.split(self.chunk), strict=True):
            dst.copy_(fc2(act(fc1(rows))))  # (not addmm(out=): autocast skips out= variants)
        return out


class HeadRMSNorm(nn.RMSNorm):
    """nn.RMSNorm (same parameters and values) that, without autograd, normalises through one
    vector norm and in-place scaling: 3x faster than torch's on the (N, H, D) queries of a
    65536-token layer on 2 CPU cores (75 -> 26 ms), 2x on the strided keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if recorded(x, self):
            return super().forward(x)
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        inv = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        out = torch.mul(x, inv)
        return out if self.weight is None else out.mul_(self.weight)


class TransformerBlock(nn.Module):
    """Pre-norm block: group self-attention, optional group cross-attention, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, context_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.cross = None
        if context_dim is not None:
            self.norm2 = nn.LayerNorm(dim)
            self.cross = MultiHeadAttention(dim, heads, context_dim=context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, x, groups, context=None, context_groups=None):
        x = x + self.attn(self.norm1(x), groups)
        if self.cross is not None:
            if context is None or context_groups is None:
                raise ValueError("this block has cross-attention: pass context and context_groups")
            x = x + self.cross(self.norm2(x), groups, context, context_groups)
        return x + self.mlp(self.norm3(x))


class AdaLNBlock(nn.Module):
    """DiT block (Peebles & Xie 2023) with adaLN-Zero: self-attention and MLP inputs are shifted and
    scaled, their outputs gated, by a per-token conditioning vector (the gates start at 0, so a fresh
    block is the identity); an optional cross-attention to a context sits between them.

    forward(x (N, C), cond, groups, context, context_groups, cross_groups, owner):
        cond          (N, C) per row, or (B, C) per shape with owner (N,) the shape of each row
                      (owner None with B = 1: broadcast). Per shape, the modulation's linear map runs
                      B times instead of N (at N = 65536 it was a third of the block's GEMM work).
        groups        the self-attention groups (part or global, per layer)
        cross_groups  the query groups of the cross-attention (default: groups); its G groups
                      attend to the G key groups of context_groups (e.g. each part to the image
                      tokens its voxels project onto)
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = MultiHeadAttention(dim, heads)
        self.cross = None
        if context_dim is not None:
            self.norm2 = nn.LayerNorm(dim)
            self.cross = MultiHeadAttention(dim, heads, context_dim=context_dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = FeedForward(dim, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        groups: PartGroups,
        context: torch.Tensor | None = None,
        context_groups: PartGroups | None = None,
        cross_groups: PartGroups | None = None,
        owner: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mods = per_row(self.ada(cond), owner).chunk(6, dim=1)
        if self.cross is not None and (context is None or context_groups is None):
            raise ValueError("this block has cross-attention: pass context and context_groups")
        if x.shape[0] > self.chunk and not recorded(x, self):
            return self._forward_in_chunks(x, mods, groups, context, context_groups, cross_groups)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        # addcmul: the modulation and the gated residual in one pass over the (N, C) rows each
        x = torch.addcmul(x, gate1, self.attn(torch.addcmul(shift1, self.norm1(x), 1 + scale1), groups))
        if self.cross is not None:
            x = x + self.cross(self.norm2(x), cross_groups or groups, context, context_groups)
        return torch.addcmul(x, gate2, self._mlp(x, shift2, scale2))

    chunk = 1024  # rows per chunk of _forward_in_chunks (256-4096 measured within 10% of each other)

    def _mlp(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.addcmul(shift, self.norm3(x), 1 + scale))

    def _forward_in_chunks(self, x, mods, groups, context, context_groups, cross_groups) -> torch.Tensor:
        """forward without autograd, every per-token step in row chunks that stay in cache; only the
        attentions see all rows. At N = 65536, width 256, 2 CPU cores: 1081 -> ~890 ms a layer outside
        attention (best of 6, with the attention call stubbed out)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        n, heads, head_dim = x.shape[0], self.attn.heads, self.attn.head_dim
        spans = [slice(i, min(i + self.chunk, n)) for i in range(0, n, self.chunk)]

        def rows(t: torch.Tensor, span: slice) -> torch.Tensor:  # per-row modulation, or one broadcast row
            return t if t.shape[0] == 1 else t[span]

        def mlp_step(y: torch.Tensor, span: slice) -> torch.Tensor:  # the gated MLP residual of these rows
            return torch.addcmul(y, rows(gate2, span), self._mlp(y, rows(shift2, span), rows(scale2, span)))

        q, k, v = (x.new_empty(n, heads, head_dim) for _ in range(3))
        for span in spans:
            h = torch.addcmul(rows(shift1, span), self.norm1(x[span]), 1 + rows(scale1, span))
            q[span], k[span], v[span] = self.attn.qkv(h)
        attended = attention(q, k, v, groups, groups).reshape(x.shape)
        out = torch.empty_like(x)
        for span in spans:
            y = torch.addcmul(x[span], rows(gate1, span), self.attn.proj(attended[span]))
            out[span] = y if self.cross is not None else mlp_step(y, span)  # MLP while the rows are in cache
        if self.cross is not None:
            out = out + self.cross(self.norm2(out), cross_groups or groups, context, context_groups)
            for span in spans:
                out[span] = mlp_step(out[span], span)
        return out


def per_row(values: torch.Tensor, owner: torch.Tensor | None) -> torch.Tensor:
    """Per-shape (B, K) values -> (N, K) rows by owner (N,); owner None: values as they are (per row, or
    one shape's (1, K) that broadcasts)."""
    return values if owner is None else values[owner]


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) or (N, K) values -> (N, K * dim) sin/cos features, dim even per value column."""
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    values = values.to(torch.float32).reshape(values.shape[0], -1, 1)  # (N, K, 1)
    freqs = torch.exp(-math.log(max_period) * torch.arange(dim // 2, device=values.device) / (dim // 2))
    angles = values * freqs  # (N, K, dim/2)
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(1)


def pooled_context(tokens: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """(B T, D) varlen tokens -> (B, D) the mean token of each sequence."""
    b = cu_seqlens.numel() - 1
    owner = batch_index(cu_seqlens).to(tokens.device)
    counts = (cu_seqlens[1:] - cu_seqlens[:-1]).to(tokens.device, tokens.dtype).clamp_min(1)
    return (
        torch.zeros(b, tokens.shape[1], dtype=tokens.dtype, device=tokens.device).index_add_(0, owner, tokens)
        / counts[:, None]
    )


class TimestepEmbedding(nn.Module):
    """(B,) flow times t in [0, 1] -> (B, D): sinusoidal features of 1000 t, then an MLP (DiT)."""

    def __init__(self, dim: int, freq_channels: int = 256):
        super().__init__()
        self.freq_channels = int(freq_channels)
        self.mlp = nn.Sequential(nn.Linear(freq_channels, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t * 1000.0, self.freq_channels))


class AdaLNOutput(nn.Module):
    """DiT's last layer: LayerNorm shifted and scaled by the conditioning, then a linear map; both
    the modulation and the map start at 0, so a fresh model predicts 0."""

    def __init__(self, dim: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.proj = nn.Linear(dim, out_channels)
        for layer in (self.ada[1], self.proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
        """cond and owner as AdaLNBlock takes them."""
        shift, scale = per_row(self.ada(cond), owner).chunk(2, dim=1)
        return self.proj(torch.addcmul(shift, self.norm(h), 1 + scale))


def resolve_schedule(
    schedule: AttentionScope | Literal["alternate"] | list[AttentionScope], depth: int
) -> list[AttentionScope]:
    """'part' | 'global' | 'alternate' (part first) | an explicit per-layer list -> one scope per layer."""
    if isinstance(schedule, str):
        if schedule == "alternate":
            return ["part" if i % 2 == 0 else "global" for i in range(depth)]
        schedule = [schedule] * depth
    schedule = list(schedule)
    if len(schedule) != depth or any(s not in ("part", "global") for s in schedule):
        raise ValueError(f"schedule must give 'part' or 'global' for each of {depth} layers, got {schedule}")
    return schedule


class SparseTransformer(nn.Module):
    """Transformer over SparseVoxels whose layers attend within part groups or the whole object.

    (N, C_in) voxel features + sinusoidal position of the voxel coords -> (N, C_out).
    "part" layers use voxels.part_groups() (one group per batch item when part is None);
    "global" layers attend over each whole batch item.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 256,
        depth: int = 8,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        schedule: AttentionScope | Literal["alternate"] | list[AttentionScope] = "part",
        pos_channels: int = 8,
    ):
        super().__init__()
        self.schedule = resolve_schedule(schedule, depth)
        self.pos_channels = pos_channels
        self.embed = nn.Linear(in_channels + 3 * pos_channels, width)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_channels)

    def forward(self, x: SparseVoxels, schedule: list[AttentionScope] | None = None) -> SparseVoxels:
        scopes = self.schedule if schedule is None else resolve_schedule(schedule, len(self.blocks))
        groups = {"part": x.part_groups(), "global": groups_from_cu_seqlens(x.cu_seqlens)}
        pos = sinusoidal_embedding(x.centers() * x.resolution, self.pos_channels).to(x.dtype)  # (N, 3 * P)
        h = self.embed(torch.cat([x.feats, pos], 1))
        for block, scope in zip(self.blocks, scopes, strict=True):
            h = block(h, groups[scope])
        return x.replace(feats=self.head(self.norm(h)))
