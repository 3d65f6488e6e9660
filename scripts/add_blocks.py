"""Give existing annotated records stage 2's sub-grid signed distances (sdf_blocks.npz) without
annotating them again.

    .venv/bin/python scripts/add_blocks.py data/sh3d64 --subdiv 4 --max-voxels 5000 --workers 2

The same file partgen-annotate writes with block_subdiv=S (data_pipeline.annotate.
add_blocks): computed from each record's mesh.npz and voxels.npz, replaced atomically, so the run can
be stopped and started again (records that already have the asked-for blocks are skipped).
--max-voxels skips records with more surface voxels (stage 2's CPU configs never train on them).
A record that cannot be read is reported by name and left as it was; the rest go on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path


def _one(record: str, subdiv: int, overwrite: bool) -> tuple[str, str]:
    from partgen.data_pipeline.annotate import add_blocks

    try:
        return record, "written" if add_blocks(record, subdiv, overwrite) else "skipped"
    except (ValueError, OSError) as err:
        return record, f"failed: {err}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="partgen-annotate output folders (with records/)")
    ap.add_argument("--subdiv", type=int, default=4)
    ap.add_argument("--max-voxels", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    records = []
    for root in args.roots:
        for meta in sorted(Path(root).glob("records/*/meta.json")):
            count = json.loads(meta.read_text()).get("counts", {}).get("voxels", 0)
            if args.max_voxels is None or count <= args.max_voxels:
                records.append(str(meta.parent))
    if not records:
        print(f"no record under {args.roots}", file=sys.stderr)
        return 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per worker
    start, counts = time.perf_counter(), {}
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        futures = [pool.submit(_one, r, args.subdiv, args.overwrite) for r in records]
        for i, future in enumerate(as_completed(futures), 1):
            record, status = future.result()
            kind = status.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "failed":
                print(f"{record}: {status}", file=sys.stderr)
            if i % 20 == 0 or i == len(records):
                print(f"{i}/{len(records)} {counts} {time.perf_counter() - start:.0f} s", flush=True)
    return 1 if counts.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
