"""partgen-annotate: raw meshes -> part-labelled sparse voxels, surface samples and a manifest.

process_asset(asset, cfg) -> row is a pure per-asset function (read, normalise, parts, voxelise,
sample, write the record atomically); run(...) wraps it with listing, deterministic sharding,
skipping finished work, local worker processes, a progress bar and the JSONL manifest.

Record of an asset: <output>/records/<key>/ with
    meta.json     source, licence, transform, resolution, part names/method/flags, counts, timings
    voxels.npz    coords (N, 3) int16 voxel indices at `resolution`, part (N,) int16
    samples.npz   points (S, 3) float32, normals (S, 3) float32, part (S,) int16, sharp (S,) bool
    volume.npz    points (Q, 3) float32 (half uniform in the padded cube, half near the surface),
                  sdf (Q,) float32 signed distance, negative inside (winding number), near (Q,) bool
    mesh.npz      vertices (V, 3) float32 normalised, faces (F, 3) int32, face_part (F,) int16
    sdf_blocks.npz  (block_subdiv > 0) values (N, s+1, s+1, s+1) float16: signed distance in voxel units
                  at the corners of each voxel's s^3 sub-cells (voxels.npz order), stage 2's target
    renders/      (num_views > 0) NNN.png RGBA, NNN_part.png part id + 1, depth.npz, cameras.json
    icon/         (catalogue assets) icon.png and camera.json: the camera that renders the icon
                  in the normalised space, its view and the silhouette IoU it reaches
The folder is written under a temporary name and renamed into place, so a record either exists
whole or not at all. The manifest (<output>/manifest-<shard>-of-<n>.jsonl) gets one line per
asset: status ok, filtered (with the flags) or failed (with the reason).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
import traceback
import zlib
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from partgen.data_pipeline.mesh_io import FORMATS, MAX_BYTES, MeshError, load_mesh, normalise
from partgen.data_pipeline.parts import clean_parts, face_parts
from partgen.data_pipeline.samples import sample_surface, sample_volume, stage2_blocks
from partgen.data_pipeline.voxelize import voxelize_surface

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Asset:
    """One mesh to annotate: its file, a unique file-system-safe key, and catalogue metadata."""

    key: str
    path: str
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class AnnotateConfig:
    resolution: int = 64
    num_samples: int = 100_000
    num_sharp_samples: int = 20_000
    num_volume_samples: int = 32_768  # query points with signed distance (0: none)
    block_subdiv: int = 0  # > 0: signed distance on each voxel's block_subdiv^3 sub-grid (sdf_blocks.npz)
    num_views: int = 0  # orbit renders with cameras (renders/), 0: none
    view_size: int = 256
    icon_camera: str = "typical"  # catalogue icons: "typical" view, "fit" to each icon (training libraries), "none"
    parts_method: str = "authored"
    num_parts: int | None = None  # geometric / learned: parts to cut into (None: chosen automatically)
    learned: dict = dataclasses.field(default_factory=dict)  # learned: checkpoint, segmenter
    max_parts: int = 8
    min_fraction: float = 0.01
    filter_flags: tuple[str, ...] = ()  # flags that make an asset "filtered" (Ultra3D drops those)
    max_bytes: int = MAX_BYTES
    seed: int = 0


def _key_for(path: Path, root: Path) -> str:
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in rel)
    return f"{safe[-80:]}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def list_assets(spec: str) -> list[Asset]:
    """A folder (searched recursively), a glob, one file, or `sweethome3d[:Lib1,Lib2]` (the
    fetched Sweet Home 3D catalogue; training libraries by default)."""
    if spec.startswith("sweethome3d"):
        from partgen.data_pipeline.sweethome3d import TRAIN_LIBRARIES, load_catalog

        libraries = tuple(spec.split(":", 1)[1].split(",")) if ":" in spec else TRAIN_LIBRARIES
        rows = load_catalog(libraries=libraries)
        keep = ("library", "name", "category", "license", "creator", "id", "icon_path", "width", "depth", "height")
        keep += ("model_rotation",)
        return [Asset(r["key"], r["model_path"], {k: r[k] for k in keep}) for r in rows]
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
        return [Asset(_key_for(p, path), str(p)) for p in files]
    if path.is_file():
        return [Asset(_key_for(path, path.parent), str(path))]
    files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise FileNotFoundError(f"input {spec!r} matches no file")
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    return [Asset(_key_for(p, root), str(p)) for p in files]


def in_shard(key: str, shard: int, num_shards: int) -> bool:
    """Deterministic split by key (independent of listing order and of the other assets)."""
    return zlib.crc32(key.encode()) % num_shards == shard


def _save_npz(path: Path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def process_asset(asset: Asset, cfg: AnnotateConfig, output: Path) -> dict:
    """Annotate one asset and write its record; returns its manifest row (never raises)."""
    row = {"key": asset.key, "source": asset.path, "status": "failed", "reason": ""}
    start = time.perf_counter()
    timings = {}
    try:
        t = time.perf_counter()
        mesh = load_mesh(asset.path, max_bytes=cfg.max_bytes)
        transform = normalise(mesh.vertices)
        vertices = transform.apply(mesh.vertices)
        timings["read_s"] = time.perf_counter() - t

        t = time.perf_counter()
        face_part, names, part_source = face_parts(mesh, vertices, cfg.parts_method, cfg.num_parts, **cfg.learned)
        vox = voxelize_surface(vertices, mesh.faces, cfg.resolution, face_part=face_part)
        parts = clean_parts(vox.coords, vox.part, names, cfg.min_fraction, cfg.max_parts)
        timings["voxelize_parts_s"] = time.perf_counter() - t

        # faces take the cleaned label of the voxel their centroid falls in
        t = time.perf_counter()
        r = cfg.resolution
        vox_key = (vox.coords[:, 0].astype(np.int64) * r + vox.coords[:, 1]) * r + vox.coords[:, 2]  # sorted
        centre = np.clip(np.floor((vertices[mesh.faces].mean(1) + 0.5) * r), 0, r - 1).astype(np.int64)
        face_key = (centre[:, 0] * r + centre[:, 1]) * r + centre[:, 2]
        pos = np.clip(np.searchsorted(vox_key, face_key), 0, len(vox_key) - 1)
        face_clean = np.where(vox_key[pos] == face_key, parts.part[pos], -1)
        missing = face_clean < 0
        if missing.any():  # centroid in a voxel the face does not own (slivers): nearest labelled voxel
            from scipy.spatial import cKDTree

            _, nearest = cKDTree(vox.coords).query(centre[missing])
            face_clean[missing] = parts.part[nearest]
        samples = sample_surface(
            vertices, mesh.faces, face_clean, cfg.num_samples, cfg.num_sharp_samples, seed=cfg.seed
        )
        volume = None
        if cfg.num_volume_samples:
            volume = sample_volume(vertices, mesh.faces, samples.points, cfg.num_volume_samples, seed=cfg.seed)
        timings["sample_s"] = time.perf_counter() - t
        blocks = None
        if cfg.block_subdiv:
            t = time.perf_counter()
            blocks = stage2_blocks(vertices, mesh.faces, vox.coords, cfg.resolution, cfg.block_subdiv)
            timings["block_sdf_s"] = time.perf_counter() - t

        meta = {
            "key": asset.key,
            "source": asset.path,
            **asset.meta,
            "transform": transform.to_dict(),
            "resolution": cfg.resolution,
            "parts": {
                "method": cfg.parts_method,
                "from": part_source,
                "names": parts.names,
                "raw_parts": parts.raw_parts,
                "flags": parts.flags,
            },
            "counts": {
                "vertices": len(vertices),
                "faces": len(mesh.faces),
                "voxels": len(vox.coords),
                "samples": len(samples.points),
                "sharp_samples": int(samples.sharp.sum()),
                "volume_samples": 0 if volume is None else len(volume.points),
            },
            "notes": mesh.notes,
            "timings": timings,
        }
        final = output / "records" / asset.key
        tmp = Path(tempfile.mkdtemp(dir=output / "records", prefix=f".tmp-{asset.key[:40]}-"))
        try:
            _save_npz(tmp / "voxels.npz", coords=vox.coords.astype(np.int16), part=parts.part.astype(np.int16))
            _save_npz(
                tmp / "samples.npz",
                points=samples.points,
                normals=samples.normals,
                part=samples.part.astype(np.int16),
                sharp=samples.sharp,
            )
            if volume is not None:
                _save_npz(tmp / "volume.npz", points=volume.points, sdf=volume.sdf, near=volume.near)
            if blocks is not None:
                _save_npz(tmp / "sdf_blocks.npz", **blocks)
            t = time.perf_counter()
            if cfg.num_views:
                _write_views(tmp, vertices, mesh.faces, face_clean, cfg)
            if asset.meta.get("icon_path") and cfg.icon_camera != "none":
                meta["icon"] = _write_icon(tmp, asset, transform, vertices, mesh.faces, cfg.icon_camera)
            timings["render_s"] = time.perf_counter() - t
            _save_npz(
                tmp / "mesh.npz",
                vertices=vertices.astype(np.float32),
                faces=mesh.faces.astype(np.int32),
                face_part=face_clean.astype(np.int16),
            )
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            if final.exists():
                shutil.rmtree(final)  # an earlier record of this asset (re-annotation)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        blocked = [f for f in parts.flags if f in cfg.filter_flags]
        row.update(
            status="filtered" if blocked else "ok",
            reason=", ".join(blocked),
            record=str(final.relative_to(output)),
            voxels=len(vox.coords),
            parts=len(parts.names),
            flags=parts.flags,
        )
    except (MeshError, ValueError) as err:
        row["reason"] = str(err)
    except MemoryError:
        row["reason"] = f"{asset.path}: out of memory"
    except Exception as err:  # an unexpected bug must not stop the run: record it whole
        row["reason"] = f"{asset.path}: {type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def _write_views(record: Path, vertices, faces, face_part, cfg: AnnotateConfig) -> None:
    """renders/NNN.png (+ part ids, depth) and cameras.json: num_views views around the object."""
    from partgen.data_pipeline.render import orbit_cameras, render, save_views

    cameras = orbit_cameras(cfg.num_views, size=cfg.view_size)
    images = [render(vertices, faces, cam, face_part=face_part) for cam in cameras]
    save_views(record, images, cameras)


def _write_icon(record: Path, asset: Asset, transform, vertices, faces, mode: str) -> dict:
    """icon/icon.png and icon/camera.json: the catalogue icon with the camera that renders it, and
    the silhouette IoU of that camera so users can drop icons whose view is not reproduced."""
    from PIL import Image

    from partgen.data_pipeline.sh3d_icons import (
        EVAL_LIBRARIES,
        TYPICAL_VIEW,
        fit_icon_view,
        icon_camera,
        icon_silhouette,
        render_silhouette,
        silhouette_iou,
    )

    icon = np.asarray(Image.open(asset.meta["icon_path"]).convert("RGBA"))
    mask = icon_silhouette(icon)
    row = asset.meta
    view = TYPICAL_VIEW
    held_out = row.get("library") in EVAL_LIBRARIES
    if mode == "fit" and not held_out:
        view, _ = fit_icon_view(row, transform, vertices, faces, mask)
    elif mode not in ("fit", "typical"):
        raise ValueError(f"icon_camera must be typical, fit or none, got {mode!r}")
    camera = icon_camera(row, transform, vertices, faces, view, (icon.shape[1], icon.shape[0]))
    iou = silhouette_iou(render_silhouette(vertices, faces, camera), mask)
    info = {"view": view.to_dict(), "fitted": mode == "fit" and not held_out, "silhouette_iou": round(iou, 4)}
    (record / "icon").mkdir()
    Image.fromarray(icon).save(record / "icon" / "icon.png")
    (record / "icon" / "camera.json").write_text(json.dumps(info | camera.to_dict(), indent=1))
    return info


def read_manifest(path: Path) -> list[dict]:
    """Rows of a manifest; a torn last line (a run killed mid-write) is ignored."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def add_blocks(record: str | Path, subdiv: int = 4, overwrite: bool = False) -> bool:
    """Give an existing record the sdf_blocks.npz partgen-annotate writes with block_subdiv=subdiv,
    from its mesh.npz and voxels.npz (records annotated without blocks). Returns False when the
    record already has them (unless overwrite). The file and meta.json are each replaced
    atomically, so an interrupted run leaves the old ones whole."""
    record = Path(record)
    target = record / "sdf_blocks.npz"
    if target.exists() and not overwrite:
        try:
            with np.load(target) as z:
                if int(z["subdiv"]) == subdiv:
                    return False
        except Exception:  # unreadable: recompute it
            pass
    try:
        meta = json.loads((record / "meta.json").read_text())
        with np.load(record / "mesh.npz") as z:
            vertices, faces = z["vertices"].astype(np.float64), z["faces"].astype(np.int64)
        with np.load(record / "voxels.npz") as z:
            coords = z["coords"].astype(np.int64)
    except Exception as err:
        raise ValueError(f"record {record}: unreadable meta, mesh or voxels ({err!r})") from None
    blocks = stage2_blocks(vertices, faces, coords, int(meta["resolution"]), subdiv)
    tmp = target.with_name(f".tmp-{target.name}")
    _save_npz(tmp, **blocks)
    os.replace(tmp, target)
    meta.setdefault("counts", {}).pop("band_voxels", None)  # the band experiment's count (git history)
    tmp = record / ".tmp-meta.json"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, record / "meta.json")
    return True


def run(
    assets: Iterable[Asset],
    output: str | Path,
    cfg: AnnotateConfig,
    shard: int = 0,
    num_shards: int = 1,
    workers: int = 1,
    retry_failed: bool = False,
    progress: bool = True,
) -> dict:
    """Annotate a shard of the assets; returns counts by status (this run's rows only)."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
    output = Path(output)
    (output / "records").mkdir(parents=True, exist_ok=True)
    manifest = output / f"manifest-{shard:05d}-of-{num_shards:05d}.jsonl"
    done = {r["key"]: r["status"] for r in read_manifest(manifest)}
    todo = []
    for a in assets:
        if not in_shard(a.key, shard, num_shards):
            continue
        status = done.get(a.key)
        record_ok = (output / "records" / a.key / "meta.json").exists()
        if (status == "ok" and record_ok) or status == "filtered" or (status == "failed" and not retry_failed):
            continue
        todo.append(a)
    counts = {"ok": 0, "filtered": 0, "failed": 0, "skipped_done": len(done)}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"annotate shard {shard}/{num_shards}", unit="asset")
    with open(manifest, "a") as out:

        def write(row):
            out.write(json.dumps(row) + "\n")
            out.flush()
            os.fsync(out.fileno())
            counts[row["status"]] += 1
            if bar is not None:
                bar.update(1)

        if workers > 1 and multiprocessing.get_start_method(allow_none=True) not in (
            None,
            "fork",
            "spawn",
            "forkserver",
        ):
            # inside a joblib/loky launcher job: its workers cannot start process pools of their
            # own, and the launcher already runs the shards in parallel
            log.info("annotate: running serially inside a %s worker", multiprocessing.get_start_method())
            workers = 1
        if workers <= 1:
            for a in todo:
                write(process_asset(a, cfg, output))
        else:
            # spawn, not fork: a forked child of a process whose OpenMP pool is running (the
            # native voxeliser, torch) deadlocks in GNU OpenMP
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                pending = set()
                queue = iter(todo)
                for a in queue:  # keep about 2 tasks per worker in flight
                    pending.add(pool.submit(process_asset, a, cfg, output))
                    if len(pending) >= 2 * workers:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            write(fut.result())
                for fut in pending:
                    write(fut.result())
    if bar is not None:
        bar.close()
    return counts
