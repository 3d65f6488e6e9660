"""Check the Sweet Home 3D icon camera (data_pipeline/sh3d_icons.py) against the catalogue icons.

    .venv/bin/python scripts/verify_sh3d_icons.py [--n 100] [--seed 0] [--overlays /tmp/partgen_icons]

Training libraries only (the Scopia library is reserved for evaluation and is never read here).
For a random sample of assets: load the OBJ, normalise it as a record does, and compare the icon's
silhouette (alpha >= 128) with renders under
  A  the source's default view (yaw pi/8, pitch -pi/16, viewScale 1) framed as the preview shows it
  B  the same view re-framed to the model's bounding box as the icons are (icon_camera default)
  G  a single global view fitted on the even half of the sample ("tune"), scored on the odd half
  C  each icon's own view from fit_icon_view (yaw, pitch, viewScale per asset)
and report silhouette IoU (mean / median), plus the fraction of the 64^3 surface voxels' centres
that project inside the icon's silhouette. Writes overlays (icon + projected voxel centres).
Needs the catalogue cache (python -m partgen.data_pipeline.sweethome3d fetch). About 8 minutes on one
core for --n 100 (the global view search is most of it).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np


def voxel_inside_fraction(coords: np.ndarray, camera, mask: np.ndarray, resolution: int) -> float:
    """Fraction of voxel centres whose projection falls in a pixel of the mask (outside the image: miss)."""
    centres = (coords + 0.5) / resolution - 0.5
    u, v, z = camera.project(centres)
    col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    h, w = mask.shape
    ok = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    inside = np.zeros(len(centres), bool)
    inside[ok] = mask[row[ok], col[ok]]
    return float(inside.mean()) if len(inside) else float("nan")


def largest_polygon(obj_path: str) -> int:
    """Most vertices in one OBJ face (n-gons: mesh_io fans convex ones and ear-clips concave ones)."""
    most = 0
    with open(obj_path, encoding="latin-1") as f:
        for line in f:
            if line.startswith("f "):
                most = max(most, len(line.split()) - 1)
    return most


def icon_bbox_extent(alpha: np.ndarray) -> float:
    """The icon silhouette's longer bounding-box side in pixels, with partial edge coverage counted."""
    a = alpha.astype(np.float64) / 255.0
    spans = []
    for profile in (a.max(0), a.max(1)):
        nz = np.nonzero(profile > 0)[0]
        if not len(nz):
            return float("nan")
        spans.append((nz[-1] + profile[nz[-1]]) - (nz[0] + 1 - profile[nz[0]]))
    return max(spans)


def overlay(icon: np.ndarray, camera, coords: np.ndarray, resolution: int, zoom: int = 4) -> np.ndarray:
    """(H zoom, W zoom, 3) uint8: the icon over grey, voxel centres as dots (green in the silhouette, red out)."""
    from partgen.data_pipeline.render import composite

    base = composite(icon[..., :3], icon[..., 3], (90, 90, 90))
    img = np.kron(base, np.ones((zoom, zoom, 1), np.uint8))
    centres = (coords + 0.5) / resolution - 0.5
    u, v, _ = camera.project(centres)
    mask = icon[..., 3] >= 128
    h, w = mask.shape
    for uu, vv in zip(u, v, strict=True):
        c, r = int(math.floor(uu)), int(math.floor(vv))
        inside = 0 <= c < w and 0 <= r < h and mask[r, c]
        x, y = int(uu * zoom), int(vv * zoom)
        if 0 <= x < w * zoom and 0 <= y < h * zoom:
            img[max(y - 1, 0) : y + 1, max(x - 1, 0) : x + 1] = (40, 220, 40) if inside else (230, 30, 30)
    return img


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100, help="assets to sample from the training libraries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overlays", default="/tmp/partgen_icons", help="folder for overlay PNGs ('' for none)")
    p.add_argument("--resolution", type=int, default=64)
    args = p.parse_args(argv)

    from PIL import Image

    from partgen.data_pipeline import sh3d_icons as si
    from partgen.data_pipeline.mesh_io import MeshError, load_mesh, normalise
    from partgen.data_pipeline.sweethome3d import EVAL_LIBRARIES, TRAIN_LIBRARIES, load_catalog
    from partgen.data_pipeline.voxelize import voxelize_surface

    rows = [r for r in load_catalog(libraries=TRAIN_LIBRARIES) if r["icon_path"]]
    assert not any(r["library"] in EVAL_LIBRARIES for r in rows)
    order = np.random.default_rng(args.seed).permutation(len(rows))
    assets, skipped = [], []
    t0 = time.time()
    for i in order:
        if len(assets) >= args.n:
            break
        row = rows[i]
        try:
            mesh = load_mesh(row["model_path"])
        except MeshError as e:
            skipped.append(f"{row['key']}: {e}")
            continue
        icon = np.asarray(Image.open(row["icon_path"]).convert("RGBA"))
        norm = normalise(mesh.vertices)
        vn = norm.apply(mesh.vertices)
        fan_safe = largest_polygon(row["model_path"]) <= 4
        assets.append({"row": row, "v": vn, "f": mesh.faces, "norm": norm, "icon": icon, "fan_safe": fan_safe})
    print(f"{len(assets)} assets loaded in {time.time() - t0:.0f} s; skipped {len(skipped)}: {skipped}")
    libs = {}
    for a in assets:
        libs[a["row"]["library"]] = libs.get(a["row"]["library"], 0) + 1
    print("per library:", libs)
    tune = assets[0::2]

    def iou(a, view, framing="icon", extent=si.ICON_EXTENT):
        h, w = a["icon"].shape[:2]
        cam = si.icon_camera(a["row"], a["norm"], a["v"], a["f"], view, (w, h), framing, extent)
        return si.silhouette_iou(si.render_silhouette(a["v"], a["f"], cam), si.icon_silhouette(a["icon"])), cam

    # the icons' own framing: bounding-box extent (model-free) on the tuning half
    extents = [icon_bbox_extent(a["icon"][..., 3]) / max(a["icon"].shape[:2]) for a in tune]
    print(f"icon bbox longer side / icon size, tuning half: median {np.nanmedian(extents):.4f} "
          f"(x128 = {128 * np.nanmedian(extents):.1f} px), IQR {np.nanpercentile(extents, 25):.4f}.."
          f"{np.nanpercentile(extents, 75):.4f}; ICON_EXTENT = {si.ICON_EXTENT:.4f}")  # fmt: skip

    # global view search on the tuning half
    t0 = time.time()
    grid = [
        si.IconView(math.radians(y), math.radians(pt), s)
        for y in np.arange(-45, 90.1, 7.5)
        for pt in np.arange(0, -45.1, -7.5)
        for s in (0.5, 1.0, 1.3)
    ]
    mean_iou = [np.mean([iou(a, v)[0] for a in tune]) for v in grid]
    g = grid[int(np.argmax(mean_iou))]
    print(f"global search ({len(grid)} views x {len(tune)} assets, {time.time() - t0:.0f} s): "
          f"yaw {math.degrees(g.yaw):.1f} deg, pitch {math.degrees(g.pitch):.1f} deg, viewScale {g.scale}")  # fmt: skip

    results = []
    t0 = time.time()
    for k, a in enumerate(assets):
        iou_a, cam_a = iou(a, si.IconView(), "preview")
        iou_b, cam_b = iou(a, si.IconView())
        iou_g, _ = iou(a, g)
        view_c, iou_c = si.fit_icon_view(a["row"], a["norm"], a["v"], a["f"], si.icon_silhouette(a["icon"]))
        _, cam_c = iou(a, view_c)
        vox = voxelize_surface(a["v"], a["f"], args.resolution).coords
        mask = si.icon_silhouette(a["icon"])
        res = args.resolution
        results.append(
            {
                "key": a["row"]["key"],
                "A": iou_a,
                "B": iou_b,
                "G": iou_g,
                "C": iou_c,
                "view": view_c,
                "voxB": voxel_inside_fraction(vox, cam_b, mask, res),
                "voxC": voxel_inside_fraction(vox, cam_c, mask, res),
                "tune": k % 2 == 0,
                "fan_safe": a["fan_safe"],
                "cam_c": cam_c,
                "vox": vox,
                "icon": a["icon"],
            }
        )
        if (k + 1) % 10 == 0:
            print(f"  {k + 1}/{len(assets)} assets ({time.time() - t0:.0f} s)", flush=True)

    def summary(name, key, subset=None, fan_safe=False):
        vals = np.array(
            [r[key] for r in results if (subset is None or r["tune"] == subset) and (r["fan_safe"] or not fan_safe)]
        )
        return f"{name:<58} mean {vals.mean():.3f}  median {np.median(vals):.3f}  (n={len(vals)})"

    print("\nsilhouette IoU (icon alpha >= 128 vs pixel-centre coverage):")
    print(summary("A  source default view, preview framing", "A"))
    print(summary("B  source default view, icon framing (bbox fit)", "B"))
    print(summary("B  ... held-out half", "B", False))
    print(summary("G  global fitted view, icon framing, held-out half", "G", False))
    print(summary("G  global fitted view, icon framing, tuning half", "G", True))
    print(summary("C  per-icon fitted view, icon framing", "C"))
    print("  the same on models whose OBJ has no polygon over 4 vertices:")
    print(summary("B  source default view, icon framing", "B", fan_safe=True))
    print(summary("C  per-icon fitted view, icon framing", "C", fan_safe=True))
    print("\nvoxel centres (64^3 surface voxels) projecting inside the icon silhouette:")
    print(summary("B  source default view, icon framing", "voxB"))
    print(summary("C  per-icon fitted view", "voxC"))
    print(summary("C  per-icon fitted view, models without polygons over 4", "voxC", fan_safe=True))
    views = np.array([[math.degrees(r["view"].yaw), math.degrees(r["view"].pitch), r["view"].scale] for r in results])
    print("\nper-icon views: yaw deg percentiles 10/50/90", np.percentile(views[:, 0], [10, 50, 90]).round(1),
          "| pitch", np.percentile(views[:, 1], [10, 50, 90]).round(1),
          "| viewScale", np.percentile(views[:, 2], [10, 50, 90]).round(2))  # fmt: skip
    near_default = np.mean((np.abs(views[:, 0] - 22.5) <= 5) & (np.abs(views[:, 1] + 11.25) <= 5))
    print(f"icons whose fitted view is within 5 deg of the default (yaw 22.5, pitch -11.25): {near_default:.0%}")
    worst = sorted(results, key=lambda r: r["C"])[:5]
    print("lowest per-icon IoU:", ", ".join(f"{r['key']} {r['C']:.2f}" for r in worst))

    if args.overlays:
        out = Path(args.overlays)
        out.mkdir(parents=True, exist_ok=True)
        ranked = sorted(results, key=lambda r: -r["C"])
        picks = [ranked[0], ranked[len(ranked) // 2], ranked[-1]]
        for tag, r in zip(("best", "median", "worst"), picks, strict=True):
            path = out / f"overlay_{tag}_{r['key']}.png"
            Image.fromarray(overlay(r["icon"], r["cam_c"], r["vox"], args.resolution)).save(path)
            print(f"overlay ({tag}, IoU {r['C']:.3f}, voxels inside {r['voxC']:.3f}): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
