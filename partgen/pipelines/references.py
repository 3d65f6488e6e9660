"""Reference shapes for stage 1: reference-augmented layout generation (after Phidias, ICLR 2025).

Legend: N reference shapes, L latents per set, C latent channels, E image-embedding size (1280),
Q pixel-descriptor size (1216), V / F vertices / faces of a reference's coarse mesh.

A ReferenceBank holds, for every shape of the training split (never a held-out or Scopia asset):
    latents      (N, L, C)  the layout VAE's posterior means of the shape (anchored: xyz first)
    embeddings   (N, E)     the icon's pooled ImageNet EfficientNet-Lite0 features, unit length
    descriptors  (N, Q)     the icon's pixel descriptor (partgen.eval.retrieval.icon_descriptor)
    meshes       the shape's normalised mesh decimated to at most `faces` triangles (per part, in
                 proportion), with each face's authored part and the parts' names
    icons        the icon file's bytes (PNG): the source condition when stage 1 edits the reference
                 towards the new image (reference_edit="flowedit"); banks built before them have none
and finds, for a new image, the shape whose icon is nearest by both measures (each distance divided
by its median over the bank, then summed: the features know the category, the pixels the
silhouette; on the held-out icons the pair retrieves better than either alone).

LayoutGenerator (partgen.pipelines.layout) starts the layout flow from the latents of the shape chosen
among the nearest (LayoutGenerator.choose_reference: the image's outline decides among them)
at t = strength instead of pure noise: the flow still generates the set, conditioned on the image,
but from a real shape of the right kind. Two ways: SDEdit (noise the reference to t, then sample
with the new image) or FlowEdit (partgen.diffusion.flow.flow_edit: move the reference by the
difference of the flow's velocities under the new image and under the reference's own icon, at
coupled noisy points; where the two icons ask the same, nothing moves). Because the flow is equivariant over the set
and starts from the reference's rows, generated row i is reference row i moved; the reference's
coarse mesh is carried along by the anchors' motion (deform_by_anchors) and becomes the layout:
its surface voxels are stage 2's tokens and its authored parts the parts. The CPU-trained layout
VAE decodes a blur (its own training shapes come back with normal consistency ~0.6), the moved
anchors and mesh do not.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

BANK_FILE = "references.safetensors"


@dataclasses.dataclass
class ReferenceMesh:
    """A reference's coarse mesh: vertices (V, 3) float32 in the normalised cube, faces (F, 3) int64,
    face_part (F,) int64 indices into part_names."""

    vertices: np.ndarray
    faces: np.ndarray
    face_part: np.ndarray
    part_names: list[str]


@dataclasses.dataclass
class ReferenceBank:
    """See the module docstring. scales: the median embedding and descriptor distances over the bank."""

    keys: list[str]
    latents: torch.Tensor
    embeddings: torch.Tensor
    descriptors: torch.Tensor
    meshes: list[ReferenceMesh]
    scales: tuple[float, float]
    icons: list[bytes] | None = None

    def __post_init__(self):
        n = len(self.keys)
        fields = (self.latents, self.embeddings, self.descriptors, self.meshes, self.icons or self.keys)
        if not n or any(len(x) != n for x in fields):
            raise ValueError(f"a reference bank needs one row per key in every field, got {n} keys")

    def icon(self, index: int, size: int) -> torch.Tensor:
        """(3, size, size) float32: reference `index`'s icon as the flow reads images (load_image)."""
        from partgen.models.image_encoder import image_from_bytes

        if self.icons is None:
            raise ValueError(
                "this reference bank holds no icons (built before them): rebuild it with scripts/build_references.py"
            )
        return image_from_bytes(self.icons[index], size, f"reference {self.keys[index]}: icon")

    def __len__(self) -> int:
        return len(self.keys)

    def embedding_distances(self, embedding: torch.Tensor) -> torch.Tensor:
        """(N,) cosine distance of an image's unit embedding (E,) to each reference's icon."""
        return 1.0 - self.embeddings.float() @ embedding.float()

    def distances(self, embedding: torch.Tensor, descriptor: torch.Tensor) -> torch.Tensor:
        """(N,) combined distance of an image, from its unit embedding (E,) and descriptor (Q,)."""
        pixels = (self.descriptors.float() - descriptor.float()[None]).norm(dim=1)
        return self.embedding_distances(embedding) / self.scales[0] + pixels / self.scales[1]

    def part_count(self, embedding: torch.Tensor, neighbours: int = 8, max_parts: int = 8) -> int:
        """The authored part count (1..max_parts) an image's object most likely has, from its unit
        embedding (E,): of the `neighbours` references whose icons are nearest by embedding
        (embedding_distances), the count within one of the most of their own counts; of tied counts,
        the one nearest the nearest reference's. One shape's count is a noisy guess, several
        neighbours' are right more often: on the 469 training icons, leave one out, this is within
        one of the icon's own count for 0.58 of them, the nearest reference's own count for 0.50."""
        distances = self.embedding_distances(embedding)
        nearest = torch.argsort(distances)[: max(1, int(neighbours))]
        nearest = nearest[torch.isfinite(distances[nearest])]
        if not len(nearest):
            raise ValueError("part_count: no reference is left to count from")
        counts = np.array([min(len(self.meshes[int(i)].part_names), max_parts) for i in nearest])
        candidates = np.arange(1, max_parts + 1)
        support = (np.abs(counts[None] - candidates[:, None]) <= 1).sum(1)
        return int(candidates[np.lexsort((np.abs(candidates - counts[0]), -support))[0]])

    def save(self, path: str | Path) -> Path:
        """One safetensors file: the tensors (fp16 where precision allows) and, in its metadata, the
        keys, part names and scales."""
        from safetensors.torch import save_file

        counts = lambda attr: torch.tensor([len(getattr(m, attr)) for m in self.meshes])  # noqa: E731
        tensors = {
            "latents": self.latents.float().contiguous(),
            "embeddings": self.embeddings.half().contiguous(),
            "descriptors": self.descriptors.half().contiguous(),
            "vertices": torch.from_numpy(np.concatenate([m.vertices for m in self.meshes]).astype(np.float16)),
            "faces": torch.from_numpy(np.concatenate([m.faces for m in self.meshes]).astype(np.int16)),
            "face_part": torch.from_numpy(np.concatenate([m.face_part for m in self.meshes]).astype(np.int8)),
            "vertex_counts": counts("vertices"),
            "face_counts": counts("faces"),
        }
        if self.icons is not None:
            tensors["icons"] = torch.frombuffer(bytearray(b"".join(self.icons)), dtype=torch.uint8).clone()
            tensors["icon_sizes"] = torch.tensor([len(icon) for icon in self.icons])
        meta = {
            "keys": json.dumps(self.keys),
            "part_names": json.dumps([m.part_names for m in self.meshes]),
            "scales": json.dumps(list(self.scales)),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceBank:
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                t = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            keys, names, scales = (json.loads(meta[k]) for k in ("keys", "part_names", "scales"))
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a reference bank ({err})") from None
        vertices = np.split(t["vertices"].float().numpy(), np.cumsum(t["vertex_counts"].numpy())[:-1])
        cuts = np.cumsum(t["face_counts"].numpy())[:-1]
        faces = np.split(t["faces"].numpy().astype(np.int64), cuts)
        parts = np.split(t["face_part"].numpy().astype(np.int64), cuts)
        meshes = [ReferenceMesh(*m) for m in zip(vertices, faces, parts, names, strict=True)]
        icons = None
        if "icons" in t:
            data = t["icons"].numpy().tobytes()
            ends = np.cumsum(t["icon_sizes"].numpy()).tolist()
            icons = [data[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        return cls(keys, t["latents"], t["embeddings"].float(), t["descriptors"].float(), meshes, tuple(scales), icons)


def deform_by_anchors(
    points: np.ndarray, before: np.ndarray, after: np.ndarray, k: int = 8, softness: float = 0.02
) -> np.ndarray:
    """Move points (P, 3) with the anchors that moved from before (A, 3) to after (A, 3): each point by
    a weighted mean of its k nearest anchors' displacements, weights exp(-(d / (d_1 + softness))^2)
    (d_1: the distance to its nearest anchor), so a point follows the anchors round it and the field
    stays smooth between them."""
    from scipy.spatial import cKDTree

    points, before, after = (np.asarray(a, np.float64) for a in (points, before, after))
    if before.shape != after.shape or before.ndim != 2 or before.shape[1] != 3:
        raise ValueError(f"anchors before {before.shape} and after {after.shape} must both be (A, 3)")
    k = min(k, len(before))
    dist, idx = cKDTree(before).query(points, k=k)
    dist, idx = dist.reshape(len(points), k), idx.reshape(len(points), k)
    w = np.exp(-((dist / (dist[:, :1] + softness)) ** 2))
    w /= w.sum(1, keepdims=True)
    return points + (w[..., None] * (after - before)[idx]).sum(1)


def part_class_names(names: list[str]) -> list[str]:
    """Authored part names -> the taxonomy's class names ("Pied_1" -> leg), "part" where it says nothing."""
    from partgen.data_pipeline.taxonomy import explain

    return [explain(name)[0] or "part" for name in names]


def decimate_parts(
    vertices: np.ndarray, faces: np.ndarray, face_part: np.ndarray, max_faces: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mesh with at most ~max_faces triangles, each part decimated on its own (its share of the
    budget in proportion to its faces, at least 12) so every face keeps its part."""
    from partgen.pipelines.generate import simplify

    if len(faces) <= max_faces:
        return vertices, faces, face_part
    out_v, out_f, out_p, offset = [], [], [], 0
    for p in np.unique(face_part):
        sub = faces[face_part == p]
        used, local = np.unique(sub, return_inverse=True)
        budget = max(12, int(max_faces * len(sub) / len(faces)))
        v, f = simplify(vertices[used], local.reshape(-1, 3), budget)
        out_v.append(v)
        out_f.append(f + offset)
        out_p.append(np.full(len(f), p))
        offset += len(v)
    return np.concatenate(out_v), np.concatenate(out_f), np.concatenate(out_p)


@torch.no_grad()
def build_reference_bank(
    records, vae, num_points: int = 4096, max_faces: int = 2000, seed: int = 0, progress: bool = True
) -> ReferenceBank:
    """A bank of the training split of `records` (an annotation folder; partgen.data_pipeline.datasets
    splits it, and refuses evaluation-only libraries): each shape encoded by the layout VAE `vae` from
    num_points of its surface samples (the subset the layout flow's training used first), its icon
    embedded and kept, its mesh decimated to max_faces."""
    from partgen.data_pipeline.datasets import ShapeRecords
    from partgen.eval.retrieval import icon_descriptor, read_icon
    from partgen.models.efficientnet import efficientnet_lite0
    from partgen.models.image_encoder import image_tensor
    from partgen.models.vecset_vae import encode_record_samples

    net = efficientnet_lite0()
    ds = ShapeRecords(records, split="train", seed=seed)
    keys, latents, embeddings, descriptors, meshes, icons = [], [], [], [], [], []
    items = range(len(ds))
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="reference bank", unit="shape")
    for i in items:
        ref = ds.records[i]
        icon_path = Path(ref.path) / "icon" / "icon.png"
        icon = read_icon(icon_path)
        post = encode_record_samples(vae, ds.load(i), num_points, seed, i)  # the flow's first subset
        with np.load(Path(ref.path) / "mesh.npz") as z:
            mesh = decimate_parts(
                z["vertices"].astype(np.float64),
                z["faces"].astype(np.int64),
                z["face_part"].astype(np.int64),
                max_faces,
            )
        keys.append(ref.key)
        latents.append(post.mean)
        embeddings.append(net.embed(image_tensor(icon, 128)[None])[0])
        descriptors.append(torch.from_numpy(icon_descriptor(icon)))
        icons.append(icon_path.read_bytes())
        meshes.append(
            ReferenceMesh(mesh[0].astype(np.float32), mesh[1], mesh[2], part_class_names(list(ref.part_names)))
        )
    embeddings, descriptors = torch.stack(embeddings), torch.stack(descriptors)
    scales = (
        float(torch.median(1.0 - embeddings @ embeddings.T)),
        float(torch.median(torch.cdist(descriptors, descriptors))),
    )
    return ReferenceBank(keys, torch.stack(latents), embeddings, descriptors, meshes, scales, icons)


__all__ = [
    "BANK_FILE",
    "ReferenceBank",
    "ReferenceMesh",
    "build_reference_bank",
    "decimate_parts",
    "deform_by_anchors",
    "part_class_names",
]
