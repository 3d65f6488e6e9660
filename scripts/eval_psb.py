"""Rand-index error of a part segmenter on the Princeton Segmentation Benchmark (Chen et al. 2009).

    python scripts/eval_psb.py --method geometric [--data PATH] [--json out.json] [--limit 3] [--parts human|auto]
    python scripts/eval_psb.py --method learned --cv 4 [--affinity learned|combined] [--parts human|auto]

For each mesh: 1 - Rand index against each human segmentation, averaged over the human
segmentations of that mesh; then averaged over the meshes of a category and over all meshes
(the benchmark's protocol). As in the benchmark, algorithms that need a part count get the most
frequent count among the mesh's human segmentations (--parts human); --parts auto lets the
method choose. Printed beside the published figures of the seven algorithms in the benchmark
paper (its Figure 6, Rand Index, all 380 meshes; psb-dev is a subset, so compare with care).

--method learned scores the shipped segmenter (its boundary model was trained on all of psb-dev:
an in-sample figure). --cv K is the honest one: the boundary model (partgen.train.boundary) is
trained on K-1 folds (PSBDataset.folds: blocks of the mesh index within every category) and
scores the held-out fold, for every fold; the per-fold means are printed and kept in the JSON.
Edge descriptors are cached in the partgen cache (psb-boundary/).
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

from partgen.data_pipeline.geometric import GeometricConfig, segment_mesh
from partgen.data_pipeline.psb import PSBDataset
from partgen.eval.rand_index import rand_index_error
from partgen.native import cache_root

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


def cross_validated_boundaries(
    ds: PSBDataset, k: int, workers: int, epochs: int | None = None
) -> tuple[dict, np.ndarray]:
    """{mesh id: (E,) cut probabilities from the model trained on the other k-1 folds}, and the folds."""
    import torch

    from partgen.train.boundary import BoundaryTrainConfig, fit_boundary_net, psb_edge_set

    folds = ds.folds(k)
    ids = [row[0] for row in ds.index]
    edges = psb_edge_set(ds, cache_root() / "psb-boundary", workers)
    torch.set_num_threads(max(1, workers))
    cfg = BoundaryTrainConfig() if epochs is None else BoundaryTrainConfig(epochs=epochs)
    boundaries = {}
    for fold in range(k):
        t = time.perf_counter()
        model = fit_boundary_net([e for e, f in zip(edges, folds, strict=True) if f != fold], cfg)
        for mesh_id, e, f in zip(ids, edges, folds, strict=True):
            if f == fold:
                boundaries[mesh_id] = model.probability(e.features).numpy()
        print(
            f"fold {fold}: trained on {int((folds != fold).sum())} meshes in {time.perf_counter() - t:.0f} s",
            file=sys.stderr,
        )
    return boundaries, folds


def _evaluate(args):
    root, mesh_id, method, parts, checkpoint, mesh_parts, boundary, affinity = args
    ds = PSBDataset(root)
    mesh = ds[[row[0] for row in ds.index].index(mesh_id)]
    k = human_part_count(mesh.segmentations) if parts == "human" else None
    t = time.perf_counter()
    if boundary is not None:  # --cv: this fold's model's cut probabilities of the mesh's edges
        cfg = GeometricConfig(geometry_terms=affinity == "combined")
        labels = segment_mesh(mesh.vertices, mesh.faces, k, cfg, boundary=boundary)
    else:
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
        "--cv",
        type=int,
        default=None,
        metavar="K",
        help="learned: train the boundary model on K-1 folds (blocks of mesh index within each category) "
        "and score the held-out fold, for every fold",
    )
    ap.add_argument(
        "--affinity",
        choices=["learned", "combined"],
        default="learned",
        help="--cv: the cut's affinities from the learned boundaries alone, or with the crease and thickness terms",
    )
    ap.add_argument("--epochs", type=int, default=None, help="--cv: training epochs per fold")
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
    start = time.perf_counter()
    boundaries, folds = {}, None
    if args.cv is not None:
        if args.method != "learned":
            print("eval_psb: --cv trains the learned boundary model: use it with --method learned", file=sys.stderr)
            return 1
        try:
            boundaries, folds = cross_validated_boundaries(ds, args.cv, args.workers, args.epochs)
        except ValueError as err:
            print(f"eval_psb: {err}", file=sys.stderr)
            return 1
    jobs = [
        (
            ds.root,
            mesh_id,
            args.method,
            args.parts,
            args.checkpoint,
            args.mesh_parts,
            boundaries.get(mesh_id),
            args.affinity,
        )
        for mesh_id, _ in ds.index
    ]
    rows = []
    if args.method == "learned" and args.cv is None:
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
            if folds is not None:
                row["fold"] = int(folds[n - 1])
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
        "cv": args.cv,
        "affinity": args.affinity if args.cv is not None else None,
        "meshes": len(rows),
        "rand_index_error": overall,
        "categories": {c: float(np.mean(v)) for c, v in by_cat.items()},
        "published": PUBLISHED,
        "seconds": round(time.perf_counter() - start, 1),
        "meshes_detail": rows,
    }
    print(f"\nRand-index error on {len(rows)} PSB meshes (lower is better)")
    name = f"partgen {args.method}" + (f", {args.cv}-fold CV, {args.affinity} affinity" if args.cv else "")
    table = [(f"{name} ({args.parts} part count)", overall)]
    table += [(f"{name} (published, all 380)", v) for name, v in PUBLISHED.items()]
    for name, v in sorted(table, key=lambda x: x[1]):
        print(f"  {name:<44} {v:.3f}")
    if folds is not None:
        for fold in range(args.cv):
            errors = [r["rand_index_error"] for r in rows if r["fold"] == fold]
            print(f"  fold {fold}: {np.mean(errors):.3f} on {len(errors)} held-out meshes")
        result["folds"] = {
            str(f): float(np.mean([r["rand_index_error"] for r in rows if r["fold"] == f])) for f in range(args.cv)
        }
    print("\nper category:")
    for c, v in result["categories"].items():
        print(f"  {c:<10} {v:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
