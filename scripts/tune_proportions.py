"""Choose fit_proportions' settings (partgen.pipelines.proportions) on training icons, leave one out:

    .venv/bin/python scripts/tune_proportions.py --records data/sh3d64 --every 2 --workers 2

For every --every-th shape of the bundled reference bank (the training split only: no val and no
Scopia asset is in it), its icon retrieves the nearest OTHER bank shape (ReferenceBank.distances,
the icon's own entry left out), whose 2000-face mesh is then stretched to the icon's silhouette by
each setting and scored against the icon's true mesh (record mesh.npz): F@0.02, normal consistency
(10k samples each, partgen.eval.geometry) and view IoU with the icon's camera (icon/camera.json),
as scripts/eval_generate.py scores. Prints one row per setting (means) and, with --json, writes
the per-shape figures.
"""

from __future__ import annotations

import argparse
import functools
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SETTINGS = {  # name -> fit_proportions keywords (None: the reference unstretched)
    "reference as retrieved": None,
    "stretch 0.5-2": {"bound": float(np.log(2.0))},
    "stretch 0.67-1.5": {"bound": float(np.log(1.5))},
    "stretch 0.67-1.5, penalty 0.05": {"bound": float(np.log(1.5)), "penalty": 0.05},
    "stretch 0.8-1.25 (default)": {},
    "stretch 0.5-2, penalty 0.1": {"bound": float(np.log(2.0)), "penalty": 0.1},
}


@functools.cache
def load_bank(path: str):
    """The bank, read once per worker process (not once per shape)."""
    from partgen.pipelines.references import ReferenceBank

    return ReferenceBank.load(path)


def score_shape(args: tuple[str, str, int]) -> dict:
    import torch

    from partgen.data_pipeline.sh3d_icons import record_icon_camera, render_silhouette, silhouette_iou
    from partgen.eval.geometry import normalise_box, surface_metrics
    from partgen.pipelines.proportions import fit_proportions, image_mask

    records, bank_path, i = args
    torch.set_num_threads(1)
    bank = load_bank(bank_path)
    distances = bank.distances(bank.embeddings[i], bank.descriptors[i])
    distances[i] = float("inf")
    ref = bank.meshes[int(distances.argmin())]
    record = Path(records) / "records" / bank.keys[i]
    mask = image_mask(record / "icon" / "icon.png")
    with np.load(record / "mesh.npz") as z:
        truth = (z["vertices"].astype(np.float64), z["faces"].astype(np.int64))
    camera = record_icon_camera(record, *truth)
    true_mask = render_silhouette(normalise_box(*truth), truth[1], camera)
    out = {"key": bank.keys[i], "reference": bank.keys[int(distances.argmin())]}
    vertices = ref.vertices.astype(np.float64)
    for name, options in SETTINGS.items():
        v = vertices if options is None else vertices * fit_proportions(vertices, ref.faces, mask, **options).scale
        m = surface_metrics((v, ref.faces), truth, 10000)
        iou = silhouette_iou(render_silhouette(normalise_box(v, ref.faces), ref.faces, camera), true_mask)
        out[name] = {"f_0.02": m["f_0.02"], "normal_consistency": m["normal_consistency"], "view_iou": iou}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", required=True)
    parser.add_argument("--bank", default="partgen/assets/generator/references.safetensors")
    parser.add_argument("--every", type=int, default=2, help="score every n-th bank shape")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    count = len(load_bank(args.bank))
    jobs = [(args.records, args.bank, i) for i in range(0, count, args.every)]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(score_shape, jobs, chunksize=4))
    print(f"{len(rows)} training icons, leave one out | F@0.02 | normal consistency | view IoU")
    for name in SETTINGS:
        means = [np.mean([r[name][k] for r in rows]) for k in ("f_0.02", "normal_consistency", "view_iou")]
        print(f"{name:34s} | {means[0]:.3f} | {means[1]:.3f} | {means[2]:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
