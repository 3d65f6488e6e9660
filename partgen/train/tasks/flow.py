"""What the rectified-flow training tasks share (layout flow, PartDiT): the step and the validation.

A subclass supplies
    _loss(model, batch, t, noise, drop, **options) -> the flow-matching MSE at times t (B,), noise
                    shaped like the batch's latents, drop (B,) bool (shapes that see the null image)
    _latents(batch) -> the batch's target latents (their shape is the noise's)
    _val()          -> the validation dataset; collate(items) -> a batch (with "keys")
    eval_runs       name -> (drop, options): the losses evaluate reports
and the attributes t_mean, t_std, drop_image, seed, eval_batch_size.
"""

from __future__ import annotations

import torch
from torch import nn

from partgen.diffusion.flow import logit_normal_timesteps

EVAL_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


class FlowMatchingTask:
    """Training step and validation of a rectified-flow task (module docstring)."""

    eval_runs: dict[str, tuple[bool, dict]] = {"loss": (False, {}), "loss_null": (True, {})}

    def training_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """t per shape from a logit-normal, fresh noise, a drop_image share of null images."""
        b = len(batch["keys"])
        t = logit_normal_timesteps(b, self.t_mean, self.t_std)
        drop = torch.rand(b) < self.drop_image
        loss = self._loss(model, batch, t, torch.randn(self._latents(batch).shape), drop)
        return loss, {"dropped": float(drop.float().mean())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Each of eval_runs on the val split, at t in EVAL_TIMES with a fixed noise (seeded)."""
        val = self._val()
        if len(val) == 0:
            return {}
        g = torch.Generator().manual_seed(self.seed)
        totals = dict.fromkeys(self.eval_runs, 0.0)
        count = 0
        for start in range(0, len(val), self.eval_batch_size):
            batch = self.collate([val[i] for i in range(start, min(start + self.eval_batch_size, len(val)))])
            b = len(batch["keys"])
            for t_value in EVAL_TIMES:
                noise = torch.randn(self._latents(batch).shape, generator=g)
                t = torch.full((b,), t_value)
                for name, (drop, options) in self.eval_runs.items():
                    loss = self._loss(model, batch, t, noise, torch.full((b,), drop), **options)
                    totals[name] += float(loss) * b
            count += b
        return {name: value / (count * len(EVAL_TIMES)) for name, value in totals.items()}


__all__ = ["EVAL_TIMES", "FlowMatchingTask"]
