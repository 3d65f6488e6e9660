"""Point part segmentation as a training task: semantic classes and/or class-agnostic part embeddings.

Legend: B shapes of a batch, N points of a batch (all shapes together), n points of one shape,
L semantic classes (taxonomy.CLASSES), E embedding channels, P parts of one shape.

SegmentTask trains a PointSegmenter (partgen.models.point_transformer) on annotated records
(partgen.data_pipeline.datasets.PartRecords: surface samples with a part id and a semantic class
per point) and implements the trainer's Task protocol (partgen.train.task):

    train_dataset()             records of the train split (seeded hash of the key), augmented
    collate(items)              -> PointBatch; Points.feats is (N, 0): the model reads xyz from
                                coords and, with use_normals, the normals (feat_channels: 0)
    training_step(model, batch) semantic_weight * cross-entropy (IGNORE left out)
                                + contrastive_weight * supervised contrastive loss on the embedding
    evaluate(model)             on at most eval_max_shapes shapes of the val split:
                                semantic: miou (mean IoU over the classes the val points hold),
                                iou/<class>, accuracy (labelled points); parts: rand_index_error
                                (1 - RI, as the Princeton benchmark reports it) and ari of
                                cluster_embeddings with the true part count, over the shapes
                                with two parts or more

mode: "semantic" (cross-entropy only), "parts" (contrastive only), "both".
Shapes that cannot teach the active losses are left out of both splits: in "semantic" mode those
without a single classed part, in "parts" mode those with one part, in "both" those with neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from partgen.data_pipeline.datasets import PartRecords, PointBatch, RecordRef, collate_points
from partgen.data_pipeline.taxonomy import CLASSES, IGNORE, NUM_CLASSES, semantic_class
from partgen.eval.clustering import cluster_embeddings
from partgen.eval.rand_index import adjusted_rand_index, rand_index
from partgen.train.losses import class_weights, part_contrastive_loss, semantic_loss

Mode = Literal["semantic", "parts", "both"]

ANNOTATE_HINT = (
    "annotate the Sweet Home 3D training libraries first: "
    "partgen-annotate input=sweethome3d output=data/sh3d64 resolution=64 num_volume_samples=0"
)


class SegmentTask:
    """Train a PointSegmenter on annotated records (see the module docstring).

    records:            partgen-annotate output folder(s) or manifest file(s)
    mode:               "semantic", "parts" or "both"
    num_points:         points per training shape (a random subset each time it is drawn)
    val_fraction, seed: the split (PartRecords: a seeded hash of each asset key)
    semantic_weight:    weight of the cross-entropy
    contrastive_weight: weight of the part contrastive loss
    temperature:        of the contrastive loss
    augment:            rotation about Y, anisotropic scale and jitter on training shapes
    eval_max_shapes:    validation reads at most this many val shapes (the first by key); 0: no validation
    eval_num_points:    points per validation shape (None: num_points), a fixed subset per shape
    eval_batch_size:    shapes per validation forward pass
    contrastive_points: points per shape the contrastive loss compares (part-balanced; memory O(B M^2))
    class_weight_power: > 0 weighs the cross-entropy by train-split class frequency^-power (0: unweighted)
    label_smoothing:    of the cross-entropy
    limit:              at most this many training shapes (the first by key; None: all); size.data_limit
    """

    def __init__(
        self,
        records: str | Sequence[str],
        mode: Mode = "both",
        num_points: int = 4096,
        val_fraction: float = 0.1,
        seed: int = 0,
        semantic_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        temperature: float = 0.1,
        augment: bool = True,
        eval_max_shapes: int = 32,
        eval_num_points: int | None = None,
        eval_batch_size: int = 4,
        contrastive_points: int = 1024,
        class_weight_power: float = 0.0,
        label_smoothing: float = 0.0,
        limit: int | None = None,
    ):
        if mode not in ("semantic", "parts", "both"):
            raise ValueError(f"mode must be 'semantic', 'parts' or 'both', got {mode!r}")
        if num_points < 1 or (eval_num_points is not None and eval_num_points < 1):
            raise ValueError(f"num_points and eval_num_points must be positive, got {num_points}, {eval_num_points}")
        if eval_max_shapes < 0 or eval_batch_size < 1:
            raise ValueError(
                f"need eval_max_shapes >= 0 and eval_batch_size >= 1, got {eval_max_shapes}, {eval_batch_size}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.records = [str(records)] if isinstance(records, str | Path) else [str(r) for r in records]
        self.mode = mode
        self.semantic = mode in ("semantic", "both")
        self.parts = mode in ("parts", "both")
        self.num_points, self.val_fraction, self.seed = int(num_points), float(val_fraction), int(seed)
        self.semantic_weight, self.contrastive_weight = float(semantic_weight), float(contrastive_weight)
        self.temperature, self.augment = float(temperature), bool(augment)
        self.eval_max_shapes, self.eval_batch_size = int(eval_max_shapes), int(eval_batch_size)
        self.eval_num_points = int(eval_num_points) if eval_num_points is not None else self.num_points
        self.contrastive_points = int(contrastive_points)
        self.class_weight_power, self.label_smoothing = float(class_weight_power), float(label_smoothing)
        self.limit = None if limit is None else int(limit)
        # built on first use: the records are read when training starts, not when the config is instantiated
        self._train: torch.utils.data.Dataset | None = None
        self._val: torch.utils.data.Dataset | None = None
        self._weight: torch.Tensor | None = None

    # --- data -------------------------------------------------------------------------------------

    def _useful(self, ref: RecordRef) -> bool:
        """Whether a shape carries signal for an active loss (a classed part; two parts)."""
        labelled = any(semantic_class(name) != IGNORE for name in ref.part_names)
        return (self.semantic and labelled) or (self.parts and len(ref.part_names) >= 2)

    def _records(self, split: Literal["train", "val"]) -> PartRecords:
        train = split == "train"
        try:
            return PartRecords(
                self.records,
                split=split,
                val_fraction=self.val_fraction,
                seed=self.seed,
                num_points=self.num_points if train else self.eval_num_points,
                with_normals=True,
                augment=self.augment and train,
            )
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}; {ANNOTATE_HINT}") from None

    def _subset(self, split: Literal["train", "val"], cap: int | None) -> torch.utils.data.Subset:
        ds = self._records(split)
        keep = [i for i, ref in enumerate(ds.records) if self._useful(ref)]
        return torch.utils.data.Subset(ds, keep if cap is None else keep[:cap])

    def train_dataset(self) -> torch.utils.data.Dataset:
        """Training shapes: PartRecords items (points, normals, part, semantic, key)."""
        if self._train is None:
            self._train = self._subset("train", self.limit)
            if len(self._train) == 0:
                raise ValueError(
                    f"no training shape for mode={self.mode!r} in {', '.join(self.records)} "
                    f"(val_fraction={self.val_fraction}); {ANNOTATE_HINT}"
                )
        return self._train

    def val_dataset(self) -> torch.utils.data.Dataset:
        """The first eval_max_shapes useful shapes of the val split (may be empty)."""
        if self._val is None:
            self._val = self._subset("val", self.eval_max_shapes)
        return self._val

    def collate(self, items: list) -> PointBatch:
        """Items -> PointBatch with Points(coords, normals, part) and zero-width feats (N, 0)."""
        batch = collate_points(items)
        points = batch.points
        return batch._replace(points=points.replace(feats=points.coords.new_zeros(points.coords.shape[0], 0)))

    def _class_weight(self) -> torch.Tensor | None:
        """(L,) cross-entropy weights from the training shapes' class counts (every stored sample counted)."""
        if self.class_weight_power <= 0:
            return None
        if self._weight is None:
            ds = self.train_dataset()
            base: PartRecords = ds.dataset
            counts = np.zeros(NUM_CLASSES, np.int64)
            for i in ds.indices:
                ref = base.records[i]
                with np.load(ref.path / "samples.npz") as z:
                    per_part = np.bincount(z["part"].astype(np.int64), minlength=len(ref.part_names))
                for name, count in zip(ref.part_names, per_part, strict=False):
                    c = semantic_class(name)
                    if c != IGNORE:
                        counts[c] += count
            self._weight = class_weights(torch.from_numpy(counts), power=self.class_weight_power)
        return self._weight

    # --- training -----------------------------------------------------------------------------------

    def training_step(self, model: nn.Module, batch: PointBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss, logs): loss/semantic, loss/contrastive and the batch's point accuracy, as floats."""
        device = next(model.parameters()).device
        points = batch.points.to(device)
        out = model(points)
        logits, embedding = out["logits"], out["embedding"]  # (N, L), (N, E)
        if logits.shape[1] != NUM_CLASSES:
            raise ValueError(f"the model predicts {logits.shape[1]} classes but the taxonomy has {NUM_CLASSES}")
        loss = logits.new_zeros((), dtype=torch.float32)
        logs: dict[str, float] = {}
        if self.semantic:
            labels = batch.semantic.to(device)
            weight = self._class_weight()
            sem = semantic_loss(logits, labels, weight=weight, label_smoothing=self.label_smoothing)
            loss = loss + self.semantic_weight * sem
            labelled = labels != IGNORE
            logs["loss/semantic"] = float(sem.detach())
            if bool(labelled.any()):
                logs["accuracy"] = float((logits.detach().argmax(1) == labels)[labelled].float().mean())
        if self.parts:
            con = part_contrastive_loss(
                embedding, points.part, points.cu_seqlens, self.temperature, max_points=self.contrastive_points
            )
            loss = loss + self.contrastive_weight * con
            logs["loss/contrastive"] = float(con.detach())
        # the head a mode does not train still joins the graph (with zero gradients), so DDP does
        # not wait for gradients that never come (trainer.find_unused_parameters stays false)
        unused = embedding if not self.parts else logits if not self.semantic else None
        if unused is not None:
            loss = loss + 0.0 * unused.float().sum()
        return loss, logs

    # --- validation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics (module docstring); {} when there is no val shape or eval_max_shapes is 0."""
        ds = self.val_dataset()
        if len(ds) == 0:
            return {}
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)  # [true, predicted]
        ri_errors, aris = [], []
        try:
            for start in range(0, len(ds), self.eval_batch_size):
                batch = self.collate([ds[i] for i in range(start, min(len(ds), start + self.eval_batch_size))])
                out = model(batch.points.to(device))
                if self.semantic:
                    pred = out["logits"].float().argmax(1).cpu().numpy()
                    true = batch.semantic.numpy()
                    labelled = true != IGNORE
                    confusion += np.bincount(
                        true[labelled] * NUM_CLASSES + pred[labelled], minlength=NUM_CLASSES**2
                    ).reshape(NUM_CLASSES, NUM_CLASSES)
                if self.parts:
                    embedding = out["embedding"].float().cpu().numpy()
                    part = batch.points.part.numpy()
                    bounds = batch.points.cu_seqlens.tolist()
                    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
                        true_parts = part[s:e]
                        k = len(np.unique(true_parts))
                        if k < 2:  # one part: any clustering scores perfectly, which says nothing
                            continue
                        found = cluster_embeddings(embedding[s:e], num_parts=k, seed=self.seed)
                        ri_errors.append(1.0 - rand_index(found, true_parts))
                        aris.append(adjusted_rand_index(found, true_parts))
        finally:
            model.train(was_training)
        return {**self._semantic_metrics(confusion), **self._part_metrics(ri_errors, aris)}

    def _semantic_metrics(self, confusion: np.ndarray) -> dict[str, float]:
        total = int(confusion.sum())
        if not self.semantic or total == 0:
            return {}
        tp = np.diag(confusion).astype(np.float64)
        true_count, pred_count = confusion.sum(1), confusion.sum(0)
        present = true_count > 0
        iou = tp / np.maximum(true_count + pred_count - tp, 1)
        logs = {"miou": float(iou[present].mean()), "accuracy": float(tp.sum() / total)}
        logs.update({f"iou/{CLASSES[c]}": float(iou[c]) for c in np.nonzero(present)[0]})
        return logs

    def _part_metrics(self, ri_errors: list[float], aris: list[float]) -> dict[str, float]:
        if not ri_errors:
            return {}
        return {"rand_index_error": float(np.mean(ri_errors)), "ari": float(np.mean(aris))}


__all__ = ["ANNOTATE_HINT", "SegmentTask"]
