"""Rand-index error of a part segmenter on the Princeton Segmentation Benchmark (Chen et al. 2009).

    python scripts/eval_psb.py --method geometric [--data PATH] [--json out.json] [--limit 3] [--parts human|auto]

For each mesh: 1 - Rand index against each human segmentation, averaged over the human
segmentations of that mesh; then averaged over the meshes of a category and over all meshes
(the benchmark's protocol). As in the benchmark, algorithms that need a part count get the most
frequent count among the mesh's human segmentations (--parts human); --parts auto lets the
method choose. Printed beside the published figures of the seven algorithms in the benchmark
paper (its Figure 6, Rand Index, all 380 meshes; psb-dev is a subset, so compare with care).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from partgen.data_pipeline.psb import PSBDataset
from partgen.eval.rand_index import rand_index_error

# Rand-index error over the whole benchmark, as published (Chen, Golovinskiy, Funkhouser 2009, Fig. 6)
PUBLISHED = {
    "Human": 0.103,
    "Randomized Cuts": 0.152,
    "Normalized Cuts": 0.172,
    "Shape Diameter": 0.175,
    "Core Extraction": 0.210,
    "Fitting Primitives": 0.210,
    "Random Walks": 0.214,
    "K-Means": 0.251,
    "Every face": 0.345,
    "One segment": 0.655,
}


def human_part_count(segmentations: list[np.ndarray]) -> int:
    """The most frequent segment count among the human segmentations (smallest on ties)."""
    counts = collections.Counter(len(np.unique(s)) for s in segmentations)
    best = max(counts.values())
    return min(k for k, c in counts.items() if c == best)


def _segment(method: str, vertices, faces, num_parts, checkpoint=None, mesh_parts="graph"):
    if method == "geometric":
        from partgen.data_pipeline.geometric import segment_mesh

        return segment_mesh(vertices, faces, num_parts)
    if method == "learned":
        from partgen.data_pipeline.parts import learned_face_parts

        labels, _ = learned_face_parts(vertices, faces, num_parts, checkpoint, mesh_parts=mesh_parts)
        return np.asarray(labels)
    raise ValueError(f"unknown method {method!r}")


def _evaluate(args):
    root, mesh_id, method, parts, checkpoint, mesh_parts = args
    ds = PSBDataset(root)
    mesh = ds[[row[0] for row in ds.index].index(mesh_id)]
    k = human_part_count(mesh.segmentations) if parts == "human" else None
    t = time.perf_counter()
    labels = _segment(method, mesh.vertices, mesh.faces, k, checkpoint, mesh_parts)
    seconds = time.perf_counter() - t
    return {
        "id": mesh.id,
        "category": mesh.category,
        "faces": len(mesh.faces),
        "parts_asked": k,
        "parts": int(len(np.unique(labels))),
        "rand_index_error": rand_index_error(labels, mesh.segmentations),
        "seconds": round(seconds, 3),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["geometric", "learned"], required=True)
    ap.add_argument("--data", default=None, help="psb-dev tarball or folder (default ../shared/data/psb-dev.tar.gz)")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--parts", choices=["human", "auto"], default="human")
    ap.add_argument("--limit", type=int, default=None, help="meshes per category")
    ap.add_argument("--categories", default=None, help="comma-separated subset")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="learned: a trained segmenter (run or model folder)")
    ap.add_argument(
        "--mesh-parts",
        choices=["graph", "cluster"],
        default="graph",
        help="learned: normalised cuts of the face graph with the embedding in its affinities, or k-means of the samples",
    )
    args = ap.parse_args(argv)

    try:
        ds = PSBDataset(args.data, args.categories.split(",") if args.categories else None, args.limit)
    except (FileNotFoundError, ValueError) as err:
        print(f"eval_psb: {err}", file=sys.stderr)
        return 1
    # the dataset is re-opened per worker from its extracted folder (cheap), meshes one by one
    jobs = [(ds.root, mesh_id, args.method, args.parts, args.checkpoint, args.mesh_parts) for mesh_id, _ in ds.index]
    start = time.perf_counter()
    rows = []
    if args.method == "learned":
        try:  # fail once, here, when the segmenter or its checkpoint is missing
            from partgen.data_pipeline.parts import DEFAULT_LEARNED, learned_segmenter
            from partgen.pipelines.segment import resolve_checkpoint

            learned_segmenter(DEFAULT_LEARNED)
            resolve_checkpoint(args.checkpoint)
        except (FileNotFoundError, ValueError) as err:
            print(f"eval_psb: {' '.join(str(err).split())}", file=sys.stderr)
            return 1
    with ProcessPoolExecutor(args.workers) as pool:
        for n, row in enumerate(pool.map(_evaluate, jobs), 1):
            rows.append(row)
            print(
                f"[{n}/{len(jobs)}] {row['category']:<10} {row['id']:>4}: error {row['rand_index_error']:.3f} "
                f"({row['parts']} parts, asked {row['parts_asked']}, {row['seconds']:.1f} s)",
                file=sys.stderr,
            )
    by_cat: dict[str, list[float]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r["rand_index_error"])
    overall = float(np.mean([r["rand_index_error"] for r in rows]))
    result = {
        "method": args.method,
        "parts": args.parts,
        "data": str(args.data or "default psb-dev"),
        "checkpoint": args.checkpoint,
        "mesh_parts": args.mesh_parts if args.method == "learned" else None,
        "meshes": len(rows),
        "rand_index_error": overall,
        "categories": {c: float(np.mean(v)) for c, v in by_cat.items()},
        "published": PUBLISHED,
        "seconds": round(time.perf_counter() - start, 1),
        "meshes_detail": rows,
    }
    print(f"\nRand-index error on {len(rows)} PSB meshes (lower is better)")
    table = [(f"partgen {args.method} ({args.parts} part count)", overall)]
    table += [(f"{name} (published, all 380)", v) for name, v in PUBLISHED.items()]
    for name, v in sorted(table, key=lambda x: x[1]):
        print(f"  {name:<44} {v:.3f}")
    print("\nper category:")
    for c, v in result["categories"].items():
        print(f"  {c:<10} {v:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
