"""How far any training shape can go on normal consistency: for each held-out asset, the bundled
reference bank's shape that scores best against its true mesh, chosen BY THE TRUTH (an oracle no
image can be), as scripts/eval_generate.py scores (both meshes normalised by normalise_box):

    .venv/bin/python scripts/bank_bounds.py --records data/sh3d64 --json runs/bounds/val.json

Every bank shape (its 2000-face mesh, authored surface as is, unstretched) is scored against the
truth at --screen samples a side; the --top best are scored again at --samples (the eval's 20k)
and the best of those is the asset's bound. Any generator that carries a training shape's surface
into its output (retrieval, partgen's reference-started stage 1) is below this on average, and
partgen's stage 2 adds its own roughness on top. The bank holds no val and no Scopia asset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def sampled(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int):
    """(points, normals, KD-tree) of a mesh normalised as the eval does."""
    from scipy.spatial import cKDTree

    from partgen.eval.geometry import normalise_box, sample_mesh

    faces = np.asarray(faces, np.int64)
    points, normals = sample_mesh(normalise_box(vertices, faces), faces, count, seed=seed, normals=True)
    return points, normals, cKDTree(points)


def consistency(a, b) -> float:
    """partgen.eval.geometry.normal_consistency of two sampled() meshes, their trees reused."""
    from partgen.eval.geometry import normal_consistency

    (pa, na, ta), (pb, nb, tb) = a, b
    return normal_consistency(pa, na, pb, nb, trees=(ta, tb))


def best_of_bank(truth, screened: list, meshes: list, screen: int, samples: int, top: int) -> tuple[int, float]:
    """(bank index, normal consistency at `samples`) of the bank shape nearest the truth
    ((vertices, faces)) by normal consistency; screened: sampled() of each of meshes at `screen`."""
    coarse = sampled(*truth, screen, seed=0)
    order = np.argsort([-consistency(shape, coarse) for shape in screened])[:top]
    fine = sampled(*truth, samples, seed=0)
    scores = [consistency(sampled(meshes[i][0], meshes[i][1], samples, seed=1), fine) for i in order]
    best = int(np.argmax(scores))
    return int(order[best]), float(scores[best])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", required=True, help="annotated records (partgen-annotate output)")
    parser.add_argument("--bank", default=None, help="references.safetensors (default: the bundled bank)")
    parser.add_argument("--split", default="val", help="the records scored (val: the eval's 48)")
    parser.add_argument("--samples", type=int, default=20000, help="samples a side for the final score")
    parser.add_argument("--screen", type=int, default=5000, help="samples a side for the first pass")
    parser.add_argument("--top", type=int, default=10, help="shapes re-scored at --samples")
    parser.add_argument("--json", default=None, help="write the per-asset bounds here")
    args = parser.parse_args(argv)

    from partgen.data_pipeline.datasets import select_records
    from partgen.pipelines.generate import DEFAULT_MODELS
    from partgen.pipelines.references import ReferenceBank

    bank = ReferenceBank.load(args.bank or DEFAULT_MODELS / "references.safetensors")
    meshes = [(m.vertices.astype(np.float64), m.faces.astype(np.int64)) for m in bank.meshes]
    screened = [sampled(v, f, args.screen, seed=1) for v, f in meshes]
    rows = []
    for record in select_records(args.records, args.split, 0.1):
        with np.load(record.path / "mesh.npz") as z:
            truth = (z["vertices"].astype(np.float64), z["faces"].astype(np.int64))
        index, score = best_of_bank(truth, screened, meshes, args.screen, args.samples, args.top)
        rows.append({"key": record.key, "best": bank.keys[index], "normal_consistency": score})
        print(f"{record.key}: {score:.3f} ({bank.keys[index]})", flush=True)
    scores = np.array([r["normal_consistency"] for r in rows])
    summary = {"assets": len(rows), "mean": float(scores.mean()), "at_least_0.75": float((scores >= 0.75).mean())}
    print(
        f"best training shape by the truth, {len(rows)} assets: normal consistency {summary['mean']:.3f} "
        f"on average, >= 0.75 on {summary['at_least_0.75']:.2f}"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"settings": vars(args), "summary": summary, "assets": rows}, indent=1))
    return summary


if __name__ == "__main__":
    main()
