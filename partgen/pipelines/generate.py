"""Image -> mesh with named parts: partgen-generate (Ultra3D's two stages, with parts in between).

Legend: V active voxels at the stage-2 resolution R, P parts, C latent channels, s sub-cells per
voxel side.

    stage 1   LayoutGenerator: the layout flow samples VecSet latents for the image, the VecSet VAE
              decodes an occupancy grid, occupancy_to_voxels gives the V voxels (R = 64); with a
              reference bank the flow starts from a training shape (of the nearest icons, the one whose
              outline best fits the image's from some icon view) and carries its mesh,
              which fit_proportions then stretches to the image's silhouette (pipelines.proportions);
              given the object's dimensions (width, depth, height) the layout, whichever, takes
              their proportions instead (box_stretch); stage 2 takes the voxels the layout surface
              crosses and, within layout_band voxels of it, their neighbours (surface_band)
    parts     the coarse surface of the layout (marching cubes of the grid, decimated) is cut into
              parts by the learned segmenter (the bundled one by default; parts named by semantic
              class) or geometrically (parts="geometric"); each voxel takes the part of the nearest
              face; parts under min_part_fraction of the voxels, or beyond max_parts, join their
              nearest kept part; a mode filter smooths the voxels' parts and a part's stray pieces
              join the part they touch
    stage 2   PartDiT samples a C-channel latent per voxel with Part Attention (parts larger than
              max_group voxels are cut into compact slabs, the group sizes stage 2 was trained on),
              each group cross-attending to the image patches it projects onto under the typical
              icon camera framed to the layout (the view the Sweet Home 3D icons show)
    decode    the SLat VAE decodes each voxel's sub-grid signed distances; marching cubes over all
              the blocks gives one surface at R x s (64 x 4 = 256), cleaned and smoothed, whose faces
              take the part of the voxel they were cut in (mesh_parts)

With layout=MESH a coarse shape the user gives (any mesh file partgen reads) stands in for stage 1:
its surface voxels and surface are the layout, and stage 2 details it from the image. The outputs
stay in the normalised cube (longest side 1) whether or not dimensions were given.

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
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from partgen.diffusion.flow import sample_guided
from partgen.models.image_encoder import ImageError, load_image
from partgen.models.io import choose_device, load_trained
from partgen.models.part_dit import PartDiT, attention_groups, part_image_groups
from partgen.models.slat_vae import SLatVAE, blocks_to_mesh
from partgen.models.vecset_vae import extract_mesh
from partgen.pipelines.layout import Layout, LayoutGenerator, cube_surface_voxels
from partgen.pipelines.outputs import palette
from partgen.pipelines.proportions import box_stretch, check_dimensions, fit_proportions, image_mask
from partgen.pipelines.references import BANK_FILE, ReferenceBank
from partgen.pipelines.segment import Segmenter
from partgen.structures import SparseVoxels, cu_seqlens_from_lengths

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
    reference: str | None = None  # the training shape stage 1 started from (references), if any
    layout_scale: list[float] | None = None  # the x, y, z stretch of stage 1's layout (stretch_layout), if any
    part_count: int | None = None  # the part count stage 1 asked of the layout's parts (assign_parts), if any


MIN_IMAGE_SIDE = 16  # pixels
MIN_FOREGROUND = 0.01  # share of the image's pixels (the training libraries' icons: 3.2% and more)


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


def surface_band(
    coords: np.ndarray, vertices: np.ndarray, faces: np.ndarray, resolution: int, band: float
) -> np.ndarray:
    """The voxels (coords (V, 3)) a surface (vertices (n, 3) in the normalised cube, faces (m, 3))
    crosses, with their neighbours whose centres lie within `band` voxels of it -> (V', 3) int64,
    the crossed ones first. Distances to dense surface samples (4 per voxel side)."""
    import trimesh
    from scipy import ndimage
    from scipy.spatial import cKDTree

    if band <= 0 or len(coords) == 0:
        return coords
    grid = np.zeros((resolution,) * 3, bool)
    grid[tuple(np.asarray(coords, np.int64).T)] = True
    reach = 2 * int(math.ceil(band)) + 1
    new = np.argwhere(ndimage.binary_dilation(grid, np.ones((reach,) * 3, bool)) & ~grid)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    count = int(min(2_000_000, max(10_000, mesh.area * (4 * resolution) ** 2)))
    samples = trimesh.sample.sample_surface(mesh, count, seed=0)[0]
    dist, _ = cKDTree((samples + 0.5) * resolution).query(new + 0.5)
    return np.concatenate([coords, new[dist <= band]]).astype(np.int64)


def voxel_parts(
    coords: np.ndarray,
    resolution: int,
    vertices: np.ndarray,
    faces: np.ndarray,
    face_part: np.ndarray,
    samples_per_voxel: float = 8.0,
):
    """(V,) int64 part of each voxel: that of the surface nearest to the voxel centre, found among
    points spread over the faces by area (about samples_per_voxel per voxel, seeded:
    data_pipeline.samples.sample_surface) and the faces' centroids (so that no small face goes
    unseen). Not the nearest centroid alone: on a coarse mesh a big face's centroid can lie farther
    from its own surface than a small neighbour's does, and the flat tops of tables and cabinets came
    out with two labels interleaved."""
    from scipy.spatial import cKDTree

    from partgen.data_pipeline.samples import sample_surface

    samples = sample_surface(vertices, faces, face_part, int(samples_per_voxel * len(coords)))
    points = np.concatenate([vertices[faces].mean(1), samples.points])
    owner_part = np.concatenate([face_part, samples.part])
    centres = (coords.astype(np.float64) + 0.5) / resolution - 0.5
    _, nearest = cKDTree(points).query(centres, k=1)
    return owner_part[nearest]


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


def _pieces(coords: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, int]:
    """The connected pieces (26-neighbourhood) of the voxels coords[members] (coords (V, 3), offset to
    start at 0): each member's piece 1..n, and n."""
    from scipy import ndimage

    grid = np.zeros(coords.max(0) + 1, bool)
    grid[tuple(coords[members].T)] = True
    labels, count = ndimage.label(grid, structure=np.ones((3, 3, 3)))
    return labels[tuple(coords[members].T)], int(count)


def part_pieces(coords: np.ndarray, part: np.ndarray) -> list[int]:
    """The count of connected pieces (26-neighbourhood) of each part's voxels, parts in order 0..P-1
    of the (V,) labels (a part with no voxel: 0)."""
    coords = np.asarray(coords, np.int64)
    coords = coords - coords.min(0)
    return [_pieces(coords, np.nonzero(part == p)[0])[1] for p in range(int(part.max()) + 1 if len(part) else 0)]


def voxel_neighbours(coords: np.ndarray) -> np.ndarray:
    """(V, 26) int64: the index of each voxel's 26 neighbours among coords (V, 3), -1 where empty."""
    c = np.asarray(coords, np.int64)
    c = c - c.min(0) + 1  # a margin of one: every neighbour index is in the grid
    index = np.full(c.max(0) + 2, -1, np.int64)
    index[tuple(c.T)] = np.arange(len(c))
    offsets = np.array([o for o in np.ndindex(3, 3, 3) if o != (1, 1, 1)]) - 1
    return index[tuple((c[:, None, :] + offsets[None]).transpose(2, 0, 1))]


def smooth_part_labels(
    coords: np.ndarray, part: np.ndarray, passes: int = 2, neighbours: np.ndarray | None = None
) -> np.ndarray:
    """(V,) parts after `passes` of a mode filter: each voxel takes the part most common among itself
    and its 26 neighbours (its own part wins a tie). Where two authored parts lie on top of each
    other (a speaker's front panel on its box) the nearest surface alternates between them and their
    labels interleave in stripes one or two voxels wide; the filter gives each stripe the part round
    it. On the 48 val layouts the voxels whose neighbours mostly carry another part fall from 22% to
    6% on the speaker and the desk, and no part disappears. neighbours: voxel_neighbours(coords) when
    the caller has it."""
    part = np.asarray(part, np.int64).copy()
    if passes < 1 or len(part) < 2:
        return part
    neighbours = voxel_neighbours(coords) if neighbours is None else neighbours
    rows = np.repeat(np.arange(len(part)), neighbours.shape[1])
    present = neighbours.ravel() >= 0
    rows, cols = rows[present], neighbours.ravel()[present]
    for _ in range(passes):
        counts = np.zeros((len(part), int(part.max()) + 1))
        np.add.at(counts, (rows, part[cols]), 1.0)
        counts[np.arange(len(part)), part] += 1.5
        part = counts.argmax(1)
    return part


def absorb_stray_pieces(
    coords: np.ndarray, part: np.ndarray, max_pieces: int = 2, neighbours: np.ndarray | None = None
) -> np.ndarray:
    """(V,) parts in which no part has more than max_pieces connected pieces (26-neighbourhood) where
    that can be had: a part's pieces beyond its max_pieces largest join the part they touch most.
    The voxel labels of a carried reference leave slivers of one part on another's surface, and
    authored groups span several objects (a newspaper's pages). A piece touching no other part
    stays. Absorbing a piece never adds a piece to the part that takes it (they touch) and no part
    loses its largest pieces, so one pass settles it and the labels (and their names) stay.
    neighbours: voxel_neighbours(coords) when the caller has it."""
    coords = np.asarray(coords, np.int64)
    part = np.asarray(part, np.int64).copy()
    if max_pieces < 1 or not len(part):
        return part
    neighbours = voxel_neighbours(coords) if neighbours is None else neighbours
    c = coords - coords.min(0)
    for p in range(int(part.max()) + 1):
        members = np.nonzero(part == p)[0]
        piece, count = _pieces(c, members)
        if count <= max_pieces:
            continue
        for k in np.argsort(-np.bincount(piece)[1:], kind="stable")[max_pieces:] + 1:
            stray = members[piece == k]
            touching = neighbours[stray].ravel()
            touching = part[touching[touching >= 0]]
            touching = touching[touching != p]
            if len(touching):
                part[stray] = np.bincount(touching).argmax()
    return part


def simplify(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """The mesh with at most max_faces triangles (open3d's quadric decimation), or as it is."""
    if len(faces) <= max_faces:
        return vertices, faces
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(faces))
    mesh = mesh.simplify_quadric_decimation(int(max_faces)).remove_unreferenced_vertices()
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.triangles, np.int64)


def clean_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    min_component_faces: int = 50,
    smooth_iterations: int = 5,
    face_part: np.ndarray | None = None,
):
    """A decoded mesh cleaned as generators post-process theirs (cf. TRELLIS): connected pieces (faces
    joined by shared edges) of fewer than min_component_faces triangles dropped (the largest always
    kept: specks where a voxel's sampled latent put a sliver of surface), then Taubin smoothing (lambda
    0.5, mu -0.53, smooth_iterations passes; volume-preserving, unlike plain Laplacian) against the
    bumps each voxel's block leaves. On 7 held-out records decoded from noisy latents: normal
    consistency 0.835 raw, 0.891 cleaned (F@0.02 0.88 -> 0.95 with the specks gone, F@0.01 0.75 ->
    0.78). Vertices stay in the normalised cube; the kept faces keep their order. face_part: (F,) a
    label per face, returned for the kept faces as a third value."""
    import trimesh

    faces = np.asarray(faces, np.int64)
    keep = np.ones(len(faces), bool)
    if min_component_faces > 0 and len(faces):
        mesh = trimesh.Trimesh(vertices, faces, process=False)
        piece = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(faces))
        sizes = np.bincount(piece)
        keep = sizes[piece] >= min(min_component_faces, sizes.max())
    mesh = trimesh.Trimesh(vertices, faces[keep], process=False)
    mesh.remove_unreferenced_vertices()  # renumbers the vertices, keeps the faces' order
    if smooth_iterations > 0 and len(mesh.faces):
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=-0.53, iterations=smooth_iterations)
    out = np.clip(np.asarray(mesh.vertices, np.float64), -0.5, 0.5), np.asarray(mesh.faces, np.int64)
    return out if face_part is None else (*out, np.asarray(face_part)[keep])


def mesh_parts(
    coords: np.ndarray,
    blocks: np.ndarray,
    part: np.ndarray,
    names: list[str],
    resolution: int,
    level: float = 0.0,
    min_component_faces: int = 50,
    smooth_iterations: int = 5,
    island_share: float = 0.005,
) -> list[GeneratedPart]:
    """The parts' meshes from decoded blocks: marching cubes over all the blocks (coords (V, 3),
    blocks (V, s+1, s+1, s+1); slat_vae.blocks_to_mesh) makes one surface, on which corners shared
    across parts take one value, so parts meet without a crack; clean_mesh cleans and smooths it
    whole; each face goes to the part of the voxel it was cut in (part (V,) into the K names) -> the
    parts that kept a face. Meshing each part's blocks on its own, as before, left a crack along every
    part boundary and dropped as specks the small islands where one part's voxels lie on another's:
    holes in the surface. Those islands, kept as surface, then join the part round them
    (absorb_label_islands, islands under island_share of the faces; 0: off)."""
    v, f, owner = blocks_to_mesh(coords, blocks, resolution, level, face_blocks=True)
    if not len(f):
        return []
    v, f, face_part = clean_mesh(v, f, min_component_faces, smooth_iterations, np.asarray(part)[owner])
    face_part = absorb_label_islands(f, face_part, island_share)
    parts = []
    for p, name in enumerate(names):
        mine = face_part == p
        if mine.any():
            parts.append(GeneratedPart(name, *submesh(v, f[mine]), int((part == p).sum())))
    return parts


def absorb_label_islands(faces: np.ndarray, face_part: np.ndarray, max_share: float = 0.005) -> np.ndarray:
    """(F,) face parts in which each island of a part (its faces joined by shared edges) other than
    the part's largest, holding fewer than max_share of all F faces, takes the part it borders most:
    the specks of one colour on another part's surface where a reference's parts lie on one another.
    An island bordering no other part keeps its part. faces (F, 3); face_part (F,) int."""
    import trimesh
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    face_part = np.asarray(face_part, np.int64)
    n = len(faces)
    pairs = trimesh.graph.face_adjacency(np.asarray(faces, np.int64)) if n > 1 else np.zeros((0, 2), np.int64)
    if max_share <= 0 or not len(pairs):
        return face_part.copy()
    same = face_part[pairs[:, 0]] == face_part[pairs[:, 1]]
    link = coo_matrix((np.ones(int(same.sum())), (pairs[same, 0], pairs[same, 1])), shape=(n, n))
    count, island = connected_components(link, directed=False)
    sizes = np.bincount(island, minlength=count)
    island_part = np.zeros(count, np.int64)
    island_part[island] = face_part
    order = np.lexsort((-sizes, island_part))  # by part, largest island first
    largest = order[np.r_[True, island_part[order][1:] != island_part[order][:-1]]]
    small = sizes < max_share * n
    small[largest] = False
    a, b = pairs[~same].T  # edges between two parts, seen from both sides
    src, label = np.concatenate([island[a], island[b]]), np.concatenate([face_part[b], face_part[a]])
    seen = small[src]
    votes = coo_matrix((np.ones(int(seen.sum())), (src[seen], label[seen])), shape=(count, int(face_part.max()) + 1))
    votes = votes.toarray()
    moved = small & (votes.sum(1) > 0)
    out = face_part.copy()
    at = moved[island]
    out[at] = votes.argmax(1)[island[at]]
    return out


def submesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices the faces use and the faces renumbered onto them."""
    used, inverse = np.unique(faces, return_inverse=True)
    return vertices[used], inverse.reshape(faces.shape).astype(np.int64)


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


@torch.no_grad()
def sample_part_latents(
    dit: PartDiT,
    voxels: SparseVoxels,
    images: torch.Tensor,
    cameras: torch.Tensor | None = None,
    steps: int = 25,
    guidance: float = 3.0,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    progress: str | None = None,
    schedule: str | None = None,
    start: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Stage 2's sampling: latents (V, C) (un-standardised) of voxels (coords and part groups; feats
    are ignored) of B shapes for images (B, 3, S, S) and their cameras (B, 3, 4) (None: every part
    sees its whole image), by Euler sampling with classifier-free guidance (diffusion.flow.sample_guided,
    the PartDiT as the callable); schedule overrides the model's layer scopes. start (V, C)
    un-standardised latents and strength < 1: SDEdit from them (diffusion.flow.sample)."""
    context = dit.encode_images(images)
    groups = part_image_groups(
        voxels, voxels.part_groups(), context[1], cameras, dit.image_encoder.patch_grid, dit.footprint_dilation
    )
    noise = torch.randn(len(voxels), dit.in_channels, generator=generator).to(images.device)

    def velocity(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        return dit(voxels.replace(feats=x), t, context, groups, drop=drop, schedule=schedule)

    if start is not None:
        start = dit.standardise(start.to(noise))
    x = sample_guided(
        velocity,
        noise,
        voxels.batch_size,
        guidance,
        steps=steps,
        shift=shift,
        progress=progress,
        start=start,
        strength=strength,
    )
    return dit.unstandardise(x)


class PartGenerator:
    """Image -> parts (module docstring), in four stages: sample_layout (then stretch_layout), assign_parts,
    sample_latents, decode. partgen-generate builds it from conf/generate.yaml (`pipeline:`, through
    from_folder); the defaults here are that file's (tests/pipelines/test_generate.py checks it).

    layout:     a LayoutGenerator (stage 1)
    slat_vae, part_dit: stage 2
    segmenter:  a Segmenter for the layout's parts, or None: geometric parts
    steps, guidance: of the stage-2 sampler (stage 1 keeps the layout generator's)
    max_parts:  the most parts the layout is cut into (the count is chosen automatically up to it)
    min_part_fraction: parts with a smaller share of the voxels join their nearest larger part
    label_smoothing: passes of the mode filter over the voxels' parts (smooth_part_labels; 0: off)
    max_part_pieces: a part's connected pieces beyond its this-many largest join the part they touch
                most (absorb_stray_pieces; 0: off)
    segment_faces: the layout surface is decimated to at most this many faces before it is cut
    max_tokens: a layout with more voxels (stage-2 tokens) is refused (GenerationError) in seconds rather
                than sampled for many minutes
    max_group:  stage 2 attends within groups of at most this many voxels (partgen.models.part_dit.attention_groups)
    level:      the level set of the decoded blocks (voxel units)
    mesh_subdiv: mesh cells per voxel side, a divisor of the SLat VAE's s (None: s; s / 2 gives a
                mesh with about 4x fewer faces, from every other decoded corner)
    schedule:   override the PartDiT's attention schedule ("part", "global", ...), None: its own
    precision:  "fp32", or "bf16": stage-2 sampling under torch.autocast (its linear layers in bf16;
                attention accumulates in fp32). It pays off for wide models (GPU, or width >= 256 on
                AVX-512-BF16 CPUs); the bundled width-96 model samples the demo table in 12.0 s either way
    min_component_faces, smooth_iterations: the decoded surface's clean-up (clean_mesh; 0 turns either off)
    island_share: a part's surface islands (but its largest) under this share of the faces join the
                part they border most (absorb_label_islands; 0: off)
    detail_strength: where stage 2's sampling starts (SDEdit, as stage 1 could with reference_edit=sdedit): below 1
                the layout surface's signed distances at the voxels are encoded by the SLat VAE and
                the flow enters its path at t = detail_strength from them (ceil(steps x strength)
                steps); 1: from pure noise. From noise the CPU-trained PartDiT's latents decode to
                specks round the surface (normal consistency ~0.55 even on the true layout); from the
                layout the specks become the layout's surface, which stage 2 then details
    layout_shell: with detail_strength < 1, the layout surface's signed distances are taken as a shell
                at least 2 x this many voxels thick (partgen.data_pipeline.samples.block_sdf's sheet):
                a single-sided wall or pane has no inside, and its plain distances mesh to nothing;
                0: plain signed distances
    layout_band: stage 2's voxels are those the layout surface crosses and their neighbours whose
                centres lie within this many voxels of it (surface_band): the decoded surface wanders a
                little off the layout's and was cut open where it left the one-voxel shell (slits on
                flat sides: the example table's open edges 14,059 -> 1,582 at 1.0, at 1.9x its voxels).
                Dropped, with the plain shell kept, when the band would pass max_tokens; 0: off
    fit_proportions: stretch a layout carried from a reference shape along x, y and z to the image's
                silhouette from the icon camera (partgen.pipelines.proportions) before stage 2; a call
                given the object's dimensions stretches any layout to their proportions instead
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
        label_smoothing: int = 2,
        max_part_pieces: int = 2,
        segment_faces: int = 20000,
        max_tokens: int = 50000,
        max_group: int = 2048,
        level: float = 0.0,
        mesh_subdiv: int | None = None,
        schedule: str | None = None,
        precision: str = "fp32",
        min_component_faces: int = 50,
        smooth_iterations: int = 5,
        island_share: float = 0.005,
        detail_strength: float = 0.3,
        layout_shell: float = 0.3,
        layout_band: float = 1.0,
        fit_proportions: bool = True,
    ):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if int(steps) < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if not 0.0 < detail_strength <= 1.0:
            raise ValueError(f"detail_strength must be in (0, 1], got {detail_strength}")
        if not 0.0 <= layout_shell <= 1.0:
            raise ValueError(f"layout_shell must be in [0, 1] voxels, got {layout_shell}")
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
        self.label_smoothing, self.max_part_pieces = int(label_smoothing), int(max_part_pieces)
        self.max_group, self.precision = int(max_group), precision
        self.min_component_faces, self.smooth_iterations = int(min_component_faces), int(smooth_iterations)
        self.island_share = float(island_share)
        self.detail_strength, self.layout_shell = float(detail_strength), float(layout_shell)
        if layout_band < 0:
            raise ValueError(f"layout_band must be >= 0 voxels, got {layout_band}")
        self.layout_band = float(layout_band)
        self.fit_proportions = bool(fit_proportions)
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
        layout_steps: int = 25,
        layout_guidance: float = 1.0,
        coordinates: str = "auto",
        anchor_band: int = 2,
        dilation: int = 0,
        reference_strength: float = 0.7,
        reference_edit: str = "flowedit",
        reference_candidates: int = 8,
        silhouette_weight: float = 3.0,
        part_neighbours: int = 8,
        device: str | torch.device | None = None,
        **options,
    ) -> PartGenerator:
        """Load a model set (None: the bundled one); parts "learned" (segmenter: a checkpoint, None the
        bundled segmenter) or "geometric"; layout_steps, layout_guidance, coordinates, anchor_band,
        dilation: stage 1's (LayoutGenerator: its layouts need the steps, few give ragged ones; the
        layout flow recipe is best unguided: 48 held-out icons, voxel recall 0.40 at 1.0, 0.36 at 1.5,
        0.34 at 3 with 6 empty layouts; "auto" takes a band round the generated anchors when the VAE
        is anchored, else the decoded surface; dilation of the surface's voxels, 0: the voxels the
        surface crosses, as stage 2 was trained on); reference_strength: where stage 1's flow starts
        from the nearest reference shape's latents when the set has a reference bank
        (references.safetensors; 1: from pure noise) and reference_edit how it moves it (flowedit |
        sdedit: LayoutGenerator); reference_candidates, silhouette_weight: how that reference is
        chosen (the nearest icons, re-ranked by their shapes' outlines: LayoutGenerator.choose_reference);
        part_neighbours: from how many nearest icons the carried layout's part count is taken
        (ReferenceBank.part_count; 0: the reference's own parts); device: where the models run (models.io.
        choose_device); options: the other PartGenerator arguments (steps, guidance, max_parts, ...)."""
        folder = resolve_models(folder)
        if parts not in ("learned", "geometric"):
            raise ValueError(f"parts={parts}: generation cuts its layout with parts=learned or parts=geometric")
        layout = LayoutGenerator.from_checkpoints(
            folder / "layout_vae",
            folder / "layout_flow",
            steps=layout_steps,
            guidance=layout_guidance,
            dilation=dilation,
            coordinates=coordinates,
            anchor_band=anchor_band,
            references=ReferenceBank.load(folder / BANK_FILE) if (folder / BANK_FILE).is_file() else None,
            strength=reference_strength,
            reference_edit=reference_edit,
            candidates=reference_candidates,
            silhouette_weight=silhouette_weight,
            part_neighbours=part_neighbours,
        )
        device = choose_device(device)
        layout.vae.to(device), layout.flow.to(device)
        slat = load_trained(folder / "slat_vae", SLatVAE, TRAIN_HINT).to(device)
        dit = load_trained(folder / "part_dit", PartDiT, TRAIN_HINT).to(device)
        generator = cls(layout, slat, dit, None, **options)
        if parts == "learned":
            generator.segmenter = Segmenter.from_checkpoint(segmenter, device=device, max_parts=generator.max_parts)
        return generator

    def settings(self) -> dict:
        """The sampling settings a report records (partgen-generate's and partgen-app's)."""
        layout = self.layout
        return {
            "steps": self.steps,
            "layout_steps": layout.steps,
            "cfg": self.guidance,
            "layout_cfg": layout.guidance,
            "coordinates": layout.coordinates,
            "reference_strength": layout.strength if layout.uses_references else None,
            "reference_edit": layout.reference_edit if layout.uses_references else None,
            "reference_candidates": layout.candidates if layout.uses_references else None,
            "silhouette_weight": layout.silhouette_weight if layout.uses_references else None,
            "part_neighbours": layout.part_neighbours if layout.uses_references else None,
            "detail_strength": self.detail_strength,
            "layout_shell": self.layout_shell,
            "layout_band": self.layout_band,
            "fit_proportions": self.fit_proportions,
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

    @torch.no_grad()
    def __call__(
        self,
        image: str | Path,
        seed: int = 0,
        progress: bool = False,
        layout=None,
        on_stage=None,
        dimensions=None,
    ) -> Generation:
        """image -> Generation; layout: a mesh file or (vertices, faces) that stands in for stage 1 (its
        surface voxels and surface are used as the layout: stage 2 then details a coarse shape the
        user gives); dimensions: None, or the object's (width, depth, height) in any one unit, whose
        proportions the layout takes (stretch_layout); on_stage: None, or a callable given "stage 1",
        "parts", "stage 2" and "decode" as each begins (partgen-app's progress bar; an exception it
        raises stops the generation there)."""
        if dimensions is not None:
            dimensions = check_dimensions(dimensions)  # before any work
        stage = on_stage or (lambda name: None)
        device = next(self.part_dit.parameters()).device
        image_layout, image_dit = (im.to(device) for im in self.load_image(image))
        stage("stage 1")
        # the object's outline: it helps choose stage 1's reference, and the silhouette fit stretches it
        mask = image_mask(image) if layout is None and self.layout.uses_references else None
        coords, surface, times, latents_count, carried = self.sample_layout(image_layout, seed, progress, layout, mask)
        scale = None
        if dimensions is not None or (self.fit_proportions and carried):
            t0 = time.perf_counter()
            coords, surface, scale = self.stretch_layout(
                coords, surface, None if dimensions is not None else mask, dimensions
            )
            times["layout_proportions_s"] = time.perf_counter() - t0
        if self.layout_band > 0:  # the band only while it keeps the layout under the token cap
            banded = surface_band(coords, *surface, self.layout.voxel_resolution, self.layout_band)
            coords = banded if len(banded) <= self.max_tokens else coords
        where = f"{image} (seed {seed})"
        if len(coords) == 0 or len(surface[1]) == 0:
            raise GenerationError(f"stage 1 made an empty layout for {where}: no surface in the occupancy")
        if len(coords) > self.max_tokens:
            # a given layout's voxels are its surface's: another seed would not change them
            remedy = "raise max_tokens" if layout is not None else "try another seed, or raise max_tokens"
            raise GenerationError(
                f"the layout has {len(coords)} voxel tokens for {where}, more than max_tokens="
                f"{self.max_tokens} (stage 2 would run for many minutes): {remedy}"
            )
        stage("parts")
        t0 = time.perf_counter()
        given = (carried.mesh.face_part, carried.mesh.part_names) if carried else None
        reference, count = (carried.reference, carried.part_count) if carried else (None, None)
        part, names = self.assign_parts(coords, *surface, given=given, count=count)
        times["parts_s"] = time.perf_counter() - t0
        stage("stage 2")
        t0 = time.perf_counter()
        voxels, group = self.sample_latents(coords, part, image_dit, surface[0], seed, progress, surface[1])
        times["stage2_s"] = time.perf_counter() - t0
        stage("decode")
        t0 = time.perf_counter()
        parts = self.decode(voxels, part, names)
        times["decode_s"] = time.perf_counter() - t0
        if not parts:
            raise GenerationError(f"stage 2 decoded no surface for {where}")
        tokens = self._tokens(part, group, names, latents_count)
        return Generation(parts, surface, voxels.cpu(), times, tokens, reference, scale, count)

    # --- the stages ------------------------------------------------------------------------------

    def sample_layout(
        self, image: torch.Tensor, seed: int = 0, progress: bool = False, layout=None, mask=None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], dict[str, float], int, Layout | None]:
        """Stage 1: image (3, S1, S1) -> the V surface voxels (V, 3) int64 at the stage-2 resolution,
        the coarse surface (vertices (n, 3) float64 in the normalised cube, faces (m, 3) int64),
        seconds per step, the count of layout latents (L; 0 when `layout`, a mesh file or
        (vertices, faces), stands in for stage 1: its surface voxels and itself, normalised into the
        cube), and when stage 1 carried a reference shape (LayoutGenerator with references) its
        Layout (the carried mesh with its authored parts, the reference's key, the part count it
        asks), else None. mask: the image's
        framed object mask (image_mask), with which stage 1 chooses its reference, or None."""
        if layout is not None:
            from partgen.data_pipeline.mesh_io import load_mesh

            t0 = time.perf_counter()
            if isinstance(layout, tuple):
                vertices, faces = layout
            else:
                mesh = load_mesh(layout)
                vertices, faces = mesh.vertices, mesh.faces
            vertices, coords = cube_surface_voxels(vertices, faces, self.layout.voxel_resolution)
            return coords, (vertices, faces), {"layout_from_mesh_s": time.perf_counter() - t0}, 0, None
        generated = self.layout(image, seed=seed, progress="stage 1: layout flow" if progress else None, mask=mask)
        coords = generated.voxels.cpu().numpy().astype(np.int64)
        times = {f"layout_{k}": v for k, v in generated.times.items()}
        if generated.mesh is not None:
            m = generated.mesh
            return coords, (m.vertices, m.faces), times, int(generated.latents.shape[0]), generated
        vertices, faces = extract_mesh(generated.grid)
        return coords, (vertices, faces), times, int(generated.latents.shape[0]), None

    def stretch_layout(
        self, coords: np.ndarray, surface: tuple[np.ndarray, np.ndarray], mask: np.ndarray | None, dimensions=None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], list[float]]:
        """The layout (voxels (V, 3), surface (vertices, faces)) stretched along x, y, z: to the
        proportions of dimensions (width, depth, height; box_stretch) when given, else to the image's
        framed object mask (fit_proportions; image_mask) -> its voxels, its surface and the factors
        (all 1, and the layout unchanged, when the silhouette fit was dropped)."""
        vertices, faces = surface
        if dimensions is not None:
            factors = box_stretch(vertices, dimensions)
        else:
            factors = fit_proportions(vertices, faces, mask).scale
        if (factors != 1.0).any():
            vertices, coords = cube_surface_voxels(vertices * factors, faces, self.layout.voxel_resolution)
        return coords, (vertices, faces), [round(float(x), 4) for x in factors]

    def assign_parts(
        self,
        coords: np.ndarray,
        vertices: np.ndarray,
        faces: np.ndarray,
        given: tuple | None = None,
        count: int | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Parts: the coarse surface (vertices (n, 3), faces (m, 3)), decimated to segment_faces, is cut
        by the segmenter (or geometrically), unless `given` brings its parts ((m,) face parts, names:
        a reference's authored ones); each of the V voxels (coords (V, 3)) takes the part of the
        nearest face, small or surplus parts join their nearest kept one -> (V,) int64 parts 0..K-1
        (K <= max_parts) and their K unique names. count: the part count to reach instead (at most
        max_parts; Layout.part_count): the smallest parts join their nearest kept one, or, when there
        are too few, each part is cut where the segmenter (or the geometric cut) would cut the whole
        surface into `count` and the largest `count` pieces are kept, named after their part."""
        coarse = (vertices, faces) if given else simplify(vertices, faces, self.segment_faces)
        if given:
            face_part, names = given
        elif self.segmenter is not None:
            seg = self.segmenter.label_mesh(*coarse)
            face_part, names = seg.part, list(seg.names)
        else:
            face_part = self.cut_surface(*coarse, None)
            names = [f"part_{p}" for p in range(int(face_part.max()) + 1)]
        resolution = self.layout.voxel_resolution
        face_part = np.asarray(face_part, np.int64)
        voxel_part = voxel_parts(coords, resolution, *coarse, face_part)
        part, kept = merge_small_parts(coords, voxel_part, self.max_parts, self.min_part_fraction)
        count = min(int(count), self.max_parts) if count else len(kept)
        if count > len(kept):  # too few: the parts cut as the whole surface would be into `count`
            cut = self.cut_surface(*coarse, count)
            width = int(cut.max()) + 1
            voxel_part = voxel_parts(coords, resolution, *coarse, face_part * width + cut)
            part, kept = merge_small_parts(coords, voxel_part, count, 0.0)
            kept = [k // width for k in kept]
        elif count < len(kept):
            part, kept = merge_small_parts(coords, voxel_part, count, 0.0)
        neighbours = voxel_neighbours(coords)
        part = smooth_part_labels(coords, part, self.label_smoothing, neighbours)
        part = absorb_stray_pieces(coords, part, self.max_part_pieces, neighbours)
        present, part = np.unique(part, return_inverse=True)  # a part the filter swallowed whole
        return part, unique_names([names[kept[p]] for p in present])

    def cut_surface(self, vertices: np.ndarray, faces: np.ndarray, count: int | None) -> np.ndarray:
        """(m,) int64 parts of the surface (vertices (n, 3), faces (m, 3)): the segmenter's, or the
        geometric cut's without one, into `count` parts (None: a count each chooses, up to max_parts)."""
        if self.segmenter is not None:
            return np.asarray(self.segmenter.label_mesh(vertices, faces, num_parts=count).part, np.int64)
        from partgen.data_pipeline.geometric import GeometricConfig, segment_mesh

        return np.asarray(segment_mesh(vertices, faces, count, GeometricConfig(max_parts=self.max_parts)), np.int64)

    def sample_latents(
        self,
        coords: np.ndarray,
        part: np.ndarray,
        image: torch.Tensor,
        vertices: np.ndarray,
        seed: int = 0,
        progress: bool = False,
        faces: np.ndarray | None = None,
    ) -> tuple[SparseVoxels, np.ndarray]:
        """Stage 2: the V voxels (coords (V, 3), parts (V,)) -> SparseVoxels of one shape whose feats
        are the sampled latents (V, C) and whose part is `part`, and the (V,) attention groups the
        sampling used (partgen.models.part_dit.attention_groups). image (3, S2, S2) conditions it, seen
        through the typical icon camera framed to the layout surface's vertices (n, 3) (icon_projection).
        With detail_strength < 1 the sampling starts from the layout surface (vertices, faces (m, 3)),
        encoded at the voxels (layout_latents)."""
        device = image.device
        n = len(coords)
        group = attention_groups(coords, part, self.max_group)
        voxels = (
            SparseVoxels(
                feats=torch.zeros(n, self.part_dit.in_channels),
                cu_seqlens=cu_seqlens_from_lengths([n]),
                coords=torch.from_numpy(np.concatenate([np.zeros((n, 1), np.int64), coords], 1).astype(np.int32)),
                resolution=self.layout.voxel_resolution,
                part=torch.from_numpy(group),
            )
            .validate()
            .to(device)
        )
        camera = icon_projection(vertices, self.part_dit.image_encoder.image_size).to(device)
        start, steps = None, self.steps
        if self.detail_strength < 1.0:
            if faces is None:
                raise ValueError("detail_strength < 1 starts stage 2 from the layout surface: pass its faces")
            start = self.layout_latents(voxels, vertices, faces)
            steps = max(1, math.ceil(self.steps * self.detail_strength))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            latents = sample_part_latents(
                self.part_dit,
                voxels,
                image[None],
                camera[None],
                steps=steps,
                guidance=self.guidance,
                generator=torch.Generator().manual_seed(seed + 1),
                schedule=self.schedule,
                progress="stage 2: part DiT" if progress else None,
                start=start,
                strength=self.detail_strength,
            ).float()
        return voxels.replace(feats=latents, part=torch.from_numpy(part.astype(np.int64)).to(device)), group

    @torch.no_grad()
    def layout_latents(self, voxels: SparseVoxels, vertices: np.ndarray, faces: np.ndarray) -> torch.Tensor:
        """(V, C) SLat latents of the layout surface (vertices (n, 3) in the normalised cube, faces
        (m, 3)) at the voxels: its signed distances at each voxel's sub-cell corners (block_sdf, as
        the annotator computes stage 2's training targets, as a shell of layout_shell) through the
        SLat VAE's encoder (posterior mean)."""
        from partgen.data_pipeline.samples import block_sdf

        coords = voxels.coords[:, 1:].cpu().numpy().astype(np.int64)
        vae = self.slat_vae
        blocks = block_sdf(vertices, faces, coords, voxels.resolution, vae.subdiv, vae.truncation, self.layout_shell)
        feats = torch.from_numpy(blocks.reshape(len(coords), -1)).to(voxels.feats)
        return vae.encode(voxels.replace(feats=feats)).mean

    @torch.no_grad()
    def decode(self, voxels: SparseVoxels, part: np.ndarray, names: list[str]) -> list[GeneratedPart]:
        """The SLat VAE decodes each voxel's sub-grid signed distances from voxels.feats (V, C) (blocks
        (V, s+1, s+1, s+1), every (s / mesh_subdiv)-th corner kept) -> mesh_parts of them (part (V,)
        into the K names)."""
        coords = voxels.coords[:, 1:].cpu().numpy().astype(np.int64)
        s = self.slat_vae.subdiv
        blocks = self.slat_vae.decode(voxels).reshape(len(coords), s + 1, s + 1, s + 1).cpu().numpy()
        step = s // self.mesh_subdiv
        blocks = blocks[:, ::step, ::step, ::step]  # every step-th corner: (mesh_subdiv + 1)^3 per voxel
        resolution = self.layout.voxel_resolution
        clean = (self.min_component_faces, self.smooth_iterations, self.island_share)
        return mesh_parts(coords, blocks, part, names, resolution, self.level, *clean)

    def _tokens(self, part: np.ndarray, group: np.ndarray, names: list[str], latents_count: int) -> dict:
        """Token counts for the report: voxels, parts, attention groups and the pairs each attends."""
        n, resolution = len(part), self.layout.voxel_resolution
        sizes = np.bincount(part, minlength=len(names))
        group_sizes = np.bincount(group).astype(np.int64)
        return {
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

    colours = palette(int(face_part.max()) + 1)[:, :3]
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

    colours = palette(len(gen.parts))
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
        "layout_reference": gen.reference,
        "layout_scale": gen.layout_scale,
        "layout_part_count": gen.part_count,
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


__all__ = [
    "GeneratedPart",
    "Generation",
    "GenerationError",
    "PartGenerator",
    "absorb_label_islands",
    "absorb_stray_pieces",
    "check_foreground",
    "clean_mesh",
    "make_report",
    "mesh_parts",
    "part_pieces",
    "resolve_models",
    "sample_part_latents",
    "smooth_part_labels",
    "submesh",
    "voxel_parts",
    "whole_mesh",
    "write_outputs",
]
