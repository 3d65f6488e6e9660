"""`make demo`: image -> mesh with named parts, from the bundled model set, then the annotator and
the segmenter on the bundled example mesh.

1. partgen-generate's pipeline (partgen.pipelines.generate) on the example images (examples/images:
   two icons of training-library assets and one Scopia icon, a library no model was trained on):
   stage-1 layout -> voxels -> learned parts -> stage-2 Part-Attention sampling -> one mesh per
   part. Per image it writes parts.glb, mesh.obj, mesh.ply, layout.ply, preview.png and report.json
   under <output>/generate/<image>/ and prints the parts, the voxel tokens, the attention work Part
   Attention saves and the time of each stage. Then the table icon again, given the table's catalogue
   dimensions (150 x 75 x 74 cm: partgen-generate dimensions=[150,75,74]), whose proportions the
   layout takes; then stage 2 alone: examples/table.obj stands in for stage 1 (partgen-generate
   layout=...) and the table icon conditions the Part-Attention sampling.
2. partgen-annotate's per-asset pipeline on examples/table.obj (six authored parts as OBJ groups):
   surface voxels at R=64 with part labels, samples and a record; then the same mesh cut into parts
   without its groups, geometrically and by the bundled segmenter, scored against the authored parts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_MESH = ROOT / "examples" / "table.obj"
EXAMPLE_IMAGES = ROOT / "examples" / "images"
TABLE_DIMENSIONS = (150.0, 75.0, 74.0)  # eTeks#table's width, depth and height in the Sweet Home 3D catalogue (cm)


def generate(
    jobs: list[tuple[Path, Path | None, tuple | None]], output: Path, steps: int, seed: int, mesh_subdiv: int
) -> None:
    """jobs: (image, a coarse mesh standing in for stage 1 or None, the object's dimensions or None)."""
    from partgen.pipelines.generate import PartGenerator, make_report, write_outputs

    start = time.perf_counter()
    generator = PartGenerator.from_folder(steps=steps, mesh_subdiv=mesh_subdiv)
    print(f"loaded the bundled model set in {time.perf_counter() - start:.1f} s")
    for image, layout, dimensions in jobs:
        start = time.perf_counter()
        gen = generator(image, seed=seed, progress=True, layout=layout, dimensions=dimensions)
        name = image.stem if layout is None else f"{image.stem}_on_{layout.stem}"
        if dimensions is not None:
            name += "_" + "x".join(f"{d:g}" for d in dimensions)
            print(f"given the dimensions {' x '.join(f'{d:g}' for d in dimensions)} (width x depth x height)")
        folder = output / "generate" / name
        if layout is not None:
            print(f"stage 2 on a given coarse shape: {layout.name} stands in for stage 1")
        folder.mkdir(parents=True, exist_ok=True)
        settings = {"seed": seed, "steps": steps, "cfg": generator.guidance, "parts": "learned", "schedule": "model"}
        settings |= {
            "mesh_subdiv": mesh_subdiv,
            "layout": str(layout) if layout else "stage 1",
            "dimensions": dimensions,
        }
        report = make_report(image, gen, settings, "bundled", time.perf_counter() - start)
        write_outputs(folder, image, gen, report)
        t, tok = report["times_s"], gen.tokens
        parts = ", ".join(f"{name} {n}" for name, n in tok["parts"].items())
        print(
            f"{image.name}: {len(gen.parts)} parts ({parts} voxels); {tok['voxels']} voxel tokens at R={tok['resolution']}"
        )
        print(
            f"  attention pairs: global {tok['global_attention_pairs']:.3g}, part {tok['part_attention_pairs']:.3g} "
            f"({tok['global_attention_pairs'] / tok['part_attention_pairs']:.1f}x fewer)"
        )
        print("  seconds: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in t.items()))
        print(f"  wrote {folder.resolve()}/ (parts.glb, mesh.obj, mesh.ply, layout.ply, preview.png, report.json)")


def annotate_and_segment(mesh_path: Path, output: Path, resolution: int) -> None:
    from partgen.data_pipeline.annotate import AnnotateConfig, list_assets, run
    from partgen.data_pipeline.geometric import segment_mesh
    from partgen.eval.rand_index import rand_index_error
    from partgen.pipelines.segment import Segmenter

    start = time.perf_counter()
    assets = list_assets(str(mesh_path))
    counts = run(assets, output, AnnotateConfig(resolution=resolution, num_samples=20000), progress=False)
    record = output / "records" / assets[0].key
    if not (record / "meta.json").exists():
        raise SystemExit(f"demo: annotating {mesh_path} failed: {counts}")
    meta = json.loads((record / "meta.json").read_text())
    print(
        f"annotated {mesh_path.name} in {time.perf_counter() - start:.1f} s: {meta['counts']['voxels']} surface "
        f"voxels at R={resolution}, parts {', '.join(meta['parts']['names'])}; record {record.resolve()}"
    )
    with np.load(record / "mesh.npz") as mesh:
        vertices, faces, truth = mesh["vertices"].astype(np.float64), mesh["faces"], mesh["face_part"]
    start = time.perf_counter()
    geometric = segment_mesh(vertices, faces, None)
    print(
        f"geometric parts (normalised cuts, count chosen automatically): {geometric.max() + 1} parts in "
        f"{time.perf_counter() - start:.1f} s, Rand-index error against the authored parts "
        f"{rand_index_error(geometric, [truth]):.3f}"
    )
    start = time.perf_counter()
    k = int(len(np.unique(truth)))
    seg = Segmenter.from_checkpoint(None, device="cpu").label_mesh(vertices, faces, num_parts=k)
    print(
        f"learned parts (bundled segmenter: boundary model cuts, Point Transformer names; {k} asked): {', '.join(seg.names)} in "
        f"{time.perf_counter() - start:.1f} s, Rand-index error against the authored parts "
        f"{rand_index_error(seg.part, [truth]):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, nargs="*", default=sorted(EXAMPLE_IMAGES.glob("*.png")))
    parser.add_argument("--mesh", type=Path, default=EXAMPLE_MESH)
    parser.add_argument("--output", type=Path, default=Path("demo-output"))
    parser.add_argument("--steps", type=int, default=12, help="stage-2 sampling steps (partgen-generate: 25)")
    parser.add_argument("--mesh-subdiv", type=int, default=2, help="mesh cells per voxel side (partgen-generate: 4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    jobs = [(image, None, None) for image in args.images]
    table = EXAMPLE_IMAGES / "table.png"
    if table in args.images:
        jobs.append((table, None, TABLE_DIMENSIONS))  # the table icon with what its catalogue says
    if args.mesh is not None and table.is_file():
        jobs.append((table, args.mesh, None))  # stage 2 alone, on the example table
    generate(jobs, args.output, args.steps, args.seed, args.mesh_subdiv)
    annotate_and_segment(args.mesh, args.output / "annotated", args.resolution)
    print(f"demo done in {time.perf_counter() - start:.0f} s; outputs under {args.output.resolve()}")


if __name__ == "__main__":
    main()
