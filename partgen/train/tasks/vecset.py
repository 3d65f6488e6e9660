"""Shape autoencoding as a training task: the VecSet VAE of stage 1 (partgen.models.vecset_vae).

Legend: B shapes, N surface points, Q volume queries (all shapes of a batch together).

Each step encodes B shapes' surface samples (uniform + sharp-edge, partgen.data_pipeline.datasets
.ShapeRecords), samples the KL posterior, and predicts Q volume queries per shape (near_fraction of
them near the surface, the rest uniform in the padded cube):

    reconstruction = binary cross-entropy of the occupancy logits against  inside = sdf < shell
    loss = reconstruction + kl_weight * KL

Why `shell`: many Sweet Home 3D models are open sheets (a table top as one quad layer, curtains,
leaves) whose winding-number inside is empty, so the plain inside set would lose them. The
target is the inside grown by `shell` (1/128 of the cube by default, a quarter voxel at the stage-2
resolution 64 under the conservative dilation), as watertight conversions by an unsigned-distance
offset do (Dora, Hunyuan3D), while solid parts keep their volume.

evaluate (posterior mean, fixed val subsets): iou of the predicted inside set against the target
over the val queries (uniform and near together, as 3DShape2VecSet reports it), iou_near on the
near-surface queries alone, and the reconstruction loss.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from partgen.data_pipeline.datasets import ShapeBatch, ShapeRecords, collate_shapes
from partgen.train.distributed import unwrap

ANNOTATE_HINT = (
    "annotate the Sweet Home 3D training libraries with volume samples first: "
    "partgen-annotate input=sweethome3d output=data/sh3d64 resolution=64"
)


class VecSetTask:
    """Train a VecSetVAE on annotated records (module docstring).

    records:          partgen-annotate output folder(s) or manifest file(s) (with volume.npz)
    num_points:       surface samples per training shape
    num_queries:      volume queries per training shape; near_fraction of them near the surface
    val_fraction, seed: the split (a seeded hash of each asset key, as every partgen task)
    shell:            the target is the inside grown by this distance (see the module docstring)
    kl_weight:        weight of the KL term
    eval_max_shapes:  validation reads at most this many val shapes (the first by key); 0: none
    eval_queries:     volume queries per validation shape (a fixed subset per shape)
    eval_batch_size:  shapes per validation forward pass
    limit:            at most this many training shapes (the first by key); size.data_limit
    augment:          turn training shapes by random symmetries of the square about the vertical
                      axis (ShapeRecords: exact labels, 8x the poses)
    """

    def __init__(
        self,
        records,
        num_points: int = 2048,
        num_queries: int = 2048,
        near_fraction: float = 0.5,
        val_fraction: float = 0.1,
        seed: int = 0,
        shell: float = 1.0 / 128,
        kl_weight: float = 1e-4,
        eval_max_shapes: int = 32,
        eval_queries: int = 8192,
        eval_batch_size: int = 4,
        limit: int | None = None,
        augment: bool = False,
    ):
        if shell < 0 or kl_weight < 0:
            raise ValueError(f"need shell >= 0, kl_weight >= 0; got {shell}, {kl_weight}")
        if eval_max_shapes < 0 or eval_batch_size < 1:
            raise ValueError(
                f"need eval_max_shapes >= 0, eval_batch_size >= 1; got {eval_max_shapes}, {eval_batch_size}"
            )
        self.records = records
        self.num_points, self.num_queries, self.near_fraction = int(num_points), int(num_queries), float(near_fraction)
        self.val_fraction, self.seed = float(val_fraction), int(seed)
        self.shell, self.kl_weight = float(shell), float(kl_weight)
        self.eval_max_shapes, self.eval_queries, self.eval_batch_size = (
            int(eval_max_shapes),
            int(eval_queries),
            int(eval_batch_size),
        )
        self.limit = None if limit is None else int(limit)
        self.augment = bool(augment)
        self._train: torch.utils.data.Dataset | None = None
        self._val: torch.utils.data.Dataset | None = None

    # --- data -------------------------------------------------------------------------------------

    def _records(self, split: Literal["train", "val"]) -> ShapeRecords:
        train = split == "train"
        try:
            return ShapeRecords(
                self.records,
                split=split,
                val_fraction=self.val_fraction,
                seed=self.seed,
                num_points=self.num_points,
                num_queries=self.num_queries if train else self.eval_queries,
                near_fraction=self.near_fraction,
                augment=self.augment and train,
            )
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}; {ANNOTATE_HINT}") from None

    def train_dataset(self) -> torch.utils.data.Dataset:
        if self._train is None:
            ds = self._records("train")
            if len(ds) == 0:
                raise ValueError(
                    f"no training shape in {self.records} (val_fraction={self.val_fraction}); {ANNOTATE_HINT}"
                )
            self._train = ds if self.limit is None else torch.utils.data.Subset(ds, range(min(self.limit, len(ds))))
        return self._train

    def val_dataset(self) -> torch.utils.data.Dataset:
        if self._val is None:
            ds = self._records("val")
            self._val = torch.utils.data.Subset(ds, range(min(self.eval_max_shapes, len(ds))))
        return self._val

    def collate(self, items: list) -> ShapeBatch:
        return collate_shapes(items)

    # --- objective --------------------------------------------------------------------------------

    def target(self, sdf: torch.Tensor) -> torch.Tensor:
        """The occupancy the model should predict at queries of signed distance sdf (module docstring)."""
        return (sdf < self.shell).float()

    def _reconstruction(self, values: torch.Tensor, sdf: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(values.float(), self.target(sdf))

    def _forward(self, model: nn.Module, batch: ShapeBatch, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.parameters()).device
        out = model(
            batch.points.to(device),
            batch.cu_seqlens.to(device),
            batch.queries.to(device),
            batch.query_cu.to(device),
            normals=batch.normals.to(device),
            sharp=batch.sharp.to(device),
            sample_posterior=sample,
        )
        return out["values"], out["kl"]

    def training_step(self, model: nn.Module, batch: ShapeBatch) -> tuple[torch.Tensor, dict[str, float]]:
        values, kl = self._forward(model, batch, sample=True)
        sdf = batch.sdf.to(values.device)
        recon = self._reconstruction(values, sdf)
        loss = recon + self.kl_weight * kl
        inside = unwrap(model).inside(values.detach())
        accuracy = (inside == (sdf < self.shell)).float().mean()
        return loss, {"loss/recon": recon.item(), "kl": kl.item(), "accuracy": accuracy.item()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        val = self.val_dataset()
        if len(val) == 0:
            return {}
        inter = union = inter_near = union_near = 0.0
        recon, batches = 0.0, 0
        for start in range(0, len(val), self.eval_batch_size):
            batch = self.collate([val[i] for i in range(start, min(start + self.eval_batch_size, len(val)))])
            values, _ = self._forward(model, batch, sample=False)
            sdf = batch.sdf.to(values.device)
            recon += float(self._reconstruction(values, sdf))
            batches += 1
            pred, truth = model.inside(values), sdf < self.shell
            inter += float((pred & truth).sum())
            union += float((pred | truth).sum())
            near = sdf.abs() < 0.05
            inter_near += float((pred & truth & near).sum())
            union_near += float(((pred | truth) & near).sum())
        return {
            "iou": inter / max(union, 1.0),
            "iou_near": inter_near / max(union_near, 1.0),
            "loss/recon": recon / batches,
        }


__all__ = ["VecSetTask"]
