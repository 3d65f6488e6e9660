"""BoundaryNet: the probability that people cut a mesh along an edge of its face graph.

Legend: E edges, D descriptors (partgen.data_pipeline.boundary.edge_features).

An MLP over each edge's descriptors (local dihedral and thickness terms, and the same terms
diffused over the face graph at four scales), trained on the Princeton Segmentation Benchmark's
human segmentations with the share of people who cut the edge as a soft target. The descriptors
are normalised by their training mean and standard deviation (buffers, saved with the weights),
so a model folder holds all it needs. Its probabilities become the affinities of the face graph
that normalised cuts split (partgen.data_pipeline.geometric.segment_mesh, boundary=).
"""

from __future__ import annotations

import torch
from torch import nn


class BoundaryNet(nn.Module):
    def __init__(self, in_features: int, hidden: int = 128, depth: int = 3, dropout: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def set_normalisation(self, features: torch.Tensor) -> None:
        """Descriptor mean and std from (N, D) training features."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(E, D) descriptors -> (E,) boundary logits."""
        if features.shape[-1] != self.in_features:
            raise ValueError(f"BoundaryNet takes {self.in_features} descriptors per edge, got {features.shape[-1]}")
        return self.mlp((features - self.mean) / self.std).squeeze(-1)

    @torch.no_grad()
    def probability(self, features) -> torch.Tensor:
        """(E,) boundary probabilities of (E, D) descriptors (numpy or tensor), on CPU."""
        x = torch.as_tensor(features, dtype=torch.float32, device=self.mean.device)
        return torch.sigmoid(self(x)).cpu()
