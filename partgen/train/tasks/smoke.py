"""The smoke task: a small MLP regresses a fixed random teacher on a fixed synthetic set (experiment=train_smoke).

Legend: B batch, F input features, H hidden width, O outputs.

It exercises every path of the trainer in seconds on CPU: the data are a function of data_seed
only; training draws from the global torch RNG (input noise, dropout), so a resumed run matches
the uninterrupted one only if the RNG states come back too; step_delay_s slows each step down so a
test can kill a run part-way.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


class TinyMLP(nn.Module):
    """x (B, F) -> (B, O): Linear, GELU, Dropout, Linear, GELU, Linear."""

    def __init__(self, in_features: int = 8, hidden: int = 32, out_features: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _synthetic(num_items: int, in_features: int, out_features: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (num_items, F) ~ N(0, 1) and y = tanh(x W1) W2 (num_items, O), all from `seed`."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(in_features, 16, generator=g) / in_features**0.5
    w2 = torch.randn(16, out_features, generator=g) / 4.0
    x = torch.randn(num_items, in_features, generator=g)
    return x, torch.tanh(x @ w1) @ w2


class SmokeTask:
    """Mean-squared-error regression; evaluate() reports the MSE on a held-out set of the same teacher."""

    def __init__(
        self,
        num_items: int = 256,
        num_eval_items: int = 64,
        in_features: int = 8,
        out_features: int = 2,
        input_noise: float = 0.0,
        data_seed: int = 1234,
        step_delay_s: float = 0.0,
    ) -> None:
        x, y = _synthetic(num_items + num_eval_items, in_features, out_features, data_seed)
        self.train_x, self.train_y = x[:num_items], y[:num_items]
        self.eval_x, self.eval_y = x[num_items:], y[num_items:]
        self.input_noise = input_noise
        self.step_delay_s = step_delay_s

    def train_dataset(self) -> torch.utils.data.Dataset:
        return torch.utils.data.TensorDataset(self.train_x, self.train_y)

    def collate(self, items: list) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*items, strict=True)
        return torch.stack(xs), torch.stack(ys)  # (B, F), (B, O)

    def training_step(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(model.parameters()).device
        x, y = (t.to(device) for t in batch)
        if self.input_noise:
            x = x + self.input_noise * torch.randn_like(x)
        loss = F.mse_loss(model(x).float(), y)
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        return loss, {"rmse": loss.detach().sqrt().item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        pred = model(self.eval_x.to(device)).float()
        return {"mse": F.mse_loss(pred, self.eval_y.to(device)).item()}
