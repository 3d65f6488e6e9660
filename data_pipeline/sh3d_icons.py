"""The camera of the Sweet Home 3D catalogue icons, in a record's normalised object space.

Legend: V vertices, F triangles, N points, H x W icon size (128 x 128 in the catalogues).

How Sweet Home 3D makes an icon (SweetHome3D/SweetHome3D, src/com/eteks/sweethome3d/swing/
ModelPreviewComponent.java; the Furniture Library Editor's FurniturePanel.IconPreviewComponent and
ImportFurnitureTaskPanel, and the import wizard's IconPreviewComponent, all subclass it):
  - model: OBJ coordinates (Y up, front towards +Z) rotated by the catalogue's modelRotation (a
    row-major 3x3, p' = M p), its rotated bounding box centred on the origin and stretched to
    width x height x depth (x, y, z), then scaled uniformly so the largest side is 1.8 units
    (setModelRotationAndSize / ModelManager.getNormalizedTransform);
  - view: yaw about +Y then pitch about +X, viewYaw = pi/8 and viewPitch = -pi/16 by default;
    the camera sits at distance 1.4 / tan(pi/8) (~3.38, "to view a 2 unit wide scene") times
    viewScale (1 by default) at (sin(yaw) cos(pitch), -sin(pitch), cos(yaw) cos(pitch)) and
    looks at the origin (updateViewPlatformTransform); perspective projection (Java 3D's default
    View: horizontal field of view pi/4);
  - the icon tools let the author drag the view: yaw freely, pitch in [-pi/4, 0] and viewScale in
    [0.5, 1.3] (addMouseListeners), so each icon has its own view.
What the catalogue icons show (training libraries only; scripts/verify_sh3d_icons.py, 100 assets):
  - RGBA with an anti-aliased alpha; the silhouette is centred and its bounding box's longer side
    spans ICON_EXTENT of the icon (about 120.5 of 128 pixels) whatever the model: the icons were
    cropped to the model and rescaled, which the preview's own framing does not do (silhouette
    IoU 0.40 mean with it, 0.67 once re-framed to the model's projected bounding box: framing
    "icon" below);
  - the views differ per icon (fitted yaw 10/50/90th percentiles -28/30/45 degrees, pitch -31/-20/-7,
    viewScale 0.75/1.05/1.3; only 7% within 5 degrees of the default view), so fit_icon_view finds
    each icon's own view by matching silhouettes (IoU 0.87 mean, 0.91 median; 0.86 before mesh_io
    ear-clipped concave OBJ polygons). The misses are thin wires drawn thicker in the icons
    (spoons, railings, fences) and a few icons that no view of this camera reproduces.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal

import numpy as np

from partgen.data_pipeline.render import Camera, rasterize

DEFAULT_YAW = math.pi / 8  # ModelPreviewComponent.viewYaw
DEFAULT_PITCH = -math.pi / 16  # ModelPreviewComponent.viewPitch
PREVIEW_FOV_X = math.pi / 4  # Java 3D View.fieldOfView default (horizontal)
PREVIEW_BOX = 1.8  # the model's largest side in preview units
NOMINAL_DISTANCE = 1.4 / math.tan(math.pi / 8)  # camera to origin at viewScale 1
PITCH_RANGE = (-math.pi / 4, 0.0)  # what the preview's mouse drag allows
SCALE_RANGE = (0.5, 1.3)
ICON_EXTENT = 120.5 / 128  # median bounding-box side of the training-library icons (verify_sh3d_icons.py)
ICON_SIZE = (128, 128)  # (width, height)
EVAL_LIBRARIES = ("Scopia",)  # held out: their icons get TYPICAL_VIEW, never a view fitted to the icon


@dataclasses.dataclass(frozen=True)
class IconView:
    """The preview's view controls: yaw and pitch (radians), viewScale (camera distance factor)."""

    yaw: float = DEFAULT_YAW
    pitch: float = DEFAULT_PITCH
    scale: float = 1.0

    def to_dict(self) -> dict:
        return {"yaw": self.yaw, "pitch": self.pitch, "scale": self.scale}


# one view for every icon, fitted on half of 100 training-library icons (verify_sh3d_icons.py):
# silhouette IoU 0.79 median on the other half, against 0.71 for the source's default view
TYPICAL_VIEW = IconView(math.radians(30.0), math.radians(-22.5), 1.3)


def model_rotation(row: Mapping) -> np.ndarray:
    """(3, 3) the catalogue's modelRotation (row-major, p' = M p), identity when absent."""
    rot = row.get("model_rotation")
    if not rot:
        return np.eye(3)
    m = np.asarray(rot, np.float64).reshape(3, 3)
    if np.linalg.det(m) <= 0:
        raise ValueError(f"modelRotation {rot} is not a rotation (det {np.linalg.det(m):.3g})")
    return m


def preview_transform(row: Mapping, raw_vertices: np.ndarray, faces: np.ndarray | None = None):
    """(A (3, 3), b (3,)): raw OBJ coordinates -> Sweet Home 3D preview space, p_preview = A p + b.

    row: catalogue fields width, depth, height (cm; x = width, y = height, z = depth) and
    model_rotation. The bounding box is that of the vertices the faces use (Java 3D bounds hold
    only drawn geometry). A side of zero extent keeps the scale of the others.
    """
    v = np.asarray(raw_vertices, np.float64)
    if faces is not None and len(faces):
        v = v[np.unique(np.asarray(faces, np.int64))]
    rot = model_rotation(row)
    q = v @ rot.T
    lo, hi = q.min(0), q.max(0)
    extent = hi - lo
    size = np.array([row["width"], row["height"], row["depth"]], np.float64)
    if not (size > 0).all():
        size = np.where(size > 0, size, extent)  # a catalogue side of 0: keep the model's own
    stretch = np.where(extent > 0, size / np.where(extent > 0, extent, 1), np.nan)
    stretch = np.where(np.isnan(stretch), np.nanmean(stretch) if np.isfinite(stretch).any() else 1.0, stretch)
    scale = stretch * PREVIEW_BOX / size.max()
    a = scale[:, None] * rot
    b = -scale * (lo + hi) / 2
    return a, b


def preview_camera(view: IconView = IconView(), size: tuple[int, int] = ICON_SIZE) -> Camera:
    """The preview's camera in preview space, framed as the preview component shows it."""
    width, height = size
    yaw, pitch = view.yaw, view.pitch
    dist = NOMINAL_DISTANCE * view.scale
    eye = dist * np.array([math.sin(yaw) * math.cos(pitch), -math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    cy_, sy_, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    rot_y = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]])
    rot_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    c2w_gl = np.eye(4)  # Java 3D view platform: camera-to-world, OpenGL axes (looks along -z)
    c2w_gl[:3, :3] = rot_y @ rot_x
    c2w_gl[:3, 3] = eye
    c2w_cv = c2w_gl @ np.diag([1.0, -1.0, -1.0, 1.0])
    w2c = np.eye(4)
    w2c[:3, :3] = c2w_cv[:3, :3].T
    w2c[:3, 3] = -c2w_cv[:3, :3].T @ eye
    f = 0.5 * width / math.tan(PREVIEW_FOV_X / 2)
    return Camera(width, height, f, f, width / 2, height / 2, w2c)


def frame_to_points(camera: Camera, points: np.ndarray, extent: float = ICON_EXTENT) -> Camera:
    """Zoom and shift the image so the points' projected bounding box is centred and its longer side
    spans `extent` of the image's longer side (the icons' crop-and-rescale); extrinsics unchanged."""
    u, v, z = camera.project(points)
    if not (z > 0).all():
        raise ValueError("frame_to_points: points behind the camera")
    u0, u1, v0, v1 = u.min(), u.max(), v.min(), v.max()
    span = max(u1 - u0, v1 - v0)
    if span <= 0:
        raise ValueError("frame_to_points: the points project to a single pixel")
    s = extent * max(camera.width, camera.height) / span
    return Camera(
        camera.width,
        camera.height,
        camera.fx * s,
        camera.fy * s,
        s * (camera.cx - (u0 + u1) / 2) + camera.width / 2,
        s * (camera.cy - (v0 + v1) / 2) + camera.height / 2,
        camera.world_to_camera,
        camera.skew * s,
    )


def _fold_affine(camera: Camera, a: np.ndarray, b: np.ndarray) -> Camera:
    """The camera seeing points p as `camera` sees A p + b (A with det > 0), as a pinhole camera.

    P = K [R | t] [A b; 0 1] = [K R A | K (R b + t)]; RQ-decompose K R A = K' R' (K' upper
    triangular, positive diagonal, R' a rotation), t' = K'^-1 K (R b + t), then K' /= K'[2, 2].
    A similarity A gives K' = K (skew 0); an anisotropic A gives a small skew and fx != fy.
    """
    import scipy.linalg  # imported where used (STYLE habit 7)

    m = camera.K @ camera.R @ a
    k, r = scipy.linalg.rq(m)
    signs = np.sign(np.diag(k))
    k, r = k * signs, signs[:, None] * r  # K D, D R with D = D^-1: positive focal lengths
    if np.linalg.det(r) < 0:
        raise ValueError("the object transform mirrors space: no rigid camera sees it")
    t = np.linalg.solve(k, camera.K @ (camera.R @ b + camera.t))
    k = k / k[2, 2]
    if abs(k[0, 1]) <= 1e-12 * k[0, 0]:  # rounding of an exact similarity
        k[0, 1] = 0.0
    w2c = np.eye(4)
    w2c[:3, :3] = r
    w2c[:3, 3] = t
    return Camera(camera.width, camera.height, k[0, 0], k[1, 1], k[0, 2], k[1, 2], w2c, k[0, 1])


def icon_camera(
    row: Mapping,
    normalisation,
    vertices: np.ndarray,
    faces: np.ndarray | None = None,
    view: IconView = IconView(),
    size: tuple[int, int] = ICON_SIZE,
    framing: Literal["icon", "preview"] = "icon",
    extent: float = ICON_EXTENT,
) -> Camera:
    """The camera of a catalogue icon in the record's normalised object space.

    row:           catalogue fields width, depth, height, model_rotation (load_catalog() rows)
    normalisation: mesh_io.Normalisation of the record (normalised = (raw - center) * scale)
    vertices:      (V, 3) normalised vertices (the record's mesh); faces (F, 3) to bound only
                   drawn vertices
    view:          yaw/pitch/viewScale (the source's defaults, or fit_icon_view's result)
    framing:       "icon" re-frames to the model's projected bounding box as the catalogue icons
                   are; "preview" keeps the preview component's own framing
    Points p in normalised space project with camera.project(p) onto the icon's pixels.
    """
    raw = normalisation.invert(np.asarray(vertices, np.float64))
    a, b = preview_transform(row, raw, faces)
    camera = preview_camera(view, size)
    if framing == "icon":
        used = raw if faces is None or not len(faces) else raw[np.unique(np.asarray(faces, np.int64))]
        camera = frame_to_points(camera, used @ a.T + b, extent)
    elif framing != "preview":
        raise ValueError(f"framing must be 'icon' or 'preview', got {framing!r}")
    # normalised -> raw -> preview: p_preview = A (p / s + c) + b
    s, c = float(normalisation.scale), np.asarray(normalisation.center, np.float64)
    return _fold_affine(camera, a / s, a @ c + b)


def icon_silhouette(icon: np.ndarray, threshold: int = 128) -> np.ndarray:
    """(H, W) bool: the icon's alpha >= threshold (the catalogue icons are RGBA with a clean alpha)."""
    icon = np.asarray(icon)
    if icon.ndim != 3 or icon.shape[2] != 4:
        raise ValueError(f"expected an RGBA icon (H, W, 4), got {icon.shape}")
    return icon[..., 3] >= threshold


def record_icon_camera(record, vertices: np.ndarray, faces: np.ndarray) -> Camera:
    """A record's icon camera (icon/camera.json) framed to its true mesh (vertices, faces) moved to
    its faces' bounding-box centre and scaled to longest side 1, as partgen.eval.geometry's
    normalise_box(vertices, faces) puts it for view IoU. That is camera.json's own framing for all
    but the 9 Sweet Home 3D records whose mesh.npz has vertices no face uses: theirs was framed to
    those too."""
    import json
    from pathlib import Path

    from partgen.data_pipeline.mesh_io import normalise

    camera = Camera.from_dict(json.loads((Path(record) / "icon" / "camera.json").read_text()))
    used = np.asarray(vertices, np.float64)[np.unique(np.asarray(faces))]
    return frame_to_points(camera, normalise(used).apply(used))  # the box, and so the frame, of the faces


def silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def render_silhouette(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """(H, W) bool: pixel centres the mesh covers."""
    return rasterize(vertices, faces, camera, threads=1)[1] >= 0


def fit_icon_view(
    row: Mapping,
    normalisation,
    vertices: np.ndarray,
    faces: np.ndarray,
    icon_mask: np.ndarray,
    extent: float = ICON_EXTENT,
    start: IconView | None = None,
    front_tolerance: float = 0.02,
) -> tuple[IconView, float]:
    """The view (yaw, pitch in PITCH_RANGE, viewScale in SCALE_RANGE) whose silhouette best matches the icon.

    A coarse grid (yaw every 15 degrees, pitch every 7.5, viewScale 1), then a pattern search on
    all three with halving steps, from the best grid view and from the best front view (|yaw| <=
    90 degrees, the model's +z side, as icons show furniture). Silhouettes cannot tell a view from
    the one turned 180 degrees about the vertical for objects with that symmetry (most boxes), so
    the front view is kept unless the other beats it by more than front_tolerance IoU.
    Returns (view with yaw in [-pi, pi), silhouette IoU). Deterministic. Use it on training
    assets; the Scopia library is for evaluation only.
    """
    height, width = icon_mask.shape
    vertices = np.asarray(vertices, np.float64)

    def score(view: IconView) -> float:
        cam = icon_camera(row, normalisation, vertices, faces, view, (width, height), "icon", extent)
        return silhouette_iou(render_silhouette(vertices, faces, cam), icon_mask)

    def refine(best: IconView, best_iou: float) -> tuple[IconView, float]:
        steps = [math.radians(7.5), math.radians(3.75), 0.2]  # yaw, pitch, viewScale
        while steps[0] > math.radians(0.2):
            improved = False
            for axis, step in enumerate(steps):
                for sign in (1, -1):
                    yaw, pitch, scale = best.yaw, best.pitch, best.scale
                    if axis == 0:
                        yaw += sign * step
                    elif axis == 1:
                        pitch = min(max(pitch + sign * step, PITCH_RANGE[0]), PITCH_RANGE[1])
                    else:
                        scale = min(max(scale + sign * step, SCALE_RANGE[0]), SCALE_RANGE[1])
                    trial = IconView(yaw, pitch, scale)
                    if trial == best:
                        continue
                    s = score(trial)
                    if s > best_iou:
                        best, best_iou, improved = trial, s, True
            if not improved:
                steps = [x / 2 for x in steps]
        return IconView((best.yaw + math.pi) % (2 * math.pi) - math.pi, best.pitch, best.scale), best_iou

    candidates = [IconView()] if start is None else [start, IconView()]
    for yaw_deg in range(-180, 180, 15):
        for pitch_deg in np.arange(0.0, -45.1, -7.5):
            candidates.append(IconView(math.radians(yaw_deg), math.radians(pitch_deg), 1.0))
    scored = [(score(v), -i, v) for i, v in enumerate(candidates)]
    overall = max(scored, key=lambda t: t[:2])
    front = max((t for t in scored if _is_front(t[2].yaw)), key=lambda t: t[:2])
    best_front = refine(front[2], front[0])
    if overall is front:
        return best_front
    best_any = refine(overall[2], overall[0])
    if _is_front(best_any[0].yaw) and best_any[1] >= best_front[1]:
        return best_any
    return best_any if best_any[1] > best_front[1] + front_tolerance else best_front


def _is_front(yaw: float) -> bool:
    return abs((yaw + math.pi) % (2 * math.pi) - math.pi) <= math.pi / 2 + 1e-9
