"""partgen-app's page: Generate, Segment and Inspect tabs (gradio Blocks) over partgen.app.engine.

Every tab has the same result panel: a one-line status, the 3D view (a GLB with one named node per
part), the parts list with a toggle per part, an explode slider (parts move away from the centre
along part centroid - whole centroid; each change serves a new GLB) and the downloads.

Jobs (the three tabs' buttons) share one concurrency slot: one job runs on the CPU at a time, the
others wait in the queue, whose position gradio shows on the waiting outputs; a tab's Cancel drops
its waiting job and stops its running one at the next stage or sampling step (each job has its own
cancel Event, so a job started after a cancel runs). View updates (explode, toggles) do
not wait behind jobs.

Files: the app's temp root is gradio's cache (uploads, the samples) and holds a folder per browser
session (a sub-folder per job: the upload is copied into it, everything the job writes stays there
and gradio serves it from there). When the session ends (the tab is closed or reloaded: gradio's
unload event) its folder goes, and so do the uploads its jobs read (unless another live session's
job read them too, or they are samples); the root goes when the server stops.

Offline: gradio serves the page's scripts and its theme's fonts itself (the Default theme's fonts
are LocalFont), analytics are off (GRADIO_ANALYTICS_ENABLED=False, analytics_enabled=False) and
share is false by default, so the page requests nothing but this server.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import filecmp
import itertools
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import gradio as gr

from partgen.app.engine import MESH_SUFFIXES, Engine, JobCancelled, JobError, Result
from partgen.app.scene import write_view

REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROGRESS = gr.Progress()  # a handler's default for it: gradio hands each call its own progress tracker
TITLE = "partgen"


@dataclasses.dataclass
class AppSettings:
    """conf/app.yaml's settings of the server itself (the pipelines' are their own configs)."""

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    max_upload_mb: float = 100.0
    max_image_side: int = 4096
    max_queue: int = 16
    preload: bool = True
    threads: int | None = None
    temp_dir: str | None = None
    examples: str | None = None

    @classmethod
    def from_config(cls, cfg) -> AppSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: cfg[k] for k in names if k in cfg})
        if not 0 < settings.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {settings.port}")
        if settings.max_upload_mb <= 0 or settings.max_image_side < 16 or settings.max_queue < 1:
            raise ValueError("max_upload_mb, max_image_side (>= 16) and max_queue must be positive")
        return settings

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def example_images(self) -> list[Path]:
        folder = Path(self.examples) if self.examples else REPO_EXAMPLES / "images"
        return sorted(p for p in folder.glob("*.png")) if folder.is_dir() else []

    def example_meshes(self) -> list[Path]:
        mesh = REPO_EXAMPLES / "table.obj"
        return [mesh] if mesh.is_file() else []


class Sessions:
    """One folder per browser session under cache/sessions (a sub-folder per job), a cancel Event per
    job of the session, and the uploads its jobs read; end() stops and removes them all (an upload
    only once no live session's job read it, and never a copy of one of the page's samples).

    cache is gradio's cache folder (GRADIO_TEMP_DIR): gradio serves the files there as they are, so
    a job's outputs are served from its own folder and leave with it (files elsewhere would be
    copied into the cache, where they would outlive the session)."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.root = cache / "sessions"
        self.root.mkdir(parents=True, exist_ok=True)
        self.samples: list[Path] = []  # the page's sample files: their copies in the cache are shared
        self._jobs: dict[str, list[tuple[str, threading.Event]]] = {}  # session -> its jobs' (kind, cancel)
        self._uploads: dict[str, set[str]] = {}  # an upload's path -> the sessions whose jobs read it
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    @staticmethod
    def key(request) -> str:
        session = getattr(request, "session_hash", None) or "anonymous"
        return "".join(c for c in session if c.isalnum() or c in "-_")[:64] or "anonymous"

    def new_job(self, request, kind: str) -> tuple[Path, threading.Event]:
        """A new empty job folder of the session and the job's own cancel Event (job_done forgets it)."""
        folder = self.root / self.key(request) / f"{kind}-{next(self._count):04d}"
        folder.mkdir(parents=True)
        cancel = threading.Event()
        with self._lock:
            self._jobs.setdefault(self.key(request), []).append((kind, cancel))
        return folder, cancel

    def job_done(self, request, cancel: threading.Event) -> None:
        with self._lock:
            jobs = self._jobs.get(self.key(request), [])
            jobs[:] = [(k, e) for k, e in jobs if e is not cancel]

    def cancel(self, request, kind: str | None = None) -> int:
        """Stop the session's running jobs (of this kind; None: all); how many were told."""
        with self._lock:
            events = [e for k, e in self._jobs.get(self.key(request), []) if kind is None or k == kind]
        for event in events:
            event.set()
        return len(events)

    def is_sample(self, path: Path) -> bool:
        """Whether the file at path is a copy of one of the page's samples (same name and bytes)."""
        return any(
            path.name == sample.name and path.is_file() and filecmp.cmp(path, sample, shallow=False)
            for sample in self.samples
        )

    def note_upload(self, request, path: str | None) -> None:
        """A job of this session read the upload at path (a file in gradio's cache)."""
        if path:
            with self._lock:
                self._uploads.setdefault(str(path), set()).add(self.key(request))

    def end(self, request) -> None:
        """The session ended: stop its job, remove its folder and the uploads only it read."""
        key = self.key(request)
        self.cancel(request)
        with self._lock:
            self._jobs.pop(key, None)
            orphans = []
            for path, readers in list(self._uploads.items()):
                readers.discard(key)
                if not readers:
                    del self._uploads[path]
                    orphans.append(Path(path))
        cache, sessions = self.cache.resolve(), self.root.resolve()
        for path in orphans:
            where = path.resolve()
            if self.is_sample(path) or not where.is_relative_to(cache) or where.is_relative_to(sessions):
                continue  # a sample's copy, or not an upload in gradio's cache
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # gradio's per-upload folder, once empty
        # the session's folder goes last: once it is gone, everything of the session is
        shutil.rmtree(self.root / key, ignore_errors=True)


def _upload(payload) -> tuple[str | None, str]:
    """(path, the user's file name) of a gradio file payload (preprocess=False: a FileData dict), a
    plain path, or (None, "") when nothing was given."""
    if not payload:
        return None, ""
    if isinstance(payload, dict):
        path = payload.get("path")
        return path, str(payload.get("orig_name") or Path(str(path)).name)
    return str(payload), Path(str(payload)).name


def _mesh_upload(prefix: str, examples: list) -> gr.File:
    """The Segment and Inspect tabs' mesh upload (elem_id <prefix>-mesh), with the example meshes as samples."""
    upload = gr.File(label="Mesh (OBJ, GLB, PLY, STL, OFF)", file_types=list(MESH_SUFFIXES), elem_id=f"{prefix}-mesh")
    if examples:
        gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Samples")
    return upload


def _panel(prefix: str, explode: bool = True) -> dict:
    """The result panel's components (see the module docstring), elem_ids <prefix>-status, -view,
    -parts, -explode, -files."""
    c = {"status": gr.Markdown("", elem_id=f"{prefix}-status")}
    c["view"] = gr.Model3D(
        label="3D view (drag to turn, scroll to zoom)",
        clear_color=(0.96, 0.96, 0.96, 1.0),
        height=420,
        elem_id=f"{prefix}-view",
        interactive=False,
    )
    c["parts"] = gr.CheckboxGroup(label="Parts (untick to hide)", choices=[], elem_id=f"{prefix}-parts")
    c["explode"] = gr.Slider(
        0.0, 1.5, value=0.0, step=0.05, label="Explode", visible=explode, elem_id=f"{prefix}-explode"
    )
    return c


def build(engine: Engine, settings: AppSettings, sessions: Sessions):
    """The gradio Blocks of the app (not launched)."""

    def outputs_for(result: Result | None, message: str) -> tuple:
        """The panel's status, view, parts, explode, files and state for a result, or for an error message."""
        if result is None:
            empty = gr.CheckboxGroup(choices=[], value=[])
            return (f"**Error:** {message}", None, empty, 0.0, None, None)
        names = [p.name for p in result.parts]
        parts = gr.CheckboxGroup(choices=[(p.label(), p.name) for p in result.parts], value=names)
        state = {"glb": str(result.parts_glb), "folder": str(result.folder), "names": names}
        files = [str(p) for p in result.downloads if p.is_file()]
        return (result.summary, str(result.parts_glb), parts, 0.0, files, state)

    def run_job(kind: str, request, upload: str | None, call) -> tuple[Result | None, str]:
        folder, cancel = sessions.new_job(request, kind)
        sessions.note_upload(request, upload)
        try:
            return call(folder, cancel), ""
        except JobError as err:
            message = str(err)
        except JobCancelled:
            message = "cancelled"
        finally:
            sessions.job_done(request, cancel)
        shutil.rmtree(folder, ignore_errors=True)  # a failed job leaves nothing behind
        return None, message

    def generate(image, seed, steps, guidance, max_parts, dimensions, request: gr.Request, progress=PROGRESS):
        path, name = _upload(image)
        result, message = run_job(
            "generate",
            request,
            path,
            lambda folder, cancel: engine.generate(
                path,
                folder,
                name,
                seed=int(seed or 0),
                steps=int(steps),
                guidance=float(guidance),
                max_parts=int(max_parts),
                dimensions=dimensions,
                progress=lambda f, d: progress(f, desc=d),
                cancel=cancel,
            ),
        )
        preview = str(result.preview) if result and result.preview and result.preview.is_file() else None
        return (*outputs_for(result, message), preview)

    def segment(mesh, method, count, request: gr.Request, progress=PROGRESS):
        path, name = _upload(mesh)
        result, message = run_job(
            "segment",
            request,
            path,
            lambda folder, cancel: engine.segment(
                path,
                folder,
                name,
                method=str(method),
                num_parts=int(count or 0),
                progress=lambda f, d: progress(f, desc=d),
                cancel=cancel,
            ),
        )
        return (*outputs_for(result, message), result.details if result else None)

    def inspect(mesh, resolution, method, request: gr.Request, progress=PROGRESS):
        path, name = _upload(mesh)
        result, message = run_job(
            "inspect",
            request,
            path,
            lambda folder, cancel: engine.inspect(
                path,
                folder,
                name,
                resolution=int(resolution),
                method=str(method),
                progress=lambda f, d: progress(f, desc=d),
                cancel=cancel,
            ),
        )
        return (*outputs_for(result, message), result.details if result else None)

    view_numbers = itertools.count(1)

    def update_view(state, explode, keep):
        """A new GLB (a new file name, so the browser loads it afresh): the parts ticked in keep, exploded."""
        if not state or not Path(state["folder"]).is_dir():
            return None  # no result yet, or the session ended
        out = Path(state["folder"]) / f"view-{next(view_numbers):05d}.glb"
        path = write_view(state["glb"], out, float(explode or 0.0), [k for k in (keep or []) if k in state["names"]])
        return str(path) if path else None

    def cancel_job(kind: str):
        def cancel(request: gr.Request):
            sessions.cancel(request, kind)  # a running job stops at its next stage or step
            return "Cancelled."  # (gradio drops a waiting one from the queue: `cancels`)

        return cancel

    def end_session(request: gr.Request):
        sessions.end(request)

    job = {"concurrency_id": "cpu", "concurrency_limit": 1, "show_progress": "full"}
    view = {"concurrency_id": "view", "concurrency_limit": 4, "trigger_mode": "always_last", "show_progress": "hidden"}
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            "# partgen\nImage -> 3D with parts, mesh -> parts, mesh -> annotated voxels, on this machine's CPU. "
            "One job runs at a time; others wait in the queue."
        )
        with gr.Tab("Generate", id="generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(
                        label="Image (upload, paste, or pick a sample below)",
                        type="filepath",
                        sources=["upload", "clipboard"],
                        height=280,
                        elem_id="gen-image",
                    )
                    samples = settings.example_images()
                    if samples:
                        gr.Examples([[str(p)] for p in samples], inputs=[image], label="Samples")
                    cfg = engine.generate_cfg
                    seed = gr.Number(value=int(cfg.seed), precision=0, label="Seed", elem_id="gen-seed")
                    steps = gr.Slider(1, 50, value=int(cfg.steps), step=1, label="Steps (stage 2)", elem_id="gen-steps")
                    guidance = gr.Slider(
                        1.0, 10.0, value=float(cfg.cfg), step=0.5, label="Guidance (stage 2)", elem_id="gen-guidance"
                    )
                    max_parts = gr.Slider(
                        1, engine.max_parts, value=engine.max_parts, step=1, label="Max parts", elem_id="gen-max-parts"
                    )
                    dimensions = gr.Textbox(
                        label="Dimensions W x D x H (optional, one unit: the layout takes these proportions)",
                        placeholder="150 x 75 x 74",
                        elem_id="gen-dimensions",
                    )
                    with gr.Row():
                        gen_button = gr.Button("Generate", variant="primary", elem_id="gen-run")
                        gen_cancel = gr.Button("Cancel", elem_id="gen-cancel")
                with gr.Column(scale=2):
                    gen = _panel("gen")
                    with gr.Row():
                        gen_preview = gr.Image(label="Preview (input and three views)", elem_id="gen-preview")
                    gen["files"] = gr.File(label="Downloads", file_count="multiple", elem_id="gen-files")
            gen["state"] = gr.State(None)
        with gr.Tab("Segment", id="segment"):
            with gr.Row():
                with gr.Column(scale=1):
                    seg_mesh = _mesh_upload("seg", settings.example_meshes())
                    seg_method = gr.Radio(
                        ["learned", "geometric"], value="learned", label="Method", elem_id="seg-method"
                    )
                    seg_count = gr.Number(value=0, precision=0, label="Parts (0: automatic)", elem_id="seg-count")
                    with gr.Row():
                        seg_button = gr.Button("Segment", variant="primary", elem_id="seg-run")
                        seg_cancel = gr.Button("Cancel", elem_id="seg-cancel")
                with gr.Column(scale=2):
                    seg = _panel("seg")
                    seg["files"] = gr.File(label="Downloads", file_count="multiple", elem_id="seg-files")
                    seg_details = gr.JSON(label="labels.json (without the per-face lists)", elem_id="seg-details")
            seg["state"] = gr.State(None)
        with gr.Tab("Inspect", id="inspect"):
            with gr.Row():
                with gr.Column(scale=1):
                    ins_mesh = _mesh_upload("ins", settings.example_meshes())
                    ins_resolution = gr.Dropdown(
                        [32, 64, 128, 256], value=64, label="Resolution (voxels a side)", elem_id="ins-resolution"
                    )
                    ins_method = gr.Radio(
                        ["authored", "geometric", "learned"], value="authored", label="Parts", elem_id="ins-method"
                    )
                    with gr.Row():
                        ins_button = gr.Button("Inspect", variant="primary", elem_id="ins-run")
                        ins_cancel = gr.Button("Cancel", elem_id="ins-cancel")
                with gr.Column(scale=2):
                    ins = _panel("ins")
                    ins["files"] = gr.File(label="The record (zip)", file_count="multiple", elem_id="ins-files")
                    ins_details = gr.JSON(
                        label="What partgen-annotate writes: manifest row, meta.json", elem_id="ins-details"
                    )
            ins["state"] = gr.State(None)

        panel_outputs = ("status", "view", "parts", "explode", "files", "state")
        runs = {}
        for name, panel, button, fn, inputs, extra in (
            ("gen", gen, gen_button, generate, [image, seed, steps, guidance, max_parts, dimensions], [gen_preview]),
            ("seg", seg, seg_button, segment, [seg_mesh, seg_method, seg_count], [seg_details]),
            ("ins", ins, ins_button, inspect, [ins_mesh, ins_resolution, ins_method], [ins_details]),
        ):
            outputs = [panel[k] for k in panel_outputs] + extra
            # preprocess=False: the handlers get the raw upload (path and file name) and say what is
            # wrong with it themselves, in one line, rather than a generic error from decoding it
            runs[name] = button.click(fn, inputs, outputs, preprocess=False, api_name=name, **job)
            for trigger in (panel["explode"].input, panel["parts"].input):  # the user's changes, not a job's
                trigger(update_view, [panel["state"], panel["explode"], panel["parts"]], [panel["view"]], **view)
        for name, kind, panel, button in (
            ("gen", "generate", gen, gen_cancel),
            ("seg", "segment", seg, seg_cancel),
            ("ins", "inspect", ins, ins_cancel),
        ):
            button.click(cancel_job(kind), None, [panel["status"]], cancels=[runs[name]], queue=False)
        app.unload(end_session)
    sessions.samples = settings.example_images() + settings.example_meshes()
    return app


def launch(settings: AppSettings, generate_cfg, segment_cfg, block: bool = True):
    """Serve the app: a temp root (removed at exit), the models loaded (settings.preload), the queue
    (one job at a time, settings.max_queue waiting). block=False returns (app, engine, root) with the
    server running (tests); block=True serves until interrupted and returns 0."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if settings.temp_dir:
        Path(settings.temp_dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="partgen-app-", dir=settings.temp_dir))
    atexit.register(shutil.rmtree, root, True)
    os.environ["GRADIO_TEMP_DIR"] = str(root)  # gradio's cache (uploads, samples) is the root; sessions inside

    import torch

    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    engine = Engine(generate_cfg, segment_cfg, max_bytes=settings.max_bytes, max_image_side=settings.max_image_side)
    if settings.preload:
        engine.load()
    app = build(engine, settings, Sessions(root))
    app.queue(default_concurrency_limit=1, max_size=settings.max_queue)
    if block and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does
    print(f"partgen-app: http://{settings.host}:{settings.port} (job folders under {root})", flush=True)
    app.launch(
        server_name=settings.host,
        server_port=int(settings.port),
        share=bool(settings.share),
        theme=gr.themes.Default(),
        max_file_size=settings.max_bytes,
        prevent_thread_lock=not block,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        show_error=False,
        quiet=True,
        allowed_paths=[str(root)],
    )
    if not block:
        return app, engine, root
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # gradio closes the server on it; atexit then removes the temp root


__all__ = ["AppSettings", "Sessions", "build", "launch"]
