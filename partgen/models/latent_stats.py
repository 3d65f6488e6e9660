"""Per-channel latent statistics a flow model keeps with its weights (standardised latents in and out).

Legend: M latent rows, C latent channels.
"""

from __future__ import annotations

import torch


class LatentStatistics:
    """Mixin for flow models over a VAE's latents: per-channel mean and std buffers (`latent_mean`,
    `latent_std`, saved with the weights; the training task measures them on the training set once,
    before the optimiser and EMA see the model) so the flow runs on standardised latents and hands
    back un-standardised ones."""

    def _init_latent_statistics(self, channels: int) -> None:
        self.register_buffer("latent_mean", torch.zeros(channels))
        self.register_buffer("latent_std", torch.ones(channels))

    def set_latent_stats(self, latents: torch.Tensor) -> None:
        """Per-channel mean and std of (M, C) training latents."""
        self.latent_mean.copy_(latents.float().mean(0))
        self.latent_std.copy_(latents.float().std(0).clamp_min(1e-4))

    def standardise(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.latent_mean) / self.latent_std

    def unstandardise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.latent_std + self.latent_mean


__all__ = ["LatentStatistics"]
