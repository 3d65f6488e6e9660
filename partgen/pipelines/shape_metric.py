"""Icon embeddings made to measure shapes: a learned projection for the reference bank's retrieval.

The bank (partgen.pipelines.references) finds a new image's reference by the cosine distance of
ImageNet EfficientNet-Lite0 features. Those features know photographs' categories and colours; two
icons can be near in them (a blue plastic cup and a blue park bin) while their shapes are far apart.
A linear projection P (E x D) of the features is fitted so that the softmax over the bank's icons of
an icon's projected cosine similarities (temperature `tau`) matches the softmax of its shape's 3D
similarity to theirs: -(chamfer / chamfer_temperature) - (1 - normal consistency) /
normal_temperature (a listwise loss, as in learning to rank). Retrieval then compares images in the
space where near means a near surface, in place and in the direction of its normals: the two
measures the generator is judged by.

shape_similarities gives those 3D measures between the bank's meshes, each normalised to its bounding
box (centre 0, longest side 1): points sampled on each surface are binned into a grid of
`resolution` cells a side; a distance transform of each occupancy grid gives every cell's distance to
that surface and (its nearest occupied cell) the normal of that surface there. Chamfer is the mean
distance of one shape's points to the other surface, summed both ways; normal consistency the mean
|cos| between a point's normal and the other surface's nearest normal, averaged both ways.

Chosen by leave-one-out over the bank's training icons (the projection fitted on 4/5 of the shapes,
the other fifth queried against the whole bank less itself; generator README, ninth session).
"""

from __future__ import annotations

import numpy as np
import torch


def shape_similarities(
    meshes, resolution: int = 64, points: int = 1024, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(N, N) symmetric Chamfer-L1 distances and (N, N) normal consistencies between meshes (a sequence
    of (vertices (V, 3), faces (F, 3)) or objects with .vertices and .faces), each normalised to its
    bounding box (module docstring); float32."""
    import trimesh
    from scipy import ndimage

    from partgen.eval.geometry import normalise_box

    low, cell = -0.55, 1.1 / resolution
    rng = np.random.default_rng(seed)
    normal_grids, sample_cells, sample_normals, distance_grids = [], [], [], []
    for i, mesh in enumerate(meshes):
        vertices, faces = (mesh.vertices, mesh.faces) if hasattr(mesh, "vertices") else mesh
        vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
        if not len(faces):
            raise ValueError(f"shape_similarities: mesh {i} has no faces")
        surface = trimesh.Trimesh(normalise_box(vertices, faces), faces, process=False)
        where, face = trimesh.sample.sample_surface(surface, 20 * points, seed=seed + i)
        normals = surface.face_normals[face]
        cells = np.clip(((where - low) / cell).astype(np.int64), 0, resolution - 1)
        occupied = np.zeros((resolution,) * 3, bool)
        occupied[tuple(cells.T)] = True
        cell_normal = np.zeros((resolution,) * 3 + (3,), np.float32)
        cell_normal[tuple(cells.T)] = normals
        distance, nearest = ndimage.distance_transform_edt(~occupied, return_indices=True)
        distance_grids.append((distance * cell).astype(np.float32))
        normal_grids.append(cell_normal[tuple(nearest)].astype(np.float16))
        pick = rng.choice(len(cells), min(points, len(cells)), replace=False)
        sample_cells.append(cells[pick])
        sample_normals.append(normals[pick].astype(np.float32))
    distance_grids, normal_grids = np.stack(distance_grids), np.stack(normal_grids)
    n = len(distance_grids)
    to_other, along = np.zeros((n, n), np.float32), np.zeros((n, n), np.float32)
    for i in range(n):
        at = tuple(sample_cells[i].T)
        to_other[i] = distance_grids[(slice(None), *at)].mean(1)
        other_normals = normal_grids[(slice(None), *at)].astype(np.float32)  # (N, P, 3)
        along[i] = np.abs((other_normals * sample_normals[i][None]).sum(-1)).mean(1)
    return to_other + to_other.T, (along + along.T) / 2


def fit_projection(
    embeddings: torch.Tensor,
    chamfer: np.ndarray,
    normal_consistency: np.ndarray,
    dim: int = 256,
    chamfer_temperature: float = 0.06,
    normal_temperature: float = 0.04,
    tau: float = 0.05,
    steps: int = 1500,
    batch: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> torch.Tensor:
    """(E, dim) float32 projection of the embeddings (N, E) under which each one's softmax of cosine
    similarities to all N (temperature tau) matches its shape's softmax of 3D similarities (module
    docstring), fitted by AdamW over `steps` batches of `batch` rows; seeded."""
    embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
    n = len(embeddings)
    if chamfer.shape != (n, n) or normal_consistency.shape != (n, n) or n < 2:
        raise ValueError(
            f"fit_projection needs (N, N) shape measures for N = {n} >= 2 embeddings, got "
            f"{chamfer.shape} and {normal_consistency.shape}"
        )
    similarity = -torch.as_tensor(chamfer, dtype=torch.float32) / chamfer_temperature
    similarity -= (1 - torch.as_tensor(normal_consistency, dtype=torch.float32)) / normal_temperature
    target = torch.softmax(similarity, 1)
    generator = torch.Generator().manual_seed(seed)
    projection = torch.nn.Linear(embeddings.shape[1], dim, bias=False)
    with torch.no_grad():
        projection.weight.normal_(0, embeddings.shape[1] ** -0.5, generator=generator)
    optimiser = torch.optim.AdamW(projection.parameters(), lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            rows = torch.randint(0, n, (min(batch, n),), generator=generator)
            keys = torch.nn.functional.normalize(projection(embeddings), dim=1)
            logits = keys[rows] @ keys.T / tau
            loss = -(target[rows] * torch.log_softmax(logits, 1)).sum(1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return projection.weight.detach().T.contiguous()


def fit_bank_projection(bank, **options):
    """The reference bank (partgen.pipelines.references.ReferenceBank) retrieving through a projection
    fitted to its own shapes (shape_similarities of its meshes; fit_projection's options)."""
    chamfer, normal_consistency = shape_similarities(bank.meshes)
    return bank.with_projection(fit_projection(bank.embeddings, chamfer, normal_consistency, **options))


def project(embeddings: torch.Tensor, projection: torch.Tensor | None) -> torch.Tensor:
    """Unit-length embeddings (..., E) seen through the projection (E, D) (None: as they are)."""
    if projection is None:
        return embeddings.float()
    return torch.nn.functional.normalize(embeddings.float() @ projection.float(), dim=-1)


__all__ = ["fit_bank_projection", "fit_projection", "project", "shape_similarities"]
