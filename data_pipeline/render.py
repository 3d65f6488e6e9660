"""Offscreen CPU renders of a triangle mesh with their cameras saved: RGB, alpha, depth, part ids, normals.

Legend: V vertices, F triangles, N points or views, H x W image, k supersampling factor.

Camera convention (OpenCV, as COLMAP and most multi-view code): camera space has x right, y down,
z forward (into the scene); `world_to_camera` is the 4x4 [R | t] with p_cam = R p_world + t. Image
coordinates are continuous pixels: pixel (row r, column c) is the square [c, c+1) x [r, r+1) and
is sampled at its centre (c + 0.5, r + 0.5); a camera-space point projects to
u = (fx x + skew y) / z + cx, v = fy y / z + cy, so cx = W / 2 puts the optical axis at the image
centre (as instant-ngp/nerfstudio's cx; OpenCV's integer-centred principal point is cx - 0.5).
`to_dict()` also writes the NeRF/TRELLIS/Blender form: `transform_matrix` = camera-to-world with
OpenGL axes (x right, y up, z backward) and `camera_angle_x` = horizontal field of view (radians).

Rasterisation is csrc/raster.cpp (C++17 + OpenMP through ctypes; no GPU, no display, no EGL):
perspective z-buffer with a top-left fill rule, near-plane clipping and perspective-correct depth.
Depth, triangle and part images are sampled once at pixel centres (exact, no filtering); RGB and
alpha are rendered at k x k samples per pixel and box-filtered (anti-aliased edges).
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from partgen.native import load_library

# 20 distinguishable colours (Tableau 20 order: strong tones first), cycled for part ids
PART_PALETTE = np.array(
    [
        [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
        [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
        [174, 199, 232], [255, 187, 120], [152, 223, 138], [255, 152, 150], [197, 176, 213],
        [196, 156, 148], [247, 182, 210], [199, 199, 199], [219, 219, 141], [158, 218, 229],
    ],
    dtype=np.uint8,
)  # fmt: skip
DEFAULT_COLOR = (180, 180, 180)
# direction towards the light in camera space: from the upper left, in front of the object
DEFAULT_LIGHT = (-0.4, -0.6, -1.0)


def look_at(eye: Sequence[float], target: Sequence[float] = (0, 0, 0), up: Sequence[float] = (0, 1, 0)) -> np.ndarray:
    """(4, 4) world-to-camera (OpenCV axes) of a camera at `eye` looking at `target`, `up` pointing up on screen."""
    eye, target, up = (np.asarray(x, np.float64) for x in (eye, target, up))
    forward = target - eye
    norm = np.linalg.norm(forward)
    if norm == 0:
        raise ValueError("look_at: eye and target coincide")
    forward /= norm
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9 * max(np.linalg.norm(up), 1e-300):  # looking along up: any screen roll will do
        other = np.eye(3)[np.argmin(np.abs(forward))]
        right = np.cross(forward, other)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    w2c = np.eye(4)
    w2c[:3, :3] = np.stack([right, down, forward])
    w2c[:3, 3] = -w2c[:3, :3] @ eye
    return w2c


# OpenCV camera axes (x right, y down, z forward) <-> OpenGL/Blender camera axes (x right, y up, z back)
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclasses.dataclass
class Camera:
    """A pinhole camera: intrinsics in pixels, extrinsics world-to-camera (OpenCV axes; see the module doc).

    width, height:   image size in pixels
    fx, fy, cx, cy:  focal lengths and principal point in pixels (pixel centres at +0.5)
    world_to_camera: (4, 4) float64, [R | t] with R a rotation (det +1)
    skew:            K[0, 1], 0 for every physical camera; non-zero only where an anisotropic
                     object scale was folded into the camera (e.g. sh3d_icons.icon_camera)
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray
    skew: float = 0.0

    def __post_init__(self):
        self.world_to_camera = np.asarray(self.world_to_camera, dtype=np.float64).reshape(4, 4)
        self.width, self.height = int(self.width), int(self.height)
        self.fx, self.fy, self.cx, self.cy, self.skew = (
            float(x) for x in (self.fx, self.fy, self.cx, self.cy, self.skew)
        )

    @classmethod
    def from_fov(cls, fov_y_deg: float, width: int, height: int, world_to_camera: np.ndarray) -> Camera:
        """Square pixels, principal point at the image centre, vertical field of view in degrees."""
        fy = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
        return cls(width, height, fy, fy, width / 2, height / 2, world_to_camera)

    def validate(self) -> Camera:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"Camera: image size {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0) or not np.isfinite([self.cx, self.cy, self.skew]).all():
            raise ValueError(f"Camera: bad intrinsics fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        w2c = self.world_to_camera
        if not np.isfinite(w2c).all() or not np.allclose(w2c[3], [0, 0, 0, 1]):
            raise ValueError("Camera: world_to_camera must be a finite rigid 4x4 with last row [0 0 0 1]")
        if not np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-6) or np.linalg.det(self.R) < 0:
            raise ValueError("Camera: world_to_camera rotation is not a proper rotation")
        return self

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsic matrix (pixel centres at +0.5)."""
        return np.array([[self.fx, self.skew, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    @property
    def R(self) -> np.ndarray:
        return self.world_to_camera[:3, :3]

    @property
    def t(self) -> np.ndarray:
        return self.world_to_camera[:3, 3]

    @property
    def center(self) -> np.ndarray:
        """(3,) camera position in world space."""
        return -self.R.T @ self.t

    @property
    def camera_to_world(self) -> np.ndarray:
        """(4, 4) inverse of world_to_camera (OpenCV axes)."""
        c2w = np.eye(4)
        c2w[:3, :3] = self.R.T
        c2w[:3, 3] = self.center
        return c2w

    @property
    def transform_matrix(self) -> np.ndarray:
        """(4, 4) camera-to-world with OpenGL camera axes (x right, y up, z back): NeRF/TRELLIS/Blender."""
        return self.camera_to_world @ _CV_TO_GL

    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians (NeRF's camera_angle_x); exact when cx = W / 2."""
        return 2 * math.atan(0.5 * self.width / self.fx)

    @property
    def fov_y(self) -> float:
        return 2 * math.atan(0.5 * self.height / self.fy)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera-space points."""
        return np.asarray(points, np.float64) @ self.R.T + self.t

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3) world points -> u (N,), v (N,) continuous pixel coordinates, depth (N,) camera z.

        The point falls in pixel (row floor(v), column floor(u)); points behind the camera
        (depth <= 0) get meaningless u, v: mask them with depth > 0.
        """
        p = self.to_camera(points)
        with np.errstate(divide="ignore", invalid="ignore"):
            x, y = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
        return self.fx * x + self.skew * y + self.cx, self.fy * y + self.cy, p[:, 2]

    def normalised_projection(self) -> np.ndarray:
        """(3, 4) float64 P = diag(1/W, 1/H, 1) K [R | t]: world points (homogeneous) to (u/W, v/H) in
        [0, 1] x [0, 1] after division by the third row (the depth); what part_image_groups reads."""
        return np.diag([1.0 / self.width, 1.0 / self.height, 1.0]) @ self.K @ self.world_to_camera[:3]

    def scaled(self, k: float) -> Camera:
        """The same camera with k times the pixels per side (exact: pixel edges sit on integers)."""
        return Camera(
            round(self.width * k),
            round(self.height * k),
            self.fx * k,
            self.fy * k,
            self.cx * k,
            self.cy * k,
            self.world_to_camera,
            self.skew * k,
        )

    def to_dict(self) -> dict:
        """JSON-serialisable: our fields, the NeRF/TRELLIS form and the instant-ngp/nerfstudio names."""
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "skew": self.skew,
            "world_to_camera": self.world_to_camera.tolist(),
            "transform_matrix": self.transform_matrix.tolist(),
            "camera_angle_x": self.fov_x,
            "camera_angle_y": self.fov_y,
            "fl_x": self.fx,
            "fl_y": self.fy,
            "w": self.width,
            "h": self.height,
            "convention": "world_to_camera: OpenCV axes (x right, y down, z forward); transform_matrix: "
            "camera-to-world, OpenGL axes (x right, y up, z back); pixel centres at +0.5",
        }

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        """Inverse of to_dict; also reads NeRF-style dicts (transform_matrix + camera_angle_x + w/h)."""
        width = int(d.get("width", d.get("w", 0)))
        height = int(d.get("height", d.get("h", 0)))
        if not width or not height:
            raise ValueError("camera dict has no image size (width/height or w/h)")
        if "world_to_camera" in d:
            w2c = np.asarray(d["world_to_camera"], np.float64)
        else:
            w2c = np.linalg.inv(np.asarray(d["transform_matrix"], np.float64) @ _CV_TO_GL)
        fx = d.get("fx", d.get("fl_x"))
        if fx is None:
            fx = 0.5 * width / math.tan(0.5 * float(d["camera_angle_x"]))
        fy = d.get("fy", d.get("fl_y"))
        if fy is None:
            fy = 0.5 * height / math.tan(0.5 * float(d["camera_angle_y"])) if "camera_angle_y" in d else fx
        return cls(
            width,
            height,
            float(fx),
            float(fy),
            float(d.get("cx", width / 2)),
            float(d.get("cy", height / 2)),
            w2c,
            float(d.get("skew", 0.0)),
        )


def orbit_cameras(
    n: int,
    radius: float = 2.0,
    elevation_deg: float = 20.0,
    fov_deg: float = 40.0,
    size: int | tuple[int, int] = 512,
    seed: int | None = None,
    up: str = "y",
) -> list[Camera]:
    """n cameras looking at the origin from distance `radius` (objects normalised into [-0.5, 0.5]^3).

    seed None: yaws evenly spaced from 0 (yaw 0 looks from +z when up="y", from -y when up="z"),
    all at `elevation_deg`. seed given: directions uniform on the sphere (elevation ignored).
    fov_deg is the vertical field of view; size is W = H or (W, H). The object's bounding sphere
    (radius sqrt(3)/2) fits the view when radius >= sqrt(3)/2 / sin(fov/2) (2.53 at 40 degrees;
    TRELLIS's radius 2 / fov 40 frames the cube, not its sphere).
    """
    if up not in ("y", "z"):
        raise ValueError(f"up must be 'y' or 'z', got {up!r}")
    width, height = (size, size) if isinstance(size, int) else size
    if seed is None:
        yaw = 2 * np.pi * np.arange(n) / max(n, 1)
        el = np.full(n, math.radians(elevation_deg))
        horiz, vert = np.cos(el), np.sin(el)
        if up == "y":
            dirs = np.stack([horiz * np.sin(yaw), vert, horiz * np.cos(yaw)], 1)
        else:
            dirs = np.stack([horiz * np.sin(yaw), -horiz * np.cos(yaw), vert], 1)
    else:
        dirs = np.random.default_rng(seed).normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    up_vec = (0, 1, 0) if up == "y" else (0, 0, 1)
    return [Camera.from_fov(fov_deg, width, height, look_at(radius * d, (0, 0, 0), up_vec)) for d in dirs]


def _native_library():
    lib, why_not = load_library(str(Path(__file__).parent / "csrc" / "raster.cpp"))
    if lib is not None and not getattr(lib, "_partgen_typed", False):
        lib.pg_raster.restype = ctypes.c_int64
        lib.pg_raster.argtypes = [
            ctypes.c_void_p,  # verts (V, 3) float64, camera space
            ctypes.c_int64,
            ctypes.c_void_p,  # faces (F, 3) int64
            ctypes.c_int64,
            *[ctypes.c_double] * 5,  # fx, fy, cx, cy, skew
            ctypes.c_int32,  # width
            ctypes.c_int32,  # height
            ctypes.c_double,  # znear
            ctypes.c_int32,  # threads
            ctypes.c_void_p,  # depth (H, W) float32
            ctypes.c_void_p,  # tri (H, W) int32
        ]
        lib._partgen_typed = True
    return lib, why_not


def rasterize(
    vertices: np.ndarray, faces: np.ndarray, camera: Camera, znear: float = 1e-4, threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer at pixel centres: depth (H, W) float32 camera z (+inf empty), face (H, W) int32 (-1 empty).

    vertices (V, 3) world space, faces (F, 3) int. Triangles are two-sided; parts in front of the
    plane z = znear are kept (clipped), the rest is dropped. threads <= 0: OpenMP's default.
    """
    lib, why_not = _native_library()
    if lib is None:
        raise RuntimeError(f"the native rasteriser (data_pipeline/csrc/raster.cpp) is unavailable: {why_not}")
    v = np.ascontiguousarray(camera.to_camera(np.asarray(vertices, np.float64).reshape(-1, 3)))
    f = np.ascontiguousarray(np.asarray(faces, np.int64).reshape(-1, 3))
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"face indices outside [0, {len(v)})")
    depth = np.empty((camera.height, camera.width), np.float32)
    face = np.empty((camera.height, camera.width), np.int32)
    lib.pg_raster(
        v.ctypes.data, len(v), f.ctypes.data, len(f),
        camera.fx, camera.fy, camera.cx, camera.cy, camera.skew,
        camera.width, camera.height, float(znear), int(threads),
        depth.ctypes.data, face.ctypes.data,
    )  # fmt: skip
    return depth, face


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) unit normals (right-hand rule); zero for degenerate faces."""
    tri = np.asarray(vertices, np.float64)[np.asarray(faces, np.int64)]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def _face_albedo(n_faces: int, face_colors, face_part) -> np.ndarray:
    """(F, 3) float in [0, 1]: given colours (uint8 0..255 or float 0..1), else the part palette, else grey."""
    if face_colors is not None:
        c = np.asarray(face_colors)
        c = c.astype(np.float64) / 255.0 if np.issubdtype(c.dtype, np.integer) else c.astype(np.float64)
        if c.shape != (n_faces, 3):
            raise ValueError(f"face_colors must be ({n_faces}, 3), got {c.shape}")
        return np.clip(c, 0, 1)
    if face_part is not None:
        return PART_PALETTE[np.asarray(face_part, np.int64) % len(PART_PALETTE)] / 255.0
    return np.broadcast_to(np.asarray(DEFAULT_COLOR, np.float64) / 255.0, (n_faces, 3))


def _box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """(H k, W k, ...) -> (H, W, ...) mean of k x k blocks (k^2 strided adds: faster than a 5-D reduce)."""
    out = x[0::k, 0::k].copy()
    for i in range(k):
        for j in range(k):
            if i or j:
                out += x[i::k, j::k]
    return out / (k * k)


def render(
    vertices: np.ndarray,
    faces: np.ndarray,
    camera: Camera,
    face_colors: np.ndarray | None = None,
    face_part: np.ndarray | None = None,
    supersample: int = 2,
    background: Sequence[int] = (255, 255, 255),
    ambient: float = 0.35,
    light: Sequence[float] = DEFAULT_LIGHT,
    threads: int = 0,
) -> dict[str, np.ndarray]:
    """Render a mesh: Lambert + ambient shading of face normals (two-sided), anti-aliased by supersampling.

    vertices (V, 3) world space; faces (F, 3) int; face_colors (F, 3) uint8 or float in [0, 1]
    (e.g. material colours), else face_part (F,) int coloured with PART_PALETTE, else grey.
    light: direction towards the light in camera space (OpenCV axes). Returns
        rgb    (H, W, 3) uint8  straight (not premultiplied) colour; `background` where alpha == 0
        alpha  (H, W) uint8     coverage of k x k samples per pixel
        depth  (H, W) float32   camera z of the surface at the pixel centre, +inf where empty
        face   (H, W) int32     triangle id at the pixel centre, -1 where empty
        part   (H, W) int16     face_part[face] (0 where face_part is None), -1 where empty
        normal (H, W, 3) float32 world-space unit face normal turned towards the camera, 0 where empty
    """
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    camera.validate()
    vertices = np.asarray(vertices, np.float64).reshape(-1, 3)
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    n_faces = len(faces)
    depth, face = rasterize(vertices, faces, camera, threads=threads)
    hit = face >= 0

    # per-face shading: normals turned towards the camera (two-sided), then Lambert + ambient
    normal_w = face_normals(vertices, faces)
    centroid_c = camera.to_camera(vertices[faces].mean(1)) if n_faces else np.zeros((0, 3))
    normal_c = normal_w @ camera.R.T
    flip = np.where((normal_c * centroid_c).sum(1) > 0, -1.0, 1.0)[:, None]
    normal_w, normal_c = normal_w * flip, normal_c * flip
    light_c = np.asarray(light, np.float64) / np.linalg.norm(light)
    shade = ambient + (1 - ambient) * np.clip(normal_c @ light_c, 0, None)
    face_rgb = _face_albedo(n_faces, face_colors, face_part) * shade[:, None]  # (F, 3) in [0, 1]

    k = int(supersample)
    # lookup tables with a last row for "no triangle" (index F): images are gathers, no masks
    idx = np.where(hit, face, n_faces)
    lut = np.concatenate([face_rgb, np.zeros((1, 3))]).astype(np.float32)
    if k == 1:
        cover = hit.astype(np.float32)
        color_sum = lut[idx]
    else:
        _, face_k = rasterize(vertices, faces, camera.scaled(k), threads=threads)
        hit_k = face_k >= 0
        cover = _box_mean(hit_k.astype(np.float32), k)
        color_sum = _box_mean(lut[np.where(hit_k, face_k, n_faces)], k)
    bg = np.asarray(background, np.float32).reshape(3) / 255.0
    straight = np.where(cover[..., None] > 0, color_sum / np.maximum(cover, 1e-12)[..., None], bg)
    part_of_face = np.zeros(n_faces, np.int16) if face_part is None else np.asarray(face_part).astype(np.int16)
    part = np.concatenate([part_of_face, np.array([-1], np.int16)])[idx]
    normal = np.concatenate([normal_w, np.zeros((1, 3))]).astype(np.float32)[idx]
    return {
        "rgb": np.clip(np.round(straight * 255), 0, 255).astype(np.uint8),
        "alpha": np.clip(np.round(cover * 255), 0, 255).astype(np.uint8),
        "depth": depth,
        "face": face,
        "part": part,
        "normal": normal,
    }


def composite(rgb: np.ndarray, alpha: np.ndarray, background: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """(H, W, 3) uint8: straight rgb over a flat background."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    out = rgb.astype(np.float64) * a + np.asarray(background, np.float64) * (1 - a)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _png_bytes(array: np.ndarray) -> bytes:
    """PNG of an (H, W, 4) uint8 (RGBA) or (H, W) uint16 (16-bit grey) array."""
    from PIL import Image  # imported where used (STYLE habit 7)

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def save_views(
    record_dir: str | Path, images: Sequence[dict], cameras: Sequence[Camera], subdir: str = "renders"
) -> Path:
    """Write views under record_dir/subdir and return that folder; every write is atomic.

    NNN.png       RGBA (straight alpha)
    NNN_part.png  16-bit grey, part id + 1 (0 = empty), when the view has "part"
    depth.npz     "depth" (N, H, W) float32 camera z, +inf empty, when the views have "depth"
    cameras.json  {"convention", "frames": [{"file_path": "NNN.png", **Camera.to_dict()}]}
                  (TRELLIS/NeRF readers find transform_matrix and camera_angle_x in each frame)
    """
    if len(images) != len(cameras):
        raise ValueError(f"{len(images)} images but {len(cameras)} cameras")
    out = Path(record_dir) / subdir
    frames = []
    for i, (img, cam) in enumerate(zip(images, cameras, strict=True)):
        if img["rgb"].shape[:2] != (cam.height, cam.width):
            raise ValueError(f"view {i}: image {img['rgb'].shape[:2]} does not match camera {cam.height}x{cam.width}")
        name = f"{i:03d}.png"
        rgba = np.concatenate([img["rgb"], img["alpha"][..., None]], axis=2)
        _atomic_write(out / name, _png_bytes(np.ascontiguousarray(rgba)))
        frame = {"file_path": name}
        if "part" in img:
            part_png = (img["part"].astype(np.int32) + 1).clip(0, 65535).astype(np.uint16)
            _atomic_write(out / f"{i:03d}_part.png", _png_bytes(part_png))
            frame["part_path"] = f"{i:03d}_part.png"
        frames.append(frame | cam.to_dict())
    if images and all("depth" in img for img in images) and len({img["depth"].shape for img in images}) == 1:
        buf = io.BytesIO()
        np.savez_compressed(buf, depth=np.stack([img["depth"] for img in images]).astype(np.float32))
        _atomic_write(out / "depth.npz", buf.getvalue())
    meta = {"convention": frames[0]["convention"] if frames else "", "frames": frames}
    _atomic_write(out / "cameras.json", json.dumps(meta, indent=1).encode())
    return out
