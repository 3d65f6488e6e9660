"""Stage 2's structured latent VAE: per-voxel geometry <-> a C-channel latent per active voxel.

Legend: B shapes, N active voxels (all shapes), s sub-cells per voxel side, K = (s+1)^3 corner
values per voxel, C latent channels, W width, R voxel resolution.

Input and output of a voxel are the signed distances at the corners of its s^3 sub-cells
(partgen-annotate block_subdiv=s: sdf_blocks.npz, in units of one voxel, truncated), so the
decoded geometry lives on a grid s times finer than the voxels (64 -> 256 on CPU configs,
256 -> 1024 on GPU ones, the resolution Ultra3D reports).

    encode  K corner values + sinusoidal position -> a residual submanifold convolution (local
            context across voxel borders) -> transformer blocks -> mean and log-variance of C channels
    decode  C channels + position -> transformer blocks -> a residual submanifold convolution -> K values

Attention inside the VAE runs over groups through partgen's attention dispatch: "window" (voxels in
the same window_size^3 window, windows shifted by half a window every other layer, as Swin /
TRELLIS do), "part" (the voxel's part group) or "global" (the whole shape), per layer from `schedule`.

blocks_to_mesh turns decoded (or annotated) blocks into a triangle mesh: corners shared by
neighbouring voxels are averaged, each voxel's block is cut by marching cubes at `level`, and the
pieces are welded; only active voxels are ever touched, so a 1024^3 surface never needs a dense grid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from partgen.models.vecset_vae import Posterior
from partgen.nn.blocks import TransformerBlock, sinusoidal_embedding
from partgen.nn.sparse_conv import SubMConv3d
from partgen.structures import PartGroups, SparseVoxels, groups_from_cu_seqlens, part_groups

Scope = Literal["window", "part", "global"]


def window_groups(x: SparseVoxels, size: int, shift: int = 0) -> PartGroups:
    """Groups of the voxels that share a size^3 window (coords + shift) // size, per shape."""
    cells = (x.coords[:, 1:].long() + shift) // size
    side = x.resolution // size + 2
    window = (cells[:, 0] * side + cells[:, 1]) * side + cells[:, 2]
    _, dense = torch.unique(window, return_inverse=True)
    return part_groups(x.coords[:, 0], dense)


class SLatVAE(nn.Module):
    """See the module docstring.

    subdiv:          s, sub-cells per voxel side (the record's block_subdiv)
    latent_channels: C
    width, heads:    of the transformer and convolutions
    encoder_depth, decoder_depth: transformer blocks on each side
    schedule:        attention scope of every block, "window" | "part" | "global" (or one per block,
                     encoder blocks first)
    window_size:     voxels per window side for "window" blocks
    truncation:      |values| the data is clipped to (voxel units); outputs are squashed into it
    """

    def __init__(
        self,
        subdiv: int = 4,
        latent_channels: int = 8,
        width: int = 128,
        heads: int = 4,
        encoder_depth: int = 2,
        decoder_depth: int = 2,
        mlp_ratio: float = 4.0,
        schedule: Scope | list[Scope] = "window",
        window_size: int = 8,
        pos_channels: int = 8,
        truncation: float = 2.0,
    ):
        super().__init__()
        depth = encoder_depth + decoder_depth
        scopes = [schedule] * depth if isinstance(schedule, str) else list(schedule)
        if len(scopes) != depth or any(s not in ("window", "part", "global") for s in scopes):
            raise ValueError(f"schedule must give window, part or global for each of {depth} blocks, got {schedule}")
        self.subdiv, self.latent_channels, self.truncation = int(subdiv), int(latent_channels), float(truncation)
        self.corners = (self.subdiv + 1) ** 3
        self.scopes, self.window_size, self.pos_channels = scopes, int(window_size), int(pos_channels)
        self.encoder_depth = int(encoder_depth)
        pos = 3 * pos_channels
        self.enc_in = nn.Linear(self.corners + pos, width)
        self.enc_conv = SubMConv3d(width, width, 3)
        self.encoder = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(encoder_depth))
        self.to_moments = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * latent_channels))
        self.dec_in = nn.Linear(latent_channels + pos, width)
        self.decoder = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(decoder_depth))
        self.dec_conv = SubMConv3d(width, width, 3)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, self.corners))

    def _groups(self, x: SparseVoxels, scope: Scope, layer: int) -> PartGroups:
        if scope == "window":
            return window_groups(x, self.window_size, shift=(layer % 2) * (self.window_size // 2))
        return x.part_groups() if scope == "part" else groups_from_cu_seqlens(x.cu_seqlens)

    def _position(self, x: SparseVoxels) -> torch.Tensor:
        return sinusoidal_embedding(x.centers() * x.resolution, self.pos_channels).to(x.feats.dtype)

    def encode(self, x: SparseVoxels) -> Posterior:
        """x.feats (N, K) corner values (voxel units) -> a Posterior over (N, C) latents."""
        if x.feats.dim() != 2 or x.feats.shape[1] != self.corners:
            raise ValueError(f"feats must be (N, {self.corners}) corner values, got {tuple(x.feats.shape)}")
        if x.feats.shape[0] == 0:
            raise ValueError("no active voxel to encode (empty shape)")
        if not bool(torch.isfinite(x.feats).all()):
            raise ValueError("corner values hold NaN or inf")
        feats = x.feats.clamp(-self.truncation, self.truncation) / self.truncation
        h = self.enc_in(torch.cat([feats, self._position(x)], 1))
        h = h + self.enc_conv(x.replace(feats=h)).feats
        for i, block in enumerate(self.encoder):
            h = block(h, self._groups(x, self.scopes[i], i))
        mean, logvar = self.to_moments(h).chunk(2, dim=1)
        return Posterior(mean, logvar.clamp(-30.0, 20.0), x.cu_seqlens)

    def decode(self, z: SparseVoxels) -> torch.Tensor:
        """z.feats (N, C) latents at the voxels -> (N, K) corner values in (-truncation, truncation)."""
        if z.feats.dim() != 2 or z.feats.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (N, {self.latent_channels}), got {tuple(z.feats.shape)}")
        if not bool(torch.isfinite(z.feats).all()):
            raise ValueError("latents hold NaN or inf")
        h = self.dec_in(torch.cat([z.feats, self._position(z)], 1))
        for i, block in enumerate(self.decoder):
            layer = self.encoder_depth + i
            h = block(h, self._groups(z, self.scopes[layer], layer))
        h = h + self.dec_conv(z.replace(feats=h)).feats
        return self.truncation * torch.tanh(self.head(h))

    def forward(
        self, x: SparseVoxels, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """{"values": (N, K) reconstruction, "kl": scalar, "latents": (N, C)}."""
        posterior = self.encode(x)
        latents = posterior.sample(generator) if sample_posterior else posterior.mean
        return {"values": self.decode(x.replace(feats=latents)), "kl": posterior.kl(), "latents": latents}


def blocks_to_mesh(
    coords: np.ndarray, values: np.ndarray, resolution: int, level: float = 0.0, face_blocks: bool = False
):
    """Marching cubes over sparse blocks: (N, 3) voxel coords at `resolution` and (N, s+1, s+1, s+1)
    corner values (negative inside) -> ((V, 3) float64 vertices in the normalised cube, (F, 3) int64
    faces, outward). The surface is the `level` set in voxel units (level > 0 moves it out; only the
    active blocks are cut, so keep |level| well under a voxel or the moved surface leaves them).
    Corners shared by neighbouring voxels take their mean value first. face_blocks: also return (F,)
    int64, the voxel (index into coords) whose block each face was cut from."""
    import mcubes

    coords = np.asarray(coords, np.int64).reshape(-1, 3)
    values = np.asarray(values, np.float64)
    n = len(coords)
    empty = (np.zeros((0, 3)), np.zeros((0, 3), np.int64)) + ((np.zeros(0, np.int64),) if face_blocks else ())
    if n == 0:
        return empty
    s = values.shape[1] - 1
    if values.shape != (n, s + 1, s + 1, s + 1) or s < 1:
        raise ValueError(f"values must be (N, s+1, s+1, s+1) for {n} voxels, got {values.shape}")
    fine = resolution * s + 1
    offsets = np.stack(np.meshgrid(*(np.arange(s + 1),) * 3, indexing="ij"), -1)  # (s+1, s+1, s+1, 3)
    corners = coords[:, None, None, None, :] * s + offsets  # (N, s+1, s+1, s+1, 3)
    keys = (corners[..., 0] * fine + corners[..., 1]) * fine + corners[..., 2]
    unique, inverse = np.unique(keys.ravel(), return_inverse=True)
    mean = np.bincount(inverse, weights=values.ravel()) / np.bincount(inverse)
    shared = mean[inverse].reshape(values.shape)
    verts, tris, owner, count = [], [], [], 0
    for i in range(n):
        block = level - shared[i]  # positive inside, as PyMCubes' winding expects for outward faces
        if (block > 0).all() or (block <= 0).all():
            continue
        v, f = mcubes.marching_cubes(block, 0.0)
        if len(f) == 0:
            continue
        verts.append(coords[i] * s + v)
        tris.append(f.astype(np.int64) + count)
        owner.append(np.full(len(f), i, np.int64))
        count += len(v)
    if not verts:
        return empty
    vertices = np.concatenate(verts)
    faces = np.concatenate(tris)
    # weld the copies of a vertex on a face two blocks share (identical values give identical points)
    rounded, index = np.unique(np.round(vertices, 6), axis=0, return_inverse=True)
    faces = index.reshape(-1)[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    vertices, faces = -0.5 + rounded / (resolution * s), faces[keep]
    return (vertices, faces, np.concatenate(owner)[keep]) if face_blocks else (vertices, faces)


__all__ = ["SLatVAE", "blocks_to_mesh", "window_groups"]
