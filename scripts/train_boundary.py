"""Train the boundary model (partgen.models.boundary_net.BoundaryNet) on all of psb-dev's human segmentations.

    .venv/bin/python scripts/train_boundary.py --out partgen/assets/segmenter/boundary [--data PATH] [--epochs N]

Edge descriptors (partgen.data_pipeline.boundary) are computed once per mesh and cached in the
partgen cache (psb-boundary/); the model folder written (model.safetensors + model.yaml +
training.json with the settings and the data) is what partgen-segment and
`partgen-annotate parts=learned` load from partgen/assets/segmenter/boundary. The cross-validated
figures of the same recipe come from `scripts/eval_psb.py --method learned --cv 4`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from partgen.data_pipeline.psb import PSBDataset
from partgen.models.io import save_model
from partgen.native import cache_root
from partgen.train.boundary import FEATURE_VERSION, BoundaryTrainConfig, fit_boundary_net, psb_edge_set


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the model folder to write")
    ap.add_argument("--data", default=None, help="psb-dev tarball or folder (default ../shared/data/psb-dev.tar.gz)")
    ap.add_argument("--epochs", type=int, default=BoundaryTrainConfig.epochs)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        ds = PSBDataset(args.data)
    except (FileNotFoundError, ValueError) as err:
        print(f"train_boundary: {err}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    meshes = psb_edge_set(ds, cache_root() / "psb-boundary", args.workers)
    print(f"descriptors of {len(meshes)} meshes in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    torch.set_num_threads(max(1, args.workers))
    cfg = BoundaryTrainConfig(epochs=args.epochs)
    model = fit_boundary_net(meshes, cfg, log=lambda line: print(line, file=sys.stderr))
    config = {
        "_target_": "partgen.models.boundary_net.BoundaryNet",
        "in_features": model.in_features,
        "hidden": cfg.hidden,
        "depth": cfg.depth,
    }
    out = save_model(args.out, model, config)
    info = {
        "data": str(args.data or "default psb-dev"),
        "meshes": len(meshes),
        "feature_version": FEATURE_VERSION,
        "train": dataclasses.asdict(cfg),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (Path(out) / "training.json").write_text(json.dumps(info, indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
