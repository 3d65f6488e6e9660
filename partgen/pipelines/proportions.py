"""Stage 1's proportions fitted to the image's silhouette (analysis by synthesis).

A layout carried from a reference shape (partgen.pipelines.references) has the reference's
proportions: a tall speaker for a squat one, a square table for a long bench. The image says better:
its object's outline, seen from the Sweet Home 3D icon camera (TYPICAL_VIEW, the view the icons and
the PartDiT's icon attention assume). fit_proportions stretches the layout along x, y and z (one
factor each, from 0.8 to 1.25: MAX_STRETCH) so that its silhouette, rendered from that camera and framed as an
icon is (frame_to_points: the bounding box centred, its longer side a fixed share of the image),
overlaps the image's object mask (framed_mask: the same framing) the most, less `penalty` x the
summed |log factor| (a stretch must pay for itself), by a pattern search on the three log factors
with halving steps. A fit that gains less than `min_gain` IoU is dropped (the factors stay 1).

The stretch is bounded because the camera is a guess: many icons were drawn from another angle than
the typical one (the true mesh's silhouette from TYPICAL_VIEW overlaps its own icon by 0.69 on
average over the 48 val icons), and a free fit then explains the angle by proportions (up to 2x:
a book twice as thick, a lying man twice as tall, on val). On leave-one-out over the training icons
(scripts/tune_proportions.py) the ranges from 0.8-1.25 to 0.5-2 tie, so the narrowest is kept.
Figures: partgen/assets/generator/README.md.

box_stretch is the same stretch from what a user may know instead: the object's dimensions (width,
depth, height, as a furniture catalogue lists them; Sweet Home 3D's axes: width along x, height
along y, depth along z). The layout's bounding box then takes those proportions. On the 48 val
icons, the references stretched to their true box score F@0.02 0.387 and view IoU 0.615 against
0.295 and 0.570 for the silhouette fit (runs recorded in the generator README).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from partgen.data_pipeline.sh3d_icons import (
    ICON_EXTENT,
    TYPICAL_VIEW,
    IconView,
    frame_to_points,
    preview_camera,
    render_silhouette,
    silhouette_iou,
)

MASK_SIZE = 128  # pixels a side of the framed masks compared (the icons' size)
MAX_STRETCH = float(np.log(1.25))  # the largest |log factor| a fit may use (module docstring)
# box_stretch's largest |log factor| from the middle one (4x: beyond that, it is another object)
MAX_BOX_STRETCH = float(np.log(4.0))
# the views best_view_iou tries: yaw -60..90 and pitch -40..-4 degrees, about the spread of the icons' own
# views (fitted to the true meshes of the val icons: yaw 10/50/90th percentiles -40 / 30 / 49, pitch
# -35 / -22 / -11; generator README, sixth session)
VIEW_GRID = tuple(
    IconView(math.radians(yaw), math.radians(pitch), TYPICAL_VIEW.scale)
    for pitch in (-40, -28, -16, -4)
    for yaw in range(-60, 91, 15)
)


@dataclasses.dataclass(frozen=True)
class ProportionFit:
    """scale (3,): the factors along x, y, z (all 1 when the fit was dropped); before, after: the
    silhouette IoU of the layout with the image's mask unstretched and stretched."""

    scale: np.ndarray
    before: float
    after: float

    @property
    def applied(self) -> bool:
        return bool((self.scale != 1.0).any())


def framed_mask(mask: np.ndarray, size: int = MASK_SIZE, extent: float = ICON_EXTENT) -> np.ndarray:
    """(size, size) bool: the mask's object cropped to its bounding box, scaled so its longer side
    spans extent x size and centred (frame_to_points's framing of a render). ValueError when empty."""
    from PIL import Image

    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError(
            f"framed_mask needs a 2-D mask with some object pixels, got {mask.shape}, {int(mask.sum())} set"
        )
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    s = extent * size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    resized = np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize((nw, nh), Image.BILINEAR)) >= 128
    out = np.zeros((size, size), bool)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def image_mask(path, size: int = MASK_SIZE) -> np.ndarray:
    """framed_mask of an image file's object (partgen.eval.retrieval.ink_mask: its alpha where it has
    one, else what is not white)."""
    from partgen.eval.retrieval import ink_mask, read_icon

    return framed_mask(ink_mask(read_icon(path)), size)


def layout_silhouette(
    vertices: np.ndarray, faces: np.ndarray, size: int = MASK_SIZE, view: IconView = TYPICAL_VIEW
) -> np.ndarray:
    """(size, size) bool: the mesh from the icon camera at `view` (the typical one), framed to its vertices."""
    camera = frame_to_points(preview_camera(view, (size, size)), vertices)
    return render_silhouette(vertices, faces, camera)


def best_view_iou(vertices: np.ndarray, faces: np.ndarray, mask: np.ndarray, views=VIEW_GRID) -> float:
    """The largest silhouette IoU of the mesh (vertices (V, 3), faces (F, 3)), framed as an icon is from
    each of the views (IconView), with the framed object mask (framed_mask's output): how well the
    shape's outline can explain the image's from some view (the view itself is not trusted)."""
    vertices = np.asarray(vertices, np.float64)
    return max(silhouette_iou(layout_silhouette(vertices, faces, mask.shape[0], view), mask) for view in views)


def fit_proportions(
    vertices: np.ndarray,
    faces: np.ndarray,
    mask: np.ndarray,
    bound: float = MAX_STRETCH,
    penalty: float = 0.02,
    min_gain: float = 0.02,
) -> ProportionFit:
    """The x, y, z stretch of the mesh (vertices (V, 3), faces (F, 3)) whose silhouette best fits the
    framed object mask (framed_mask's output; module docstring). bound: the largest |log factor|."""
    vertices = np.asarray(vertices, np.float64)
    size = mask.shape[0]

    def iou(log_scale: np.ndarray) -> float:
        return silhouette_iou(layout_silhouette(vertices * np.exp(log_scale), faces, size), mask)

    best = np.zeros(3)
    before = best_iou = best_score = iou(best)
    step = 0.25
    while step > 0.02:
        improved = False
        for axis in range(3):
            for sign in (1.0, -1.0):
                trial = best.copy()
                trial[axis] = np.clip(trial[axis] + sign * step, -bound, bound)
                if np.array_equal(trial, best):
                    continue
                value = iou(trial)
                score = value - penalty * np.abs(trial).sum()
                if score > best_score + 1e-9:
                    best, best_iou, best_score, improved = trial, value, score, True
        if not improved:
            step /= 2
    if best_iou - before < min_gain:
        return ProportionFit(np.ones(3), before, before)
    return ProportionFit(np.exp(best), before, best_iou)


def check_dimensions(dimensions) -> np.ndarray:
    """(3,) float64 (width, depth, height) from any sequence of three finite positive numbers (one unit
    for all three); ValueError naming what was given otherwise."""
    try:
        dims = np.asarray(list(dimensions), np.float64)
    except (TypeError, ValueError):
        dims = np.zeros(0)
    if dims.shape != (3,) or not np.isfinite(dims).all() or (dims <= 0).any():
        raise ValueError(
            f"dimensions must be three positive numbers (width, depth, height, in one unit), got {dimensions!r}"
        )
    return dims


def box_stretch(vertices: np.ndarray, dimensions) -> np.ndarray:
    """(3,) the x, y, z factors that give the mesh's bounding box (vertices (V, 3)) the proportions of
    dimensions = (width, depth, height) (check_dimensions; x = width, y = height, z = depth), the
    middle factor 1 and the others within 4x of it (MAX_BOX_STRETCH: a sheet is not made a box)."""
    width, depth, height = check_dimensions(dimensions)
    vertices = np.asarray(vertices, np.float64)
    extent = np.ptp(vertices, 0)
    extent = np.maximum(extent, 1e-3 * extent.max())
    log = np.log(np.array([width, height, depth])) - np.log(extent)
    return np.exp(np.clip(log - np.median(log), -MAX_BOX_STRETCH, MAX_BOX_STRETCH))


__all__ = [
    "MASK_SIZE",
    "MAX_BOX_STRETCH",
    "MAX_STRETCH",
    "VIEW_GRID",
    "ProportionFit",
    "best_view_iou",
    "box_stretch",
    "check_dimensions",
    "fit_proportions",
    "framed_mask",
    "image_mask",
    "layout_silhouette",
]
