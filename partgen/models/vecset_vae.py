"""VecSet shape VAE: a surface point cloud -> a set of L latent vectors -> occupancy anywhere in space.

Legend: B shapes, N surface points (all shapes together), L latent tokens per shape (M = B * L in
all), C latent channels, W width, Q query points, R grid resolution (cells per side of [-0.5, 0.5]).

After 3DShape2VecSet (Zhang et al. 2023) and Dora (Chen et al. 2024), as Ultra3D's stage 1 uses it:

    encode   surface points (+ normals) of each shape -> L queries picked among them by farthest
             point sampling, a share from the sharp-edge samples (Dora's salient points) -> one
             cross-attention from the queries to all points of their shape -> encoder self-attention
             -> per-token mean and log-variance of C channels (the KL bottleneck)
    decode   latents (M, C) -> W -> self-attention layers over each shape's set (no positional
             embedding: a set, not a sequence)
    query    (Q, 3) points -> Fourier features -> cross-attention to their shape's tokens -> one value:
             an occupancy logit (> 0 inside) or a truncated signed distance (< 0 inside)

Anchored (anchored=True, the stage-1 config's): each latent row is (x, y, z, C channels), the
position of the surface point its encoder query sat at followed by the KL channels, and the decoder
adds a linear map of the position's Fourier embedding to each token. Without anchors a token's
position must pass the noisy KL bottleneck with its shape: the 256 x 16 occupancy VAE (KL ~13 nats
a token) decoded a blur, inside-probability 0.53 at 2-4 stage-2 voxels outside the surface and
0.70 just inside it, on training shapes as on held-out ones. Anchors put the set's coarse layout
in plain coordinates a flow can generate (as LION's latent points) and leave the channels to
describe the surface near each anchor. Measured after the same 2000 CPU steps (kl 1e-5): held-out
volume IoU 0.577 against 0.553 unanchored, but still a blur (0.62 at 2-4 voxels outside): the
cross-attentions' blur (cross_qk_norm) and the short training remain.

L is free at inference (encode(num_latents=...)): the tokens are a set and the decoder never sees
their count. Everything runs on flattened varlen tensors through partgen.nn.attention, so shapes
of a batch may have different point and token counts.

decode_grid evaluates a shape on the (R+3)^3 corners of a grid over [-0.5, 0.5]^3 (plus one cell
of margin each side) hierarchically, as FlashVDM does: the whole grid at `coarse` resolution, then
each level doubles it and queries the network only at corners of the cells that the previous
level saw the surface cross (and `band` cells around them); every other corner takes the
trilinear interpolation of the level below (far from the surface only its sign matters). Queries
go in chunks, so a 256^3 decode never holds R^3 features, only R^3 scalars. occupancy_to_voxels
turns that grid into the sparse voxel coordinates of stage 2; extract_mesh into a triangle mesh.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from partgen.nn.blocks import FeedForward, MultiHeadAttention, TransformerBlock
from partgen.nn.point_ops import farthest_point_sampling
from partgen.structures import PartGroups, cu_seqlens_from_lengths, groups_from_cu_seqlens


class FourierEmbed(nn.Module):
    """(N, 3) positions -> (N, 3 + 6 F): the positions and sin/cos at frequencies pi * 2^k, k < F."""

    def __init__(self, num_freqs: int = 8):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_freqs, dtype=torch.float32), persistent=False)
        self.out_dim = 3 + 6 * num_freqs

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        angles = (xyz.float()[:, :, None] * self.freqs).flatten(1)  # (N, 3 F)
        return torch.cat([xyz.float(), angles.sin(), angles.cos()], 1)


class CrossBlock(nn.Module):
    """Pre-norm cross-attention from queries to a context, then an MLP (both residual; mlp_ratio 0: none)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True):
        super().__init__()
        self.norm_q, self.norm_ctx = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, context_dim=dim, qk_norm=qk_norm)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), FeedForward(dim, mlp_ratio)) if mlp_ratio > 0 else None

    def forward(self, x, groups: PartGroups, context, context_groups: PartGroups) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), groups, self.norm_ctx(context), context_groups)
        return x if self.mlp is None else x + self.mlp(x)


@dataclasses.dataclass
class Posterior:
    """Diagonal Gaussian per latent token: mean, logvar (M, D) with cu_seqlens (B+1,) over the tokens.

    The first `fixed` channels are data, not a distribution (an anchored VAE's token positions):
    sample() keeps them, kl() leaves them out, and their logvar is the clamp floor (std ~ 3e-7)."""

    mean: torch.Tensor
    logvar: torch.Tensor
    cu_seqlens: torch.Tensor
    fixed: int = 0

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        noise[:, : self.fixed] = 0.0
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def kl(self) -> torch.Tensor:
        """KL of the distributed channels to N(0, I), summed over channels, averaged over tokens: a scalar."""
        mean, logvar = self.mean[:, self.fixed :], self.logvar[:, self.fixed :]
        return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()


def _check_points(points: torch.Tensor, cu_seqlens: torch.Tensor, name: str) -> None:
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3), got {tuple(points.shape)}")
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1 or int(cu_seqlens[0]) != 0:
        raise ValueError(f"{name}: cu_seqlens must be (B+1,) int32 with a leading 0")
    if int(cu_seqlens[-1]) != points.shape[0]:
        raise ValueError(f"{name}: cu_seqlens ends at {int(cu_seqlens[-1])} but there are {points.shape[0]} rows")
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    if bool((lengths <= 0).any()):
        raise ValueError(f"{name}: every shape needs at least one point (empty point cloud)")
    if not bool(torch.isfinite(points).all()):
        raise ValueError(f"{name} hold NaN or inf values")


class VecSetVAE(nn.Module):
    """See the module docstring.

    num_latents:     L, tokens per shape by default
    latent_channels: C, channels of the KL bottleneck
    width, heads:    of every attention layer
    encoder_depth:   self-attention layers after the encoder's cross-attention
    decoder_depth:   self-attention layers of the decoder
    num_freqs:       Fourier frequencies of the point and query embeddings
    use_normals:     the encoder reads surface normals beside the positions
    sharp_fraction:  share of the L queries drawn from sharp-edge samples (when the shape has them)
    anchored:        each latent row leads with its token's position (the surface point its encoder
                     query sat at), read by the decoder through the Fourier embedding; only the C
                     channels after it pass the KL bottleneck (see the module docstring)
    cross_qk_norm:   RMS-normalise queries and keys of the two cross-attentions (points -> tokens,
                     queries -> tokens). The norm bounds a head's logits (|q| |k| / sqrt(d) = sqrt(d)
                     times the gains, ~7 over 256 tokens trained): the 256 x 16 VAE's queries read
                     ~110 of 256 tokens (largest weight 0.02-0.03) and its tokens ~500 of 2048
                     points, a blur. 3DShape2VecSet's cross-attentions have no norm. Without it
                     (anchored, 2000 steps): 55-105 tokens, 240-310 points, val IoU 0.600 (0.577)
    The output is an occupancy logit per query (> 0 inside).
    """

    def __init__(
        self,
        num_latents: int = 512,
        latent_channels: int = 32,
        width: int = 256,
        heads: int = 8,
        encoder_depth: int = 1,
        decoder_depth: int = 6,
        mlp_ratio: float = 4.0,
        num_freqs: int = 8,
        use_normals: bool = True,
        sharp_fraction: float = 0.5,
        anchored: bool = False,
        cross_qk_norm: bool = True,
    ):
        super().__init__()
        if not 0.0 <= sharp_fraction <= 1.0:
            raise ValueError(f"sharp_fraction must lie in [0, 1], got {sharp_fraction}")
        if num_latents < 1 or latent_channels < 1:
            raise ValueError(f"num_latents and latent_channels must be positive, got {num_latents}, {latent_channels}")
        self.num_latents, self.latent_channels, self.anchored = int(num_latents), int(latent_channels), bool(anchored)
        self.latent_dim = self.latent_channels + (3 if self.anchored else 0)  # D: one latent row
        self.use_normals, self.sharp_fraction = bool(use_normals), float(sharp_fraction)
        self.embed = FourierEmbed(num_freqs)
        self.point_in = nn.Linear(self.embed.out_dim + (3 if use_normals else 0), width)
        self.encoder_cross = CrossBlock(width, heads, mlp_ratio, qk_norm=cross_qk_norm)
        self.encoder = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(encoder_depth))
        self.to_moments = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * latent_channels))
        self.latent_in = nn.Linear(latent_channels, width)
        self.anchor_in = nn.Linear(self.embed.out_dim, width) if self.anchored else None
        self.decoder = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(decoder_depth))
        self.query_in = nn.Linear(self.embed.out_dim, width)
        # runs once per query point, the bulk of the work: no MLP after it, as 3DShape2VecSet
        self.query_cross = CrossBlock(width, heads, mlp_ratio=0.0, qk_norm=cross_qk_norm)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))

    # --- encoder ------------------------------------------------------------------------------------

    def select_queries(
        self,
        points: torch.Tensor,
        cu_seqlens: torch.Tensor,
        num_latents: int,
        sharp: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of points that become the latent queries: (M,) int64 and their (B+1,) cu_seqlens.

        Per shape, min(L, n) points by farthest point sampling; round(sharp_fraction * L) of them
        (at most the shape's sharp points) by FPS among the sharp samples, the rest among the others.
        generator: None starts FPS at each subset's first point (deterministic), else at a random one.
        """
        start = "first" if generator is None else "random"
        bounds = cu_seqlens.tolist()
        rows, lengths = [], []
        for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True):
            n = b1 - b0
            take = min(num_latents, n)
            subsets = [torch.arange(b0, b1, device=points.device)]
            counts = [take]
            if sharp is not None and self.sharp_fraction > 0:
                is_sharp = sharp[b0:b1]
                num_sharp = min(int(is_sharp.sum()), round(self.sharp_fraction * take))
                if 0 < num_sharp:
                    flat = torch.nonzero(~is_sharp).flatten() + b0
                    sharp_rows = torch.nonzero(is_sharp).flatten() + b0
                    rest = min(take - num_sharp, len(flat))
                    num_sharp = take - rest
                    subsets, counts = [sharp_rows, flat], [num_sharp, rest]
            picked = []
            for rows_in, count in zip(subsets, counts, strict=True):
                if count == 0:
                    continue
                sub_cu = cu_seqlens_from_lengths([len(rows_in)], device=points.device)
                idx, _ = farthest_point_sampling(
                    points[rows_in].float().contiguous(), sub_cu, counts=[count], start=start, generator=generator
                )
                picked.append(rows_in[idx])
            rows.append(torch.cat(picked))
            lengths.append(take)
        return torch.cat(rows), cu_seqlens_from_lengths(lengths, device=points.device)

    def encode(
        self,
        points: torch.Tensor,
        cu_seqlens: torch.Tensor,
        normals: torch.Tensor | None = None,
        sharp: torch.Tensor | None = None,
        num_latents: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Posterior:
        """(N, 3) surface points in [-0.5, 0.5]^3 (+ (N, 3) normals, (N,) bool sharp) -> Posterior over (M, C)."""
        _check_points(points, cu_seqlens, "points")
        if self.use_normals:
            if normals is None or normals.shape != points.shape:
                raise ValueError(f"this VAE reads normals: pass (N, 3) = {tuple(points.shape)} normals")
            if not bool(torch.isfinite(normals).all()):
                raise ValueError("normals hold NaN or inf values")
        if sharp is not None and (sharp.shape != points.shape[:1] or sharp.dtype != torch.bool):
            raise ValueError(f"sharp must be an (N,) = ({points.shape[0]},) bool mask")
        rows, q_cu = self.select_queries(points, cu_seqlens, num_latents or self.num_latents, sharp, generator)
        feats = self.embed(points)
        if self.use_normals:
            feats = torch.cat([feats, normals.float()], 1)
        h = self.point_in(feats)  # (N, W)
        q_groups, p_groups = groups_from_cu_seqlens(q_cu), groups_from_cu_seqlens(cu_seqlens)
        x = self.encoder_cross(h[rows], q_groups, h, p_groups)  # (M, W)
        for block in self.encoder:
            x = block(x, q_groups)
        mean, logvar = self.to_moments(x).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        if not self.anchored:
            return Posterior(mean, logvar, q_cu)
        anchors = points[rows].to(mean.dtype)
        return Posterior(
            torch.cat([anchors, mean], 1), torch.cat([torch.full_like(anchors, -30.0), logvar], 1), q_cu, fixed=3
        )

    # --- decoder ------------------------------------------------------------------------------------

    def decode(self, latents: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        """(M, D) latents -> (M, W) tokens the queries read (self-attention within each shape's set)."""
        if latents.dim() != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"latents must be (M, {self.latent_dim}), got {tuple(latents.shape)}")
        if not bool(torch.isfinite(latents).all()):
            raise ValueError("latents hold NaN or inf values")
        groups = groups_from_cu_seqlens(cu_seqlens)
        if self.anchored:
            x = self.anchor_in(self.embed(latents[:, :3])) + self.latent_in(latents[:, 3:])
        else:
            x = self.latent_in(latents)
        for block in self.decoder:
            x = block(x, groups)
        return x

    def query(
        self, tokens: torch.Tensor, token_cu: torch.Tensor, xyz: torch.Tensor, query_cu: torch.Tensor
    ) -> torch.Tensor:
        """(M, W) tokens of B shapes, (Q, 3) query points with their (B+1,) cu_seqlens -> (Q,) values."""
        _check_points(xyz, query_cu, "queries")
        if query_cu.numel() != token_cu.numel():
            raise ValueError(f"{query_cu.numel() - 1} query sets for {token_cu.numel() - 1} token sets")
        q = self.query_in(self.embed(xyz))
        x = self.query_cross(q, groups_from_cu_seqlens(query_cu), tokens, groups_from_cu_seqlens(token_cu))
        return self.head(x).squeeze(1)

    def forward(
        self,
        points: torch.Tensor,
        cu_seqlens: torch.Tensor,
        queries: torch.Tensor,
        query_cu: torch.Tensor,
        normals: torch.Tensor | None = None,
        sharp: torch.Tensor | None = None,
        sample_posterior: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode, sample (or take the mean), decode, query: {"values": (Q,), "kl": scalar, "latents": (M, C)}."""
        posterior = self.encode(points, cu_seqlens, normals, sharp, generator=generator)
        z = posterior.sample(generator) if sample_posterior else posterior.mean
        tokens = self.decode(z, posterior.cu_seqlens)
        return {
            "values": self.query(tokens, posterior.cu_seqlens, queries, query_cu),
            "kl": posterior.kl(),
            "latents": z,
        }

    # --- one shape to a grid ----------------------------------------------------------------------------

    def inside(self, values: torch.Tensor) -> torch.Tensor:
        """Boolean "inside" from output values (occupancy logit > 0)."""
        return values > 0

    def level(self, values: torch.Tensor) -> torch.Tensor:
        """Values as a level set that is positive inside and crosses 0 at the surface (the logits)."""
        return values

    @torch.no_grad()
    def decode_grid(
        self, tokens: torch.Tensor, resolution: int = 128, coarse: int = 32, band: int = 1, chunk: int = 8192
    ) -> GridValues:
        """(L, W) tokens of ONE shape -> the level set (positive inside) on the (R+3)^3 grid corners.

        Corner (i, j, k) sits at -0.5 + (index - 1) / R per axis (one cell of margin each side).
        resolution / coarse must be a power of 2 (coarse = resolution: a plain chunked dense decode).
        """
        if resolution < coarse or resolution % coarse or (resolution // coarse) & (resolution // coarse - 1):
            raise ValueError(f"resolution / coarse must be a power of 2, got {resolution} / {coarse}")
        token_cu = cu_seqlens_from_lengths([tokens.shape[0]], device=tokens.device)

        def evaluate(xyz: torch.Tensor) -> torch.Tensor:
            out = [
                self.level(self.query(tokens, token_cu, part, cu_seqlens_from_lengths([len(part)], device=xyz.device)))
                for part in xyz.split(chunk)
            ]
            return torch.cat(out).float()

        r = coarse
        grid = evaluate(_corners(r, tokens.device).reshape(-1, 3)).reshape(r + 3, r + 3, r + 3)
        queried = grid.numel()
        while r < resolution:
            near = _surface_cells(grid)  # (r+2)^3 cells between corners
            if band > 0:
                near = F.max_pool3d(near[None, None].float(), 2 * band + 1, stride=1, padding=band)[0, 0] > 0
            # output o of a (2n - 1)-long align_corners interpolation sits at input o / 2; fine corner j
            # (at -0.5 + (j - 1) / 2r) sits at coarse index (j + 1) / 2, so o = j + 1
            n = r + 3
            fine = F.interpolate(grid[None, None], size=(2 * n - 1,) * 3, mode="trilinear", align_corners=True)[0, 0]
            fine = fine[1 : 2 * r + 4, 1 : 2 * r + 4, 1 : 2 * r + 4].contiguous()
            # fine corner j lies in coarse cell j / 2 (j even) or on the face between cells (j - 1) / 2 and
            # (j + 1) / 2 (j odd); it is queried when any cell it touches is near the surface
            idx = torch.arange(2 * r + 3, device=grid.device)
            lo = ((idx + 2) // 2 - 1).clamp(0, r + 1)
            hi = ((idx + 1) // 2).clamp(0, r + 1)
            mask = torch.zeros_like(fine, dtype=torch.bool)
            for a in (lo, hi):
                for b in (lo, hi):
                    for c in (lo, hi):
                        mask |= near[a[:, None, None], b[None, :, None], c[None, None, :]]
            r *= 2
            pick = torch.nonzero(mask)
            if len(pick):
                fine[mask] = evaluate(-0.5 + (pick.float() - 1.0) / r)
            queried += len(pick)
            grid = fine
        return GridValues(grid, resolution, queried)


@dataclasses.dataclass
class GridValues:
    """A level set on grid corners: values (R+3)^3 float (positive inside; corner index i at
    -0.5 + (i - 1) / R), R, and how many corners the network evaluated (the rest interpolated)."""

    values: torch.Tensor
    resolution: int
    queried: int

    @property
    def positions(self) -> torch.Tensor:
        return _corners(self.resolution, self.values.device)


def _corners(r: int, device) -> torch.Tensor:
    """(r+3, r+3, r+3, 3) corner positions -0.5 + (i - 1) / r, i = 0..r+2."""
    axis = -0.5 + (torch.arange(r + 3, device=device, dtype=torch.float32) - 1.0) / r
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)


def _surface_cells(values: torch.Tensor) -> torch.Tensor:
    """(n, n, n) corner values -> (n-1)^3 bool: cells whose 8 corners do not all share a sign."""
    inside = values > 0
    n0, n1, n2 = (size - 1 for size in inside.shape)
    stack = torch.stack([inside[a : a + n0, b : b + n1, c : c + n2] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    return stack.any(0) & ~stack.all(0)


def occupancy_to_voxels(grid: GridValues, resolution: int = 64, dilation: int = 1) -> torch.Tensor:
    """Stage-2 voxel coordinates from a decoded grid: (N, 3) int32 xyz in [0, resolution).

    A voxel is active when the surface crosses one of the grid cells inside it (the grid
    resolution must be a multiple of `resolution`), then the set is dilated by `dilation` voxels
    (a cube) so that a slightly misplaced surface still finds its voxels. The voxel index of a point p
    is floor((p + 0.5) * resolution), as partgen.data_pipeline.voxelize assigns it.
    """
    r = grid.resolution
    if r % resolution:
        raise ValueError(f"the grid resolution {r} must be a multiple of the voxel resolution {resolution}")
    cells = _surface_cells(grid.values)[1 : r + 1, 1 : r + 1, 1 : r + 1]  # the r^3 cells inside the cube
    s = r // resolution
    active = cells.reshape(resolution, s, resolution, s, resolution, s).any(5).any(3).any(1)
    if dilation > 0:
        active = F.max_pool3d(active[None, None].float(), 2 * dilation + 1, stride=1, padding=dilation)[0, 0] > 0
    return torch.nonzero(active).to(torch.int32)


def anchor_voxels(anchors: torch.Tensor, resolution: int = 64, band: int = 3) -> torch.Tensor:
    """Stage-2 voxel coordinates from an anchored VAE's latent rows: (N, 3) int32 xyz, the voxels
    within `band` voxels (a cube) of an anchor, the surface point each token stands for.

    anchors: (L, 3+) rows whose first three channels are positions in the normalised cube (the
    latents' anchor channels); voxel index floor((p + 0.5) * resolution), clamped into the grid.
    """
    if anchors.dim() != 2 or anchors.shape[1] < 3:
        raise ValueError(f"anchors must be (L, 3+), got {tuple(anchors.shape)}")
    if not torch.isfinite(anchors[:, :3]).all():
        raise ValueError("anchors hold NaN or inf")
    index = ((anchors[:, :3].float() + 0.5) * resolution).floor().long().clamp(0, resolution - 1)
    active = torch.zeros(resolution, resolution, resolution, device=anchors.device)
    active[index[:, 0], index[:, 1], index[:, 2]] = 1.0
    if band > 0:
        active = F.max_pool3d(active[None, None], 2 * band + 1, stride=1, padding=band)[0, 0]
    return torch.nonzero(active > 0).to(torch.int32)


def extract_mesh(grid: GridValues) -> tuple:
    """Marching cubes of the zero level: ((V, 3) float64 vertices in the normalised cube, (F, 3) int64 faces)."""
    import mcubes
    import numpy as np

    values = grid.values.detach().cpu().double().numpy()
    if not ((values > 0).any() and (values <= 0).any()):
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    vertices, faces = mcubes.marching_cubes(values, 0.0)
    vertices = -0.5 + (vertices - 1.0) / grid.resolution
    # PyMCubes winds faces counter-clockwise seen from the side of smaller values: outward here
    return vertices, faces.astype(np.int64)


def encode_record_samples(
    vae: VecSetVAE, data: dict, num_points: int, seed: int, index: int, subset: int = 0
) -> Posterior:
    """The posterior of a record's surface samples (data: a ShapeRecords.load dict with points, normals,
    sharp) from a seeded subset of num_points of them: subset 0 is the one the layout flow trains on
    first and the reference bank keeps (partgen.pipelines.references), so a bank's latents are the
    flow's own first set of that shape; subset k > 0 draws other points (other anchors)."""
    import numpy as np

    rng = np.random.default_rng([seed, index] if subset == 0 else [seed, index, subset])
    keep = rng.choice(len(data["points"]), min(num_points, len(data["points"])), replace=False)
    return vae.encode(
        torch.from_numpy(data["points"][keep]).float(),
        cu_seqlens_from_lengths([len(keep)]),
        torch.from_numpy(data["normals"][keep]).float(),
        torch.from_numpy(data["sharp"][keep].astype(bool)),
    )


__all__ = [
    "CrossBlock",
    "FourierEmbed",
    "GridValues",
    "Posterior",
    "VecSetVAE",
    "anchor_voxels",
    "encode_record_samples",
    "extract_mesh",
    "occupancy_to_voxels",
]
