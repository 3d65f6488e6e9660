"""Reconstruction quality of a trained VecSet VAE (stage 1) on held-out annotated records.

    .venv/bin/python scripts/eval_vecset.py --checkpoint runs/layout_vae --records data/sh3d64 --json vae.json

Per val shape (the same seeded split of asset keys as training; Scopia is refused): encode
--num-points surface samples (posterior mean), decode the occupancy hierarchically on a
--resolution grid, then
    mesh:   marching cubes -> Chamfer distance (L1, halved; normalised cube of side 1) and F-score
            at 0.01 and 0.05 against the record's normalised mesh, --compare-points each side
    voxels: the stage-2 coordinates (occupancy_to_voxels at --voxel-resolution, --dilation) ->
            IoU and recall against the record's voxels (the surface voxels the annotator made)
    volume: IoU of the inside sets (target: sdf < shell) over the record's volume queries, and the
            inside profile: the share of those queries decoded inside per band of signed distance
            in stage-2 voxels, pooled over the shapes (the target is inside below shell: 0.5 voxel
            by default; a blurred VAE stays inside several voxels out)
and the time to decode and extract. Prints means and writes every figure to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from partgen.data_pipeline.datasets import ShapeRecords
from partgen.eval.geometry import (
    PROFILE_EDGES,
    chamfer_distance,
    f_score,
    inside_profile,
    sample_mesh,
    voxel_iou,
    voxel_recall,
)
from partgen.models.io import load_trained
from partgen.models.vecset_vae import VecSetVAE, extract_mesh, occupancy_to_voxels
from partgen.structures import cu_seqlens_from_lengths

HINT = "train one with `partgen-train experiment=layout_vae hydra.run.dir=runs/layout_vae`"


def load_vae(path: str) -> VecSetVAE:
    return load_trained(path, VecSetVAE, HINT)


@torch.no_grad()
def evaluate_shape(model: VecSetVAE, ds: ShapeRecords, index: int, args) -> dict:
    ref = ds.records[index]
    data = ds.load(index)
    rng = np.random.default_rng(args.seed)
    keep = rng.choice(len(data["points"]), min(args.num_points, len(data["points"])), replace=False)
    points = torch.from_numpy(data["points"][keep]).float()
    normals = torch.from_numpy(data["normals"][keep]).float()
    sharp = torch.from_numpy(data["sharp"][keep].astype(bool))
    cu = cu_seqlens_from_lengths([len(points)])
    t0 = time.perf_counter()
    post = model.encode(points, cu, normals, sharp, num_latents=args.latents)
    tokens = model.decode(post.mean, post.cu_seqlens)
    grid = model.decode_grid(tokens, resolution=args.resolution, coarse=args.coarse)
    t_decode = time.perf_counter() - t0
    vertices, faces = extract_mesh(grid)
    t_mesh = time.perf_counter() - t0 - t_decode
    row = {"key": ref.key, "decode_s": round(t_decode, 3), "mesh_s": round(t_mesh, 3), "queried": grid.queried}

    with np.load(ref.path / "mesh.npz") as z:
        truth_points = sample_mesh(z["vertices"], z["faces"], args.compare_points, seed=1)
    if len(faces):
        pred_points = sample_mesh(vertices, faces, args.compare_points, seed=2)
        row |= {
            "chamfer": chamfer_distance(pred_points, truth_points),
            "f_score_0.01": f_score(pred_points, truth_points, 0.01),
            "f_score_0.05": f_score(pred_points, truth_points, 0.05),
        }
    else:  # nothing decoded: the worst scores, not a skipped shape
        row |= {"chamfer": float("nan"), "f_score_0.01": 0.0, "f_score_0.05": 0.0}
    with np.load(ref.path / "voxels.npz") as z:
        truth_voxels = z["coords"].astype(np.int64)
    res = int(json.loads((ref.path / "meta.json").read_text()).get("resolution", args.voxel_resolution))
    if res == args.voxel_resolution:
        voxels = occupancy_to_voxels(grid, args.voxel_resolution, args.dilation).numpy()
        row |= {
            "voxel_iou": voxel_iou(voxels, truth_voxels),
            "voxel_recall": voxel_recall(voxels, truth_voxels),
            "voxels": len(voxels),
            "true_voxels": len(truth_voxels),
        }
    queries = torch.from_numpy(data["queries"]).float()
    values = model.query(tokens, post.cu_seqlens, queries, cu_seqlens_from_lengths([len(queries)]))
    pred, truth = model.inside(values).numpy(), data["sdf"] < args.shell
    row["volume_iou"] = float((pred & truth).sum() / max((pred | truth).sum(), 1))
    row["profile_queries"], row["profile_inside"] = (c.tolist() for c in inside_profile(pred, data["sdf"]))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a run folder, its model/ or a checkpoint step folder")
    ap.add_argument("--records", required=True, help="partgen-annotate output folder (with volume.npz)")
    ap.add_argument("--split", default="val", choices=["val", "eval"], help="eval: a held-out library's folder")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--limit", type=int, default=None, help="at most this many shapes (first by key)")
    ap.add_argument("--num-points", type=int, default=4096)
    ap.add_argument("--latents", type=int, default=None, help="L at inference (default: the model's)")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--coarse", type=int, default=32)
    ap.add_argument("--voxel-resolution", type=int, default=64)
    ap.add_argument("--dilation", type=int, default=1)
    ap.add_argument("--shell", type=float, default=1.0 / 128)
    ap.add_argument("--compare-points", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        model = load_vae(args.checkpoint)
        ds = ShapeRecords(args.records, split=args.split, val_fraction=args.val_fraction)
    except (FileNotFoundError, ValueError, RuntimeError) as err:  # RuntimeError: weights of another architecture
        print(f"eval_vecset: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    count = len(ds) if args.limit is None else min(args.limit, len(ds))
    rows = []
    for i in range(count):
        row = evaluate_shape(model, ds, i, args)
        rows.append(row)
        print(
            f"[{i + 1}/{count}] {row['key'][:48]:<48} chamfer {row['chamfer']:.4f} F@0.01 {row['f_score_0.01']:.3f} "
            f"voxel IoU {row.get('voxel_iou', float('nan')):.3f} recall {row.get('voxel_recall', float('nan')):.3f} "
            f"({row['decode_s']:.1f} s)",
            file=sys.stderr,
        )
    keys = ["chamfer", "f_score_0.01", "f_score_0.05", "voxel_iou", "voxel_recall", "volume_iou", "decode_s", "mesh_s"]
    means = {k: float(np.nanmean([r[k] for r in rows if k in r])) for k in keys if any(k in r for r in rows)}
    means["failed_decodes"] = sum(1 for r in rows if np.isnan(r["chamfer"]))
    print(f"\nVecSet VAE reconstruction on {len(rows)} {args.split} shapes of {args.records}:")
    for k, v in means.items():
        print(f"  {k:<16} {v:.4f}")
    queries = np.sum([r["profile_queries"] for r in rows], 0)
    inside = np.sum([r["profile_inside"] for r in rows], 0)
    bands = [f"[{lo:g}, {hi:g})" for lo, hi in zip(PROFILE_EDGES[:-1], PROFILE_EDGES[1:], strict=True)]
    profile = {band: round(float(i / q), 4) if q else None for band, i, q in zip(bands, inside, queries, strict=True)}
    print("  inside share by signed distance (stage-2 voxels):")
    for band, share in profile.items():
        print(f"    {band:<14} {share}")
    if args.json:
        out = {
            "checkpoint": args.checkpoint,
            "records": args.records,
            "args": vars(args),
            "mean": means,
            "inside_profile": profile,
            "shapes": rows,
        }
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
