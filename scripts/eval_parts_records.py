"""Class-agnostic part segmentation of held-out annotated meshes against their authored parts.

    .venv/bin/python scripts/eval_parts_records.py --records data/sh3d64 --checkpoint runs/seg \\
        --methods geometric,learned,learned-cluster --json parts.json

For each val shape of the records (the seeded split of asset keys the trainers use; Scopia is
refused unless --split eval) with two parts or more, each method cuts the record's normalised mesh
into as many parts as the authored (cleaned) ones, and the Rand-index error against them is kept
(1 - RI over faces, as the Princeton benchmark scores; scripts/eval_psb.py does the benchmark):
    geometric        normalised cuts of the face graph (partgen.data_pipeline.geometric)
    learned          the bundled segmenter's mesh cut (mesh_parts="graph": the boundary model's
                     affinities, or the Point Transformer embedding's when it has none)
    learned-cluster  k-means of the embedding of surface samples (mesh_parts="cluster")
Prints the mean per method, and the adjusted Rand index (chance-corrected) beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from partgen.data_pipeline.datasets import select_records
from partgen.eval.rand_index import adjusted_rand_index, rand_index_error

METHODS = ("geometric", "learned", "learned-cluster")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True)
    ap.add_argument("--checkpoint", default=None, help="a trained segmenter (default: the bundled one)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--split", default="val", choices=["val", "eval"])
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    if unknown := set(methods) - set(METHODS):
        print(f"eval_parts_records: unknown methods {sorted(unknown)}; choose from {METHODS}", file=sys.stderr)
        return 1
    try:
        refs = select_records(args.records, args.split, args.val_fraction)
        segmenters = {}
        if any(m.startswith("learned") for m in methods):
            from partgen.pipelines.segment import Segmenter

            for m in methods:
                if m.startswith("learned"):
                    mode = "cluster" if m == "learned-cluster" else "graph"
                    segmenters[m] = Segmenter.from_checkpoint(args.checkpoint, mesh_parts=mode)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"eval_parts_records: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    from partgen.data_pipeline.geometric import segment_mesh

    rows = []
    for ref in refs[: args.limit]:
        with np.load(Path(ref.path) / "mesh.npz") as z:
            vertices, faces, truth = z["vertices"].astype(np.float64), z["faces"].astype(np.int64), z["face_part"]
        k = len(np.unique(truth))
        if k < 2:
            continue
        row = {"key": ref.key, "parts": int(k), "faces": len(faces)}
        for m in methods:
            start = time.perf_counter()
            labels = (
                segment_mesh(vertices, faces, k)
                if m == "geometric"
                else segmenters[m].segment_mesh(vertices, faces, k)[0]
            )
            row[m] = {
                "rand_index_error": rand_index_error(np.asarray(labels), [truth]),
                "ari": adjusted_rand_index(np.asarray(labels), truth),
                "seconds": round(time.perf_counter() - start, 2),
            }
        rows.append(row)
        print(
            f"[{len(rows)}] {ref.key[:50]:<50} {k} parts: "
            + ", ".join(f"{m} {row[m]['rand_index_error']:.3f}" for m in methods),
            file=sys.stderr,
        )
    if not rows:
        print("eval_parts_records: no held-out shape with two parts or more", file=sys.stderr)
        return 1
    means = {
        m: {key: float(np.mean([r[m][key] for r in rows])) for key in ("rand_index_error", "ari", "seconds")}
        for m in methods
    }
    print(f"\nParts of {len(rows)} {args.split} shapes of {args.records} (authored part count given):")
    for m, v in means.items():
        print(
            f"  {m:<16} Rand-index error {v['rand_index_error']:.3f}  ARI {v['ari']:.3f}  ({v['seconds']:.1f} s/shape)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "mean": means, "shapes": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
