"""The quality side of the Part Attention ablation (issue #7): the same trained PartDiT sampled with
its part schedule and with every layer global, on held-out icons, decoded and compared with the truth.

    .venv/bin/python scripts/eval_part_dit.py --dit runs/part_dit --vae runs/slat_vae --records data/sh3d64b --json q.json

Per val record (the seeded split of asset keys training used; Scopia is refused), stage 2 alone:
the record's own voxels and authored parts, its icon and icon camera -> pipelines.generate.sample_part_latents (--steps,
--cfg, seed per shape) with schedule "part" (the model's) and "global" -> SLat VAE decode ->
marching cubes over the blocks at 4x the voxel resolution -> Chamfer distance (L1, halved;
normalised cube of side 1) and F-score at 0.01 and 0.05 against the record's mesh. The VAE's own
reconstruction (posterior mean decoded) is the ceiling the DiT can reach. Prints means and writes
every figure (with the sampling time of each schedule) to --json.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from partgen.data_pipeline.datasets import BlockRecords
from partgen.eval.geometry import chamfer_distance, f_score, sample_mesh
from partgen.models.io import load_trained
from partgen.models.part_dit import PartDiT
from partgen.models.slat_vae import SLatVAE, blocks_to_mesh
from partgen.pipelines.generate import sample_part_latents
from partgen.train.tasks.part_dit import icon_condition


def surface_scores(vae: SLatVAE, voxels, latents: torch.Tensor, truth: np.ndarray, points: int) -> dict:
    s = vae.subdiv
    blocks = vae.decode(voxels.replace(feats=latents)).reshape(-1, s + 1, s + 1, s + 1).numpy()
    v, f = blocks_to_mesh(voxels.coords[:, 1:].numpy(), blocks, voxels.resolution, 0.0)
    if len(f) == 0:
        return {"chamfer": None, "f_0.01": 0.0, "f_0.05": 0.0}
    pred = sample_mesh(v, f, points, seed=2)
    return {
        "chamfer": chamfer_distance(pred, truth),
        "f_0.01": f_score(pred, truth, 0.01),
        "f_0.05": f_score(pred, truth, 0.05),
    }


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dit", required=True)
    parser.add_argument("--vae", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--max-voxels", type=int, default=8000)
    parser.add_argument("--keys", help="comma list of record keys to evaluate (default: the first --max-shapes)")
    parser.add_argument("--schedules", default="part,global", help="comma list of part, global")
    parser.add_argument("--max-shapes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--cfg", type=float, default=3.0)
    parser.add_argument("--compare-points", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dit = load_trained(args.dit, PartDiT)
    vae = load_trained(args.vae, SLatVAE)
    ds = BlockRecords(args.records, args.split, args.val_fraction, 0, args.max_voxels)
    schedules = [s for s in args.schedules.split(",") if s]
    if args.keys:
        wanted = args.keys.split(",")
        ds.records = [ref for ref in ds.records if ref.key in wanted]
        if len(ds.records) != len(wanted):
            parser.error(f"--keys: {len(wanted) - len(ds.records)} of them are not {args.split} records here")
    size = dit.image_encoder.image_size
    rows = []
    for i in range(min(args.max_shapes, len(ds))):
        voxels, key = ds[i]
        image, camera = icon_condition(ds.records[i].path, size)
        with np.load(ds.records[i].path / "mesh.npz") as z:
            truth = sample_mesh(z["vertices"], z["faces"], args.compare_points, seed=1)
        row = {"key": key, "voxels": len(voxels), "parts": int(voxels.part.max()) + 1}
        row["vae"] = surface_scores(vae, voxels, vae.encode(voxels).mean, truth, args.compare_points)
        for schedule in schedules:
            t0 = time.perf_counter()
            latents = sample_part_latents(
                dit, voxels, image[None], camera[None], steps=args.steps, guidance=args.cfg,
                generator=torch.Generator().manual_seed(i), schedule=None if schedule == "part" else "global",
            )  # fmt: skip
            row[schedule] = surface_scores(vae, voxels, latents, truth, args.compare_points)
            row[schedule]["sample_s"] = time.perf_counter() - t0
        rows.append(row)
        print(key, row["voxels"], {k: {m: round(v, 4) for m, v in row[k].items() if v is not None} for k in ("vae", *schedules)}, flush=True)  # fmt: skip
    summary = {}
    for name in ("vae", *schedules):
        summary[name] = {
            m: float(np.mean([r[name][m] for r in rows if r[name].get(m) is not None]))
            for m in ("chamfer", "f_0.01", "f_0.05", "sample_s")
            if any(r[name].get(m) is not None for r in rows)
        }
    print(json.dumps({"shapes": len(rows), **summary}, indent=1))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "summary": summary, "shapes": rows}, f, indent=1)


if __name__ == "__main__":
    main()
