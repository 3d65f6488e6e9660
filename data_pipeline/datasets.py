"""Torch datasets over annotated records: surface points with part ids and semantic classes.

Legend: S surface samples stored in a record, n points drawn from it, N points of a batch,
B shapes, P parts of a shape.

PartRecords reads what partgen-annotate wrote (one or more manifests and their records/): per item
the record's surface samples (samples.npz: points, normals, part), subsampled to num_points, with
a semantic class per point from the record's part names (meta.json parts.names, mapped through
partgen.data_pipeline.taxonomy; IGNORE where a name says nothing). collate_points flattens a list
of items into partgen.structures.Points (the varlen convention: cu_seqlens (B+1,) int32, leading 0).

Splits are decided per asset key by a seeded hash, so they do not depend on listing order or on
which other assets are present, and an asset is never in two splits. The evaluation libraries of
Sweet Home 3D (Scopia) are refused unless split="eval" is asked for explicitly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch

from partgen.data_pipeline.annotate import read_manifest
from partgen.data_pipeline.sweethome3d import EVAL_LIBRARIES
from partgen.data_pipeline.taxonomy import IGNORE, semantic_class
from partgen.structures import Points, SparseVoxels, cu_seqlens_from_lengths

log = logging.getLogger(__name__)

Split = Literal["train", "val", "all", "eval"]


class RecordError(ValueError):
    """A record that cannot be used; the message names the record and the reason."""


@dataclasses.dataclass(frozen=True)
class RecordRef:
    """One usable record: its key, folder, library (None outside a catalogue), part names, and
    whether it comes from a library reserved for evaluation."""

    key: str
    path: Path
    library: str | None
    part_names: tuple[str, ...]
    eval_only: bool = False


def is_eval_only(library: str | None, source: str = "") -> bool:
    """Whether an asset belongs to a library reserved for evaluation (Sweet Home 3D Scopia)."""
    if library in EVAL_LIBRARIES:
        return True
    source = source.replace("\\", "/")
    return any(f"/libraries/{lib}/" in source for lib in EVAL_LIBRARIES)


def split_of(key: str, val_fraction: float, seed: int = 0) -> Literal["train", "val"]:
    """The split of one asset key: a seeded hash of the key alone (stable across listings and runs)."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64  # uniform in [0, 1)
    return "val" if u < val_fraction else "train"


def _manifests(root_or_manifests: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [root_or_manifests] if isinstance(root_or_manifests, str | Path) else list(root_or_manifests)
    if not items:
        raise ValueError("PartRecords needs at least one annotation folder or manifest")
    out = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.glob("manifest-*.jsonl"))
            if not found:
                raise FileNotFoundError(f"{path} holds no manifest-*.jsonl (is it a partgen-annotate output folder?)")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither an annotation folder nor a manifest file")
    return out


def list_records(root_or_manifests, statuses: Sequence[str] = ("ok",)) -> list[tuple[RecordRef, dict]]:
    """(record, manifest row) for every asset of the manifests with one of the statuses, sorted by key.

    A key listed several times (a re-run with retry_failed appends) takes its last row. Raises
    RecordError naming the record when a listed record folder, its meta.json or samples.npz is missing.
    """
    rows: dict[str, tuple[Path, dict]] = {}
    for manifest in _manifests(root_or_manifests):
        for row in read_manifest(manifest):
            if "key" in row:
                rows[row["key"]] = (manifest.parent, row)
    out = []
    for key in sorted(rows):
        base, row = rows[key]
        if row.get("status") not in statuses:
            continue
        if not row.get("record"):
            raise RecordError(f"record {key}: manifest row with status {row.get('status')!r} names no record folder")
        path = base / row["record"]
        for name in ("meta.json", "samples.npz"):
            if not (path / name).is_file():
                raise RecordError(f"record {key}: {path / name} is missing")
        try:
            meta = json.loads((path / "meta.json").read_text())
            names = tuple(str(n) for n in meta["parts"]["names"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise RecordError(f"record {key}: {path / 'meta.json'} is unreadable ({err!r})") from None
        library = meta.get("library")
        source = str(meta.get("source", row.get("source", "")))
        out.append((RecordRef(key, path, library, names, is_eval_only(library, source)), row))
    return out


def select_records(
    root_or_manifests, split: Split, val_fraction: float = 0.1, seed: int = 0, statuses: Sequence[str] = ("ok",)
) -> list[RecordRef]:
    """The records of one split (see PartRecords); any but split="eval" refuses evaluation-only libraries."""
    refs = [ref for ref, _ in list_records(root_or_manifests, statuses)]
    if split != "eval":
        reserved = [ref.key for ref in refs if ref.eval_only]
        if reserved:
            libs = ", ".join(EVAL_LIBRARIES)
            raise ValueError(
                f"{len(reserved)} record(s) from evaluation-only libraries ({libs}), e.g. {reserved[:3]}: "
                f"never train or tune on them; annotate them into a separate folder and load that with "
                f"split='eval'"
            )
    if split in ("train", "val"):
        refs = [ref for ref in refs if split_of(ref.key, val_fraction, seed) == split]
    return refs


def _rotation_y(theta: float) -> np.ndarray:
    """(3, 3) rotation about the up axis (Sweet Home 3D models are Y-up)."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def augment_points(
    points: np.ndarray,
    normals: np.ndarray | None,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.8, 1.2),
    jitter: float = 0.005,
    jitter_clip: float = 0.02,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Random rotation about Y, anisotropic scale, clipped Gaussian jitter; (n, 3) float32 each.

    Points map by A = diag(s) @ R; normals by the inverse transpose diag(1/s) @ R, renormalised
    (the normal of a scaled surface is not the scaled normal). Jitter moves points only.
    """
    rot = _rotation_y(rng.uniform(0.0, 2.0 * math.pi))
    s = rng.uniform(scale[0], scale[1], size=3)
    out = (points.astype(np.float64) @ rot.T) * s
    if jitter > 0:
        out += np.clip(rng.normal(0.0, jitter, size=out.shape), -jitter_clip, jitter_clip)
    if normals is not None:
        nrm = (normals.astype(np.float64) @ rot.T) / s
        length = np.linalg.norm(nrm, axis=1, keepdims=True)
        normals = (nrm / np.maximum(length, 1e-12)).astype(np.float32)
    return out.astype(np.float32), normals


class RecordDataset(torch.utils.data.Dataset):
    """The records of one split (select_records) and what every record dataset shares: len, keys,
    and a per-item random generator (fresh in training, fixed by (seed, key) otherwise)."""

    def __init__(self, root_or_manifests, split: Split, val_fraction: float, seed: int, statuses: Sequence[str]):
        if split not in ("train", "val", "all", "eval"):
            raise ValueError(f"split must be train, val, all or eval, got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.split, self.val_fraction, self.seed = split, val_fraction, seed
        self.records: list[RecordRef] = select_records(root_or_manifests, split, val_fraction, seed, statuses)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def keys(self) -> list[str]:
        return [ref.key for ref in self.records]

    def _rng(self, index: int) -> np.random.Generator:
        if self.split == "train":
            # torch's generator: seeded by torch.manual_seed, and per worker by the DataLoader
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([self.seed, zlib.crc32(self.records[index].key.encode())])


class PartRecords(RecordDataset):
    """Annotated records as per-point training items.

    root_or_manifests: an annotation output folder (its manifest-*.jsonl), a manifest file, or a list of them
    split:        "train" / "val" (a seeded hash of the key; val_fraction of the assets go to val),
                  "all" (both), "eval" (every record, evaluation libraries allowed; evaluation only)
    num_points:   points per item: a random subset in training, a fixed one (seed, key) otherwise;
                  a record with fewer samples gives all of them (items are varlen); None: all
    augment:      rotation about Y, anisotropic scale 0.8-1.2, jitter; train only (None: on for train)
    statuses:     manifest statuses to use (filtered assets are left out unless "filtered" is added)

    Item: dict with
        points   (n, 3) float32 in the normalised cube (before augmentation)
        normals  (n, 3) float32 unit normals (only with with_normals)
        part     (n,) int64 part id per point (the record's cleaned parts, 0..P-1)
        semantic (n,) int64 class index into taxonomy.CLASSES, taxonomy.IGNORE where the name is unknown
        key      str, the asset key
    """

    def __init__(
        self,
        root_or_manifests: str | Path | Sequence[str | Path],
        split: Split = "train",
        val_fraction: float = 0.1,
        seed: int = 0,
        num_points: int | None = 8192,
        with_normals: bool = True,
        augment: bool | None = None,
        statuses: Sequence[str] = ("ok",),
    ):
        if num_points is not None and num_points < 1:
            raise ValueError(f"num_points must be positive or None, got {num_points}")
        augment = split == "train" if augment is None else augment
        if augment and split != "train":
            raise ValueError(f"augmentation is for training only, not split={split!r}")
        super().__init__(root_or_manifests, split, val_fraction, seed, statuses)
        self.num_points, self.with_normals, self.augment = num_points, with_normals, augment
        # part id -> semantic class, per record
        self._semantic = [np.array([semantic_class(n) for n in ref.part_names], dtype=np.int64) for ref in self.records]

    def load(self, index: int) -> dict[str, np.ndarray]:
        """The record's full surface samples, checked: points, normals (S, 3) float32, part (S,) int64."""
        ref = self.records[index]
        file = ref.path / "samples.npz"
        try:
            with np.load(file) as z:
                arrays = {name: z[name] for name in ("points", "normals", "part")}
        except FileNotFoundError:
            raise RecordError(f"record {ref.key}: {file} is missing") from None
        except KeyError as err:
            raise RecordError(f"record {ref.key}: {file} lacks {err}") from None
        except Exception as err:  # a torn or corrupt zip
            raise RecordError(f"record {ref.key}: {file} is unreadable ({err!r})") from None
        points, normals, part = arrays["points"], arrays["normals"], arrays["part"]
        s = len(points)
        if s == 0 or points.shape != (s, 3) or normals.shape != (s, 3) or part.shape != (s,):
            raise RecordError(
                f"record {ref.key}: {file} has shapes points {points.shape}, normals {normals.shape}, "
                f"part {part.shape}; expected (S, 3), (S, 3), (S,) with S > 0"
            )
        for name, arr in (("points", points), ("normals", normals)):
            if not np.isfinite(arr).all():
                raise RecordError(f"record {ref.key}: {file} {name} hold NaN or inf")
        part = part.astype(np.int64)
        if part.min() < 0 or part.max() >= len(ref.part_names):
            raise RecordError(
                f"record {ref.key}: part ids span [{part.min()}, {part.max()}] but meta.json names "
                f"{len(ref.part_names)} parts"
            )
        return {"points": points.astype(np.float32), "normals": normals.astype(np.float32), "part": part}

    def __getitem__(self, index: int) -> dict:
        ref = self.records[index]
        data = self.load(index)
        rng = self._rng(index)
        s = len(data["part"])
        if self.num_points is not None and s > self.num_points:
            keep = np.sort(rng.choice(s, self.num_points, replace=False))
            data = {k: v[keep] for k, v in data.items()}
        points, normals = data["points"], data["normals"]
        if self.augment:
            points, normals = augment_points(points, normals, rng)
        item = {
            "points": torch.from_numpy(np.ascontiguousarray(points)),
            "part": torch.from_numpy(data["part"]),
            "semantic": torch.from_numpy(self._semantic[index][data["part"]]),
            "key": ref.key,
        }
        if self.with_normals:
            item["normals"] = torch.from_numpy(np.ascontiguousarray(normals))
        return item


class PointBatch(NamedTuple):
    """A collated batch: points (Points, N rows), semantic (N,) int64 (IGNORE = taxonomy.IGNORE), keys (B,)."""

    points: Points
    semantic: torch.Tensor
    keys: list[str]


def collate_points(batch: Sequence[dict]) -> PointBatch:
    """Items of PartRecords -> PointBatch; Points.feats is (N, 6) xyz + normal (or (N, 3) xyz without normals)."""
    if not batch:
        raise ValueError("collate_points needs at least one item")
    has_normals = {"normals" in item for item in batch}
    if len(has_normals) != 1:
        raise ValueError("cannot collate items where only some have normals")
    coords = torch.cat([item["points"] for item in batch])  # (N, 3)
    normals = torch.cat([item["normals"] for item in batch]) if has_normals == {True} else None
    feats = coords if normals is None else torch.cat([coords, normals], 1)
    points = Points(
        feats=feats,
        cu_seqlens=cu_seqlens_from_lengths([len(item["points"]) for item in batch]),
        coords=coords,
        normals=normals,
        part=torch.cat([item["part"] for item in batch]),
    )
    semantic = torch.cat([item["semantic"] for item in batch])
    return PointBatch(points, semantic, [item["key"] for item in batch])


class ShapeRecords(RecordDataset):
    """Annotated records as shape-autoencoding items: surface samples in, volume queries to predict.

    root_or_manifests, split, val_fraction, seed, statuses: as PartRecords (the same split of keys)
    num_points:  surface samples per item (uniform and sharp-edge ones alike, as the record holds them)
    num_queries: volume queries per item, near_fraction of them from the record's near-surface ones
    augment:     training items are turned by a random one of the 8 symmetries of the square about
                 the vertical (y) axis: quarter turns, each with or without a mirror. Signed distance
                 is invariant under them, so the labels stay exact, and the shapes stay in the cube
                 (the layout_vae overfits ~470 training shapes: validation IoU peaked at 1000 steps)
    Training items draw fresh subsets each time; val/eval items a fixed subset per (seed, key).

    Item: dict with points, normals (n, 3) float32, sharp (n,) bool, queries (q, 3) float32,
    sdf (q,) float32 (signed distance, < 0 inside by winding number), key. Records need volume.npz
    (partgen-annotate's num_volume_samples > 0).
    """

    def __init__(
        self,
        root_or_manifests: str | Path | Sequence[str | Path],
        split: Split = "train",
        val_fraction: float = 0.1,
        seed: int = 0,
        num_points: int = 4096,
        num_queries: int = 4096,
        near_fraction: float = 0.5,
        statuses: Sequence[str] = ("ok",),
        augment: bool = False,
    ):
        if num_points < 1 or num_queries < 1 or not 0.0 <= near_fraction <= 1.0:
            raise ValueError(
                f"need num_points, num_queries >= 1 and near_fraction in [0, 1], got {num_points}, "
                f"{num_queries}, {near_fraction}"
            )
        super().__init__(root_or_manifests, split, val_fraction, seed, statuses)
        self.num_points, self.num_queries, self.near_fraction = int(num_points), int(num_queries), float(near_fraction)
        self.augment = bool(augment)

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Every surface sample and volume query of the record, checked."""
        ref = self.records[index]
        out = {}
        for name, fields in (("samples", ("points", "normals", "sharp")), ("volume", ("points", "sdf", "near"))):
            file = ref.path / f"{name}.npz"
            try:
                with np.load(file) as z:
                    for field in fields:
                        if field == "sharp" and field not in z.files:  # records from before sharp samples
                            out[field] = np.zeros(len(z["points"]), bool)
                            continue
                        out[field if name == "samples" or field != "points" else "queries"] = z[field]
            except FileNotFoundError:
                hint = " (annotate with num_volume_samples > 0)" if name == "volume" else ""
                raise RecordError(f"record {ref.key}: {file} is missing{hint}") from None
            except KeyError as err:
                raise RecordError(f"record {ref.key}: {file} lacks {err}") from None
            except Exception as err:  # a torn or corrupt zip
                raise RecordError(f"record {ref.key}: {file} is unreadable ({err!r})") from None
        s, q = len(out["points"]), len(out["queries"])
        if s == 0 or q == 0 or out["normals"].shape != (s, 3) or out["sdf"].shape != (q,) or out["near"].shape != (q,):
            raise RecordError(f"record {ref.key}: {s} surface samples and {q} volume queries with mismatched fields")
        for name in ("points", "normals", "queries", "sdf"):
            if not np.isfinite(out[name]).all():
                raise RecordError(f"record {ref.key}: {name} hold NaN or inf")
        return out

    def __getitem__(self, index: int) -> dict:
        data = self.load(index)
        rng = self._rng(index)
        s = len(data["points"])
        keep = np.sort(rng.choice(s, self.num_points, replace=False)) if s > self.num_points else np.arange(s)
        near = np.nonzero(data["near"])[0]
        far = np.nonzero(~data["near"])[0]
        want_near = min(len(near), round(self.near_fraction * self.num_queries))
        want_far = min(len(far), self.num_queries - want_near)
        picks = np.concatenate([rng.choice(near, want_near, replace=False), rng.choice(far, want_far, replace=False)])
        turn = square_symmetry(int(rng.integers(8))) if self.augment and self.split == "train" else np.eye(3)
        return {
            "points": torch.from_numpy(np.ascontiguousarray(data["points"][keep] @ turn.T, np.float32)),
            "normals": torch.from_numpy(np.ascontiguousarray(data["normals"][keep] @ turn.T, np.float32)),
            "sharp": torch.from_numpy(data["sharp"][keep].astype(bool)),
            "queries": torch.from_numpy(np.ascontiguousarray(data["queries"][picks] @ turn.T, np.float32)),
            "sdf": torch.from_numpy(np.ascontiguousarray(data["sdf"][picks], np.float32)),
            "key": self.records[index].key,
        }


def square_symmetry(index: int) -> np.ndarray:
    """(3, 3) orthogonal matrix: symmetry `index` in [0, 8) of the square about the y axis (index % 4
    quarter turns, then a mirror of x when index >= 4). Index 0 is the identity."""
    c, s = ((1, 0), (0, 1), (-1, 0), (0, -1))[index % 4]
    turn = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float64)
    return turn @ np.diag([-1.0, 1.0, 1.0]) if index >= 4 else turn


class ShapeBatch(NamedTuple):
    """Collated ShapeRecords items: surface (N, 3) points/normals, (N,) sharp, cu (B+1,); queries
    (Q, 3), sdf (Q,), query_cu (B+1,); keys (B,)."""

    points: torch.Tensor
    normals: torch.Tensor
    sharp: torch.Tensor
    cu_seqlens: torch.Tensor
    queries: torch.Tensor
    sdf: torch.Tensor
    query_cu: torch.Tensor
    keys: list[str]


def collate_shapes(batch: Sequence[dict]) -> ShapeBatch:
    if not batch:
        raise ValueError("collate_shapes needs at least one item")
    return ShapeBatch(
        points=torch.cat([b["points"] for b in batch]),
        normals=torch.cat([b["normals"] for b in batch]),
        sharp=torch.cat([b["sharp"] for b in batch]),
        cu_seqlens=cu_seqlens_from_lengths([len(b["points"]) for b in batch]),
        queries=torch.cat([b["queries"] for b in batch]),
        sdf=torch.cat([b["sdf"] for b in batch]),
        query_cu=cu_seqlens_from_lengths([len(b["queries"]) for b in batch]),
        keys=[b["key"] for b in batch],
    )


class BlockRecords(RecordDataset):
    """Annotated records as stage-2 items: the active voxels with their sub-grid signed distances.

    root_or_manifests, split, val_fraction, seed, statuses: as PartRecords (the same split of keys)
    max_voxels: shapes with more active voxels are left out of training (memory); None keeps all
    Item: SparseVoxels of one shape (batch index 0): feats (N, (s+1)^3) float32 corner values in voxel
    units, coords, resolution, part (N,) int64; and its key. Records need sdf_blocks.npz
    (partgen-annotate block_subdiv > 0).
    """

    def __init__(
        self,
        root_or_manifests: str | Path | Sequence[str | Path],
        split: Split = "train",
        val_fraction: float = 0.1,
        seed: int = 0,
        max_voxels: int | None = None,
        statuses: Sequence[str] = ("ok",),
    ):
        super().__init__(root_or_manifests, split, val_fraction, seed, statuses)
        if max_voxels is not None:
            counts = {ref.key: _voxel_count(ref) for ref in self.records}  # one meta.json read each
            self.records = [ref for ref in self.records if counts[ref.key] <= max_voxels]

    def __getitem__(self, index: int) -> tuple[SparseVoxels, str]:
        ref = self.records[index]
        meta = json.loads((ref.path / "meta.json").read_text())
        try:
            with np.load(ref.path / "voxels.npz") as z:
                coords, part = z["coords"].astype(np.int64), z["part"].astype(np.int64)
            with np.load(ref.path / "sdf_blocks.npz") as z:
                values = z["values"].astype(np.float32)
        except FileNotFoundError as err:
            hint = " (annotate with block_subdiv=4)" if "sdf_blocks" in str(err) else ""
            raise RecordError(f"record {ref.key}: {Path(err.filename).name} is missing{hint}") from None
        except Exception as err:
            raise RecordError(f"record {ref.key}: unreadable voxels or blocks ({err!r})") from None
        n = len(coords)
        if n == 0 or values.shape[0] != n or values.ndim != 4 or not np.isfinite(values).all():
            raise RecordError(f"record {ref.key}: {n} voxels but blocks of shape {values.shape} (or NaN)")
        voxels = SparseVoxels(
            feats=torch.from_numpy(values.reshape(n, -1)),
            cu_seqlens=cu_seqlens_from_lengths([n]),
            coords=torch.from_numpy(np.concatenate([np.zeros((n, 1), np.int64), coords], 1).astype(np.int32)),
            resolution=int(meta.get("resolution", 0)),
            part=torch.from_numpy(part),
        )
        return voxels, ref.key


def _voxel_count(ref: RecordRef) -> int:
    """Active voxels of a record from its meta.json (0 when it cannot say)."""
    try:
        return int(json.loads((ref.path / "meta.json").read_text())["counts"]["voxels"])
    except (KeyError, ValueError, OSError):
        return 0


__all__ = [
    "BlockRecords",
    "RecordDataset",
    "IGNORE",
    "PartRecords",
    "PointBatch",
    "RecordError",
    "RecordRef",
    "ShapeBatch",
    "ShapeRecords",
    "augment_points",
    "collate_points",
    "collate_shapes",
    "is_eval_only",
    "list_records",
    "select_records",
    "split_of",
]
