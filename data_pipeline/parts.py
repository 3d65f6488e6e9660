"""Part labels: authored parts of a mesh, and the voxel-level clean-up every method shares.

Legend: F faces, N voxels, P parts.

authored_face_parts: OBJ groups / GLB nodes, else materials, else connected components.
clean_parts (shared by authored, geometric and learned):
  1. split every part into its 26-connected components in voxel space (parts are connected);
  2. merge components and parts below min_fraction of the voxels into the neighbour they touch
     most (isolated specks: into the nearest part);
  3. merge the smallest part into its most-touching neighbour until at most max_parts remain
     (Ultra3D trains with 8); duplicated shells fall out of this, since they touch everywhere;
  4. flag what Ultra3D filters: one part only, a part dominating the shape, or far more raw
     parts than kept (unstructured assets).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from partgen.data_pipeline.mesh_io import Mesh

# the 13 "forward" offsets of the 26-neighbourhood (each undirected neighbour pair once)
_OFFSETS = np.array(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1) if (dx, dy, dz) > (0, 0, 0)]
)


def authored_face_parts(mesh: Mesh) -> tuple[np.ndarray, list[str], str]:
    """(F,) part label per face, part names, and which structure was used."""
    for labels, names, source in (
        (mesh.face_group, mesh.group_names, "groups"),
        (mesh.face_material, mesh.material_names, "materials"),
    ):
        used = np.unique(labels)
        if len(used) > 1:
            remap = np.full(len(names), -1)
            remap[used] = np.arange(len(used))
            return remap[labels], [names[i] or f"unnamed_{i}" for i in used], source
    _, weld = np.unique(np.round(mesh.vertices, 9), axis=0, return_inverse=True)
    f = weld.reshape(-1)[mesh.faces]
    n = int(f.max()) + 1
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, vertex_label = connected_components(graph, directed=False)
    labels = vertex_label[f[:, 0]]
    return labels, [f"component_{i}" for i in range(count)], "components"


# The learned segmenter is a plain function named "module:function" by parts.segmenter
# (conf/parts/learned.yaml; default DEFAULT_LEARNED, the Point Transformer pipeline's segment_faces):
# learned_segmenter imports it on first use, so the data pipeline never imports the models itself,
# and keeps it here. register_learned_segmenter puts a function under a name by hand (tests do).
# fn(vertices, faces, num_parts, checkpoint, **options) -> ((F,) labels, names)
_LEARNED: dict[str, Callable] = {}
DEFAULT_LEARNED = "partgen.pipelines.segment:segment_faces"


def register_learned_segmenter(name: str, fn: Callable) -> None:
    """Make `name` (a parts.segmenter value) call fn, without importing anything."""
    _LEARNED[name] = fn


def learned_segmenter(segmenter: str = DEFAULT_LEARNED) -> Callable:
    """The learned segmenter parts.segmenter names ("module:function"), imported on first use;
    ValueError naming it when it cannot be imported."""
    if segmenter not in _LEARNED:
        module, _, attr = segmenter.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(f"parts.segmenter={segmenter}: cannot import it ({err})") from None
        register_learned_segmenter(segmenter, fn)
    return _LEARNED[segmenter]


def learned_face_parts(vertices, faces, num_parts=None, checkpoint=None, segmenter: str = DEFAULT_LEARNED, **options):
    """(F,) labels and part names from the learned segmenter; options go to it as they are."""
    return learned_segmenter(segmenter)(vertices, faces, num_parts, checkpoint, **options)


def face_parts(
    mesh: Mesh, vertices: np.ndarray, method: str, num_parts: int | None = None, **learned
) -> tuple[np.ndarray, list[str], str]:
    """(F,) part per face, part names and where they came from, for parts.method = method.

    vertices: the mesh's vertices after normalisation (geometric and learned work in that space).
    """
    if method == "authored":
        return authored_face_parts(mesh)
    if method == "geometric":
        from partgen.data_pipeline.geometric import segment_mesh

        labels = segment_mesh(vertices, mesh.faces, num_parts)
        return labels, [f"part_{i}" for i in range(int(labels.max()) + 1)], "geometric"
    if method == "learned":
        labels, names = learned_face_parts(vertices, mesh.faces, num_parts, **learned)
        return np.asarray(labels, np.int64), list(names), "learned"
    raise ValueError(f"unknown parts.method {method!r} (authored, geometric or learned)")


def neighbour_pairs(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E,) index pairs of 26-adjacent voxels among (N, 3) integer coords."""
    c = coords.astype(np.int64) + 1  # room for -1 offsets
    side = int(c.max()) + 2 if len(c) else 1
    key = (c[:, 0] * side + c[:, 1]) * side + c[:, 2]
    order = np.argsort(key)
    sorted_key = key[order]
    src, dst = [], []
    for off in _OFFSETS:
        nk = ((c[:, 0] + off[0]) * side + c[:, 1] + off[1]) * side + c[:, 2] + off[2]
        pos = np.clip(np.searchsorted(sorted_key, nk), 0, len(key) - 1)
        found = sorted_key[pos] == nk
        src.append(np.nonzero(found)[0])
        dst.append(order[pos[found]])
    return np.concatenate(src), np.concatenate(dst)


@dataclasses.dataclass
class CleanParts:
    """part (N,) int64 in 0..P-1, names (P,), raw_parts (how many came in), flags (what looks off)."""

    part: np.ndarray
    names: list[str]
    raw_parts: int
    flags: list[str]


def clean_parts(
    coords: np.ndarray,
    part: np.ndarray,
    names: list[str],
    min_fraction: float = 0.01,
    max_parts: int = 8,
    dominant_fraction: float = 0.9,
    unstructured_factor: int = 8,
) -> CleanParts:
    n = len(coords)
    raw_parts = len(np.unique(part)) if n else 0
    if n == 0:
        return CleanParts(part.astype(np.int64), [], 0, ["empty"])
    a, b = neighbour_pairs(coords)
    # 1. connected components of each part
    same = part[a] == part[b]
    graph = coo_matrix((np.ones(int(same.sum())), (a[same], b[same])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    comp_part = np.zeros(comp.max() + 1, dtype=np.int64)
    comp_part[comp] = part
    label_names = []
    seen: dict[int, int] = {}
    for p in comp_part:
        k = seen.get(int(p), 0)
        seen[int(p)] = k + 1
        base = names[p] if p < len(names) else f"part_{p}"
        label_names.append(base if k == 0 else f"{base}#{k}")
    label = comp.astype(np.int64)

    # 2. small components and parts: each round merges every small label into the neighbour it
    # touches most among bigger labels (isolated specks: into the nearest bigger label)
    lab = label
    for _ in range(64):
        sizes = np.bincount(lab)
        small = np.nonzero((sizes > 0) & (sizes < min_fraction * n))[0]
        if not len(small) or (sizes > 0).sum() == 1:
            break
        target = _merge_targets(lab, a, b, coords, sizes, small)
        if not (target >= 0).any():
            break
        remap = np.arange(len(sizes))
        remap[small[target >= 0]] = target[target >= 0]
        lab = remap[lab]
    # 3. at most max_parts: the smallest part joins the neighbour it touches most
    while True:
        sizes = np.bincount(lab)
        alive = np.nonzero(sizes)[0]
        if len(alive) <= max_parts:
            break
        victim = alive[np.argmin(sizes[alive])]
        target = _merge_targets(lab, a, b, coords, sizes, np.array([victim]), bigger_only=False)[0]
        lab = np.where(lab == victim, target, lab)
    kept, final = np.unique(lab, return_inverse=True)
    sizes = np.bincount(final)
    flags = []
    if len(kept) == 1:
        flags.append("single_part")
    if len(kept) > 1 and sizes.max() > dominant_fraction * n:
        flags.append("dominant_part")
    if raw_parts > unstructured_factor * max_parts:
        flags.append("unstructured")
    return CleanParts(final.astype(np.int64), [label_names[k] for k in kept], raw_parts, flags)


def _merge_targets(lab, a, b, coords, sizes, small, bigger_only=True) -> np.ndarray:
    """For each label in small: the label it touches most (among bigger ones when bigger_only:
    size, then label id, breaks ties so no two labels merge into each other), else the nearest
    bigger label by centroid for a label touching nothing; -1 when there is none."""
    rank = sizes * (len(sizes) + 1) + np.arange(len(sizes))  # total order: size, then id
    la, lb = lab[a], lab[b]
    diff = la != lb
    src = np.concatenate([la[diff], lb[diff]])
    dst = np.concatenate([lb[diff], la[diff]])
    is_small = np.zeros(len(sizes), bool)
    is_small[small] = True
    keep = is_small[src] & ((rank[dst] > rank[src]) if bigger_only else True)
    src, dst = src[keep], dst[keep]
    target = np.full(len(small), -1, dtype=np.int64)
    if len(src):
        pair, count = np.unique(src * len(sizes) + dst, return_counts=True)
        order = np.lexsort((-count, pair // len(sizes)))  # per source, most contacts first
        pair = pair[order]
        first = np.ones(len(pair), bool)
        first[1:] = pair[1:] // len(sizes) != pair[:-1] // len(sizes)
        best = dict(zip((pair[first] // len(sizes)).tolist(), (pair[first] % len(sizes)).tolist(), strict=True))
        target = np.array([best.get(int(s), -1) for s in small], dtype=np.int64)
    touching_any = np.zeros(len(sizes), bool)
    touching_any[la[diff]] = True
    touching_any[lb[diff]] = True
    lonely = [i for i, s in enumerate(small) if target[i] < 0 and not touching_any[s]]
    if lonely:
        sums = np.zeros((len(sizes), 3))
        np.add.at(sums, lab, coords.astype(np.float64))
        cent = sums / np.maximum(sizes, 1)[:, None]
        for i in lonely:
            s = small[i]
            ok = (sizes > 0) & (rank > rank[s]) if bigger_only else (sizes > 0) & (np.arange(len(sizes)) != s)
            if ok.any():
                cand = np.nonzero(ok)[0]
                target[i] = cand[np.argmin(np.linalg.norm(cent[cand] - cent[s], axis=1))]
    return target
