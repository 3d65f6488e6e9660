"""Point Transformer part segmentation at inference: point clouds and meshes -> semantic classes and parts.

Legend: n points, F faces, E embedding channels, L semantic classes (taxonomy.CLASSES), P parts.

Segmenter wraps a trained PointSegmenter (partgen.models.point_transformer) loaded from a model
folder (model.safetensors + model.yaml: a checkpoint <run>/checkpoints/step_XXXXXXX, whose
ema.safetensors is preferred; a run's model/ that partgen-train exports; the bundled default):
    segment_points(points, normals)      per point: semantic class, embedding, part
    segment_mesh(vertices, faces)        per face: part labels and part names (the learned annotator)
A shape is normalised into the cube [-0.5, 0.5]^3 first (the space the model was trained in). The
model runs at its training density: the points are split into random disjoint subsets of about
points_per_pass points each, one batch item per subset, so every point gets a prediction from a
cloud as dense as the training clouds. A mesh is read through num_samples surface samples; each
face takes the majority class of its samples, a face without samples that of the nearest sample.
Parts are class-agnostic (parts_from="semantic" makes one part per predicted
class instead, for mode=semantic models), and named after the semantic class covering most of
their area ("leg", "leg_2"):
    points, and meshes with mesh_parts="cluster": k-means on the embedding
        (partgen.eval.clustering; num_parts given or chosen by silhouette);
    meshes with mesh_parts="graph" (default): with a boundary model (BoundaryNet, the bundled
        one in assets/segmenter/boundary, trained on the Princeton benchmark's human cuts), its
        cut probabilities of the face graph's edges (partgen.data_pipeline.boundary descriptors)
        are the affinities that normalised cuts split; without one (boundary=None), each face's
        mean sample embedding joins the crease and thickness affinities of the face graph
        (partgen.data_pipeline.geometric, face_features). Either way parts are connected and
        their boundaries follow edges of the mesh, where k-means boundaries cut across faces.

segment_faces is the hook parts.method=learned calls (partgen.data_pipeline.parts); read_shape,
summarise and write_outputs serve `partgen-segment input=MESH_OR_CLOUD output=DIR` (partgen.cli).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from partgen.data_pipeline.boundary import edge_features
from partgen.data_pipeline.geometric import GeometricConfig, dual_graph, shape_diameter
from partgen.data_pipeline.geometric import segment_mesh as segment_mesh_graph
from partgen.data_pipeline.mesh_io import FORMATS, MAX_BYTES, load_mesh, normalise
from partgen.data_pipeline.samples import sample_surface
from partgen.data_pipeline.taxonomy import CLASSES
from partgen.eval.clustering import cluster_embeddings
from partgen.models.boundary_net import BoundaryNet
from partgen.models.io import CONFIG, choose_device, find_model_folder, load_model, load_trained, trained_weights
from partgen.models.point_transformer import PointSegmenter
from partgen.pipelines.outputs import InputError, palette
from partgen.structures import Points, cu_seqlens_from_lengths

TRAIN_CONFIG = "train_config.yaml"  # the training run's composed config, kept beside bundled weights
BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "segmenter"
BUNDLED_BOUNDARY = BUNDLED / "boundary"  # the BoundaryNet trained on all of psb-dev
DEFAULT_POINTS_PER_PASS = 4096
CLOUD_FORMATS = (".xyz", ".txt", ".pts", ".npy")
MIN_POINTS = 4
TRAIN_HINT = (
    "train one with `partgen-train experiment=segment_parts` (or segment_semantic) and pass "
    "checkpoint=runs/train/<run> (its model/ folder) or a checkpoint folder <run>/checkpoints/step_XXXXXXX"
)
PartsFrom = Literal["embedding", "semantic"]
MeshParts = Literal["graph", "cluster"]


# --- checkpoints -----------------------------------------------------------------------------------


def resolve_checkpoint(path: str | Path | None) -> Path:
    """The model folder (model.yaml + model.safetensors) for checkpoint=path.

    path: a model folder (a checkpoint step_XXXXXXX, a run's model/); a run folder (its model/,
    the weights partgen-train ships, else its newest checkpoints/step_*); a checkpoints/ folder
    (its newest step_*); None: the bundled default (partgen/assets/segmenter).
    """
    if path is None:
        if (BUNDLED / CONFIG).is_file():
            return BUNDLED
        raise FileNotFoundError(f"no segmenter checkpoint given and no bundled default at {BUNDLED}; {TRAIN_HINT}")
    return find_model_folder(path, TRAIN_HINT)


def _training_points(folder: Path) -> int | None:
    """task.num_points of the run a model folder comes from, if it can be found: the folder's
    trainer.json (a checkpoint) or train_config.yaml (the bundled model keeps its run's config),
    the newest checkpoint's of its run (a run's model/), or the run's Hydra config (.hydra/config.yaml)."""
    folder = folder.resolve()
    if folder.parent.name == "checkpoints":
        run = folder.parent.parent
    elif folder.name == "model":
        run = folder.parent
    else:
        run = None
    candidates = [folder / "trainer.json", folder / TRAIN_CONFIG]
    if run is not None:
        steps = sorted((run / "checkpoints").glob("step_*"))
        candidates += [steps[-1] / "trainer.json"] if steps else []
        candidates.append(run / ".hydra" / "config.yaml")
    for file in candidates:
        if not file.is_file():
            continue
        try:
            if file.suffix == ".json":
                value = json.loads(file.read_text()).get("config", {}).get("task", {}).get("num_points")
            else:
                from omegaconf import OmegaConf

                value = OmegaConf.select(OmegaConf.load(file), "task.num_points")
            if value is not None:
                return int(value)
        except Exception:  # a file we cannot read (or resolve) only costs the default
            continue
    return None


# --- the segmenter ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Segmentation:
    """Labels of the elements (faces of a mesh or points of a cloud) of one shape.

    part:       (n,) int64 part id 0..P-1 (roughly largest first: k-means clusters come by size)
    semantic:   (n,) int64 class index into taxonomy.CLASSES
    names:      P part names, unique ("leg", "leg_2")
    part_class: (P,) int64 the majority class of each part
    """

    part: np.ndarray
    semantic: np.ndarray
    names: list[str]
    part_class: np.ndarray


def _majority(element: np.ndarray, label: np.ndarray, num_elements: int) -> np.ndarray:
    """(s,) element index and (s,) label of s votes -> (num_elements,) majority label, -1 without votes.

    Ties go to the smallest label.
    """
    out = np.full(num_elements, -1, np.int64)
    if len(element) == 0:
        return out
    width = int(label.max()) + 1
    keys, counts = np.unique(element.astype(np.int64) * width + label, return_counts=True)
    el, lab = keys // width, keys % width
    order = np.lexsort((-counts, el))  # by element, then by votes (descending), then by label (stable)
    el, lab = el[order], lab[order]
    first = np.r_[True, el[1:] != el[:-1]]
    out[el[first]] = lab[first]
    return out


def _part_names(
    part: np.ndarray, semantic: np.ndarray, num_parts: int, fallback: np.ndarray | None = None
) -> tuple[list[str], np.ndarray]:
    """Each part's majority class over (part, class) votes, and a unique name from it: leg, leg_2, ...

    fallback: (num_parts,) classes for parts without a vote (else class 0).
    """
    part_class = _majority(part, semantic, num_parts)
    empty = part_class < 0
    part_class[empty] = 0 if fallback is None else fallback[empty]
    names, seen = [], {}
    for c in part_class:
        base = CLASSES[int(c)]
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names, part_class


def _compact(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..P-1 keeping their order (ids that no element kept disappear)."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.astype(np.int64)


def estimate_normals(points: np.ndarray, neighbours: int = 16) -> np.ndarray:
    """(n, 3) -> (n, 3) unit normals by PCA of the nearest points, oriented away from the centroid.

    For clouds given without normals to a model that reads them; the orientation is a heuristic
    (right for star-shaped surfaces), as the model never saw a cloud without normals.
    """
    from scipy.spatial import cKDTree

    n = len(points)
    k = min(neighbours, n)
    _, idx = cKDTree(points).query(points, k=k)
    nbr = points[idx.reshape(n, k)]  # (n, k, 3)
    centred = nbr - nbr.mean(1, keepdims=True)
    _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))
    normals = vectors[:, :, 0]  # eigenvector of the smallest eigenvalue
    flip = ((points - points.mean(0)) * normals).sum(1) < 0
    normals[flip] *= -1
    return (normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Segmenter:
    """A trained PointSegmenter with what inference needs around it (module docstring).

    model:           a PointSegmenter (its weights are used as they are; eval mode is set here)
    points_per_pass: points per batch item the model sees (its training task.num_points)
    num_samples:     surface samples a mesh is read through, and the most points of a cloud the
                     model runs on (the other points take the labels of their nearest predicted one)
    max_parts:       the largest part count chosen automatically
    parts_from:      "embedding": class-agnostic clustering; "semantic": one part per predicted class
                     (for a model trained with mode=semantic, whose embedding is untrained)
    mesh_parts:      meshes, parts_from="embedding": "graph" (normalised cuts of the face graph with
                     the embedding in its affinities) or "cluster" (k-means of the samples)
    graph:           the face-graph settings for mesh_parts="graph" (feature_sigma weighs the embedding,
                     boundary_sigma the learned cut probabilities, geometry_terms keeps creases and
                     thickness beside them)
    boundary:        a BoundaryNet whose cut probabilities join the face graph's affinities (meshes,
                     mesh_parts="graph"); None: the embedding and the geometric terms only
    embedding_in_graph: with a boundary model, whether the Point Transformer's embedding joins too
    passes_per_batch: batch items per forward pass (bounds memory)
    seed:            sampling, subsets and clustering are deterministic for a seed
    source:          where the weights came from (for reports)
    """

    def __init__(
        self,
        model: PointSegmenter,
        points_per_pass: int = DEFAULT_POINTS_PER_PASS,
        num_samples: int = 20_000,
        max_parts: int = 16,
        parts_from: PartsFrom = "embedding",
        mesh_parts: MeshParts = "graph",
        graph: GeometricConfig | None = None,
        passes_per_batch: int = 8,
        seed: int = 0,
        source: str = "",
        boundary: BoundaryNet | None = None,
        embedding_in_graph: bool = False,
    ):
        if not isinstance(model, PointSegmenter):
            raise ValueError(f"a segmenter needs a PointSegmenter, got {type(model).__name__}")
        if parts_from not in ("embedding", "semantic"):
            raise ValueError(f"parts_from must be 'embedding' or 'semantic', got {parts_from!r}")
        if mesh_parts not in ("graph", "cluster"):
            raise ValueError(f"mesh_parts must be 'graph' or 'cluster', got {mesh_parts!r}")
        if min(points_per_pass, num_samples, max_parts, passes_per_batch) < 1:
            raise ValueError("points_per_pass, num_samples, max_parts and passes_per_batch must be positive")
        self.model = model.eval().requires_grad_(False)
        self.points_per_pass, self.num_samples, self.max_parts = int(points_per_pass), int(num_samples), int(max_parts)
        self.parts_from, self.passes_per_batch, self.seed = parts_from, int(passes_per_batch), int(seed)
        self.mesh_parts, self.graph = mesh_parts, graph or GeometricConfig(max_parts=max_parts)
        self.source = source
        if boundary is not None and not isinstance(boundary, BoundaryNet):
            raise ValueError(f"boundary must be a BoundaryNet, got {type(boundary).__name__}")
        self.boundary = None if boundary is None else boundary.eval().requires_grad_(False)
        self.embedding_in_graph = bool(embedding_in_graph)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str | torch.device | None = None,
        points_per_pass: int | None = None,
        boundary: str | Path | None = "bundled",
        **options,
    ) -> Segmenter:
        """Load a model folder, run folder or None (the bundled default); see resolve_checkpoint.

        boundary: the BoundaryNet for meshes: "bundled" (BUNDLED_BOUNDARY, when it is there), a
        model or run folder, or None (the embedding and geometric terms cut alone).

        EMA weights (ema.safetensors) are preferred when the folder has them. points_per_pass None
        reads the training run's task.num_points (trainer.json of its checkpoints, or its Hydra
        config), else DEFAULT_POINTS_PER_PASS. device None: cuda when available, else cpu.
        options: the other Segmenter arguments. FileNotFoundError names how to train one when absent.
        """
        folder = resolve_checkpoint(path)
        device = choose_device(device)
        weights = trained_weights(folder)
        model = load_model(folder, map_location=device, weights=weights)
        if points_per_pass is None:
            points_per_pass = _training_points(folder) or DEFAULT_POINTS_PER_PASS
        source = f"{folder}/{weights}"
        if boundary == "bundled":
            boundary = BUNDLED_BOUNDARY if (BUNDLED_BOUNDARY / CONFIG).is_file() else None
        net = None
        if boundary is not None:
            net = load_trained(boundary, BoundaryNet, "train one with scripts/train_boundary.py").to(device)
            source += f" + {resolve_boundary_source(boundary)}"
        return cls(model, points_per_pass=points_per_pass, source=source, boundary=net, **options)

    # --- points -----------------------------------------------------------------------------------

    @torch.no_grad()
    def _predict(self, coords: np.ndarray, normals: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) normalised points (+ normals) -> (n, L) float32 logits, (n, E) float32 embedding.

        The points go through the model in random disjoint subsets of about points_per_pass points.
        """
        n = len(coords)
        if self.model.use_normals and normals is None:
            normals = estimate_normals(coords)
        passes = max(1, round(n / self.points_per_pass))
        order = np.random.default_rng([self.seed, 1]).permutation(n)
        subsets = np.array_split(order, passes)
        logits = embedding = None
        for start in range(0, passes, self.passes_per_batch):
            chunk = subsets[start : start + self.passes_per_batch]
            rows = np.concatenate(chunk)
            xyz = torch.from_numpy(np.ascontiguousarray(coords[rows], np.float32)).to(self.device)
            nrm = None
            if normals is not None:
                nrm = torch.from_numpy(np.ascontiguousarray(normals[rows], np.float32)).to(self.device)
            points = Points(
                feats=xyz.new_zeros(len(rows), 0),
                cu_seqlens=cu_seqlens_from_lengths([len(s) for s in chunk], device=self.device),
                coords=xyz,
                normals=nrm,
            )
            out = self.model(points)
            lg, em = out["logits"].float().cpu().numpy(), out["embedding"].float().cpu().numpy()
            if logits is None:
                logits = np.empty((n, lg.shape[1]), np.float32)
                embedding = np.empty((n, em.shape[1]), np.float32)
            logits[rows], embedding[rows] = lg, em
        return logits, embedding

    def _parts(self, semantic: np.ndarray, embedding: np.ndarray, num_parts: int | None) -> np.ndarray:
        """(n,) per-point part ids (before compaction) from the embedding or the classes."""
        if self.parts_from == "semantic":
            return semantic.copy()
        return cluster_embeddings(embedding, num_parts=num_parts, max_parts=self.max_parts, seed=self.seed)

    def segment_points(
        self, points: np.ndarray, normals: np.ndarray | None = None, num_parts: int | None = None
    ) -> dict:
        """(n, 3) points (any frame; normalised here), optional (n, 3) normals ->
        {"semantic": (n,) int64 class index, "embedding": (n, E) float32, "parts": (n,) int64,
         "names": P part names}. Clouds over num_samples points run on a seeded subset; the
        other points take the labels of their nearest predicted point.
        """
        points, normals = _check_cloud(points, normals)
        coords = normalise(points).apply(points).astype(np.float32)
        n = len(coords)
        pred = (
            np.arange(n)
            if n <= self.num_samples
            else np.sort(np.random.default_rng([self.seed, 2]).choice(n, self.num_samples, replace=False))
        )
        logits, embedding = self._predict(coords[pred], None if normals is None else normals[pred])
        semantic = logits.argmax(1).astype(np.int64)
        part = _compact(self._parts(semantic, embedding, num_parts))
        if len(pred) < n:
            from scipy.spatial import cKDTree

            _, nearest = cKDTree(coords[pred]).query(coords, k=1)
            semantic, part, embedding = semantic[nearest], part[nearest], embedding[nearest]
            part = _compact(part)
        names, _ = _part_names(part, semantic, int(part.max()) + 1)
        return {"semantic": semantic, "embedding": embedding, "parts": part, "names": names}

    def label_points(self, points: np.ndarray, normals: np.ndarray | None = None, num_parts: int | None = None):
        """segment_points as a Segmentation (per-point part, class, part names and classes)."""
        out = self.segment_points(points, normals, num_parts)
        names, part_class = _part_names(out["parts"], out["semantic"], len(out["names"]))
        return Segmentation(out["parts"], out["semantic"], names, part_class)

    # --- meshes -----------------------------------------------------------------------------------

    def label_mesh(self, vertices: np.ndarray, faces: np.ndarray, num_parts: int | None = None) -> Segmentation:
        """(V, 3) vertices (any frame), (F, 3) triangles -> per-face Segmentation (module docstring)."""
        vertices = np.asarray(vertices, np.float64)
        faces = np.asarray(faces, np.int64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise InputError(f"expected (V, 3) vertices and (F, 3) faces, got {vertices.shape} and {faces.shape}")
        if len(faces) == 0 or len(vertices) == 0:
            raise InputError(f"empty mesh ({len(vertices)} vertices, {len(faces)} faces)")
        if not np.isfinite(vertices).all():
            raise InputError("vertices hold NaN or inf")
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise InputError(f"face indices outside [0, {len(vertices)})")
        v = normalise(vertices).apply(vertices)
        num_faces = len(faces)
        try:
            samples = sample_surface(v, faces, np.arange(num_faces), self.num_samples, seed=self.seed)
        except ValueError as err:  # zero surface area
            raise InputError(str(err)) from None
        sample_face = samples.part  # face_part = face index: each sample knows its face
        logits, embedding = self._predict(samples.points, samples.normals)
        point_semantic = logits.argmax(1).astype(np.int64)
        face_semantic = _majority(sample_face, point_semantic, num_faces)
        missing = np.nonzero(face_semantic < 0)[0]
        nearest = np.zeros(0, np.int64)
        if len(missing):
            from scipy.spatial import cKDTree

            _, nearest = cKDTree(samples.points).query(v[faces[missing]].mean(1), k=1)
            face_semantic[missing] = point_semantic[nearest]
        if self.parts_from == "embedding" and self.mesh_parts == "graph":
            face_embedding = np.zeros((num_faces, embedding.shape[1]))
            np.add.at(face_embedding, sample_face, embedding)  # the direction of the sum is that of the mean
            face_embedding[missing] = embedding[nearest]
            face_part = self._cut(v, faces, num_parts, face_embedding)
        else:
            point_part = self._parts(point_semantic, embedding, num_parts)
            face_part = _majority(sample_face, point_part, num_faces)
            face_part[missing] = point_part[nearest]
        face_part = _compact(face_part)
        num_parts = int(face_part.max()) + 1
        # parts are named by area (the samples are uniform over the surface), not by face count;
        # a part whose faces drew no sample (they took their nearest sample's) by its faces
        by_faces = np.maximum(_majority(face_part, face_semantic, num_parts), 0)
        names, part_class = _part_names(face_part[sample_face], point_semantic, num_parts, fallback=by_faces)
        return Segmentation(face_part, face_semantic, names, part_class)

    def _cut(self, v: np.ndarray, faces: np.ndarray, num_parts: int | None, face_embedding: np.ndarray) -> np.ndarray:
        """(F,) parts from normalised cuts of the face graph: the boundary model's cut probabilities
        (and the embedding when embedding_in_graph) in its affinities, else the embedding's."""
        if self.boundary is None:
            return segment_mesh_graph(v, faces, num_parts, self.graph, face_features=face_embedding)
        graph = dual_graph(v, faces)
        sdf = shape_diameter(v, faces, self.graph.sdf_rays)
        _, features = edge_features(v, faces, graph, sdf)
        cut = self.boundary.probability(features).numpy()
        return segment_mesh_graph(
            v,
            faces,
            num_parts,
            self.graph,
            face_features=face_embedding if self.embedding_in_graph else None,
            boundary=cut,
            graph=graph,
            sdf=sdf,
        )

    def segment_mesh(
        self, vertices: np.ndarray, faces: np.ndarray, num_parts: int | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """(V, 3) vertices, (F, 3) faces -> (F,) int64 part labels 0..P-1 and the P part names."""
        seg = self.label_mesh(vertices, faces, num_parts)
        return seg.part, seg.names


def resolve_boundary_source(path: str | Path) -> str:
    """The weights file a boundary argument names (for reports)."""
    folder = find_model_folder(path)
    return f"{folder}/{trained_weights(folder)}"


def _check_cloud(points: np.ndarray, normals: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, 3) float64 points and normals (or None), checked: enough points, finite values, matching shapes."""
    points = np.asarray(points, np.float64)
    normals = None if normals is None else np.asarray(normals, np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"points must be (n, 3), got {points.shape}")
    if len(points) < MIN_POINTS:
        raise InputError(f"a cloud needs at least {MIN_POINTS} points, got {len(points)}")
    if not np.isfinite(points).all():
        raise InputError("points hold NaN or inf")
    if normals is not None and (normals.shape != points.shape or not np.isfinite(normals).all()):
        raise InputError(f"normals must be finite and (n, 3) = {points.shape}, got {normals.shape}")
    return points, normals


# --- the learned annotator hook ----------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _cached(folder: str, mtime: float, options: tuple) -> Segmenter:
    return Segmenter.from_checkpoint(folder, **dict(options))


def segment_faces(vertices: np.ndarray, faces: np.ndarray, num_parts: int | None, checkpoint, **options) -> tuple:
    """The parts.method=learned hook: ((F,) int64 part labels, part names). checkpoint None: the
    bundled default; options: Segmenter arguments (mesh_parts="cluster", max_parts=...). The loaded
    segmenter is kept between calls (one per checkpoint folder and options)."""
    folder = resolve_checkpoint(checkpoint)
    weights = folder / trained_weights(folder)
    mtime = weights.stat().st_mtime if weights.is_file() else 0.0
    segmenter = _cached(str(folder.resolve()), mtime, tuple(sorted(options.items())))
    return segmenter.segment_mesh(vertices, faces, num_parts)


# --- partgen-segment ------------------------------------------------------------------------------


@dataclasses.dataclass
class Shape:
    """What partgen-segment read: a mesh (faces not None) or a cloud (normals optional)."""

    vertices: np.ndarray  # (V, 3) or (n, 3) float64, as in the file
    faces: np.ndarray | None = None  # (F, 3) int64
    normals: np.ndarray | None = None  # (n, 3) for clouds


def _ply_face_count(path: Path) -> int:
    """The face count a PLY header declares (0 for a point cloud); InputError when there is no header."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise InputError(f"{path}: not a PLY file (no ply ... end_header header)")
    for line in head[:end].decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[:2] == ["element", "face"]:
            try:
                return int(parts[2])
            except ValueError:
                raise InputError(f"{path}: bad PLY face count {parts[2]!r}") from None
    return 0


def _read_ply_cloud(path: Path) -> Shape:
    import trimesh

    try:
        cloud = trimesh.load(str(path), process=False)
    except Exception as err:  # trimesh raises many types for corrupt files
        raise InputError(f"{path}: cannot be read ({type(err).__name__}: {err})") from None
    vertices = np.asarray(getattr(cloud, "vertices", np.zeros((0, 3))), np.float64)
    normals = None
    try:
        data = cloud.metadata["_ply_raw"]["vertex"]["data"]
        normals = np.stack([np.asarray(data[k], np.float64).reshape(-1) for k in ("nx", "ny", "nz")], 1)
    except (KeyError, TypeError, AttributeError, ValueError):
        pass
    if normals is not None and normals.shape != vertices.shape:
        normals = None
    return Shape(vertices, normals=normals)


def read_shape(path: str | Path, max_bytes: int = MAX_BYTES) -> Shape:
    """A mesh (OBJ, OFF, PLY with faces, STL, GLB, GLTF) or a cloud (PLY without faces, XYZ/TXT/PTS
    text rows x y z [nx ny nz], NPY (n, 3) or (n, 6)); InputError or MeshError naming the file otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS + CLOUD_FORMATS:
        known = ", ".join(FORMATS + CLOUD_FORMATS)
        raise InputError(f"{path}: unsupported extension {suffix or '(none)'!r}; expected one of {known}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: empty file")
    if size > max_bytes:
        raise InputError(f"{path}: {size} bytes is over the limit of {max_bytes}")
    if suffix in FORMATS and not (suffix == ".ply" and _ply_face_count(path) == 0):
        mesh = load_mesh(path, max_bytes=max_bytes)
        return Shape(mesh.vertices, faces=mesh.faces)
    if suffix == ".ply":
        shape = _read_ply_cloud(path)
    else:
        try:
            with warnings.catch_warnings():  # an empty file is reported below, not warned about
                warnings.simplefilter("ignore", UserWarning)
                rows = (
                    np.load(path, allow_pickle=False) if suffix == ".npy" else np.loadtxt(path, ndmin=2, comments="#")
                )
        except Exception as err:  # numpy raises ValueError, OSError, EOFError... on a bad file
            raise InputError(f"{path}: cannot be read as a point cloud ({type(err).__name__}: {err})") from None
        rows = np.asarray(rows, np.float64)
        if rows.ndim != 2 or rows.shape[1] not in (3, 6):
            raise InputError(f"{path}: expected rows of x y z [nx ny nz], got an array of shape {rows.shape}")
        shape = Shape(rows[:, :3], normals=rows[:, 3:6] if rows.shape[1] == 6 else None)
    if len(shape.vertices) == 0:
        raise InputError(f"{path}: the cloud has no points")
    try:
        _check_cloud(shape.vertices, shape.normals)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    if shape.normals is not None:
        length = np.linalg.norm(shape.normals, axis=1, keepdims=True)
        if (length < 1e-9).any():  # normals that are not there: estimate them all instead
            shape.normals = None
        else:
            shape.normals = shape.normals / length
    return shape


def _write_models(folder: Path, shape: Shape, seg: Segmentation) -> None:
    """parts.ply (the shape coloured by part) and parts.glb (one named node per part)."""
    import trimesh

    colours = palette(len(seg.names))
    scene = trimesh.Scene()
    if shape.faces is not None:
        mesh = trimesh.Trimesh(shape.vertices, shape.faces, face_colors=colours[seg.part], process=False)
        (folder / "parts.ply").write_bytes(mesh.export(file_type="ply"))
        for p, name in enumerate(seg.names):
            piece = trimesh.Trimesh(shape.vertices, shape.faces[seg.part == p], process=False)
            piece.remove_unreferenced_vertices()
            piece.visual.face_colors = colours[p]
            scene.add_geometry(piece, node_name=name, geom_name=name)
    else:
        cloud = trimesh.PointCloud(shape.vertices, colors=colours[seg.part])
        (folder / "parts.ply").write_bytes(cloud.export(file_type="ply"))
        for p, name in enumerate(seg.names):
            mask = seg.part == p
            piece = trimesh.PointCloud(shape.vertices[mask], colors=np.tile(colours[p], (int(mask.sum()), 1)))
            scene.add_geometry(piece, node_name=name, geom_name=name)
    (folder / "parts.glb").write_bytes(scene.export(file_type="glb"))


def _weights(shape: Shape, seg: Segmentation) -> np.ndarray:
    """(n,) share of each element in the shape: face area for meshes, 1/n per point for clouds."""
    if shape.faces is None:
        return np.full(len(seg.part), 1.0 / len(seg.part))
    tri = shape.vertices[shape.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return area / area.sum() if area.sum() > 0 else np.full(len(area), 1.0 / len(area))


def summarise(path: Path, shape: Shape, seg: Segmentation, source: str, output: Path) -> str:
    """partgen-segment's one-line report: the parts and classes with their shares, the weights, the files."""
    share = _weights(shape, seg)
    kind = f"{len(shape.faces)} faces" if shape.faces is not None else f"{len(shape.vertices)} points"
    part_share = np.bincount(seg.part, weights=share, minlength=len(seg.names))
    class_share = np.bincount(seg.semantic, weights=share, minlength=len(CLASSES))
    parts = ", ".join(f"{name} {100 * s:.0f}%" for name, s in zip(seg.names, part_share, strict=True))
    classes = ", ".join(f"{CLASSES[c]} {100 * class_share[c]:.0f}%" for c in np.argsort(-class_share) if class_share[c])
    measure = "surface area" if shape.faces is not None else "points"
    element = "faces.npy" if shape.faces is not None else "points.npy"
    return (
        f"partgen-segment: {path.name} ({kind}) -> {len(seg.names)} part{'s' * (len(seg.names) != 1)}: {parts} (share of "
        f"{measure}); semantic classes: {classes}; weights {source}; wrote labels.json, {element}, parts.ply "
        f"and parts.glb to {output}"
    )


def write_outputs(folder: Path, path: Path, shape: Shape, seg: Segmentation, source: str, summary: str) -> None:
    """labels.json, faces.npy or points.npy, parts.ply, parts.glb into folder."""
    is_mesh = shape.faces is not None
    element = "faces" if is_mesh else "points"
    share = _weights(shape, seg)
    part_share = np.bincount(seg.part, weights=share, minlength=len(seg.names))
    part_count = np.bincount(seg.part, minlength=len(seg.names))
    labels = {
        "input": str(path),
        "kind": "mesh" if is_mesh else "points",
        "checkpoint": source,
        f"num_{element}": int(len(seg.part)),
        "classes": list(CLASSES),
        "parts": [
            {
                "id": p,
                "name": name,
                "class": CLASSES[int(seg.part_class[p])],
                element: int(part_count[p]),
                "fraction": round(float(part_share[p]), 6),
            }
            for p, name in enumerate(seg.names)
        ],
        "per_element": element,
        "semantic": [CLASSES[int(c)] for c in seg.semantic],
        "part": seg.part.tolist(),
        "arrays": {f"{element}.npy": f"({len(seg.part)}, 2) int64: part id, class index into classes"},
        "summary": summary,
    }
    (folder / "labels.json").write_text(json.dumps(labels))
    np.save(folder / f"{element}.npy", np.stack([seg.part, seg.semantic], 1).astype(np.int64))
    _write_models(folder, shape, seg)


__all__ = [
    "InputError",
    "Segmentation",
    "Segmenter",
    "Shape",
    "estimate_normals",
    "read_shape",
    "resolve_checkpoint",
    "segment_faces",
    "summarise",
    "write_outputs",
]
