"""Training BoundaryNet (partgen.models.boundary_net) on meshes with human segmentations.

Legend: E edges of one mesh's face graph, D edge descriptors.

Each mesh contributes its edges' descriptors (partgen.data_pipeline.boundary.edge_features) and
the share of its human segmentations that cut each edge. The loss is binary cross-entropy with
that soft target, each edge weighted by its length over the mesh's total, so a mesh counts as much
as any other whatever its face count and a cut costs what its boundary is long (the quantity the
normalised cuts see). Every edge some person cut is kept; of the others a random subset
(max_edges per mesh), re-weighted by the inverse of its sampling rate so the loss stays unbiased.
The whole set fits in memory (a few million edges): plain mini-batch AdamW, full epochs, cosine
learning rate, fixed seed: the same data gives the same model.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from partgen.models.boundary_net import BoundaryNet


@dataclasses.dataclass
class BoundaryTrainConfig:
    hidden: int = 64
    depth: int = 3
    epochs: int = 10
    batch_size: int = 4096
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_edges: int = 4000  # edges no person cut, sampled per mesh
    seed: int = 0


@dataclasses.dataclass
class MeshEdges:
    """One training mesh: (E, D) descriptors, (E,) cut share, (E,) edge length."""

    features: np.ndarray
    target: np.ndarray
    length: np.ndarray


def _sample(meshes: list[MeshEdges], max_edges: int, rng: np.random.Generator):
    xs, ys, ws = [], [], []
    for mesh in meshes:
        weight = mesh.length.astype(np.float64) / max(float(mesh.length.sum()), 1e-30)
        cut = np.nonzero(mesh.target > 0)[0]
        rest = np.nonzero(mesh.target <= 0)[0]
        if len(rest) > max_edges:
            keep = rng.choice(rest, max_edges, replace=False)
            weight[keep] *= len(rest) / max_edges
            rest = keep
        idx = np.concatenate([cut, rest])
        xs.append(mesh.features[idx])
        ys.append(mesh.target[idx])
        ws.append(weight[idx] * len(meshes))  # mean weight about 1 per mesh's edge set
    return (
        torch.from_numpy(np.concatenate(xs)).float(),
        torch.from_numpy(np.concatenate(ys)).float(),
        torch.from_numpy(np.concatenate(ws)).float(),
    )


def fit_boundary_net(meshes: list[MeshEdges], cfg: BoundaryTrainConfig | None = None, log=None) -> BoundaryNet:
    """A BoundaryNet trained on meshes (see the module doc), in eval mode."""
    cfg = cfg or BoundaryTrainConfig()
    if not meshes:
        raise ValueError("fit_boundary_net: no training meshes")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    x, y, w = _sample(meshes, cfg.max_edges, rng)
    w = w / w.mean()
    model = BoundaryNet(x.shape[1], cfg.hidden, cfg.depth)
    model.set_normalisation(x)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(x) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = (F.binary_cross_entropy_with_logits(model(x[idx]), y[idx], reduction="none") * w[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log is not None:
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / len(x):.4f}")
    return model.eval().requires_grad_(False)


FEATURE_VERSION = 1  # bump when partgen.data_pipeline.boundary's descriptors change: cached ones are recomputed


def psb_edges(dataset, index: int, cache: Path | None = None) -> MeshEdges:
    """One PSB mesh's edge descriptors and human cut shares, cached as npz in `cache` (keyed by
    the mesh file's name, size and mtime and FEATURE_VERSION)."""
    from partgen.data_pipeline.boundary import edge_features, human_boundary

    mesh_id = dataset.index[index][0]
    path = Path(dataset.root) / "off" / f"{mesh_id}.off"
    file = None
    if cache is not None:
        st = path.stat()
        file = Path(cache) / f"v{FEATURE_VERSION}-{mesh_id}-{st.st_size}-{st.st_mtime_ns}.npz"
        if file.is_file():
            with np.load(file) as z:
                return MeshEdges(z["features"], z["target"], z["length"])
    mesh = dataset[index]
    graph, features = edge_features(mesh.vertices, mesh.faces)
    edges = MeshEdges(features, human_boundary(graph, mesh.segmentations), graph.length.astype(np.float32))
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".npz")
        os.close(fd)
        np.savez(tmp, features=edges.features, target=edges.target, length=edges.length)
        os.replace(tmp, file)
    return edges


def _psb_edges_job(args) -> MeshEdges:
    from partgen.data_pipeline.psb import PSBDataset

    root, mesh_id, cache = args
    dataset = PSBDataset(root)  # the whole benchmark: find the mesh by id, whatever subset the caller holds
    return psb_edges(dataset, [row[0] for row in dataset.index].index(mesh_id), cache)


def psb_edge_set(dataset, cache: Path | None, workers: int = 2) -> list[MeshEdges]:
    """psb_edges of every mesh of dataset (a PSBDataset, possibly a subset), in its order, in `workers` processes."""
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(dataset.root, mesh_id, cache) for mesh_id, _ in dataset.index]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_psb_edges_job, jobs))
