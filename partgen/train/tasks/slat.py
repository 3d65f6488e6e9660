"""Stage 2's SLat VAE as a training task: sub-grid signed distances of active voxels, autoencoded.

Legend: B shapes, N active voxels of a batch, K = (s+1)^3 corner values per voxel.

Items are partgen.data_pipeline.datasets.BlockRecords (annotate with block_subdiv=s). Each step
encodes the voxels' corner values, samples the per-voxel posterior and decodes; the loss is the L1
distance of the values (voxel units, truncated) plus kl_weight * KL.

evaluate (posterior mean) on the val split: l1, sign accuracy of the corner values (what decides
the surface), and on the first eval_mesh_shapes shapes the surface itself: marching cubes over the
decoded blocks (partgen.models.slat_vae.blocks_to_mesh, at `level`) against the record's mesh,
Chamfer distance and F-score at 0.01 (partgen.eval.geometry, normalised cube of side 1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from partgen.data_pipeline.datasets import BlockRecords
from partgen.eval.geometry import chamfer_distance, f_score, sample_mesh
from partgen.models.slat_vae import blocks_to_mesh
from partgen.structures import SparseVoxels
from partgen.train.distributed import unwrap

ANNOTATE_HINT = (
    "annotate with sub-grid signed distances first: "
    "partgen-annotate input=sweethome3d output=data/sh3d64b resolution=64 block_subdiv=4"
)


class SLatTask:
    """Train a SLatVAE on BlockRecords (module docstring).

    records:          partgen-annotate output folder(s) with sdf_blocks.npz
    val_fraction, seed: the split (the seeded hash of asset keys every partgen task uses)
    max_voxels:       training shapes with more active voxels are skipped (memory per step)
    kl_weight:        weight of the KL term
    eval_max_shapes:  validation shapes (the first by key); eval_mesh_shapes of them also get meshed
    level:            the level set the meshes are cut at (voxel units; see blocks_to_mesh)
    limit:            at most this many training shapes
    """

    def __init__(
        self,
        records,
        val_fraction: float = 0.1,
        seed: int = 0,
        max_voxels: int | None = 20000,
        kl_weight: float = 1e-6,
        eval_max_shapes: int = 16,
        eval_mesh_shapes: int = 4,
        compare_points: int = 10000,
        level: float = 0.0,
        limit: int | None = None,
    ):
        self.records, self.val_fraction, self.seed = records, float(val_fraction), int(seed)
        self.max_voxels = None if max_voxels is None else int(max_voxels)
        self.kl_weight, self.level = float(kl_weight), float(level)
        self.eval_max_shapes, self.eval_mesh_shapes = int(eval_max_shapes), int(eval_mesh_shapes)
        self.compare_points = int(compare_points)
        self.limit = None if limit is None else int(limit)
        self._train = self._val = None

    def _records(self, split: str, max_voxels: int | None) -> BlockRecords:
        try:
            return BlockRecords(self.records, split, self.val_fraction, self.seed, max_voxels)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}; {ANNOTATE_HINT}") from None

    def train_dataset(self) -> torch.utils.data.Dataset:
        if self._train is None:
            ds = self._records("train", self.max_voxels)
            if len(ds) == 0:
                raise ValueError(f"no training shape in {self.records}; {ANNOTATE_HINT}")
            self._train = ds if self.limit is None else torch.utils.data.Subset(ds, range(min(self.limit, len(ds))))
        return self._train

    def val_dataset(self) -> torch.utils.data.Dataset:
        if self._val is None:
            ds = self._records("val", None)
            self._val = torch.utils.data.Subset(ds, range(min(self.eval_max_shapes, len(ds))))
        return self._val

    def collate(self, items: list) -> tuple[SparseVoxels, list[str]]:
        return SparseVoxels.collate([voxels for voxels, _ in items]), [key for _, key in items]

    def training_step(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        voxels, _ = batch
        device = next(model.parameters()).device
        x = voxels.to(device)
        out = model(x)
        target = x.feats.clamp(-unwrap(model).truncation, unwrap(model).truncation)
        l1 = (out["values"] - target).abs().mean()
        loss = l1 + self.kl_weight * out["kl"]
        sign = ((out["values"].detach() > 0) == (target > 0)).float().mean()
        return loss, {"l1": l1.item(), "kl": out["kl"].item(), "sign_accuracy": sign.item()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        val = self.val_dataset()
        if len(val) == 0:
            return {}
        l1 = sign = count = 0.0
        chamfers, fscores = [], []
        for i in range(len(val)):
            voxels, key = val[i]
            x = voxels.to(next(model.parameters()).device)
            values = model(x, sample_posterior=False)["values"]
            target = x.feats.clamp(-model.truncation, model.truncation)
            l1 += float((values - target).abs().sum())
            sign += float(((values > 0) == (target > 0)).sum())
            count += target.numel()
            if i < self.eval_mesh_shapes:
                s = model.subdiv
                blocks = values.reshape(-1, s + 1, s + 1, s + 1).cpu().numpy()
                vertices, faces = blocks_to_mesh(x.coords[:, 1:].cpu().numpy(), blocks, x.resolution, self.level)
                ref = val.dataset.records[val.indices[i]]
                with np.load(ref.path / "mesh.npz") as z:
                    truth = sample_mesh(z["vertices"], z["faces"], self.compare_points, seed=1)
                if len(faces):
                    pred = sample_mesh(vertices, faces, self.compare_points, seed=2)
                    chamfers.append(chamfer_distance(pred, truth))
                    fscores.append(f_score(pred, truth, 0.01))
                else:
                    fscores.append(0.0)
        metrics = {"l1": l1 / count, "sign_accuracy": sign / count}
        if chamfers:
            metrics["chamfer"] = float(np.mean(chamfers))
        if fscores:
            metrics["f_score_0.01"] = float(np.mean(fscores))
        return metrics


__all__ = ["SLatTask"]
