"""Build stage 1's reference bank (partgen.pipelines.references) from the training split of annotated
records, with the layout VAE of a model set:

    .venv/bin/python scripts/build_references.py --records data/sh3d64 \\
        --vae partgen/assets/generator/layout_vae --out partgen/assets/generator/references.safetensors

Only the training split is read (the seeded split of asset keys every partgen task uses; records of
evaluation-only libraries such as Scopia are refused), so no held-out asset can be retrieved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from partgen.models.io import load_trained
from partgen.models.vecset_vae import VecSetVAE
from partgen.pipelines.references import build_reference_bank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", required=True)
    parser.add_argument("--vae", required=True, help="the layout VAE the model set's layout flow was trained on")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--num-points", type=int, default=4096)
    parser.add_argument("--max-faces", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vae = load_trained(args.vae, VecSetVAE, "train one with partgen-train experiment=layout_vae")
    bank = build_reference_bank(args.records, vae, num_points=args.num_points, max_faces=args.max_faces)
    path = bank.save(args.out)
    print(f"{len(bank)} reference shapes -> {path} ({path.stat().st_size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
