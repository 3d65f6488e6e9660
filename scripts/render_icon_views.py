"""Render every record's mesh in its icon's colours from more views (partgen.data_pipeline.icon_views):

    .venv/bin/python scripts/render_icon_views.py --records data/sh3d64 --views 8 --workers 2

Writes <record>/icon/views/NNN.png (RGBA, 128 px) and cameras.json (render.save_views), then
views.json (the settings and the share of triangles the icon shows) last: a record whose views.json
holds the same settings is skipped, so an interrupted run continues where it stopped. Every record
of --records gets views (train and val alike; what trains on them takes the train split's only,
LayoutFlowTask(views=n)). A record that cannot be rendered is reported by name with the reason and
the others go on; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def settings(count: int, size: int) -> dict:
    from partgen.data_pipeline import icon_views

    return {
        "views": count,
        "size": size,
        "yaw_range": list(icon_views.YAW_RANGE),
        "pitch_range": list(icon_views.PITCH_RANGE),
        "view_scale": icon_views.VIEW_SCALE,
        "ambient": icon_views.AMBIENT,
    }


def done(record: Path, wanted: dict) -> bool:
    path = record / "icon" / "views" / "views.json"
    try:
        return json.loads(path.read_text())["settings"] == wanted
    except (OSError, ValueError, KeyError):
        return False


def render_one(job: tuple[str, int, int]) -> tuple[str, str | None]:
    import torch

    from partgen.data_pipeline.icon_views import render_icon_views
    from partgen.data_pipeline.render import _atomic_write, save_views

    torch.set_num_threads(1)
    path, count, size = job
    record = Path(path)
    try:
        images, cameras, shown = render_icon_views(record, count, size)
        save_views(record, images, cameras, subdir="icon/views")
        meta = {"settings": settings(count, size), "icon_shows": round(shown, 4)}
        _atomic_write(record / "icon" / "views" / "views.json", json.dumps(meta, indent=1).encode())
    except (OSError, ValueError, KeyError) as err:
        return record.name, " ".join(str(err).split())
    return record.name, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", required=True, help="a partgen-annotate output folder")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="processes (1: this one)")
    args = parser.parse_args(argv)
    if args.views < 1 or args.size < 16:
        parser.error("--views must be at least 1 and --size at least 16")
    root = Path(args.records) / "records"
    if not root.is_dir():
        parser.error(f"{root}: no such folder (a partgen-annotate output has records/)")
    wanted = settings(args.views, args.size)
    records = sorted(p for p in root.iterdir() if p.is_dir())
    jobs = [(str(p), args.views, args.size) for p in records if not done(p, wanted)]
    print(f"{len(records)} records, {len(records) - len(jobs)} already rendered, {len(jobs)} to render")
    failed = 0
    with ProcessPoolExecutor(args.workers) if args.workers > 1 else contextlib.nullcontext() as pool:
        for key, error in pool.map(render_one, jobs, chunksize=4) if pool else map(render_one, jobs):
            if error:
                failed += 1
                print(f"{key}: {error}", file=sys.stderr)
    print(f"rendered {len(jobs) - failed}, failed {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
