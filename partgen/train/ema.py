"""Exponential moving average of a model's weights, for evaluation and the weights to ship.

After every optimiser step: ema = decay_t * ema + (1 - decay_t) * weights, with
decay_t = min(decay, (1 + n) / (10 + n)) after n updates (the warm-up diffusers' EMAModel uses),
so a short run is not dominated by the initial weights. Floating-point buffers (BatchNorm
statistics) are averaged the same way; integer buffers (num_batches_tracked) are copied.
The average is kept in float32 whatever the training precision, on the model's device.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of `model` (eval mode, no grads) that follows it by update(model)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model` (the raw module, not a DDP wrapper)."""
        decay = self.current_decay()
        ema_state = self.model.state_dict()
        for name, value in model.state_dict().items():
            avg = ema_state[name]
            if avg.is_floating_point():
                avg.lerp_(value.detach().to(avg.dtype), 1.0 - decay)
            else:
                avg.copy_(value)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed like the model's state_dict."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state)
        self.num_updates = int(num_updates)
