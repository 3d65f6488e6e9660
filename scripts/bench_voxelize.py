"""Exact surface voxels vs open3d's VoxelGrid (what TRELLIS uses): voxel-set IoU and speed ratio.

    python scripts/bench_voxelize.py --resolutions 64 256 1024 [--limit N] --json PATH

Runs over the Sweet Home 3D training corpus (fetched by scripts/fetch_sweethome3d.sh), each
mesh normalised into [-0.5, 0.5]^3, both methods on the same normalised mesh in one process.
Prints per resolution: median time of each, the median of per-mesh speed ratios (open3d time /
ours), and the median IoU of the two voxel sets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from partgen.data_pipeline.mesh_io import MeshError, load_mesh, normalise
from partgen.data_pipeline.sweethome3d import TRAIN_LIBRARIES, load_catalog
from partgen.data_pipeline.voxelize import voxelize_surface


def open3d_voxels(vertices: np.ndarray, faces: np.ndarray, resolution: int) -> np.ndarray:
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(faces))
    grid = o3d.geometry.VoxelGrid.create_from_triangle_mesh_within_bounds(
        mesh, voxel_size=1.0 / resolution, min_bound=np.full(3, -0.5), max_bound=np.full(3, 0.5)
    )
    return np.asarray([v.grid_index for v in grid.get_voxels()], dtype=np.int64).reshape(-1, 3)


def iou(a: np.ndarray, b: np.ndarray, r: int) -> float:
    ka = (a[:, 0] * r + a[:, 1]) * r + a[:, 2]
    kb = (b[:, 0] * r + b[:, 1]) * r + b[:, 2]
    inter = np.intersect1d(ka, kb).size
    union = np.union1d(ka, kb).size
    return inter / union if union else 1.0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--limit", type=int, default=None, help="every k-th mesh so that about N are used")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    rows = load_catalog(libraries=TRAIN_LIBRARIES)
    if args.limit:
        rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
    meshes = []
    for row in rows:
        try:
            m = load_mesh(row["model_path"])
        except MeshError:
            continue
        meshes.append((row["key"], normalise(m.vertices).apply(m.vertices), m.faces))
    report = {"meshes": len(meshes), "resolutions": {}}
    for r in args.resolutions:
        ours_t, o3d_t, ratios, ious = [], [], [], []
        for _, v, f in meshes:
            t0 = time.perf_counter()
            ours = voxelize_surface(v, f, r).coords
            t1 = time.perf_counter()
            theirs = open3d_voxels(v, f, r)
            t2 = time.perf_counter()
            ours_t.append(t1 - t0)
            o3d_t.append(t2 - t1)
            ratios.append((t2 - t1) / (t1 - t0))
            ious.append(iou(ours.astype(np.int64), theirs, r))
        res = {
            "ours_median_s": statistics.median(ours_t),
            "open3d_median_s": statistics.median(o3d_t),
            "speed_ratio_median": statistics.median(ratios),
            "iou_median": statistics.median(ious),
            "iou_min": min(ious),
        }
        report["resolutions"][str(r)] = res
        print(
            f"R={r:<5} ours {res['ours_median_s'] * 1000:8.1f} ms  open3d {res['open3d_median_s'] * 1000:8.1f} ms  "
            f"speed-up x{res['speed_ratio_median']:.2f} (median of per-mesh ratios)  "
            f"IoU median {res['iou_median']:.4f} min {res['iou_min']:.4f}  ({len(meshes)} meshes)"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return report


if __name__ == "__main__":
    main()
