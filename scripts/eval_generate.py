"""Image -> mesh, judged on held-out icons beside a retrieval baseline and the ceiling (issue #20).

    .venv/bin/python scripts/eval_generate.py --records data/sh3d64 --json runs/eval_generate.json \\
        --sheet docs/images/generate-val.png

For each val record of --records (the seeded split of asset keys every partgen task uses: no model
saw these assets; Scopia never enters --records' train/val splits), on the same icon, side by side:

    partgen    the icon -> partgen-generate's pipeline with its defaults (conf/generate.yaml) and the
               bundled model set (or --models); --layout truth gives stage 2 the record's own mesh
               as the layout instead (partgen-generate layout=MESH: stage 2 alone); --dimensions
               catalogue gives it the asset's width, depth and height from the Sweet Home 3D
               catalogue (partgen-generate dimensions=[W,D,H]: the image and what a user may know)
    retrieval  the mesh of the training asset whose icon is nearest to the query icon
               (partgen.eval.retrieval: alpha-cropped to its ink, padded square, 32x32 grey + 8x8
               colour, L2)
    ceiling    the true mesh resampled against itself (other samples of the same surface)

Each mesh is compared with the record's true mesh, both normalised the same way (bounding-box centre
0, longest side 1), with --compare-points samples each (partgen.eval.geometry.surface_metrics):
Chamfer (L1 and L2), F-score at 0.05, 0.02 and 0.01, normal consistency; and the view IoU: both
meshes rendered with the icon's camera (icon/camera.json), IoU of the silhouettes. partgen also
gets its part count against the authored one (within +-1) and, per part, the connected pieces its
voxels form (26-neighbourhood; at most 2 wanted). A failed generation scores 0 everywhere (Chamfer:
not averaged) and is counted.

--sheet writes a contact sheet of the first --sheet-count icons: per row the icon, partgen's mesh
from the icon's camera (parts coloured) and from a second view, the retrieved mesh and the true
mesh from the icon's camera, with partgen's normal consistency and F@0.02 printed on its tile.

--split train-loo scores training icons instead, to choose settings without touching val: every
--every-th shape of the model set's reference bank, with that shape's own bank entry (and, for
retrieval, its own icon) left out, so the icon is judged as a new one. --start, --max-shapes and
--keys then count those icons. Val is for measuring only; settings are picked here.

--json is rewritten after every shape; --resume skips the shapes it already holds (same settings).
--start skips the first val shapes: two processes on halves (--start 0 / 24 --max-shapes 24) split
a run across cores; scripts/eval_generate.py --merge A.json B.json --json OUT.json joins them (a
shape in several files: the first file's row). --keys K... scores only those val records, to score
some again and merge them in front of an older run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from partgen.data_pipeline.datasets import select_records
from partgen.data_pipeline.render import Camera, orbit_cameras, render
from partgen.data_pipeline.sh3d_icons import record_icon_camera, render_silhouette, silhouette_iou
from partgen.eval.geometry import normalise_box, surface_metrics
from partgen.eval.retrieval import IconIndex, read_icon
from partgen.pipelines.generate import part_pieces

METHODS = ("partgen", "retrieval", "ceiling")
NOT_SETTINGS = ("json", "resume", "sheet", "sheet_count", "merge")  # what a run's JSON does not record
SPLIT_ARGUMENTS = ("start", "max_shapes", "keys", "merge", "merged")  # what may differ between runs merged
METRICS = ("chamfer", "chamfer_l2", "f_0.05", "f_0.02", "f_0.01", "normal_consistency", "view_iou")
FAILED = {"f_0.05": 0.0, "f_0.02": 0.0, "f_0.01": 0.0, "normal_consistency": 0.0, "view_iou": 0.0}


def load_mesh(record: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(record / "mesh.npz") as z:
        return z["vertices"].astype(np.float64), z["faces"].astype(np.int64)


def catalogue_dimensions(record: Path) -> list[float]:
    """The asset's width, depth and height as the Sweet Home 3D catalogue lists them (record meta.json)."""
    meta = json.loads((record / "meta.json").read_text())
    return [float(meta["width"]), float(meta["depth"]), float(meta["height"])]


def score(predicted, truth, camera: Camera, count: int) -> dict:
    """surface_metrics + view IoU of a predicted mesh against the true one (both normalised)."""
    out = surface_metrics(predicted, truth, count)
    masks = [render_silhouette(normalise_box(v, f), f, camera) for v, f in (predicted, truth)]
    return out | {"view_iou": silhouette_iou(*masks)}


def tile(vertices, faces, camera: Camera, face_part=None, size: int = 160) -> np.ndarray:
    """(size, size, 3) uint8: the mesh rendered with the camera scaled to size (white background)."""
    cam = camera.scaled(size / camera.width)
    return render(normalise_box(vertices, faces), faces, cam, face_part=face_part)["rgb"]


def icon_tile(path: Path, size: int = 160) -> np.ndarray:
    from PIL import Image

    rgba = Image.fromarray(read_icon(path))
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB").resize((size, size), Image.BILINEAR))


def write_sheet(path: Path, rows: list[list[np.ndarray]], captions: list[list[str]], header: list[str]) -> None:
    from PIL import Image, ImageDraw

    size = rows[0][0].shape[0]
    top = 18
    sheet = Image.new("RGB", (size * len(header), top + size * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(header):
        draw.text((j * size + 4, 3), name, fill=(0, 0, 0))
    for i, (tiles, texts) in enumerate(zip(rows, captions, strict=True)):
        for j, (t, text) in enumerate(zip(tiles, texts, strict=True)):
            sheet.paste(Image.fromarray(t), (j * size, top + i * size))
            draw.text((j * size + 3, top + i * size + size - 13), text, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def summarise(rows: list[dict]) -> dict:
    out = {"shapes": len(rows)}
    for method in METHODS:
        scored = [r[method] for r in rows if method in r]
        if not scored:
            continue
        done = [s for s in scored if "failed" not in s]
        m = {"failed": len(scored) - len(done)}
        for key in METRICS:
            values = [s[key] for s in (done if key.startswith("chamfer") else scored) if key in s]
            if values:
                m[key] = float(np.mean(values))
        if method == "partgen" and done:
            m["parts_within_1"] = float(np.mean([abs(s["parts"] - r["true_parts"]) <= 1 for r, s in _pairs(rows)]))
            m["parts_exact"] = float(np.mean([s["parts"] == r["true_parts"] for r, s in _pairs(rows)]))
            m["parts_at_most_2_pieces"] = float(np.mean([max(s["pieces"]) <= 2 for s in done]))
            m["voxels"] = float(np.mean([s["voxels"] for s in done]))
            m["seconds"] = float(np.mean([s["seconds"] for s in done]))
        out[method] = m
    return out


def _pairs(rows):
    return [(r, r["partgen"]) for r in rows if "partgen" in r and "failed" not in r["partgen"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records")
    parser.add_argument("--merge", nargs="+", type=Path, help="join the --json files of split runs into --json")
    parser.add_argument("--models", default=None, help="model-set folder (default: the bundled one)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--layout", default="stage1", choices=["stage1", "truth"], help="truth: stage 2 alone")
    parser.add_argument(
        "--dimensions", default="none", choices=["none", "catalogue"], help="catalogue: the record's W, D, H given"
    )
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--split", default="val", choices=["val", "train-loo"], help="train-loo: see above")
    parser.add_argument("--every", type=int, default=10, help="--split train-loo: every n-th bank shape")
    parser.add_argument("--max-shapes", type=int, default=48)
    parser.add_argument("--start", type=int, default=0, help="skip the first val shapes (to split a run)")
    parser.add_argument("--keys", nargs="+", help="only these val records (to score some again; merge first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-points", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sheet", type=Path)
    parser.add_argument("--sheet-count", type=int, default=16)
    parser.add_argument("overrides", nargs="*", help="partgen-generate settings, e.g. steps=12 cfg=3")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.json, parser)
    if not args.records:
        parser.error("--records is required")
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - set(METHODS):
        parser.error(f"--methods takes {', '.join(METHODS)}")

    val = select_records(args.records, "val", args.val_fraction)
    leave_out = None  # --split train-loo: the bank index of each key and the key scored now (left out)
    if args.split == "train-loo":
        val, leave_out = training_icons(args, val)
    if args.keys:
        unknown = sorted(set(args.keys) - {r.key for r in val})
        if unknown:
            parser.error(f"--keys: not {args.split} records of {args.records}: {', '.join(unknown)}")
        val = [r for r in val if r.key in args.keys]
    val = val[args.start : args.start + args.max_shapes]
    settings = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    rows: dict[str, dict] = {}
    if args.resume and args.json and Path(args.json).is_file():
        old = json.loads(Path(args.json).read_text())
        if old.get("settings") == settings:
            rows = {r["key"]: r for r in old["shapes"]}
            print(f"resuming: {len(rows)} shapes already scored")

    generator = None
    if "partgen" in methods:
        from hydra import compose, initialize_config_module
        from omegaconf import OmegaConf

        from partgen.pipelines.outputs import build_pipeline

        overrides = [f"checkpoint={args.models}"] * bool(args.models) + args.overrides
        with initialize_config_module(config_module="partgen.conf", version_base="1.3"):
            cfg = compose(config_name="generate", overrides=["image=-", "output=-", *overrides])
        generator = build_pipeline(cfg.pipeline)
        if leave_out is not None:
            leave_one_out(generator, leave_out)
        print("partgen:", json.dumps(OmegaConf.to_container(cfg.pipeline, resolve=True)))
    index = None
    if "retrieval" in methods:
        train = select_records(args.records, "train", args.val_fraction)
        files = {r.key: r.path / "icon" / "icon.png" for r in train if (r.path / "icon" / "icon.png").is_file()}
        index = IconIndex.from_files(files)
        train_paths = {r.key: r.path for r in train}

    sheet_rows, sheet_text = [], []
    for i, ref in enumerate(val):
        if leave_out is not None:
            leave_out["key"] = ref.key
        icon = ref.path / "icon" / "icon.png"
        truth = load_mesh(ref.path)
        camera = record_icon_camera(ref.path, *truth)
        row = rows.get(ref.key) or {"key": ref.key, "true_parts": len(ref.part_names)}
        gen_mesh = retrieved = None
        if "ceiling" in methods and "ceiling" not in row:
            row["ceiling"] = surface_metrics(truth, truth, args.compare_points, seed=10) | {"view_iou": 1.0}
        if index is not None:
            key, dist = next((k, d) for k, d in index.nearest(read_icon(icon), 2) if k != ref.key)
            retrieved = load_mesh(train_paths[key])
            if "retrieval" not in row:
                row["retrieval"] = score(retrieved, truth, camera, args.compare_points) | {
                    "match": key,
                    "icon_l2": dist,
                }
        need_sheet = args.sheet is not None and i < args.sheet_count
        if generator is not None and ("partgen" not in row or need_sheet):
            from partgen.pipelines.generate import GenerationError, whole_mesh

            start = time.perf_counter()
            try:
                layout = truth if args.layout == "truth" else None
                dims = catalogue_dimensions(ref.path) if args.dimensions == "catalogue" else None
                gen = generator(icon, seed=args.seed, layout=layout, dimensions=dims)
            except GenerationError as err:
                row["partgen"] = FAILED | {"failed": str(err)}
                print(ref.key, "failed:", err, flush=True)
            else:
                vertices, faces, face_part = whole_mesh(gen.parts)
                gen_mesh = (vertices, faces, face_part)
                if "partgen" not in row:
                    coords = gen.voxels.coords[:, 1:].numpy()
                    row["partgen"] = score((vertices, faces), truth, camera, args.compare_points) | {
                        "parts": len(gen.parts),
                        "pieces": part_pieces(coords, gen.voxels.part.numpy()),
                        "voxels": int(gen.tokens["voxels"]),
                        "reference": gen.reference,
                        "layout_scale": gen.layout_scale,
                        "seconds": time.perf_counter() - start,
                        "times": gen.times,
                    }
        rows[ref.key] = row
        brief = {m: {k: round(row[m][k], 3) for k in ("f_0.02", "normal_consistency", "view_iou")} for m in methods}
        print(f"[{i + 1}/{len(val)}] {ref.key}", json.dumps(brief), flush=True)
        if need_sheet:
            tiles, text = [icon_tile(icon)], [ref.key[-22:]]
            if "partgen" in methods:
                if gen_mesh is not None:
                    side = orbit_cameras(6, radius=2.2, elevation_deg=25.0, size=160)[5]  # yaw -60
                    tiles += [tile(*gen_mesh[:2], camera, gen_mesh[2]), tile(*gen_mesh[:2], side, gen_mesh[2])]
                    p = row["partgen"]
                    text += [f"NC {p['normal_consistency']:.2f} F2 {p['f_0.02']:.2f}", f"{p['parts']} parts"]
                else:
                    tiles += [np.full((160, 160, 3), 255, np.uint8)] * 2
                    text += ["failed", ""]
            if retrieved is not None:
                tiles.append(tile(*retrieved, camera))
                text.append(f"NC {row['retrieval']['normal_consistency']:.2f} F2 {row['retrieval']['f_0.02']:.2f}")
            tiles.append(tile(*truth, camera))
            text.append(f"{row['true_parts']} parts")
            sheet_rows.append(tiles)
            sheet_text.append(text)
        if args.json:
            summary = summarise(list(rows.values()))
            Path(args.json).write_text(
                json.dumps({"settings": settings, "summary": summary, "shapes": list(rows.values())}, indent=1)
            )
    summary = summarise([rows[r.key] for r in val])
    print(json.dumps(summary, indent=1))
    if args.sheet is not None and sheet_rows:
        header = ["icon"] + (["partgen (icon view)", "partgen (side)"] if "partgen" in methods else [])
        header += (["retrieval"] if index is not None else []) + ["truth"]
        write_sheet(args.sheet, sheet_rows, sheet_text, header)
        print(f"wrote {args.sheet}")


def training_icons(args, val) -> tuple[list, dict]:
    """--split train-loo: the training records of every --every-th shape of the model set's reference
    bank, and what the leave-one-out mask reads (the bank's index of each key; the key scored now)."""
    from partgen.pipelines.generate import resolve_models
    from partgen.pipelines.references import BANK_FILE, ReferenceBank

    path = resolve_models(args.models) / BANK_FILE
    if not path.is_file():
        raise SystemExit(f"--split train-loo needs a model set with a reference bank: {path} is missing")
    bank = ReferenceBank.load(path)
    train = {r.key: r for r in select_records(args.records, "train", args.val_fraction)}
    if {r.key for r in val} & set(bank.keys):
        raise SystemExit(f"{path} holds val records of {args.records}: it is not this split's bank")
    records = [train[k] for k in bank.keys[:: args.every] if k in train]
    return records, {"index": {k: i for i, k in enumerate(bank.keys)}, "key": None}


def leave_one_out(generator, leave_out: dict) -> None:
    """The generator's reference bank never offers the icon being scored (leave_out["key"]) its own shape,
    as a reference or as a neighbour whose part count it counts (both read ReferenceBank.embedding_distances)."""
    bank = generator.layout.references
    distances = bank.embedding_distances

    def without_own(embedding):
        out = distances(embedding).clone()
        if leave_out["key"] in leave_out["index"]:
            out[leave_out["index"][leave_out["key"]]] = float("inf")
        return out

    bank.embedding_distances = without_own


def merge(parts: list[Path], out: str | None, parser: argparse.ArgumentParser) -> None:
    """The shapes of split runs' JSON files (each key once, first file first), summarised again."""
    if not out:
        parser.error("--merge needs --json OUT")
    rows: dict[str, dict] = {}
    settings = []
    defaults = vars(parser.parse_args([]))  # a run older than an option ran with its default
    for path in parts:
        data = json.loads(path.read_text())
        run = {k: v for k, v in defaults.items() if k not in NOT_SETTINGS} | data["settings"]
        settings.append({k: v for k, v in run.items() if k not in SPLIT_ARGUMENTS})
        for row in data["shapes"]:
            rows.setdefault(row["key"], row)
    if any(s != settings[0] for s in settings):
        parser.error("the runs to merge were made with different settings")
    summary = summarise(list(rows.values()))
    merged = {"settings": settings[0] | {"merged": [str(p) for p in parts]}, "summary": summary}
    Path(out).write_text(json.dumps(merged | {"shapes": list(rows.values())}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
