"""Image -> mesh with named parts: partgen-generate (Ultra3D's two stages, with parts in between).

Legend: V active voxels at the stage-2 resolution R, P parts, C latent channels, s sub-cells per
voxel side.

    stage 1   LayoutGenerator: the layout flow samples VecSet latents for the image, the VecSet VAE
              decodes an occupancy grid, occupancy_to_voxels gives the V voxels (R = 64)
    parts     the coarse surface of the layout (marching cubes of the grid, decimated) is cut into
              parts by the learned segmenter (the bundled one by default; parts named by semantic
              class) or geometrically (parts="geometric"); each voxel takes the part of the nearest
              face; parts under min_part_fraction of the voxels, or beyond max_parts, join their
              nearest kept part
    stage 2   PartDiT samples a C-channel latent per voxel with Part Attention (parts larger than
              max_group voxels are cut into compact slabs, the group sizes stage 2 was trained on),
              each group cross-attending to the image patches it projects onto under the typical
              icon camera framed to the layout (the view the Sweet Home 3D icons show)
    decode    the SLat VAE decodes each voxel's sub-grid signed distances; marching cubes over each
              part's blocks gives one mesh per part at R x s (64 x 4 = 256)

With layout=MESH a coarse shape the user gives (any mesh file partgen reads) stands in for stage 1:
its surface voxels and surface are the layout, and stage 2 details it from the image.

A model set is a folder with layout_vae/, layout_flow/, slat_vae/ and part_dit/ model folders
(model.yaml + model.safetensors, as partgen-train writes them; loading never unpickles and builds
only partgen classes). The default is the one bundled in partgen/assets/generator (its README says
how it was trained and what it measures).

write_outputs: parts.glb (one named node per part), mesh.obj and mesh.ply (the whole mesh, coloured
by part in the PLY), layout.ply (stage 1's coarse surface), preview.png (the input and three views,
parts coloured) and report.json (per-stage times, token counts, part sizes, seed, versions).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from partgen.data_pipeline.mesh_io import MeshError
from partgen.models.image_encoder import ImageError, load_image
from partgen.models.io import load_trained
from partgen.models.part_dit import PartDiT
from partgen.models.slat_vae import SLatVAE, blocks_to_mesh
from partgen.models.vecset_vae import extract_mesh
from partgen.pipelines.layout import LayoutGenerator
from partgen.pipelines.segment import InputError, Segmenter, _palette, check_output, publish_outputs
from partgen.structures import SparseVoxels, cu_seqlens_from_lengths

APP = "partgen-generate"
DEFAULT_MODELS = Path(__file__).resolve().parents[1] / "assets" / "generator"
STAGES = ("layout_vae", "layout_flow", "slat_vae", "part_dit")
TRAIN_HINT = "see partgen/assets/generator/README.md for the commands that train a model set"


class GenerationError(RuntimeError):
    """A generation that produced nothing usable (e.g. an empty layout); the message says which stage."""


@dataclasses.dataclass
class GeneratedPart:
    """One part: its name, mesh ((n, 3) float64 vertices in the normalised cube, (m, 3) int64 faces)
    and how many voxels (stage-2 tokens) it holds."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    voxels: int


@dataclasses.dataclass
class Generation:
    """The parts (those whose decoded surface is not empty), stage 1's coarse surface, the voxels with
    their parts (SparseVoxels, feats: the sampled latents), seconds per stage and token counts."""

    parts: list[GeneratedPart]
    layout_mesh: tuple[np.ndarray, np.ndarray]
    voxels: SparseVoxels
    times: dict[str, float]
    tokens: dict


MIN_IMAGE_SIDE = 16  # pixels
MIN_FOREGROUND = 0.01  # share of the image's pixels


def check_foreground(path: str | Path, min_side: int = MIN_IMAGE_SIDE, min_fraction: float = MIN_FOREGROUND) -> float:
    """The share of an image's pixels that show the object (partgen.eval.retrieval.ink_mask: its alpha
    where it has one, else what is not white); ImageError when the image is smaller than min_side
    pixels a side or the object covers less than min_fraction of it (a blank image has nothing to
    reconstruct: it is refused in a second, before any model runs)."""
    from PIL import Image

    from partgen.eval.retrieval import ink_mask

    with Image.open(path) as im:
        if min(im.size) < min_side:
            raise ImageError(
                f"{path}: the image is {im.width} x {im.height} pixels, too small to show an object "
                f"(at least {min_side} x {min_side})"
            )
        fraction = float(ink_mask(np.asarray(im.convert("RGBA"))).mean())
    if fraction < min_fraction:
        raise ImageError(
            f"{path}: no object in the image (its foreground covers {100 * fraction:.2f}% of the pixels, "
            f"under {100 * min_fraction:g}%; give the object on a white or transparent background)"
        )
    return fraction


def resolve_models(path: str | Path | None) -> Path:
    """The model-set folder a checkpoint argument names (None: the bundled default)."""
    folder = DEFAULT_MODELS if path is None else Path(path)
    missing = [name for name in STAGES if not (folder / name / "model.yaml").is_file()]
    if missing:
        raise FileNotFoundError(
            f"model set {folder} lacks {', '.join(missing)} (each a folder with model.yaml and "
            f"model.safetensors); {TRAIN_HINT}"
        )
    return folder


def voxel_parts(coords: np.ndarray, resolution: int, vertices: np.ndarray, faces: np.ndarray, face_part: np.ndarray):
    """(V,) int64 part of each voxel: that of the face whose centroid is nearest to the voxel centre."""
    from scipy.spatial import cKDTree

    centres = (coords.astype(np.float64) + 0.5) / resolution - 0.5
    _, nearest = cKDTree(vertices[faces].mean(1)).query(centres, k=1)
    return face_part[nearest]


def merge_small_parts(
    coords: np.ndarray, part: np.ndarray, max_parts: int, min_fraction: float
) -> tuple[np.ndarray, list[int]]:
    """(V,) parts 0..K-1 with K <= max_parts, and the K original ids they keep: the largest parts that
    hold at least min_fraction of the voxels are kept (largest first), every other voxel joins the part
    of its nearest kept voxel."""
    from scipy.spatial import cKDTree

    sizes = np.bincount(part)
    order = np.argsort(-sizes, kind="stable")
    kept = [p for p in order[:max_parts] if sizes[p] >= min_fraction * len(part)] or [order[0]]
    rank = np.full(len(sizes), -1)
    rank[kept] = np.arange(len(kept))
    out = rank[part]
    loose = out < 0
    if loose.any():
        _, nearest = cKDTree(coords[~loose]).query(coords[loose], k=1)
        out[loose] = out[~loose][nearest]
    return out, [int(p) for p in kept]


def split_large_parts(coords: np.ndarray, part: np.ndarray, max_group: int) -> np.ndarray:
    """(V,) attention-group ids: parts of at most max_group voxels keep one group, larger ones are cut
    into ceil(n / max_group) slabs of consecutive voxels in x-major order (spatially compact). Stage 2
    then attends within groups of the size its training parts had, whatever the layout's parts."""
    group = np.empty(len(part), np.int64)
    next_id = 0
    for p in range(int(part.max()) + 1):
        idx = np.nonzero(part == p)[0]
        if len(idx) == 0:
            continue
        chunks = -(-len(idx) // max_group)
        order = idx[np.lexsort(coords[idx].T[::-1])]  # x, then y, then z
        group[order] = next_id + np.arange(len(order)) * chunks // len(order)
        next_id += chunks
    return group


def simplify(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """The mesh with at most max_faces triangles (open3d's quadric decimation), or as it is."""
    if len(faces) <= max_faces:
        return vertices, faces
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(faces))
    mesh = mesh.simplify_quadric_decimation(int(max_faces)).remove_unreferenced_vertices()
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.triangles, np.int64)


def unique_names(names: list[str]) -> list[str]:
    """The names with a _2, _3, ... suffix on repeats (leg, leg_2); names already suffixed keep their stem."""
    import re

    seen: dict[str, int] = {}
    out = []
    for name in names:
        stem = re.sub(r"_\d+$", "", name)
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def icon_projection(points: np.ndarray, size: int) -> torch.Tensor:
    """(3, 4) normalised projection of the typical Sweet Home 3D icon camera framed to the points."""
    from partgen.data_pipeline.sh3d_icons import TYPICAL_VIEW, frame_to_points, preview_camera

    camera = frame_to_points(preview_camera(TYPICAL_VIEW, (size, size)), points)
    return torch.from_numpy(camera.normalised_projection()).float()


class PartGenerator:
    """Image -> parts (module docstring).

    layout:     a LayoutGenerator (stage 1)
    slat_vae, part_dit: stage 2
    segmenter:  a Segmenter for the layout's parts, or None: geometric parts
    steps, guidance: of the stage-2 sampler (stage 1 keeps the layout generator's)
    max_parts:  the most parts the layout is cut into (the count is chosen automatically up to it)
    min_part_fraction: parts with a smaller share of the voxels join their nearest larger part
    segment_faces: the layout surface is decimated to at most this many faces before it is cut
    max_tokens: a layout with more voxels (stage-2 tokens) is refused (GenerationError) in seconds rather
                than sampled for many minutes
    max_group:  stage 2 attends within groups of at most this many voxels (split_large_parts)
    level:      the level set of the decoded blocks (voxel units)
    mesh_subdiv: mesh cells per voxel side, a divisor of the SLat VAE's s (None: s; s / 2 gives a
                mesh with about 4x fewer faces, from every other decoded corner)
    schedule:   override the PartDiT's attention schedule ("part", "global", ...), None: its own
    precision:  "fp32", or "bf16": stage-2 sampling under torch.autocast (its linear layers in bf16;
                attention accumulates in fp32). It pays off for wide models (GPU, or width >= 256 on
                AVX-512-BF16 CPUs); the bundled width-96 model samples the demo table in 12.0 s either way
    """

    def __init__(
        self,
        layout: LayoutGenerator,
        slat_vae: SLatVAE,
        part_dit: PartDiT,
        segmenter: Segmenter | None = None,
        steps: int = 25,
        guidance: float = 3.0,
        max_parts: int = 8,
        min_part_fraction: float = 0.02,
        segment_faces: int = 20000,
        max_tokens: int = 50000,
        max_group: int = 2048,
        level: float = 0.0,
        mesh_subdiv: int | None = None,
        schedule: str | None = None,
        precision: str = "fp32",
    ):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if part_dit.in_channels != slat_vae.latent_channels:
            raise ValueError(
                f"the PartDiT makes {part_dit.in_channels} channels, the SLat VAE reads {slat_vae.latent_channels}"
            )
        if part_dit.image_encoder is None:
            raise ValueError("the PartDiT has no image encoder: it cannot be conditioned on an image")
        self.layout, self.slat_vae, self.part_dit, self.segmenter = layout, slat_vae, part_dit, segmenter
        self.steps, self.guidance, self.max_parts = int(steps), float(guidance), int(max_parts)
        self.level, self.schedule, self.segment_faces = float(level), schedule, int(segment_faces)
        self.max_tokens, self.min_part_fraction = int(max_tokens), float(min_part_fraction)
        self.max_group, self.precision = int(max_group), precision
        sub = slat_vae.subdiv if mesh_subdiv is None else int(mesh_subdiv)
        if sub < 1 or slat_vae.subdiv % sub:
            raise ValueError(f"mesh_subdiv must divide the SLat VAE's subdiv {slat_vae.subdiv}, got {mesh_subdiv}")
        self.mesh_subdiv = sub

    @classmethod
    def from_folder(
        cls,
        folder: str | Path | None = None,
        parts: str = "learned",
        segmenter: str | Path | None = None,
        steps: int = 25,
        guidance: float = 3.0,
        layout_steps: int = 25,
        layout_guidance: float = 1.0,
        dilation: int = 0,
        coordinates: str = "auto",
        anchor_band: int = 2,
        device: str | torch.device | None = None,
        **options,
    ) -> PartGenerator:
        """Load a model set (None: the bundled one); parts "learned" (segmenter: a checkpoint, None the
        bundled segmenter) or "geometric"; steps (stage 2) and layout_steps (stage 1: its layouts
        need them, few steps give ragged ones) of the samplers; guidance and layout_guidance of
        stage 2 and stage 1 (the layout flow recipe is best unguided: 48 held-out icons, voxel
        recall 0.40 at 1.0, 0.36 at 1.5, 0.34 at 3 with 6 empty layouts); coordinates, anchor_band:
        where stage 2's voxels come from (LayoutGenerator: "auto" takes a band round the generated
        anchors when the VAE is anchored, else the decoded surface); dilation of the surface's
        voxels (0: the voxels the surface crosses, as stage 2 was trained on); device: where the
        models run (None: cuda when available, else cpu)."""
        folder = resolve_models(folder)
        if parts not in ("learned", "geometric"):
            raise ValueError(f"parts must be 'learned' or 'geometric', got {parts!r}")
        layout = LayoutGenerator.from_checkpoints(
            folder / "layout_vae",
            folder / "layout_flow",
            steps=layout_steps,
            guidance=layout_guidance,
            dilation=dilation,
            coordinates=coordinates,
            anchor_band=anchor_band,
        )
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        layout.vae.to(device), layout.flow.to(device)
        slat = load_trained(folder / "slat_vae", SLatVAE, TRAIN_HINT).to(device)
        dit = load_trained(folder / "part_dit", PartDiT, TRAIN_HINT).to(device)
        max_parts = int(options.get("max_parts", 8))
        seg = Segmenter.from_checkpoint(segmenter, device=device, max_parts=max_parts) if parts == "learned" else None
        return cls(layout, slat, dit, seg, steps=steps, guidance=guidance, **options)

    def settings(self) -> dict:
        """The sampling settings, as report.json records them."""
        return {
            "steps": self.steps,
            "layout_steps": self.layout.steps,
            "cfg": self.guidance,
            "layout_cfg": self.layout.guidance,
            "coordinates": self.layout.coordinates,
            "parts": "learned" if self.segmenter is not None else "geometric",
            "schedule": self.schedule or "model",
            "precision": self.precision,
        }

    def load_image(self, path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
        """The image at the sizes stage 1 and stage 2 read (ImageError names the file and the reason,
        check_foreground's among them)."""
        layout_image = load_image(path, self.layout.image_size)  # an unreadable file fails here first
        check_foreground(path)
        return layout_image, load_image(path, self.part_dit.image_encoder.image_size)

    def _parts(self, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, list[str]]:
        if self.segmenter is not None:
            seg = self.segmenter.label_mesh(vertices, faces)
            return seg.part, list(seg.names)
        from partgen.data_pipeline.geometric import GeometricConfig, segment_mesh

        face_part = segment_mesh(vertices, faces, None, GeometricConfig(max_parts=self.max_parts))
        return face_part, [f"part_{p}" for p in range(int(face_part.max()) + 1)]

    def _layout_from_mesh(self, layout) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, int]:
        """A coarse shape given as a mesh file or (vertices, faces) (normalised into the cube) -> its
        surface voxels and itself, seconds, and 0 layout latents."""
        from partgen.data_pipeline.mesh_io import load_mesh, normalise
        from partgen.data_pipeline.voxelize import voxelize_surface

        t0 = time.perf_counter()
        if isinstance(layout, tuple):
            vertices, faces = layout
        else:
            mesh = load_mesh(layout)
            vertices, faces = mesh.vertices, mesh.faces
        vertices = normalise(vertices).apply(vertices)
        coords = voxelize_surface(vertices, faces, self.layout.voxel_resolution).coords.astype(np.int64)
        return coords, vertices, faces, {"layout_from_mesh_s": time.perf_counter() - t0}, 0

    def _layout_from_image(self, image: torch.Tensor, seed: int, progress: bool):
        """Stage 1 -> surface voxels, the coarse surface, seconds per step and the latent count."""
        layout = self.layout(image, seed=seed, progress="stage 1: layout flow" if progress else None)
        vertices, faces = extract_mesh(layout.grid)
        coords = layout.voxels.cpu().numpy().astype(np.int64)
        times = {f"layout_{k}": v for k, v in layout.times.items()}
        return coords, vertices, faces, times, int(layout.latents.shape[0])

    @torch.no_grad()
    def __call__(
        self, image: str | Path, seed: int = 0, progress: bool = False, layout=None, on_stage=None
    ) -> Generation:
        """image -> Generation; layout: a mesh file or (vertices, faces) that stands in for stage 1 (its
        surface voxels and surface are used as the layout: stage 2 then details a coarse shape the user
        gives); on_stage: None, or a callable given "stage 1", "parts", "stage 2" and "decode" as each
        begins (partgen-app's progress bar; an exception it raises stops the generation there)."""
        stage = on_stage or (lambda name: None)
        device = next(self.part_dit.parameters()).device
        image_layout, image_dit = (im.to(device) for im in self.load_image(image))
        stage("stage 1")
        if layout is None:
            coords, vertices, faces, times, latents_count = self._layout_from_image(image_layout, seed, progress)
        else:
            coords, vertices, faces, times, latents_count = self._layout_from_mesh(layout)
        resolution = self.layout.voxel_resolution
        if len(coords) == 0 or len(faces) == 0:
            raise GenerationError(
                f"stage 1 made an empty layout for {image} (seed {seed}): no surface in the occupancy"
            )
        if len(coords) > self.max_tokens:
            raise GenerationError(
                f"the layout has {len(coords)} voxel tokens for {image} (seed {seed}), more than max_tokens="
                f"{self.max_tokens} (stage 2 would run for many minutes): try another seed, or raise max_tokens"
            )

        stage("parts")
        t0 = time.perf_counter()
        coarse = simplify(vertices, faces, self.segment_faces)
        face_part, names = self._parts(*coarse)
        part = voxel_parts(coords, resolution, *coarse, face_part)
        part, kept = merge_small_parts(coords, part, self.max_parts, self.min_part_fraction)
        names = unique_names([names[k] for k in kept])
        times["parts_s"] = time.perf_counter() - t0

        stage("stage 2")
        t0 = time.perf_counter()
        n = len(coords)
        group = split_large_parts(coords, part, self.max_group)
        voxels = (
            SparseVoxels(
                feats=torch.zeros(n, self.part_dit.in_channels),
                cu_seqlens=cu_seqlens_from_lengths([n]),
                coords=torch.from_numpy(np.concatenate([np.zeros((n, 1), np.int64), coords], 1).astype(np.int32)),
                resolution=resolution,
                part=torch.from_numpy(group),
            )
            .validate()
            .to(device)
        )
        camera = icon_projection(vertices, self.part_dit.image_encoder.image_size).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            latents = self.part_dit.generate(
                voxels,
                image_dit[None],
                camera[None],
                steps=self.steps,
                guidance=self.guidance,
                generator=torch.Generator().manual_seed(seed + 1),
                schedule=self.schedule,
                progress="stage 2: part DiT" if progress else None,
            ).float()
        voxels = voxels.replace(feats=latents, part=torch.from_numpy(part.astype(np.int64)).to(device))
        times["stage2_s"] = time.perf_counter() - t0

        stage("decode")
        t0 = time.perf_counter()
        s = self.slat_vae.subdiv
        blocks = self.slat_vae.decode(voxels).reshape(n, s + 1, s + 1, s + 1).cpu().numpy()
        step = s // self.mesh_subdiv
        blocks = blocks[:, ::step, ::step, ::step]  # every step-th corner: (mesh_subdiv + 1)^3 per voxel
        parts = []
        for p, name in enumerate(names):
            mask = part == p
            v, f = blocks_to_mesh(coords[mask], blocks[mask], resolution, self.level)
            if len(f):
                parts.append(GeneratedPart(name, v, f, int(mask.sum())))
        times["decode_s"] = time.perf_counter() - t0
        if not parts:
            raise GenerationError(f"stage 2 decoded no surface for {image} (seed {seed})")
        sizes = np.bincount(part, minlength=len(names))
        group_sizes = np.bincount(group).astype(np.int64)
        tokens = {
            "voxels": int(n),
            "resolution": int(resolution),
            "mesh_resolution": int(resolution * self.mesh_subdiv),
            "parts": {name: int(c) for name, c in zip(names, sizes, strict=True)},
            "attention_groups": len(group_sizes),
            "largest_group": int(group_sizes.max()),
            "part_attention_pairs": int((group_sizes**2).sum()),
            "global_attention_pairs": int(n) ** 2,
            "layout_latents": latents_count,
        }
        return Generation(parts, (vertices, faces), voxels.cpu(), times, tokens)


# --- outputs -----------------------------------------------------------------------------------------


def whole_mesh(parts: list[GeneratedPart]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All parts in one mesh: vertices, faces and (F,) the part index of each face."""
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    vertices = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets[:-1], strict=True)])
    face_part = np.concatenate([np.full(len(p.faces), i) for i, p in enumerate(parts)])
    return vertices, faces, face_part


def preview(image: Path, vertices: np.ndarray, faces: np.ndarray, face_part: np.ndarray, size: int = 256) -> np.ndarray:
    """(size, 4 size, 3) uint8: the input image, then three views of the mesh with parts coloured."""
    from PIL import Image

    from partgen.data_pipeline.render import orbit_cameras, render

    colours = _palette(int(face_part.max()) + 1)[:, :3]
    views = [
        render(vertices, faces, cam, face_colors=colours[face_part])["rgb"]
        for cam in orbit_cameras(3, radius=2.2, elevation_deg=25.0, size=size)
    ]
    with Image.open(image) as im:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
        rgb.thumbnail((size, size))
        square = Image.new("RGB", (size, size), (255, 255, 255))
        square.paste(rgb, ((size - rgb.width) // 2, (size - rgb.height) // 2))
    return np.concatenate([np.asarray(square)] + views, 1)


def write_outputs(folder: Path, image: Path, gen: Generation, report: dict) -> None:
    """parts.glb, mesh.obj, mesh.ply, layout.ply, preview.png and report.json into folder."""
    import trimesh
    from PIL import Image

    colours = _palette(len(gen.parts))
    scene = trimesh.Scene()
    for i, part in enumerate(gen.parts):
        piece = trimesh.Trimesh(part.vertices, part.faces, process=False)
        piece.visual.face_colors = colours[i]
        scene.add_geometry(piece, node_name=part.name, geom_name=part.name)
    (folder / "parts.glb").write_bytes(scene.export(file_type="glb"))
    vertices, faces, face_part = whole_mesh(gen.parts)
    mesh = trimesh.Trimesh(vertices, faces, face_colors=colours[face_part], process=False)
    (folder / "mesh.ply").write_bytes(mesh.export(file_type="ply"))
    (folder / "mesh.obj").write_text(trimesh.Trimesh(vertices, faces, process=False).export(file_type="obj"))
    layout = trimesh.Trimesh(*gen.layout_mesh, process=False)
    (folder / "layout.ply").write_bytes(layout.export(file_type="ply"))
    Image.fromarray(preview(image, vertices, faces, face_part)).save(folder / "preview.png")
    (folder / "report.json").write_text(json.dumps(report, indent=1))


def make_report(image: Path, gen: Generation, settings: dict, models: str, total_s: float) -> dict:
    return {
        "input": str(image),
        "settings": settings,
        "models": models,
        "times_s": {k: round(v, 3) for k, v in gen.times.items()} | {"total_s": round(total_s, 3)},
        "tokens": gen.tokens,
        "parts": [
            {"name": p.name, "voxels": p.voxels, "vertices": len(p.vertices), "faces": len(p.faces)} for p in gen.parts
        ],
        "versions": {
            "partgen": __import__("partgen").__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "files": ["parts.glb", "mesh.obj", "mesh.ply", "layout.ply", "preview.png", "report.json"],
    }


def part_settings(parts) -> tuple[str, str | None, int]:
    """The `parts` config group (conf/parts, shared with partgen-annotate) or a method name ->
    (method, segmenter checkpoint or None, max_parts). Generation cuts a layout: learned or geometric."""
    if isinstance(parts, str):
        parts = {"method": parts}
    method = str(parts.get("method", "learned"))
    if method not in ("learned", "geometric"):
        raise InputError(f"parts={method}: generation cuts its layout with parts=learned or parts=geometric")
    checkpoint = parts.get("checkpoint") if method == "learned" else None
    return method, checkpoint, int(parts.get("max_parts") or 8)


def compose_config(overrides: list[str] = ()):
    """conf/generate.yaml composed with Hydra overrides (e.g. ["steps=12"]), as partgen-generate
    reads it (image and output may stay unset for build_generator)."""
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return compose("generate", overrides=list(overrides))


def build_generator(cfg) -> PartGenerator:
    """The PartGenerator a partgen-generate config (conf/generate.yaml) describes."""
    steps = int(cfg.steps)
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    method, segmenter, max_parts = part_settings(cfg.get("parts", "learned"))
    return PartGenerator.from_folder(
        cfg.get("checkpoint"),
        parts=method,
        segmenter=segmenter,
        steps=steps,
        guidance=float(cfg.cfg),
        layout_steps=int(cfg.get("layout_steps", 25)),
        layout_guidance=float(cfg.get("layout_cfg", 1.0)),
        coordinates=str(cfg.get("coordinates", "auto")),
        anchor_band=int(cfg.get("anchor_band", 2)),
        max_parts=max_parts,
        max_group=int(cfg.get("max_group", 2048)),
        mesh_subdiv=cfg.get("mesh_subdiv"),
        device=cfg.get("device"),
        max_tokens=int(cfg.get("max_tokens", 50000)),
        schedule=cfg.get("schedule"),
        precision=str(cfg.get("precision", "fp32")),
    )


def main(cfg) -> int:
    """partgen-generate: cfg.image -> cfg.output (conf/generate.yaml); 0 on success, 1 on bad input.

    Errors print one line on stderr and leave nothing at cfg.output: everything is written into a
    temporary sibling folder that is renamed into place at the end.
    """
    try:
        image, output = Path(str(cfg.image)), Path(str(cfg.output))
        overwrite = bool(cfg.get("overwrite", False))
        check_output(output, overwrite)
        start = time.perf_counter()
        generator = build_generator(cfg)
        load_s = time.perf_counter() - start
        layout = cfg.get("layout")
        seed = int(cfg.seed)
        gen = generator(image, seed=seed, progress=bool(cfg.get("progress", True)), layout=layout)
        gen.times = {"load_models_s": load_s} | gen.times
        settings = {"seed": seed} | generator.settings()
        settings["layout"] = str(layout) if layout else "stage 1"
        report = make_report(
            image, gen, settings, str(resolve_models(cfg.get("checkpoint"))), time.perf_counter() - start
        )
        publish_outputs(output, overwrite, lambda folder: write_outputs(folder, image, gen, report))
    except (ImageError, InputError, MeshError, GenerationError, FileNotFoundError, ValueError, OSError) as err:
        print(f"{APP}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    names = ", ".join(f"{p.name} ({p.voxels} voxels)" for p in gen.parts)
    print(
        f"{APP}: {image.name} -> {len(gen.parts)} parts: {names}; {gen.tokens['voxels']} voxel tokens; "
        f"{report['times_s']['total_s']:.1f} s; wrote parts.glb, mesh.obj, mesh.ply, preview.png and report.json to {output}"
    )
    return 0


__all__ = [
    "GeneratedPart",
    "Generation",
    "GenerationError",
    "PartGenerator",
    "build_generator",
    "compose_config",
    "main",
    "resolve_models",
    "voxel_parts",
    "whole_mesh",
    "write_outputs",
]
