"""Stage 2: the Part-Attention diffusion transformer over sparse voxel latents (Ultra3D).

Legend: B shapes, N voxel tokens (all shapes), P parts, C latent channels, D width, T image tokens
per image, G part groups (one per (shape, part) that occurs).

Tokens are the active voxels (SparseVoxels), each carrying the noisy latent of its voxel; position
is a sinusoidal embedding of the voxel coordinates (and, with num_part_embeddings > 0, a learned
embedding of the part id, so parts can tell each other apart). With local_convs > 0, residual
submanifold convolutions (3^3) then mix each token with its neighbouring voxels: attention alone
sees positions, not the shape of the voxel set, and a stage 2 trained on a band round the surface
must tell the band's middle from its sides. Every block is an adaLN-Zero DiT
block (partgen.nn.blocks.AdaLNBlock) conditioned on the timestep:
    self-attention  per layer "part" (Part Attention: a voxel attends to the voxels of its own part;
                    cost sum n_p^2 instead of N^2) or "global" (the whole shape), from `schedule`
                    ("part", "global", "alternate", or a list per layer);
    cross-attention to image tokens, per part group: each part attends to the image tokens its
                    voxels project onto when the camera is known (part_image_groups), else to all
                    of its image's tokens;
    MLP.
The output is the velocity of the rectified flow (partgen.diffusion.flow) per voxel. A null image
(learned) stands in for dropped conditions (classifier-free guidance), as in the layout flow.

With an image_encoder inside (ViTEncoder trained with the model, or a frozen DINOv2), forward reads
images (B, 3, S, S) and cameras (B, 3, 4) itself (what training under DDP and sampling use), the
mean image token joins the timestep in the adaLN conditioning (pooled_image), and the model
standardises its latents with statistics measured on the training set (LatentStatistics). The model
computes velocities only: partgen.pipelines.generate.sample_part_latents samples the latents of
given voxels and parts for an image (partgen.diffusion.flow.sample_guided with the model as the
callable). Without an encoder it reads precomputed context tokens of width context_dim (the
ablation benchmark).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from partgen.models.latent_stats import LatentStatistics
from partgen.nn.blocks import (
    AdaLNBlock,
    AdaLNOutput,
    AttentionScope,
    TimestepEmbedding,
    pooled_context,
    resolve_schedule,
    sinusoidal_embedding,
)
from partgen.nn.sparse_conv import SubMConv3d
from partgen.structures import (
    PartGroups,
    SparseVoxels,
    batch_index,
    groups_from_cu_seqlens,
    groups_from_mask,
)


def attention_groups(coords: np.ndarray, part: np.ndarray, max_group: int) -> np.ndarray:
    """(V,) attention-group ids of one shape's voxels (coords (V, 3), part (V,) ids >= 0): parts of at
    most max_group voxels keep one group, larger ones are cut into ceil(n / max_group) slabs of
    consecutive voxels in x-major order (spatially compact). Part Attention's cost is then at most
    V max_group pairs whatever the parts, and training (PartDiTTask max_group) and sampling see
    groups of the same sizes."""
    group = np.empty(len(part), np.int64)
    next_id = 0
    for p in range(int(part.max()) + 1 if len(part) else 0):
        idx = np.nonzero(part == p)[0]
        if len(idx) == 0:
            continue
        chunks = -(-len(idx) // max_group)
        order = idx[np.lexsort(coords[idx].T[::-1])]  # x, then y, then z
        group[order] = next_id + np.arange(len(order)) * chunks // len(order)
        next_id += chunks
    return group


def part_image_groups(
    voxels: SparseVoxels,
    groups: PartGroups,
    context_cu: torch.Tensor,
    cameras: torch.Tensor | None,
    patch_grid: int,
    dilate: int = 1,
) -> PartGroups:
    """Key groups over the image tokens, one per part group: the tokens each part sees.

    groups:     the part groups of voxels (G groups; each lies in one shape)
    context_cu: (B+1,) int32 offsets of each image's T tokens (T = patch_grid^2, row-major patches,
                plus any leading extra tokens, e.g. a CLS token, which every part sees)
    cameras:    (B, 3, 4) projection matrices K [R | t] of normalised-cube points to pixel coordinates
                in [0, 1] x [0, 1] (u right, v down), or None: every part sees all of its image
    patch_grid: patches per image side; dilate: grow each part's footprint by this many patches
    A part whose voxels all project outside the image sees its whole image.
    """
    b = context_cu.numel() - 1
    total = int(context_cu[-1])
    owner_shape = voxels.coords[groups.perm, 0].long()  # (N,) shape of each grouped row
    gidx = groups.group_index()
    group_shape = torch.zeros(groups.num_groups, dtype=torch.long, device=owner_shape.device)
    group_shape[gidx] = owner_shape
    token_shape = batch_index(context_cu).to(owner_shape.device)  # (B T,)
    visible = group_shape[:, None] == token_shape[None, :]  # (G, B T): the part's own image
    if cameras is None:
        return groups_from_mask(visible)
    if cameras.shape != (b, 3, 4):
        raise ValueError(f"cameras must be (B, 3, 4) = ({b}, 3, 4), got {tuple(cameras.shape)}")
    centres = voxels.centers()[groups.perm]  # (N, 3) in grouped order
    cam = cameras.to(centres)[owner_shape]  # (N, 3, 4)
    h = torch.einsum("nij,nj->ni", cam[:, :, :3], centres) + cam[:, :, 3]
    z = h[:, 2]
    front = z > 1e-6
    uv = h[:, :2] / z.clamp_min(1e-6)[:, None]
    cell = torch.floor(uv * patch_grid).long()
    inside = front & (cell >= 0).all(1) & (cell < patch_grid).all(1)
    foot = torch.zeros(groups.num_groups, patch_grid, patch_grid, dtype=torch.bool, device=centres.device)
    foot[gidx[inside], cell[inside, 1], cell[inside, 0]] = True  # [group, row (v), column (u)]
    if dilate > 0:
        k = 2 * dilate + 1
        foot = torch.nn.functional.max_pool2d(foot[:, None].float(), k, stride=1, padding=dilate)[:, 0] > 0
    seen = foot.flatten(1)  # (G, T_patch)
    lengths = (context_cu[1:] - context_cu[:-1]).long()
    extra = lengths - patch_grid**2  # leading non-patch tokens per image
    if bool((extra < 0).any()):
        raise ValueError(f"an image has fewer tokens than patch_grid^2 = {patch_grid**2}")
    # position of each token within its image; patch tokens are the last T_patch of an image
    local = torch.arange(total, device=centres.device) - context_cu[:-1].long().to(centres.device)[token_shape]
    patch_of = local - extra.to(centres.device)[token_shape]  # < 0: a leading token
    blind = ~seen.any(1)  # parts projecting nowhere: their whole image
    lookup = seen[:, patch_of.clamp_min(0)]  # (G, B T)
    visible = visible & ((patch_of < 0)[None, :] | lookup | blind[:, None])
    return groups_from_mask(visible)


class PartDiT(LatentStatistics, nn.Module):
    """Velocity of the rectified flow over per-voxel latents (module docstring).

    in_channels:         C, latent channels per voxel (the SLat VAE's)
    width, depth, heads, mlp_ratio: of the transformer
    schedule:            self-attention scope per layer: "part" | "global" | "alternate" | list
    context_dim:         width of precomputed image tokens (None: unconditional, or image_encoder's)
    image_encoder:       a module images -> (tokens, cu_seqlens) with out_dim and patch_grid
    pooled_image:        with an image encoder, add a projection of the mean image token to the adaLN
                         conditioning
    footprint_dilation:  patches each part's image footprint grows by (part_image_groups)
    pos_channels:        sinusoidal channels per axis of the voxel position
    num_part_embeddings: > 0 adds a learned embedding of part ids (mod this many)
    freq_channels:       sinusoidal channels of the timestep
    local_convs:         residual 3^3 submanifold convolutions after the input projection (0: none)
    """

    def __init__(
        self,
        in_channels: int = 8,
        width: int = 256,
        depth: int = 8,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        schedule: AttentionScope | Literal["alternate"] | list[AttentionScope] = "part",
        context_dim: int | None = None,
        pos_channels: int = 16,
        num_part_embeddings: int = 0,
        freq_channels: int = 256,
        image_encoder: nn.Module | None = None,
        pooled_image: bool = True,
        footprint_dilation: int = 1,
        local_convs: int = 0,
    ):
        super().__init__()
        self.in_channels, self.pos_channels = int(in_channels), int(pos_channels)
        self.image_encoder = image_encoder
        self.footprint_dilation = int(footprint_dilation)
        if image_encoder is not None:
            context_dim = int(image_encoder.out_dim)
            self.context_norm = nn.LayerNorm(context_dim)
        self.image_pool = nn.Linear(context_dim, width) if image_encoder is not None and pooled_image else None
        self._init_latent_statistics(in_channels)
        self.schedule = resolve_schedule(schedule, depth)
        self.proj_in = nn.Linear(in_channels + 3 * pos_channels, width)
        self.part_embed = nn.Embedding(num_part_embeddings, width) if num_part_embeddings > 0 else None
        self.local_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(local_convs))
        self.local_convs = nn.ModuleList(SubMConv3d(width, width, 3) for _ in range(local_convs))
        self.time = TimestepEmbedding(width, freq_channels)
        self.null_image = nn.Parameter(torch.zeros(context_dim)) if context_dim else None
        self.blocks = nn.ModuleList(AdaLNBlock(width, heads, context_dim, mlp_ratio) for _ in range(depth))
        self.out = AdaLNOutput(width, in_channels)

    def forward(
        self,
        x: SparseVoxels,
        t: torch.Tensor,
        context: tuple[torch.Tensor, torch.Tensor] | None = None,
        context_groups: PartGroups | None = None,
        drop: torch.Tensor | None = None,
        schedule: list[AttentionScope] | str | None = None,
        images: torch.Tensor | None = None,
        cameras: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity (N, C) for noisy latents x.feats (N, C) at times t (B,) (or one for all).

        context:        (image tokens (B T, D_ctx), their (B+1,) cu_seqlens), or None
        context_groups: the tokens each part group sees (part_image_groups); None: all of its image,
                        or, with cameras, the patches its voxels project onto
        drop:           (B,) bool shapes that see the null image instead
        schedule:       override the layer scopes (the same weights run part or global attention)
        images:         (B, 3, S, S) in [0, 1], read by the model's image_encoder (instead of context)
        cameras:        (B, 3, 4) normalised projections of the images (part_image_groups), or None
        """
        if x.feats.dim() != 2 or x.feats.shape[1] != self.in_channels:
            raise ValueError(f"feats must be (N, {self.in_channels}), got {tuple(x.feats.shape)}")
        scopes = self.schedule if schedule is None else resolve_schedule(schedule, len(self.blocks))
        b = x.batch_size
        t = t.reshape(-1).to(x.feats.device, torch.float32)
        t = t.expand(b) if t.numel() == 1 else t
        if t.shape != (b,):
            raise ValueError(f"t must hold one time per shape ({b}), got {tuple(t.shape)}")
        part = x.part_groups()
        groups = {"part": part, "global": groups_from_cu_seqlens(x.cu_seqlens)}
        pos = sinusoidal_embedding(x.centers() * x.resolution, self.pos_channels).to(x.feats.dtype)
        h = self.proj_in(torch.cat([x.feats, pos], 1))
        if self.part_embed is not None and x.part is not None:
            h = h + self.part_embed(x.part % self.part_embed.num_embeddings)
        for norm, conv in zip(self.local_norms, self.local_convs, strict=True):
            h = h + conv(x.replace(feats=nn.functional.gelu(norm(h)))).feats
        cond = self.time(t)
        tokens = None
        if self.null_image is not None:
            if context is None and images is not None and self.image_encoder is not None:
                context = self.encode_images(images)
            if context is None:
                raise ValueError("this model reads an image: pass images (or context)")
            tokens, ctx_cu = context
            if ctx_cu.numel() != b + 1:
                raise ValueError(f"{ctx_cu.numel() - 1} images for {b} shapes")
            if drop is not None and bool(drop.any()):
                owner = batch_index(ctx_cu).to(tokens.device)
                tokens = torch.where(drop.to(tokens.device)[owner, None], self.null_image[None], tokens)
            if context_groups is None:
                grid = self.image_encoder.patch_grid if self.image_encoder is not None else 1
                cams = cameras if self.image_encoder is not None else None
                context_groups = part_image_groups(x, part, ctx_cu, cams, grid, self.footprint_dilation)
            if self.image_pool is not None:
                cond = cond + self.image_pool(pooled_context(tokens, ctx_cu))
        owner = None if b == 1 else x.batch_index()  # the adaLN maps run per shape (AdaLNBlock)
        for block, scope in zip(self.blocks, scopes, strict=True):
            h = block(h, cond, groups[scope], tokens, context_groups, cross_groups=part, owner=owner)
        return self.out(h, cond, owner)

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> normalised image tokens (B T, D_ctx) and their cu_seqlens."""
        if self.image_encoder is None:
            raise ValueError("this PartDiT has no image encoder: pass context tokens")
        tokens, cu = self.image_encoder(images)
        return self.context_norm(tokens), cu


__all__ = ["attention_groups", "PartDiT", "part_image_groups"]
