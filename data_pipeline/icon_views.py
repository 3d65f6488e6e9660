"""More pictures of a record than its one catalogue icon: the mesh, coloured from the icon, from other views.

Legend: V vertices, F triangles, H x W image size (the icons': 128 x 128).

Stage 1 learns image -> shape from the training libraries' icons, one per shape (469 pairs): its
image pathway fits those icons and reads a new icon worse than none (generator README, seventh
session). Each icon comes with its camera (icon/camera.json, sh3d_icons), so the icon can be painted
back onto the mesh and the mesh shown from other views in the icon's own colours:

  - icon_face_colours: the mesh rendered from the icon camera gives each pixel's triangle; a
    triangle seen takes the mean icon colour of its pixels (shading baked in, as the icon has it),
    one unseen the colour of the nearest seen triangle of its authored part (of any part when its
    part shows nowhere), grey when the icon shows none;
  - render_icon_views: `count` views at seeded yaw and pitch in the icons' range (the preview's
    camera, sh3d_icons.preview_camera, about the icon views' spread: fitted yaw 10/50/90th
    percentiles -28/30/45 degrees, pitch -31/-20/-7), Lambert-shaded at ambient 0.6 (the colours
    carry the icon's own shading), framed as the icons are (frame_to_points: the projected box
    centred, its longer side ICON_EXTENT of the image), RGBA on a clean alpha like the icons.

scripts/render_icon_views.py writes them under each record's icon/views/ (render.save_views:
NNN.png and cameras.json, every write atomic); partgen.train.tasks.layout.LayoutFlowTask(views=n)
trains on them beside the icons.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np

from partgen.data_pipeline.render import Camera, render
from partgen.data_pipeline.sh3d_icons import (
    ICON_EXTENT,
    IconView,
    frame_to_points,
    preview_camera,
    record_icon_camera,
)

YAW_RANGE = (-45.0, 75.0)  # degrees: the views drawn (module docstring)
PITCH_RANGE = (-38.0, -5.0)
VIEW_SCALE = 1.3  # the camera distance factor (perspective only: the framing sets the size)
AMBIENT = 0.6


def read_record_mesh(record: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A record's mesh.npz: vertices (V, 3) float64 with its faces' box centred and longest side 1
    (record_icon_camera's frame, as partgen.eval.geometry.normalise_box frames shapes), faces (F, 3)
    int64, face_part (F,) int64."""
    from partgen.data_pipeline.mesh_io import normalise

    path = Path(record) / "mesh.npz"
    with np.load(path) as z:
        vertices, faces = z["vertices"].astype(np.float64), z["faces"].astype(np.int64)
        face_part = z["face_part"].astype(np.int64) if "face_part" in z else np.zeros(len(faces), np.int64)
    if not len(faces):
        raise ValueError(f"{path}: the mesh has no faces")
    return normalise(vertices, faces).apply(vertices), faces, face_part


def icon_face_colours(
    icon: np.ndarray, camera: Camera, vertices: np.ndarray, faces: np.ndarray, face_part: np.ndarray
) -> tuple[np.ndarray, float]:
    """(F, 3) float64 colours in [0, 1] from the icon (H, W, 4) uint8 RGBA seen through camera, and
    the share of triangles the icon shows (module docstring)."""
    from scipy.spatial import cKDTree

    icon = np.asarray(icon)
    if icon.ndim != 3 or icon.shape[2] != 4 or icon.shape[:2] != (camera.height, camera.width):
        raise ValueError(f"the icon must be ({camera.height}, {camera.width}, 4) RGBA, got {icon.shape}")
    face = render(vertices, faces, camera, supersample=1)["face"]
    hit = (face >= 0) & (icon[..., 3] >= 128)
    count = np.bincount(face[hit], minlength=len(faces)).astype(np.float64)
    sums = np.stack([np.bincount(face[hit], icon[..., c][hit], minlength=len(faces)) for c in range(3)], 1)
    seen = count > 0
    colours = np.full((len(faces), 3), 0.7)
    colours[seen] = sums[seen] / count[seen, None] / 255.0
    if seen.any() and not seen.all():
        centres = vertices[faces].mean(1)
        for part in np.unique(face_part[~seen]):
            missing = (face_part == part) & ~seen
            source = (face_part == part) & seen
            source = source if source.any() else seen
            _, nearest = cKDTree(centres[source]).query(centres[missing])
            colours[missing] = colours[source][nearest]
    return colours, float(seen.mean())


def view_angles(key: str, count: int) -> list[IconView]:
    """`count` views, seeded by the record's key (the same views on every run)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    yaw, pitch = rng.uniform(*YAW_RANGE, count), rng.uniform(*PITCH_RANGE, count)
    return [IconView(math.radians(y), math.radians(p), VIEW_SCALE) for y, p in zip(yaw, pitch, strict=True)]


def render_icon_views(record: str | Path, count: int = 8, size: int = 128) -> tuple[list[dict], list[Camera], float]:
    """The record's mesh in its icon's colours from `count` views (module docstring) -> the images
    (render's dicts: rgb, alpha), their cameras, and the share of triangles the icon shows."""
    from PIL import Image

    record = Path(record)
    icon_path = record / "icon" / "icon.png"
    if not icon_path.is_file():
        raise FileNotFoundError(f"{icon_path}: no icon (annotate with icon_camera=typical)")
    vertices, faces, face_part = read_record_mesh(record)
    icon = np.asarray(Image.open(icon_path).convert("RGBA"))
    colours, shown = icon_face_colours(icon, record_icon_camera(record, vertices, faces), vertices, faces, face_part)
    images, cameras = [], []
    for view in view_angles(record.name, count):
        camera = frame_to_points(preview_camera(view, (size, size)), vertices, ICON_EXTENT)
        out = render(vertices, faces, camera, face_colors=colours, ambient=AMBIENT)
        images.append({"rgb": out["rgb"], "alpha": out["alpha"]})
        cameras.append(camera)
    return images, cameras, shown


__all__ = ["icon_face_colours", "read_record_mesh", "render_icon_views", "view_angles"]
