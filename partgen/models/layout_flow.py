"""Stage-1 generator: a rectified-flow transformer over VecSet latents, conditioned on an image.

Legend: B shapes, L latent tokens per shape (M = B L in all), C latent channels, D width,
T image tokens per image.

The denoised object is the VecSet VAE's set of L latent vectors (partgen.models.vecset_vae), so the
transformer has no positional embedding on its tokens: permuting the set permutes the output.
Each block (DiT, Peebles & Xie 2023) is adaLN-Zero modulated by the timestep: self-attention within
a shape's set, cross-attention to that shape's image tokens, MLP. The image tokens come from an
encoder inside the model (CNNEncoder or ViTEncoder trained with it, or a frozen DINOv2); for classifier-free
guidance a learned null sequence stands in for the image of the shapes in `drop` (training drops
a share of them; sampling runs both and mixes: partgen.diffusion.flow.sample_sets, called with the
model and its image context by partgen.pipelines.layout).

Besides the cross-attention, the mean of the image tokens joins the timestep in the adaLN
conditioning (pooled_image), a short path from the image to every block (cf. TRELLIS, SD3's
pooled text embedding).

With moment_head, an MLP on the same pooled image token predicts the moments of the shape's
standardised latent set (set_moments: per channel, the mean and the std over its L rows; for an
anchored VAE the xyz std are the shape's extents). LayoutFlowTask trains it as an auxiliary
target: the flow-matching loss alone hardly depends on the image (the set's per-token noise swamps
the per-shape differences), so the encoder it trains learns little; the moment target makes the
pooled image, which conditions every block, carry the shape's proportions (3000 CPU steps on the
anchored layout VAE: the correlation of generated and true set extents over 32 val icons goes from
0.04 to 0.49 with the ViT, 0.62 with the CNN encoder; conf/experiment/layout_flow.yaml).

Latents are standardised before the flow sees them (partgen.models.latent_stats.LatentStatistics:
per-channel buffers saved with the weights, measured on the training set once) and
un-standardised on the way out.
"""

from __future__ import annotations

import torch
from torch import nn

from partgen.models.latent_stats import LatentStatistics
from partgen.nn.blocks import AdaLNBlock, AdaLNOutput, TimestepEmbedding, pooled_context
from partgen.structures import batch_index, groups_from_cu_seqlens


class LayoutFlow(LatentStatistics, nn.Module):
    """Velocity of the rectified flow over standardised VecSet latents (module docstring).

    latent_channels: C of the VAE
    width, depth, heads, mlp_ratio: of the transformer
    image_encoder:   a module images (B, 3, S, S) -> ((B T, D_img) tokens, cu_seqlens) with out_dim
    freq_channels:   sinusoidal channels of the timestep (t in [0, 1] scaled by 1000)
    pooled_image:    add a projection of the mean image token to the adaLN conditioning
    moment_head:     an MLP from the mean image token to the set's moments (set_moments), trained
                     as an auxiliary target (forward(..., moments=True))
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        latent_channels: int = 16,
        width: int = 256,
        depth: int = 8,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        freq_channels: int = 256,
        pooled_image: bool = True,
        moment_head: bool = False,
    ):
        super().__init__()
        self.latent_channels = int(latent_channels)
        self.image_encoder = image_encoder
        ctx = int(image_encoder.out_dim)
        self.null_image = nn.Parameter(torch.zeros(ctx))
        self.context_norm = nn.LayerNorm(ctx)
        self.proj_in = nn.Linear(latent_channels, width)
        self.time = TimestepEmbedding(width, freq_channels)
        self.image_pool = nn.Linear(ctx, width) if pooled_image else None
        self.moment_head = (
            nn.Sequential(nn.Linear(ctx, width), nn.GELU(), nn.Linear(width, 2 * latent_channels))
            if moment_head
            else None
        )
        self.blocks = nn.ModuleList(AdaLNBlock(width, heads, ctx, mlp_ratio) for _ in range(depth))
        self.out = AdaLNOutput(width, latent_channels)
        self._init_latent_statistics(latent_channels)

    # --- the velocity -------------------------------------------------------------------------------

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> normalised image tokens (B T, D_img) and their cu_seqlens."""
        tokens, cu = self.image_encoder(images)
        return self.context_norm(tokens), cu

    def predict_moments(self, context: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The moment head's (B, 2 C) guess of each shape's standardised set moments from its image
        context (encode_images), the mean image token in."""
        if self.moment_head is None:
            raise ValueError("this LayoutFlow has no moment head (moment_head=False)")
        return self.moment_head(pooled_context(*context))

    def forward(
        self,
        x: torch.Tensor,
        cu_seqlens: torch.Tensor,
        t: torch.Tensor,
        images: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
        context: tuple[torch.Tensor, torch.Tensor] | None = None,
        moments: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Velocity (M, C) at standardised latents x (M, C) of B shapes at times t (B,) in [0, 1].

        images (B, 3, S, S), or context = encode_images(images) computed once (sampling reuses it);
        drop (B,) bool: shapes that see the null image instead (classifier-free guidance).
        moments: also return the moment head's (B, 2 C) prediction from each shape's own image
        (dropped or not), as (velocity, moments).
        """
        if x.dim() != 2 or x.shape[1] != self.latent_channels:
            raise ValueError(f"x must be (M, {self.latent_channels}), got {tuple(x.shape)}")
        b = cu_seqlens.numel() - 1
        t = t.reshape(-1).to(x.device, torch.float32).expand(b) if t.numel() == 1 else t.to(x.device, torch.float32)
        if t.shape != (b,):
            raise ValueError(f"t must hold one time per shape ({b}), got {tuple(t.shape)}")
        if context is None:
            if images is None:
                raise ValueError("pass images or a precomputed context")
            context = self.encode_images(images)
        tokens, ctx_cu = context
        if ctx_cu.numel() != cu_seqlens.numel():
            raise ValueError(f"{ctx_cu.numel() - 1} images for {b} shapes")
        predicted = self.predict_moments((tokens, ctx_cu)) if moments else None
        if drop is not None and bool(drop.any()):
            owner = batch_index(ctx_cu).to(tokens.device)  # (B T,) which image each token belongs to
            tokens = torch.where(drop.to(tokens.device)[owner, None], self.context_norm(self.null_image)[None], tokens)
        owner = batch_index(cu_seqlens).to(x.device)  # (M,) the shape of each row
        cond = self.time(t)  # (B, D): the adaLN maps run per shape
        if self.image_pool is not None:
            cond = cond + self.image_pool(pooled_context(tokens, ctx_cu))
        groups, ctx_groups = groups_from_cu_seqlens(cu_seqlens), groups_from_cu_seqlens(ctx_cu)
        h = self.proj_in(x)
        for block in self.blocks:
            h = block(h, cond, groups, tokens, ctx_groups, owner=owner)
        v = self.out(h, cond, owner)
        return (v, predicted) if moments else v


def set_moments(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """(M, C) rows of B sets -> (B, 2 C): each set's per-channel mean, then its per-channel std."""
    mean = pooled_context(x, cu_seqlens)
    owner = batch_index(cu_seqlens).to(x.device)
    var = pooled_context((x - mean[owner]) ** 2, cu_seqlens)
    return torch.cat([mean, var.clamp_min(1e-12).sqrt()], dim=1)


__all__ = ["LayoutFlow", "set_moments"]
