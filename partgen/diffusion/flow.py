"""Rectified flow (flow matching on straight paths): training targets, timestep sampling, sampling.

Legend: X any tensor of samples (rows of a varlen batch or a dense batch), t in [0, 1].

Convention (Stable Diffusion 3, diffusers' FlowMatchEulerDiscreteScheduler): t = 0 is data, t = 1
is noise, the path is x_t = (1 - t) x_0 + t eps and the model predicts the velocity v = eps - x_0.
Training draws t from a logit-normal distribution (Esser et al. 2024: more weight mid-path).
Sampling integrates from t = 1 to 0 with diffusers' scheduler (shift > 1 spends more steps near the
noise end, as SD3 does for large inputs). Samplers take a callable velocity(x, t) -> v, never a
model class (DESIGN.md); classifier-free guidance combines two such callables.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def logit_normal_timesteps(
    n: int, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """(n,) float32 t = sigmoid(N(mean, std^2)) in (0, 1)."""
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator)).to(device)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and the velocity target for rows x0 (X), noise (X) and t broadcastable over rows ((X0,) or scalar)."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} differ")
    t = t.to(x0.dtype).reshape(t.shape + (1,) * (x0.dim() - t.dim()))
    return (1.0 - t) * x0 + t * noise, noise - x0


def guided(conditional: Velocity, unconditional: Velocity, scale: float) -> Velocity:
    """Classifier-free guidance (Ho & Salimans 2022): v_u + scale (v_c - v_u); scale 1 is the conditional model."""
    if scale == 1.0:
        return conditional

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_u = unconditional(x, t)
        return v_u + scale * (conditional(x, t) - v_u)

    return velocity


@torch.no_grad()
def sample(
    velocity: Velocity,
    noise: torch.Tensor,
    steps: int = 25,
    shift: float = 1.0,
    progress: str | None = None,
    start: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from noise at t = 1 to data at t = 0 with diffusers'
    FlowMatchEulerDiscreteScheduler in `steps` steps; t reaches the callable as a 0-d float tensor.
    progress: show a progress bar over the steps with this label (None: quiet).

    start, strength < 1: begin from data instead of pure noise (SDEdit, Meng et al. 2022): the path
    is entered at t = strength with x = (1 - t) start + t noise (as training noises data) and
    integrated to 0 in `steps` steps; the lower the strength, the more of start is kept."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    if start is None or strength == 1.0:
        scheduler.set_timesteps(steps, device=noise.device)
        x = noise
    else:
        if start.shape != noise.shape:
            raise ValueError(f"start {tuple(start.shape)} and noise {tuple(noise.shape)} differ")
        end = 1.0 / scheduler.config.num_train_timesteps
        scheduler.set_timesteps(sigmas=torch.linspace(strength, end, steps).tolist(), device=noise.device)
        t0 = scheduler.sigmas[0].to(noise.dtype)
        x = (1.0 - t0) * start + t0 * noise
    timesteps = scheduler.timesteps
    if progress is not None:
        from tqdm.auto import tqdm

        timesteps = tqdm(timesteps, desc=progress, unit="step", leave=False)
    for timestep in timesteps:
        t = (timestep / scheduler.config.num_train_timesteps).to(torch.float32)
        v = velocity(x, t)
        x = scheduler.step(v, timestep, x).prev_sample
    return x


class LatentStatistics:
    """Mixin for flow models over a VAE's latents: per-channel mean and std buffers (saved with the
    weights; the training task measures them on the training set once, before the optimiser and EMA
    see the model) so the flow runs on standardised latents and hands back un-standardised ones."""

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


__all__ = ["LatentStatistics", "guided", "interpolate", "logit_normal_timesteps", "sample"]
