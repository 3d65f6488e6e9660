"""Stage 1 end to end on held-out icons: image -> layout flow -> VAE occupancy -> stage-2 voxels.

    .venv/bin/python scripts/eval_layout.py --vae runs/layout_vae --flow runs/layout_flow \\
        --records data/sh3d64 --json layout.json

For each val shape of the records (the seeded split of asset keys the trainers use; --split eval
for a held-out library's own folder, e.g. Scopia annotated apart) the icon goes through
LayoutGenerator; the generated coordinates are scored against the record's voxels (IoU and recall:
stage 2 can only refine voxels it is given), the coarse mesh against the record's mesh (Chamfer,
F-score at 0.05), with the seconds of each stage; for an anchored VAE also the generated anchors
(the L surface points stage 2's voxels gather round with --coordinates anchors) against the same
mesh (anchor_chamfer, anchor_f_0.05: few points, so recall and these are low even when exact).
With --references (a bank, scripts/build_references.py) and --strength < 1 the flow starts from the
latents of the training shape chosen by icon and outline (--candidates, --silhouette-weight:
LayoutGenerator.choose_reference) and the layout is that shape's mesh carried by the generated
anchors (partgen.pipelines.references; --reference-edit: FlowEdit against the reference's own
icon, or SDEdit): its surface is scored the same way, besides its normal
consistency and F-score at 0.02 (surface_metrics: both normalised) and its part count against the
record's (within +-1). Whether the layouts follow the icons: the correlation across shapes of the generated and the true
voxels' extent along each axis (2-98% percentile span; about 0 when the image is ignored). Prints
means; --json keeps every shape.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from partgen.data_pipeline.datasets import ShapeRecords
from partgen.eval.geometry import chamfer_distance, f_score, sample_mesh, surface_metrics, voxel_iou, voxel_recall
from partgen.models.image_encoder import ImageError, load_image
from partgen.models.vecset_vae import extract_mesh
from partgen.pipelines.layout import LayoutGenerator
from partgen.pipelines.proportions import image_mask
from partgen.pipelines.references import ReferenceBank


def extent(coords: np.ndarray) -> list[float]:
    """(N, 3) voxel coordinates -> their 2-98% percentile span per axis (NaN when empty)."""
    if not len(coords):
        return [float("nan")] * 3
    return (np.percentile(coords, 98, axis=0) - np.percentile(coords, 2, axis=0)).tolist()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", required=True)
    ap.add_argument("--flow", required=True)
    ap.add_argument("--records", required=True)
    ap.add_argument("--split", default="val", choices=["val", "eval"])
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--coarse", type=int, default=32)
    ap.add_argument("--voxel-resolution", type=int, default=64)
    ap.add_argument("--dilation", type=int, default=1)
    ap.add_argument("--coordinates", default="surface", choices=["auto", "surface", "anchors"])
    ap.add_argument("--anchor-band", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-points", type=int, default=20000)
    ap.add_argument("--references", default=None, help="a reference bank (references.safetensors)")
    ap.add_argument("--strength", type=float, default=0.3, help="where the flow starts from the reference (1: noise)")
    ap.add_argument(
        "--reference-edit", choices=("flowedit", "sdedit"), default="sdedit", help="how the flow moves the reference"
    )
    ap.add_argument("--candidates", type=int, default=8, help="the reference: among this many nearest icons")
    ap.add_argument(
        "--silhouette-weight", type=float, default=3.0, help="the outline's weight in that choice (0: the nearest icon)"
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        gen = LayoutGenerator.from_checkpoints(
            args.vae,
            args.flow,
            steps=args.steps,
            guidance=args.guidance,
            resolution=args.resolution,
            coarse=args.coarse,
            voxel_resolution=args.voxel_resolution,
            dilation=args.dilation,
            coordinates=args.coordinates,
            anchor_band=args.anchor_band,
            references=ReferenceBank.load(args.references) if args.references else None,
            strength=args.strength,
            reference_edit=args.reference_edit,
            candidates=args.candidates,
            silhouette_weight=args.silhouette_weight,
        )
        ds = ShapeRecords(args.records, split=args.split, val_fraction=args.val_fraction)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"eval_layout: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    count = len(ds) if args.limit is None else min(args.limit, len(ds))
    rows = []
    for i in range(count):
        ref = ds.records[i]
        try:
            image = load_image(Path(ref.path) / "icon" / "icon.png", gen.image_size)
        except ImageError as err:
            print(f"skip {ref.key}: {err}", file=sys.stderr)
            continue
        mask = image_mask(Path(ref.path) / "icon" / "icon.png") if gen.uses_references else None
        layout = gen(image, seed=args.seed, mask=mask)
        with np.load(Path(ref.path) / "voxels.npz") as z:
            truth_voxels = z["coords"].astype(np.int64)
        row = {"key": ref.key, **{k: round(v, 3) for k, v in layout.times.items()}}
        row |= {
            "voxels": len(layout.voxels),
            "true_voxels": len(truth_voxels),
            "voxel_iou": voxel_iou(layout.voxels.numpy(), truth_voxels),
            "voxel_recall": voxel_recall(layout.voxels.numpy(), truth_voxels),
            "extent": extent(layout.voxels.numpy()),
            "true_extent": extent(truth_voxels),
        }
        vertices, faces = (layout.mesh.vertices, layout.mesh.faces) if layout.mesh else extract_mesh(layout.grid)
        with np.load(Path(ref.path) / "mesh.npz") as z:
            truth_points = sample_mesh(z["vertices"], z["faces"], args.compare_points, seed=1)
            truth = (z["vertices"], z["faces"])
        if layout.mesh is not None:
            m = surface_metrics((vertices, faces), truth, args.compare_points)
            row |= {"reference": layout.reference, "normal_consistency": m["normal_consistency"], "f_0.02": m["f_0.02"]}
            row |= {"parts": len(np.unique(layout.mesh.face_part)), "true_parts": len(ref.part_names)}
        if len(faces):
            pred = sample_mesh(vertices, faces, args.compare_points, seed=2)
            row |= {"chamfer": chamfer_distance(pred, truth_points), "f_score_0.05": f_score(pred, truth_points, 0.05)}
        else:
            row |= {"chamfer": float("nan"), "f_score_0.05": 0.0}
        if gen.vae.anchored:  # the generated surface points stage 2's voxels gather round (coordinates=anchors)
            anchors = layout.latents[:, :3].double().numpy()
            row |= {
                "anchor_chamfer": chamfer_distance(anchors, truth_points),
                "anchor_f_0.05": f_score(anchors, truth_points, 0.05),
            }
        rows.append(row)
        print(
            f"[{i + 1}/{count}] {ref.key[:48]:<48} voxel IoU {row['voxel_iou']:.3f} recall {row['voxel_recall']:.3f} "
            f"chamfer {row['chamfer']:.4f} F@0.05 {row['f_score_0.05']:.3f} "
            f"({sum(layout.times.values()):.1f} s)",
            file=sys.stderr,
        )
    if not rows:
        print("eval_layout: no shape with an icon", file=sys.stderr)
        return 1
    keys = ["voxel_iou", "voxel_recall", "chamfer", "f_score_0.05", "retrieve_s", "flow_s", "decode_s", "voxels_s"]
    keys = [k for k in keys if k in rows[0]]
    keys += [k for k in ("anchor_chamfer", "anchor_f_0.05", "normal_consistency", "f_0.02") if k in rows[0]]
    means = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    if "parts" in rows[0]:
        means["parts_within_1"] = float(np.mean([abs(r["parts"] - r["true_parts"]) <= 1 for r in rows]))
    means["empty_layouts"] = sum(1 for r in rows if r["voxels"] == 0)
    spans = np.array([r["extent"] for r in rows if r["voxels"]])
    true_spans = np.array([r["true_extent"] for r in rows if r["voxels"]])
    for axis, name in enumerate("xyz"):
        ok = len(spans) > 2 and spans[:, axis].std() > 0 and true_spans[:, axis].std() > 0
        means[f"extent_r_{name}"] = (
            float(np.corrcoef(spans[:, axis], true_spans[:, axis])[0, 1]) if ok else float("nan")
        )
    print(
        f"\nStage 1 layouts for {len(rows)} {args.split} icons of {args.records} ({args.steps} steps, cfg {args.guidance}):"
    )
    for k, v in means.items():
        print(f"  {k:<14} {v:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "mean": means, "shapes": rows}, indent=1))
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
