"""Build stage 1's reference bank (partgen.pipelines.references) from the training split of annotated
records, with the layout VAE of a model set:

    .venv/bin/python scripts/build_references.py --records data/sh3d64 \\
        --vae partgen/assets/generator/layout_vae --out partgen/assets/generator/references.safetensors

Then it fits the bank's retrieval projection (partgen.pipelines.shape_metric: icon embeddings mapped
so that near means near in shape) on the bank's own shapes; --projection-dim 0 leaves it out.
--update BANK fits the projection of a bank already built (its shapes and embeddings unchanged) and
writes it to --out:

    .venv/bin/python scripts/build_references.py --update partgen/assets/generator/references.safetensors \
        --out partgen/assets/generator/references.safetensors

Only the training split is read (the seeded split of asset keys every partgen task uses; records of
evaluation-only libraries such as Scopia are refused), so no held-out asset can be retrieved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from partgen.models.io import load_trained
from partgen.models.vecset_vae import VecSetVAE
from partgen.pipelines.references import ReferenceBank, build_reference_bank
from partgen.pipelines.shape_metric import fit_bank_projection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", help="annotated records (their training split is read)")
    parser.add_argument("--vae", help="the layout VAE the model set's layout flow was trained on")
    parser.add_argument("--update", type=Path, help="a bank already built: fit its projection only")
    parser.add_argument("--projection-dim", type=int, default=256, help="0: no retrieval projection")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--num-points", type=int, default=4096)
    parser.add_argument("--max-faces", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.update:
        bank = ReferenceBank.load(args.update)
    elif args.records and args.vae:
        vae = load_trained(args.vae, VecSetVAE, "train one with partgen-train experiment=layout_vae")
        bank = build_reference_bank(args.records, vae, num_points=args.num_points, max_faces=args.max_faces)
    else:
        parser.error("give --records and --vae to build a bank, or --update BANK")
    if args.projection_dim > 0:
        bank = fit_bank_projection(bank, dim=args.projection_dim)
    path = bank.save(args.out)
    print(f"{len(bank)} reference shapes -> {path} ({path.stat().st_size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
