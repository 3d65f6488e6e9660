"""partgen-app's jobs: the pipelines behind the Generate, Segment and Inspect tabs (no gradio here).

Engine holds what loads once per process (the part generator and the segmenter: at start, or on
first use) and runs one job at a time (a lock), each writing only inside the job folder it is given:

    generate(image, folder)  partgen-generate's pipeline (PartGenerator, write_outputs): parts.glb,
                             mesh.obj, mesh.ply, layout.ply, preview.png, report.json; + parts.zip
    segment(mesh, folder)    partgen-segment's Segmenter (method "learned": labels.json, faces.npy,
                             parts.ply, parts.glb) or the face-graph cuts that partgen-annotate's
                             parts=geometric makes (method "geometric": labels.json, parts.glb)
    inspect(mesh, folder)    partgen-annotate's per-asset function (process_asset): the record it
                             writes, its manifest row, record.zip, and voxels.glb (voxels by part)

A job reports progress to a callback as (fraction, text): the generator's own stages (on_stage:
stage 1, parts, stage 2, decode) and, inside the two sampling stages, their steps (the samplers
iterate their steps through tqdm.auto.tqdm, for which a job puts counting_tqdm while it runs).
Setting the job's cancel Event stops it at its next stage or step (JobCancelled; a generation
cancelled while it decodes stops before it writes its outputs). Bad input raises
JobError with one line that names the upload by its own file name.

This module is partgen.app's only import of partgen below it (DESIGN.md: the app is a thin view over
the pipelines): partgen.pipelines, and the data pipeline's per-asset annotator and geometric cuts,
which the pipelines use from there too. The models are built and run by the pipelines alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from partgen.app import scene
from partgen.data_pipeline.annotate import AnnotateConfig, Asset, process_asset
from partgen.data_pipeline.geometric import GeometricConfig, segment_mesh
from partgen.data_pipeline.mesh_io import FORMATS, normalise
from partgen.data_pipeline.parts import DEFAULT_LEARNED
from partgen.pipelines.generate import GenerationError, PartGenerator, make_report, resolve_models
from partgen.pipelines.generate import write_outputs as write_generation
from partgen.pipelines.outputs import build_pipeline, palette
from partgen.pipelines.proportions import check_dimensions
from partgen.pipelines.segment import Segmenter, read_shape
from partgen.pipelines.segment import write_outputs as write_segmentation

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MESH_SUFFIXES = tuple(s for s in FORMATS if s != ".gltf")  # a .gltf names other files an upload lacks
GENERATE_STAGES = {"stage 1": (0.0, 0.35), "parts": (0.35, 0.45), "stage 2": (0.45, 0.92), "decode": (0.92, 1.0)}
SEGMENT_STAGES = {"read": (0.0, 0.1), "parts": (0.1, 0.9), "write": (0.9, 1.0)}
INSPECT_STAGES = {"annotate": (0.0, 0.9), "write": (0.9, 1.0)}

Progress = Callable[[float, str], None]


class JobError(ValueError):
    """Input a job cannot use, or a pipeline that refused it; the message is one line for the page."""


class JobCancelled(Exception):
    """The job's cancel Event was set; it stopped at its next stage or step."""


@dataclasses.dataclass
class PartRow:
    """One row of a tab's parts list: the part's name, its faces, and its voxels (generated and
    annotated parts) or share of the surface area (segmented parts)."""

    name: str
    faces: int
    voxels: int | None = None
    share: float | None = None

    def label(self) -> str:
        sizes = [f"{self.voxels} voxels"] if self.voxels is not None else []
        sizes += [f"{self.faces} faces"]
        sizes += [f"{100 * self.share:.0f}% of the area"] if self.share is not None else []
        return f"{self.name} ({', '.join(sizes)})"


@dataclasses.dataclass
class Result:
    """What a job made: parts_glb (one named node per part: what the view shows, explodes and
    filters), the parts list, the files to download, a one-line summary, an optional preview image
    and details (report.json, labels or meta.json: shown as JSON)."""

    folder: Path
    parts_glb: Path
    parts: list[PartRow]
    downloads: list[Path]
    summary: str
    preview: Path | None = None
    details: dict = dataclasses.field(default_factory=dict)


def one_line(err: BaseException | str, replace: dict[str, str] | None = None) -> str:
    """The error's message on one line, with the paths in replace (temp folders) swapped for what the
    user knows them by."""
    text = " ".join(str(err).split()) or type(err).__name__
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    return text


def safe_name(name: str) -> str:
    """A file-system-safe version of an upload's file name (letters, digits, - _ .)."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".")
    return clean[-80:] or "upload"


def check_upload(path: str | Path | None, name: str, suffixes: tuple[str, ...], max_bytes: int) -> Path:
    """The upload's path when it is a non-empty file of an accepted type under max_bytes; JobError otherwise."""
    if path is None:
        raise JobError("no file given: upload one first")
    path = Path(path)
    suffix = Path(name).suffix.lower()
    if suffix not in suffixes:
        raise JobError(f"{name}: unsupported file type {suffix or '(none)'!r}; expected one of {', '.join(suffixes)}")
    if not path.is_file():
        raise JobError(f"{name}: the upload is gone (upload it again)")
    size = path.stat().st_size
    if size == 0:
        raise JobError(f"{name}: the file is empty")
    if size > max_bytes:
        raise JobError(f"{name}: {size / 2**20:.0f} MB is over the limit of {max_bytes / 2**20:.0f} MB")
    return path


def parse_dimensions(text: str | None) -> list[float] | None:
    """The object's [width, depth, height] from text such as "150 x 75 x 74" (x, ×, commas or spaces
    between three positive numbers, one unit), None when blank; JobError in one line otherwise."""
    if text is None or not str(text).strip():
        return None
    fields = [f for f in re.split(r"[\sx×*,;]+", str(text).strip().lower()) if f]
    try:
        return check_dimensions([float(f) for f in fields]).tolist()
    except ValueError:
        raise JobError(f"dimensions: give width x depth x height as three positive numbers, got {text!r}") from None


def check_image(path: str | Path | None, name: str, max_bytes: int, max_side: int) -> Path:
    """check_upload for images, then the image's size from its header (nothing decoded yet): JobError
    for a file PIL cannot identify or an image over max_side pixels a side."""
    from PIL import Image, UnidentifiedImageError

    path = check_upload(path, name, IMAGE_SUFFIXES, max_bytes)
    try:
        with warnings.catch_warnings():  # PIL warns about huge images; the size check below says why
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        raise JobError(f"{name}: the image is far too large (over {max_side} pixels a side)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise JobError(f"{name}: not a readable image ({one_line(err, {str(path): name})})") from None
    if max(width, height) > max_side:
        raise JobError(f"{name}: the image is {width} x {height} pixels, over the limit of {max_side} a side")
    return path


_COUNTING_TQDM = None


def counting_tqdm():
    """tqdm.auto.tqdm's subclass (made once) that hands each step of a bar to the Tracker of the thread
    iterating it (and draws nothing), if that thread runs a job; elsewhere it is plain tqdm."""
    global _COUNTING_TQDM
    if _COUNTING_TQDM is None:
        from tqdm.auto import tqdm

        class CountingTqdm(tqdm):
            trackers: dict[int, Tracker] = {}

            def __init__(self, *args, **kwargs):
                self._tracker = self.trackers.get(threading.get_ident())
                if self._tracker is not None:
                    kwargs["disable"] = True
                super().__init__(*args, **kwargs)

            def __iter__(self):
                if self._tracker is None:
                    yield from super().__iter__()
                    return
                total = self.total or 0
                for i, item in enumerate(self.iterable):
                    self._tracker.step(i, total)
                    yield item
                self._tracker.step(total, total)

        _COUNTING_TQDM = CountingTqdm
    return _COUNTING_TQDM


class Tracker:
    """A job's progress over named stages (name -> (start, end) fractions of the bar) and its cancel
    Event, checked at every stage and step."""

    def __init__(self, stages: dict[str, tuple[float, float]], report: Progress | None, cancel: threading.Event | None):
        self.stages, self.report, self.cancel = stages, report, cancel
        self.current = next(iter(stages))

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise JobCancelled("cancelled")

    def stage(self, name: str) -> None:
        self.check()
        self.current = name
        if self.report is not None:
            self.report(self.stages.get(name, (0.0, 0.0))[0], name)

    def step(self, index: int, total: int) -> None:
        start, end = self.stages.get(self.current, (0.0, 0.0))
        if self.report is not None and total:
            self.report(start + (end - start) * index / total, f"{self.current}: step {index}/{total}")
        self.check()

    @contextlib.contextmanager
    def counting_steps(self):
        """Inside the block, the samplers' step bars (tqdm.auto.tqdm, looked up per call) report to
        this tracker: counting_tqdm stands in for tqdm.auto.tqdm (jobs run one at a time)."""
        import tqdm.auto

        counting = counting_tqdm()
        counting.trackers[threading.get_ident()] = self
        original, tqdm.auto.tqdm = tqdm.auto.tqdm, counting
        try:
            yield
        finally:
            tqdm.auto.tqdm = original
            counting.trackers.pop(threading.get_ident(), None)


class Engine:
    """The models and the jobs (module docstring).

    generate_cfg: partgen-generate's config (conf/generate.yaml composed with overrides; image and
                  output unused): its `pipeline:` node builds the PartGenerator
    segment_cfg:  partgen-segment's config (conf/segment.yaml): its `pipeline:` node builds the Segmenter
    max_bytes:    the largest upload a job reads
    max_image_side: the largest image side (pixels) Generate accepts
    """

    def __init__(self, generate_cfg, segment_cfg, max_bytes: int = 100 * 2**20, max_image_side: int = 4096):
        self.generate_cfg, self.segment_cfg = generate_cfg, segment_cfg
        self.max_bytes, self.max_image_side = int(max_bytes), int(max_image_side)
        self._generator = self._segmenter = None
        self._load_lock = threading.Lock()
        self._job_lock = threading.Lock()

    # --- models, loaded once ---------------------------------------------------------------------

    @property
    def generator(self) -> PartGenerator:
        with self._load_lock:
            if self._generator is None:
                self._generator = build_pipeline(self.generate_cfg.pipeline)
            return self._generator

    @property
    def segmenter(self) -> Segmenter:
        with self._load_lock:
            if self._segmenter is None:
                self._segmenter = build_pipeline(self.segment_cfg.pipeline)
            return self._segmenter

    def load(self) -> None:
        """Load every model now (rather than on the first job that needs it)."""
        _ = self.generator, self.segmenter

    @property
    def max_parts(self) -> int:
        """The most parts Generate cuts a layout into (the generation config's parts.max_parts)."""
        parts = self.generate_cfg.get("parts", {})
        return int(parts.get("max_parts") or 8) if not isinstance(parts, str) else 8

    @contextlib.contextmanager
    def _job(self, tracker: Tracker):
        """One job at a time: wait for the lock (a cancelled job may still be finishing its step)."""
        waited = False
        while not self._job_lock.acquire(timeout=0.5):
            tracker.check()
            if not waited and tracker.report is not None:
                tracker.report(0.0, "waiting for the previous job to stop")
                waited = True
        try:
            tracker.check()
            yield
        finally:
            self._job_lock.release()

    @staticmethod
    def _take_input(path: Path, folder: Path, name: str) -> Path:
        """A copy of the upload inside the job folder, under its own (safe) name: everything a job
        reads and writes is in its folder."""
        (folder / "input").mkdir(parents=True, exist_ok=True)
        copy = folder / "input" / safe_name(name)
        shutil.copyfile(path, copy)
        return copy

    # --- the jobs --------------------------------------------------------------------------------

    def generate(
        self,
        image: str | Path | None,
        folder: Path,
        name: str,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        max_parts: int | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        dimensions: str | None = None,
    ) -> Result:
        """image -> parts (partgen-generate's pipeline and outputs, in folder); steps, guidance: of stage 2
        (None: the config's); max_parts: at most this many parts (None: the config's); dimensions:
        the object's "width x depth x height" (parse_dimensions; None or blank: not known)."""
        path = check_image(image, name, self.max_bytes, self.max_image_side)
        dims = parse_dimensions(dimensions)
        steps = int(self.generate_cfg.steps if steps is None else steps)
        guidance = float(self.generate_cfg.cfg if guidance is None else guidance)
        max_parts = int(self.max_parts if max_parts is None else max_parts)
        if not 1 <= steps <= 200:
            raise JobError(f"steps must be between 1 and 200, got {steps}")
        if not 1 <= max_parts <= 64:
            raise JobError(f"max parts must be between 1 and 64, got {max_parts}")
        tracker = Tracker(GENERATE_STAGES, progress, cancel)
        with self._job(tracker):
            generator = self.generator
            generator.steps, generator.guidance, generator.max_parts = steps, guidance, max_parts
            path = self._take_input(path, folder, name)
            names = {str(path): name}
            start = time.perf_counter()
            try:
                with tracker.counting_steps():
                    gen = generator(path, seed=int(seed), progress=True, on_stage=tracker.stage, dimensions=dims)
            except (ValueError, OSError, GenerationError) as err:
                raise JobError(one_line(err, names)) from None
            tracker.check()  # cancelled while it decoded: it writes nothing
            extra = {"max_parts": max_parts, "layout": "stage 1", "dimensions": dims}
            settings = {"seed": int(seed)} | generator.settings() | extra
            models = str(resolve_models(self.generate_cfg.get("checkpoint")))
            report = make_report(path, gen, settings, models, time.perf_counter() - start)
            report["input"] = name
            write_generation(folder, path, gen, report)
            scene.parts_zip(folder / "parts.glb", folder / "parts.zip")
        rows = [PartRow(p.name, int(len(p.faces)), voxels=int(p.voxels)) for p in gen.parts]
        summary = (
            f"{name}: {len(rows)} part{'s' * (len(rows) != 1)} ({', '.join(r.name for r in rows)}) from "
            f"{gen.tokens['voxels']} voxel tokens in {report['times_s']['total_s']:.0f} s (seed {int(seed)}, "
            f"{steps} steps, guidance {guidance:g})"
        )
        files = [folder / f for f in ("parts.glb", "mesh.obj", "parts.zip", "report.json")]
        return Result(folder, folder / "parts.glb", rows, files, summary, folder / "preview.png", report)

    def segment(
        self,
        mesh: str | Path | None,
        folder: Path,
        name: str,
        method: str = "learned",
        num_parts: int | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """A mesh -> parts: method "learned" (partgen-segment: the Segmenter, its outputs) or
        "geometric" (normalised cuts of the face graph); num_parts None or 0: chosen automatically."""
        if method not in ("learned", "geometric"):
            raise JobError(f"method must be learned or geometric, got {method!r}")
        num_parts = int(num_parts) if num_parts else None
        if num_parts is not None and not 1 <= num_parts <= 64:
            raise JobError(f"the part count must be between 1 and 64 (or auto), got {num_parts}")
        path = check_upload(mesh, name, MESH_SUFFIXES, self.max_bytes)
        tracker = Tracker(SEGMENT_STAGES, progress, cancel)
        with self._job(tracker):
            tracker.stage("read")
            path = self._take_input(path, folder, name)
            names = {str(path): name}
            try:
                shape = read_shape(path, max_bytes=self.max_bytes)
                if shape.faces is None:
                    raise JobError(f"{name}: a point cloud, not a mesh (no faces)")
                tracker.stage("parts")
                if method == "learned":
                    segmenter = self.segmenter
                    seg = segmenter.label_mesh(shape.vertices, shape.faces, num_parts)
                    part, part_names = seg.part, list(seg.names)
                else:
                    vertices = normalise(shape.vertices).apply(shape.vertices)
                    part = segment_mesh(vertices, shape.faces, num_parts, GeometricConfig(max_parts=64))
                    part_names = [f"part_{p}" for p in range(int(part.max()) + 1)]
            except JobError:
                raise
            except (ValueError, OSError) as err:
                raise JobError(one_line(err, names)) from None
            tracker.stage("write")
            share = _area_share(shape.vertices, shape.faces, part, len(part_names))
            faces = np.bincount(part, minlength=len(part_names))
            rows = [PartRow(n, int(faces[p]), share=float(share[p])) for p, n in enumerate(part_names)]
            summary = (
                f"{name} ({len(shape.faces)} faces) -> {len(rows)} part{'s' * (len(rows) != 1)} ({method}): "
                + ", ".join(f"{r.name} {100 * r.share:.0f}%" for r in rows)
            )
            if method == "learned":
                write_segmentation(folder, path, shape, seg, segmenter.source, summary)
                details = json.loads((folder / "labels.json").read_text())
            else:
                details = _write_geometric(folder, name, shape, part, part_names, share, summary)
            details["input"] = name
            if isinstance(details.get("checkpoint"), str):  # the page does not show the server's folders
                details["checkpoint"] = _shown_path(details["checkpoint"])
            for big in ("semantic", "part"):  # per-face lists: in the file, not in the page
                details.pop(big, None)
        files = [folder / "parts.glb", folder / "labels.json"]
        return Result(folder, folder / "parts.glb", rows, files, summary, None, details)

    def inspect(
        self,
        mesh: str | Path | None,
        folder: Path,
        name: str,
        resolution: int = 64,
        method: str = "authored",
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """A mesh -> the record partgen-annotate writes for it (resolution, parts=method) under
        folder/annotation, its voxels coloured by part as a GLB, and record.zip."""
        if method not in ("authored", "geometric", "learned"):
            raise JobError(f"parts must be authored, geometric or learned, got {method!r}")
        if int(resolution) not in (32, 64, 128, 256):
            raise JobError(f"resolution must be 32, 64, 128 or 256, got {resolution}")
        path = check_upload(mesh, name, MESH_SUFFIXES, self.max_bytes)
        tracker = Tracker(INSPECT_STAGES, progress, cancel)
        with self._job(tracker):
            tracker.stage("annotate")
            path = self._take_input(path, folder, name)
            out = folder / "annotation"
            (out / "records").mkdir(parents=True)
            learned = {}
            if method == "learned":
                learned = {"checkpoint": self.segment_cfg.get("checkpoint"), "segmenter": DEFAULT_LEARNED}
            cfg = AnnotateConfig(
                resolution=int(resolution), parts_method=method, learned=learned, max_bytes=self.max_bytes
            )
            row = process_asset(Asset(Path(safe_name(name)).stem, str(path)), cfg, out)
            if row["status"] == "failed":
                raise JobError(one_line(row["reason"].split("\n")[0], {str(path): name}))
            tracker.stage("write")
            (out / "manifest-0-of-1.jsonl").write_text(json.dumps(row) + "\n")
            record = out / row["record"]
            meta = json.loads((record / "meta.json").read_text())
            with np.load(record / "voxels.npz") as voxels:
                coords, part = voxels["coords"].astype(np.int64), voxels["part"].astype(np.int64)
            part_names = list(meta["parts"]["names"])
            colours = palette(len(part_names))
            scene.write_voxels(folder / "voxels.glb", coords, part, part_names, int(resolution), colours)
            scene.zip_folder(out, folder / "record.zip")
        counts = np.bincount(part, minlength=len(part_names))
        with np.load(record / "mesh.npz") as mesh_npz:
            face_counts = np.bincount(mesh_npz["face_part"].astype(np.int64), minlength=len(part_names))
        rows = [PartRow(n, int(face_counts[p]), voxels=int(counts[p])) for p, n in enumerate(part_names)]
        flags = meta["parts"]["flags"]
        summary = (
            f"{name}: {meta['counts']['voxels']} surface voxels at R={resolution}, {len(rows)} part"
            f"{'s' * (len(rows) != 1)} ({method}), flags: {', '.join(flags) if flags else 'none'}"
        )
        details = {"manifest_row": row, "meta.json": meta, "files": sorted(p.name for p in record.iterdir())}
        details = json.loads(json.dumps(details).replace(json.dumps(str(folder) + "/")[1:-1], ""))  # job-relative paths
        return Result(folder, folder / "voxels.glb", rows, [folder / "record.zip"], summary, None, details)


def _shown_path(path: str) -> str:
    """path as the page shows it: a bundled model relative to the package (partgen/assets/...), any
    other path as given; a source of several models ("A + B", the segmenter's) piece by piece."""
    package = Path(__file__).resolve().parents[1]
    shown = []
    for piece in path.split(" + "):
        where = Path(piece).resolve()
        shown.append(str(where.relative_to(package.parent)) if where.is_relative_to(package) else piece)
    return " + ".join(shown)


def _area_share(vertices: np.ndarray, faces: np.ndarray, part: np.ndarray, count: int) -> np.ndarray:
    """(P,) each part's share of the surface area."""
    tri = np.asarray(vertices, np.float64)[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = area.sum()
    weights = area / total if total > 0 else np.full(len(area), 1.0 / len(area))
    return np.bincount(part, weights=weights, minlength=count)


def _write_geometric(folder: Path, name: str, shape, part: np.ndarray, names: list[str], share, summary: str) -> dict:
    """labels.json and parts.glb (one named node per part) for the geometric cuts."""
    scene.write_parts(folder / "parts.glb", shape.vertices, shape.faces, part, names, palette(len(names)))
    faces = np.bincount(part, minlength=len(names))
    labels = {
        "input": name,
        "kind": "mesh",
        "method": "geometric",
        "num_faces": int(len(part)),
        "parts": [
            {"id": p, "name": n, "faces": int(faces[p]), "fraction": round(float(share[p]), 6)}
            for p, n in enumerate(names)
        ],
        "per_element": "faces",
        "part": part.tolist(),
        "summary": summary,
    }
    (folder / "labels.json").write_text(json.dumps(labels))
    return labels


__all__ = ["Engine", "JobCancelled", "JobError", "PartRow", "Result", "check_image", "check_upload", "parse_dimensions"]
