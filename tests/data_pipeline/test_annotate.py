"""partgen-annotate end to end on meshes the test builds: records, manifest, resume, shards, SIGKILL."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import trimesh

from conftest import REPO_ROOT
from partgen.data_pipeline.annotate import (
    AnnotateConfig,
    Asset,
    add_blocks,
    in_shard,
    list_assets,
    read_manifest,
    run,
)

CFG = AnnotateConfig(resolution=32, num_samples=2000, num_sharp_samples=500, num_volume_samples=4000)


def table_obj(path, legs=4, seed=0):
    """A table as OBJ with one group per authored part (top + legs), written like an exporter would."""
    rng = np.random.default_rng(seed)
    lines, offset = [], 0
    parts = [("top", (0, 0.75, 0), (1.2, 0.08, 0.8))]
    parts += [
        (f"leg_{i}", (x, 0.37, z), (0.08, 0.74, 0.08))
        for i, (x, z) in enumerate([(-0.5, -0.3), (0.5, -0.3), (-0.5, 0.3), (0.5, 0.3)][:legs])
    ]
    for name, centre, extents in parts:
        box = trimesh.creation.box(extents=extents)
        box.apply_translation(np.array(centre) + rng.normal(0, 1e-3, 3))
        lines.append(f"g {name}")
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in box.vertices]
        lines += [f"f {a + 1 + offset} {b + 1 + offset} {c + 1 + offset}" for a, b, c in box.faces]
        offset += len(box.vertices)
    path.write_text("\n".join(lines) + "\n")
    return path


def corpus(tmp_path, n_tables=3):
    src = tmp_path / "meshes"
    (src / "sub").mkdir(parents=True)
    for i in range(n_tables):
        table_obj(src / ("sub" if i % 2 else ".") / f"table{i}.obj", seed=i)
    (src / "empty.obj").write_text("")
    (src / "broken.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    (src / "notes.txt").write_text("not a mesh")
    trimesh.creation.icosphere().export(src / "ball.glb")
    return src


def test_annotates_a_folder_and_records_load(tmp_path):
    src = corpus(tmp_path)
    assets = list_assets(str(src))
    assert len(assets) == 6  # 3 tables, empty, broken, ball (the .txt is not a mesh)
    counts = run(assets, tmp_path / "out", CFG, workers=2, progress=False)
    assert counts["ok"] == 4 and counts["failed"] == 2
    rows = {r["key"]: r for r in read_manifest(tmp_path / "out" / "manifest-00000-of-00001.jsonl")}
    failed = sorted(r["reason"] for r in rows.values() if r["status"] == "failed")
    assert "broken.obj" in failed[0] and "outside" in failed[0]
    assert "empty.obj" in failed[1] and "empty file" in failed[1]
    table = next(r for r in rows.values() if "table0" in r["key"])
    rec = tmp_path / "out" / table["record"]
    meta = json.loads((rec / "meta.json").read_text())
    assert sorted(meta["parts"]["names"]) == ["leg_0", "leg_1", "leg_2", "leg_3", "top"]
    vox = np.load(rec / "voxels.npz")
    assert vox["coords"].shape[1] == 3 and vox["coords"].max() < 32 and len(vox["part"]) == len(vox["coords"])
    assert set(np.unique(vox["part"])) == set(range(5))
    samples = np.load(rec / "samples.npz")
    assert samples["points"].shape == (2500, 3) and np.abs(samples["points"]).max() <= 0.5 + 1e-6
    assert np.allclose(np.linalg.norm(samples["normals"], axis=1), 1, atol=1e-4)
    assert samples["sharp"].sum() == 500  # boxes have sharp edges
    mesh = np.load(rec / "mesh.npz")
    assert len(mesh["face_part"]) == len(mesh["faces"]) and mesh["face_part"].min() >= 0
    volume = np.load(rec / "volume.npz")
    assert volume["points"].shape == (4000, 3) and volume["near"].sum() == 2000
    # inside = within one of the boxes; boxes are tiny next to the cube, so most uniform points are outside
    inside = volume["sdf"] < 0
    assert 0 < inside[~volume["near"]].mean() < 0.2 and 0.2 < inside[volume["near"]].mean() < 0.8
    assert np.abs(volume["sdf"][volume["near"]]).max() < 0.15


def test_geometric_parts_follow_the_table_pieces(tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    table_obj(src / "table.obj")
    cfg = AnnotateConfig(resolution=32, num_samples=500, num_sharp_samples=0, num_volume_samples=0)
    cfg.parts_method = "geometric"
    counts = run(list_assets(str(src)), tmp_path / "out", cfg, progress=False)
    assert counts["ok"] == 1
    rec = next((tmp_path / "out" / "records").iterdir())
    meta = json.loads((rec / "meta.json").read_text())
    assert meta["parts"]["from"] == "geometric" and len(meta["parts"]["names"]) == 5  # top and 4 legs
    assert not (rec / "volume.npz").exists() and not (rec / "sdf_blocks.npz").exists()


def test_block_subdiv_writes_the_stage_2_sdf_blocks(tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    table_obj(src / "table.obj")
    cfg = AnnotateConfig(resolution=16, num_samples=500, num_sharp_samples=0, num_volume_samples=0, block_subdiv=4)
    assert run(list_assets(str(src)), tmp_path / "out", cfg, progress=False)["ok"] == 1
    rec = next((tmp_path / "out" / "records").iterdir())
    blocks = np.load(rec / "sdf_blocks.npz")
    coords = np.load(rec / "voxels.npz")["coords"]
    assert blocks["values"].shape == (len(coords), 5, 5, 5) and int(blocks["subdiv"]) == 4
    flat = blocks["values"].reshape(len(coords), -1).astype(np.float32)
    assert ((flat < 0).any(1) & (flat > 0).any(1)).mean() > 0.8  # surface voxels straddle the surface
    assert "block_sdf_s" in json.loads((rec / "meta.json").read_text())["timings"]


def test_add_blocks_gives_old_records_the_blocks_annotate_writes(tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    table_obj(src / "table.obj")
    cfg = AnnotateConfig(resolution=16, num_samples=500, num_sharp_samples=0, num_volume_samples=0, block_subdiv=2)
    assert run(list_assets(str(src)), tmp_path / "out", cfg, progress=False)["ok"] == 1
    rec = next((tmp_path / "out" / "records").iterdir())
    with np.load(rec / "sdf_blocks.npz") as z:
        blocks = {k: z[k] for k in z}
    assert sorted(blocks) == ["subdiv", "values"]

    # the same arrays for a record annotated without blocks; a second call skips it
    plain = tmp_path / "plain"
    cfg = dataclasses.replace(cfg, block_subdiv=0)
    assert run(list_assets(str(src)), plain, cfg, progress=False)["ok"] == 1
    old = next((plain / "records").iterdir())
    assert add_blocks(old, subdiv=2) and not add_blocks(old, subdiv=2)
    with np.load(old / "sdf_blocks.npz") as z:
        for name, value in blocks.items():
            np.testing.assert_allclose(z[name].astype(np.float32), value.astype(np.float32), atol=2e-3)
    assert not list(old.glob(".tmp-*"))
    (old / "mesh.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"record {old}: unreadable meta, mesh or voxels"):
        add_blocks(old, subdiv=3)
    with np.load(old / "sdf_blocks.npz") as z:  # the blocks already written are untouched
        assert int(z["subdiv"]) == 2


def test_rerun_skips_done_work_and_retries_failures_on_request(tmp_path):
    src = corpus(tmp_path)
    out = tmp_path / "out"
    run(list_assets(str(src)), out, CFG, progress=False)
    again = run(list_assets(str(src)), out, CFG, progress=False)
    assert again["ok"] == again["failed"] == 0 and again["skipped_done"] == 6
    retried = run(list_assets(str(src)), out, CFG, retry_failed=True, progress=False)
    assert retried["failed"] == 2 and retried["ok"] == 0


def test_shards_are_disjoint_complete_and_deterministic(tmp_path):
    keys = [a.key for a in list_assets(str(corpus(tmp_path, n_tables=9)))]
    shards = [[k for k in keys if in_shard(k, s, 3)] for s in range(3)]
    assert sorted(sum(shards, [])) == sorted(keys)
    assert shards == [[k for k in reversed(keys) if in_shard(k, s, 3)][::-1] for s in range(3)]


def test_filter_flags_mark_assets_filtered(tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    trimesh.creation.icosphere().export(src / "ball.obj")  # one piece: flagged single_part
    cfg = AnnotateConfig(resolution=16, num_samples=100, num_sharp_samples=0, filter_flags=("single_part",))
    counts = run(list_assets(str(src)), tmp_path / "out", cfg, progress=False)
    assert counts["filtered"] == 1


def cli(*args, cwd):
    exe = REPO_ROOT / ".venv" / "bin" / "partgen-annotate"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from partgen.cli import annotate; annotate()"]
    return [*cmd, *args]


def test_cli_runs_and_refuses_clearly(tmp_path):
    src = corpus(tmp_path)
    args = [
        f"input={src}",
        f"output={tmp_path / 'out'}",
        "resolution=32",
        "num_samples=500",
        "num_sharp_samples=100",
        "progress=false",
    ]
    res = subprocess.run(cli(*args, cwd=tmp_path), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "4 ok, 0 filtered, 2 failed" in res.stdout
    res = subprocess.run(
        cli(f"input={tmp_path / 'nowhere/*.obj'}", f"output={tmp_path / 'o2'}", cwd=tmp_path),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0 and "matches no file" in res.stderr
    # a learned segmenter that cannot be imported is said once, in one line, before any work
    res = subprocess.run(
        cli(*args, "parts=learned", "parts.segmenter=partgen.nowhere:segment", cwd=tmp_path),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0
    assert "parts.segmenter=partgen.nowhere:segment: cannot import it" in res.stderr


def test_hydra_multirun_over_shards_with_joblib(tmp_path):
    src = corpus(tmp_path, n_tables=4)
    out = tmp_path / "out"
    args = ["-m", "hydra/launcher=joblib", f"input={src}", f"output={out}", "resolution=16", "num_samples=200"]
    args += ["num_sharp_samples=0", "shard=0,1", "num_shards=2", "progress=false"]
    res = subprocess.run(cli(*args, cwd=tmp_path), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = read_manifest(out / "manifest-00000-of-00002.jsonl") + read_manifest(out / "manifest-00001-of-00002.jsonl")
    assert sorted(r["key"] for r in rows) == sorted(a.key for a in list_assets(str(src)))


def test_sigkill_mid_run_then_rerun_finishes_and_every_record_loads(tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(24):
        table_obj(src / f"t{i:02d}.obj", seed=i)
    out = tmp_path / "out"
    args = [f"input={src}", f"output={out}", "resolution=64", "num_samples=20000", "workers=1", "progress=false"]
    proc = subprocess.Popen(
        cli(*args, cwd=tmp_path),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    manifest = out / "manifest-00000-of-00001.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or len(read_manifest(manifest)) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = len(read_manifest(manifest))
    assert 3 <= first < 24, "the kill should land mid-run"
    res = subprocess.run(cli(*args, cwd=tmp_path), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = read_manifest(manifest)
    ok = {r["key"] for r in rows if r["status"] == "ok"}
    assert len(ok) == 24
    records = [p for p in (out / "records").iterdir() if not p.name.startswith(".tmp")]
    assert sorted(p.name for p in records) == sorted(ok)  # a killed write leaves at most a .tmp folder
    for key in ok:
        rec = out / "records" / key
        json.loads((rec / "meta.json").read_text())
        for name in ("voxels.npz", "samples.npz", "mesh.npz"):
            with np.load(rec / name) as data:
                assert all(len(data[k]) > 0 for k in data.files)


@pytest.mark.parametrize("spec", ["sweethome3d"])
def test_sweethome3d_spec_needs_the_fetched_catalogue(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("PARTGEN_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError):
        list_assets(spec)


def _icon_asset(tmp_path, library):
    """A table asset with catalogue fields and an icon rendered by the typical icon view."""
    from PIL import Image

    from partgen.data_pipeline.mesh_io import load_mesh, normalise
    from partgen.data_pipeline.render import render
    from partgen.data_pipeline.sh3d_icons import TYPICAL_VIEW, icon_camera

    path = table_obj(tmp_path / "table.obj")
    mesh = load_mesh(path)
    transform = normalise(mesh.vertices)
    vertices = transform.apply(mesh.vertices)
    row = {"library": library, "width": 120.0, "depth": 80.0, "height": 79.0, "model_rotation": None}
    camera = icon_camera(row, transform, vertices, mesh.faces, TYPICAL_VIEW)
    image = render(vertices, mesh.faces, camera)
    icon = np.concatenate([image["rgb"], image["alpha"][..., None]], 2)
    Image.fromarray(icon).save(tmp_path / "icon.png")
    return Asset("table", str(path), row | {"icon_path": str(tmp_path / "icon.png")})


@pytest.mark.parametrize("library, mode, fitted", [("default", "typical", False), ("Scopia", "fit", False)])
def test_records_keep_renders_and_the_icon_with_its_camera(tmp_path, library, mode, fitted):
    from partgen.data_pipeline.render import Camera

    asset = _icon_asset(tmp_path, library)
    cfg = AnnotateConfig(resolution=32, num_samples=500, num_sharp_samples=0, num_volume_samples=0)
    cfg.num_views, cfg.view_size, cfg.icon_camera = 3, 64, mode
    counts = run([asset], tmp_path / "out", cfg, progress=False)
    assert counts["ok"] == 1
    rec = tmp_path / "out" / "records" / "table"
    frames = json.loads((rec / "renders" / "cameras.json").read_text())["frames"]
    assert [f["file_path"] for f in frames] == ["000.png", "001.png", "002.png"]
    depth = np.load(rec / "renders" / "depth.npz")["depth"]
    assert depth.shape == (3, 64, 64) and np.isfinite(depth).any(axis=(1, 2)).all()
    info = json.loads((rec / "icon" / "camera.json").read_text())
    # the icon was drawn with the typical view: its camera reproduces the silhouette; a held-out
    # (Scopia) icon is never fitted even when fitting is asked for
    assert info["fitted"] is fitted and info["silhouette_iou"] > 0.95
    camera = Camera.from_dict(info)
    voxels = np.load(rec / "voxels.npz")["coords"]
    u, v, _ = camera.project((voxels + 0.5) / 32 - 0.5)
    from PIL import Image

    alpha = np.asarray(Image.open(rec / "icon" / "icon.png"))[..., 3]
    inside = alpha[np.clip(v.astype(int), 0, 127), np.clip(u.astype(int), 0, 127)] > 0
    assert inside.mean() > 0.9  # voxels project onto the icon
