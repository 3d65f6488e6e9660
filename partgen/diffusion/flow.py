"""Rectified flow (flow matching on straight paths): training targets, timestep sampling, sampling.

Legend: X any tensor of samples (rows of a varlen batch or a dense batch), t in [0, 1].

Convention (Stable Diffusion 3, diffusers' FlowMatchEulerDiscreteScheduler): t = 0 is data, t = 1
is noise, the path is x_t = (1 - t) x_0 + t eps and the model predicts the velocity v = eps - x_0.
Training draws t from a logit-normal distribution (Esser et al. 2024: more weight mid-path).
Sampling integrates from t = 1 to 0 with diffusers' scheduler (shift > 1 spends more steps near the
noise end, as SD3 does for large inputs). Samplers take a callable velocity(x, t) -> v, never a
model class (DESIGN.md); classifier-free guidance combines two such callables; flow_edit moves a
sample from one condition's callable to another's (FlowEdit). sample_guided and
sample_sets take the model itself as the callable, with its conditioning bound and a per-shape drop
mask for the null condition: the pipelines (and the training tasks' evaluations) call them, the
models only compute velocities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (x, t, drop) -> v: a conditional model whose drop (B,) bool mask puts shapes on the null condition
GuidedVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# (x, cu_seqlens, t, drop=drop) -> v: the same over a varlen batch of sets
SetVelocity = Callable[..., torch.Tensor]


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


@torch.no_grad()
def flow_edit(
    source_velocity: Velocity,
    target_velocity: Velocity,
    x_source: torch.Tensor,
    strength: float,
    steps: int = 10,
    generator: torch.Generator | None = None,
    noise_draws: int = 1,
    progress: str | None = None,
) -> torch.Tensor:
    """Edit x_source, a sample under the source condition, towards the target condition (FlowEdit,
    Kulikov et al. 2024, inversion-free): from t = strength to 0 in `steps` Euler steps, the edit
    z moves by the difference of the two velocities at coupled points of the path, the source's
    x_t = (1 - t) x_source + t eps and the target's x_t + (z - x_source), with fresh eps each step
    (noise_draws of them averaged). Unlike SDEdit (sample with start), whose result depends on
    the noise it adds, the noise enters both velocities alike: where the conditions agree, z stays
    x_source, and it moves by what the target asks differently. progress: a label for a progress
    bar over the steps (None: quiet). -> z like x_source."""
    if steps < 1 or noise_draws < 1:
        raise ValueError(f"steps and noise_draws must be at least 1, got {steps}, {noise_draws}")
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    times = torch.linspace(strength, 0.0, steps + 1).tolist()
    z = x_source.clone()
    pairs = list(zip(times[:-1], times[1:], strict=True))
    if progress is not None:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc=progress, unit="step", leave=False)
    for t, t_next in pairs:
        tt = torch.tensor(t, dtype=torch.float32, device=x_source.device)
        delta = torch.zeros_like(z)
        for _ in range(noise_draws):
            eps = torch.randn(x_source.shape, generator=generator).to(x_source.device, x_source.dtype)
            x_t = (1.0 - t) * x_source + t * eps
            delta += target_velocity(x_t + (z - x_source), tt) - source_velocity(x_t, tt)
        z = z + (t_next - t) * delta / noise_draws
    return z


@torch.no_grad()
def sample_guided(
    velocity: GuidedVelocity,
    noise: torch.Tensor,
    num_shapes: int,
    guidance: float,
    steps: int = 25,
    shift: float = 1.0,
    progress: str | None = None,
    start: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Sample with classifier-free guidance from a model that reads a per-shape drop mask:
    velocity(x, t, drop) with drop (num_shapes,) bool (True: that shape sees the null condition).
    The conditional call drops nothing, the unconditional drops every shape (guided, then sample;
    start and strength as there)."""
    keep = torch.zeros(num_shapes, dtype=torch.bool, device=noise.device)

    def conditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return velocity(x, t, keep)

    def unconditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return velocity(x, t, ~keep)

    return sample(
        guided(conditional, unconditional, guidance),
        noise,
        steps=steps,
        shift=shift,
        progress=progress,
        start=start,
        strength=strength,
    )


@torch.no_grad()
def sample_sets(
    velocity: SetVelocity,
    cu_seqlens: torch.Tensor,
    channels: int,
    guidance: float,
    *,
    generator: torch.Generator | None = None,
    steps: int = 25,
    shift: float = 1.0,
    progress: str | None = None,
    start: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Sample B sets of rows, a varlen batch (cu_seqlens (B+1,) int32; set b has cu[b+1] - cu[b] rows
    of `channels`), from a model called as velocity(x (M, C), cu_seqlens, t, drop=drop (B,) bool),
    e.g. a LayoutFlow with its image context bound (functools.partial). Each set's noise is its own
    draw from generator, so a set's sample does not depend on how many share the batch. start (M, C)
    and strength < 1: begin from those rows at t = strength (SDEdit, see sample). -> (M, C) on
    cu_seqlens' device."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    noise = torch.cat([torch.randn(n, channels, generator=generator) for n in lengths]).to(cu_seqlens.device)

    def per_shape(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        return velocity(x, cu_seqlens, t, drop=drop)

    return sample_guided(
        per_shape,
        noise,
        len(lengths),
        guidance,
        steps=steps,
        shift=shift,
        progress=progress,
        start=start,
        strength=strength,
    )


__all__ = ["flow_edit", "guided", "interpolate", "logit_normal_timesteps", "sample", "sample_guided", "sample_sets"]
