"""partgen-app's jobs without a browser: the generator's stage hook, progress and cancellation, the
input checks, what segment and inspect write (and only in the job folder), the app's config, bad
settings, and the per-session folders."""

import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from conftest import REPO_ROOT
from partgen.app.engine import (
    Engine,
    JobCancelled,
    JobError,
    Tracker,
    check_image,
    check_upload,
    one_line,
    parse_dimensions,
)
from partgen.app.main import compose, pipeline_configs
from partgen.app.scene import load_parts

EXAMPLE_IMAGE = REPO_ROOT / "examples" / "images" / "table.png"
EXAMPLE_MESH = REPO_ROOT / "examples" / "table.obj"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def engine():
    generate, segment = pipeline_configs(compose(["generate.layout_steps=4", "generate.steps=1"]))
    return Engine(generate, segment, max_bytes=2**20, max_image_side=4096)


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height greyscale pixels (its pixel data is one row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\xff" * width)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def test_the_generator_reports_its_stages_in_order_and_stops_when_the_hook_raises():
    from partgen.pipelines.generate import PartGenerator

    generator = PartGenerator.from_folder(parts="geometric", steps=1, guidance=1.0, mesh_subdiv=1)
    rod = trimesh.creation.box(extents=(1.0, 0.06, 0.06))  # a coarse shape of few voxels stands in for stage 1
    seen = []
    generator(EXAMPLE_IMAGE, layout=(rod.vertices, rod.faces), on_stage=seen.append)
    assert seen == ["stage 1", "parts", "stage 2", "decode"]

    def stop_at_stage_2(stage):
        if stage == "stage 2":
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        generator(EXAMPLE_IMAGE, layout=(rod.vertices, rod.faces), on_stage=stop_at_stage_2)


def test_sampler_steps_reach_the_tracker_and_a_cancel_stops_at_the_next_step():
    import tqdm.auto

    from partgen.diffusion.flow import sample

    original = tqdm.auto.tqdm
    reports, cancel = [], threading.Event()
    tracker = Tracker({"stage 2": (0.5, 1.0)}, lambda f, d: reports.append((f, d)), cancel)
    tracker.stage("stage 2")
    with tracker.counting_steps():
        sample(lambda x, t: torch.zeros_like(x), torch.ones(3), steps=4, progress="stage 2: part DiT")
    assert tqdm.auto.tqdm is original
    assert reports == [(0.5, "stage 2")] + [(0.5 + 0.125 * i, f"stage 2: step {i}/4") for i in range(5)]

    def cancel_at_step_2(fraction, desc):
        if desc.endswith("step 2/4"):
            cancel.set()

    tracker = Tracker({"stage 2": (0.0, 1.0)}, cancel_at_step_2, cancel)
    calls = []
    with pytest.raises(JobCancelled), tracker.counting_steps():
        sample(lambda x, t: calls.append(t) or torch.zeros_like(x), torch.ones(3), steps=4, progress="stage 2")
    assert len(calls) == 2 and tqdm.auto.tqdm is original  # steps 0 and 1 ran, step 2 did not


def test_a_cancelled_job_stops_before_it_starts_and_frees_the_engine(engine, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobCancelled):
        engine.segment(EXAMPLE_MESH, tmp_path / "a", "table.obj", cancel=cancel)
    result = engine.segment(EXAMPLE_MESH, tmp_path / "b", "table.obj", method="geometric")
    assert len(result.parts) >= 2


def test_a_generation_cancelled_while_it_decodes_writes_nothing(engine, tmp_path):
    """Decoding runs no step a cancel could stop at; a cancel that came in meanwhile stops the job
    before it writes its outputs (the app's cancel button clicked near a job's end)."""
    cancel = threading.Event()

    def cancel_in_decode(fraction, desc):
        if desc == "decode":
            cancel.set()

    folder = tmp_path / "job"
    with pytest.raises(JobCancelled):
        engine.generate(EXAMPLE_IMAGE, folder, "table.png", progress=cancel_in_decode, cancel=cancel)
    assert not any((folder / name).exists() for name in ("parts.glb", "mesh.obj", "report.json", "preview.png"))
    result = engine.generate(EXAMPLE_IMAGE, tmp_path / "next", "table.png")  # the engine is free again
    assert (result.folder / "parts.glb").is_file()


def test_uploads_are_checked_before_any_job(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(JobError, match="notes.png: not a readable image"):
        check_image(text, "notes.png", 2**20, 4096)
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_claiming(12000, 12000))
    with pytest.raises(JobError, match="12000 x 12000 pixels, over the limit of 4096 a side"):
        check_image(huge, "huge.png", 2**20, 4096)
    assert check_image(EXAMPLE_IMAGE, "table.png", 2**20, 4096) == EXAMPLE_IMAGE
    (tmp_path / "empty.obj").write_bytes(b"")
    with pytest.raises(JobError, match="empty.obj: the file is empty"):
        check_upload(tmp_path / "empty.obj", "empty.obj", (".obj",), 2**20)
    with pytest.raises(JobError, match="unsupported file type '.txt'"):
        check_upload(text, "notes.txt", (".obj",), 2**20)
    (tmp_path / "big.obj").write_bytes(b"v 0 0 0\n" * 2**18)
    with pytest.raises(JobError, match="over the limit of 1 MB"):
        check_upload(tmp_path / "big.obj", "big.obj", (".obj",), 2**20)
    with pytest.raises(JobError, match="no file given"):
        check_upload(None, "", (".obj",), 2**20)
    assert one_line(ValueError("/tmp/x/up.obj: bad\n  face"), {"/tmp/x/up.obj": "up.obj"}) == "up.obj: bad face"


def test_generate_takes_the_dimensions_typed_in_and_refuses_bad_ones_before_any_work(engine, tmp_path):
    assert parse_dimensions("150 x 75 x 74") == parse_dimensions("150×75×74") == [150.0, 75.0, 74.0]
    assert parse_dimensions("1.5, 0.75, 0.74") == [1.5, 0.75, 0.74] and parse_dimensions("  ") is None
    for bad in ("150 x 75", "150 x 0 x 74", "wide x deep x high", "150 x 75 x 74 x 2"):
        with pytest.raises(JobError, match="dimensions: give width x depth x height"):
            engine.generate(EXAMPLE_IMAGE, tmp_path / "bad", "table.png", dimensions=bad)
    assert not (tmp_path / "bad").exists()
    result = engine.generate(EXAMPLE_IMAGE, tmp_path / "job", "table.png", dimensions="150 x 75 x 74")
    assert result.details["settings"]["dimensions"] == [150.0, 75.0, 74.0]
    layout = trimesh.load(tmp_path / "job" / "layout.ply", process=False).vertices
    assert np.allclose(np.ptp(layout, 0) / np.ptp(layout, 0).max(), np.array([150, 74, 75]) / 150, atol=1e-4)


@pytest.mark.parametrize("method", ["learned", "geometric"])
def test_segment_writes_the_parts_into_the_job_folder_only(engine, tmp_path, method):
    folder = tmp_path / "job"
    reports = []
    result = engine.segment(EXAMPLE_MESH, folder, "table.obj", method=method, progress=lambda f, d: reports.append(d))
    assert [d for d in reports] == ["read", "parts", "write"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job"]
    files = {p.name for p in folder.iterdir()}
    assert {"input", "parts.glb", "labels.json"} <= files
    assert [n for n, _ in load_parts(result.parts_glb)] == [p.name for p in result.parts]
    assert sum(p.faces for p in result.parts) == 72 and abs(sum(p.share for p in result.parts) - 1) < 1e-6
    assert result.summary.startswith("table.obj (72 faces) ->") and "\n" not in result.summary
    if method == "learned":  # the bundled segmenter, named as the package holds it (no server folders)
        bundled = "partgen/assets/segmenter/model.safetensors + partgen/assets/segmenter/boundary/model.safetensors"
        assert result.details["checkpoint"] == bundled


def test_bad_meshes_fail_in_one_line_that_names_the_upload(engine, tmp_path):
    corrupt = tmp_path / "upload.glb"
    corrupt.write_bytes(b"glTF" + bytes(range(256)) * 4)
    with pytest.raises(JobError) as err:
        engine.segment(corrupt, tmp_path / "job", "mine.glb")
    message = str(err.value)
    assert message.startswith("mine.glb") and "\n" not in message and str(tmp_path) not in message
    with pytest.raises(JobError, match="parts must be authored"):
        engine.inspect(EXAMPLE_MESH, tmp_path / "job2", "table.obj", method="magic")


def test_inspect_writes_what_partgen_annotate_writes(engine, tmp_path):
    result = engine.inspect(EXAMPLE_MESH, tmp_path / "job", "table.obj", resolution=32, method="authored")
    record = tmp_path / "job" / "annotation" / "records" / "table"
    assert {"meta.json", "voxels.npz", "samples.npz", "mesh.npz"} <= {p.name for p in record.iterdir()}
    assert (tmp_path / "job" / "annotation" / "manifest-0-of-1.jsonl").is_file()
    with np.load(record / "voxels.npz") as voxels:
        assert sum(p.voxels for p in result.parts) == len(voxels["coords"])
    assert len(load_parts(result.parts_glb)) == len(result.parts) == 6
    assert result.details["manifest_row"]["status"] == "ok" and "R=32" in result.summary
    assert result.details["manifest_row"]["source"] == "input/table.obj"  # the page shows job-relative paths
    assert [p.name for p in result.downloads] == ["record.zip"]


def test_the_app_config_holds_the_pipelines_configs():
    cfg = compose(["generate.steps=3", "checkpoint=/models", "segmenter=/seg", "port=9000"])
    generate, segment = pipeline_configs(cfg)
    assert cfg.port == 9000 and cfg.host == "127.0.0.1" and cfg.share is False
    assert generate.steps == 3 and generate.checkpoint == "/models"
    assert generate.parts.checkpoint == "/seg" and segment.checkpoint == "/seg"
    default_generate, _ = pipeline_configs(compose())
    assert default_generate.steps == compose().generate.steps  # conf/generate.yaml's own default


def test_bad_settings_fail_in_one_line(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "partgen.app", "port=0"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partgen-app:") and "port" in lines[0], res.stderr


def test_sessions_have_their_own_folders_and_lose_them_when_they_end(tmp_path):
    pytest.importorskip("gradio")
    from partgen.app.ui import Sessions

    class Request:
        def __init__(self, session_hash):
            self.session_hash = session_hash

    sessions = Sessions(tmp_path)
    a, b = Request("abc123"), Request("../evil")
    job, cancel = sessions.new_job(a, "generate")
    other, other_cancel = sessions.new_job(b, "segment")
    assert job.parent == tmp_path / "sessions" / "abc123" and other.parent.parent == tmp_path / "sessions"
    assert sessions.cancel(a, "segment") == 0 and not cancel.is_set()  # a tab's Cancel stops its own kind
    assert sessions.cancel(a, "generate") == 1 and cancel.is_set()
    sessions.job_done(a, cancel)
    later_job, later_cancel = sessions.new_job(a, "generate")
    assert not later_cancel.is_set()  # a job started after a cancel runs
    uploads = {}
    for name in ("mine.obj", "shared.obj", "table.obj"):
        (tmp_path / name[:4]).mkdir()
        uploads[name] = tmp_path / name[:4] / name
        uploads[name].write_bytes(EXAMPLE_MESH.read_bytes())
        sessions.note_upload(a, str(uploads[name]))
    sessions.note_upload(b, str(uploads["shared.obj"]))
    sessions.samples = [EXAMPLE_MESH]  # its copy (same name and bytes) is shared by every session
    sessions.end(a)
    assert later_cancel.is_set() and not job.parent.exists() and other.exists() and not other_cancel.is_set()
    assert not uploads["mine.obj"].parent.exists()  # only this session's job read it
    assert uploads["shared.obj"].exists() and uploads["table.obj"].exists()
    sessions.end(b)
    assert other_cancel.is_set() and not uploads["shared.obj"].exists() and uploads["table.obj"].exists()


def test_examples_exist_for_the_pages_samples():
    assert EXAMPLE_IMAGE.is_file() and EXAMPLE_MESH.is_file()
    assert Path(REPO_ROOT / "conf" / "app.yaml").is_file()


def test_the_app_modules_import_quietly():
    modules = "partgen.app, partgen.app.engine, partgen.app.scene, partgen.app.main, partgen.app.ui"
    res = subprocess.run([sys.executable, "-c", f"import {modules}"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stderr
