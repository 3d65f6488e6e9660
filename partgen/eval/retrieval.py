"""The retrieval baseline of image -> 3D: the mesh of the training asset whose icon looks nearest.

Single-view reconstruction networks do little better than such a lookup (Tatarchenko et al., "What
Do Single-view 3D Reconstruction Networks Learn?", CVPR 2019), so a generator is judged beside it.

icon_descriptor, the pixel descriptor (no learned features):
    1. ink: the alpha channel >= 128 where the image has a real alpha, else the pixels that differ
       from white by more than 24 (of 255) in some channel;
    2. crop to the ink's bounding box and pad it to a square, centred, with white;
    3. composite over white and resize: 32 x 32 grey (1024 values) and 8 x 8 RGB (192 values), all
       in [0, 1], concatenated (1216 values).
Nearest by L2 distance between descriptors (IconIndex.nearest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GREY_SIZE, COLOUR_SIZE = 32, 8


def _check(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3|4) uint8 image, got {image.shape} {image.dtype}")
    return image


def has_alpha(image: np.ndarray) -> bool:
    """Whether an (H, W, 3|4) uint8 image has a real alpha channel (some pixel not opaque)."""
    return _check(image).shape[2] == 4 and bool((image[..., 3] < 255).any())


def ink_mask(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: the object's pixels of an (H, W, 3|4) uint8 image: alpha >= 128 where the image has a
    real alpha, else the pixels that differ from white by more than 24 (of 255) in some channel."""
    image = _check(image)
    if has_alpha(image):
        return image[..., 3] >= 128
    return (255 - image[..., :3].astype(np.int16)).max(-1) > 24


def icon_descriptor(image: np.ndarray) -> np.ndarray:
    """(1216,) float32 descriptor (module docstring) of an (H, W, 3|4) uint8 image."""
    from PIL import Image

    image = _check(image)
    ink = ink_mask(image)
    alpha = image[..., 3].astype(np.float64) / 255.0 if has_alpha(image) else np.ones(image.shape[:2])
    rgb = image[..., :3] * alpha[..., None] + 255.0 * (1 - alpha[..., None])  # over white
    if ink.any():
        rows, cols = np.nonzero(ink.any(1))[0], np.nonzero(ink.any(0))[0]
        rgb = rgb[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = rgb.shape[:2]
    side = max(h, w)
    square = np.full((side, side, 3), 255.0)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = rgb
    im = Image.fromarray(np.round(square).astype(np.uint8))
    grey = np.asarray(im.convert("L").resize((GREY_SIZE, GREY_SIZE), Image.BILINEAR), np.float32) / 255.0
    colour = np.asarray(im.resize((COLOUR_SIZE, COLOUR_SIZE), Image.BILINEAR), np.float32) / 255.0
    return np.concatenate([grey.ravel(), colour.ravel()])


def read_icon(path: str | Path) -> np.ndarray:
    """(H, W, 4) uint8 RGBA of an image file."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


class IconIndex:
    """Descriptors of a set of icons (e.g. the training split's) and nearest-neighbour lookup.

    keys: one name per icon; descriptors: (n, 1216) from icon_descriptor."""

    def __init__(self, keys: list[str], descriptors: np.ndarray):
        descriptors = np.asarray(descriptors, np.float32)
        if descriptors.ndim != 2 or len(keys) != len(descriptors) or not len(keys):
            raise ValueError(f"need one descriptor row per key, got {len(keys)} keys and {descriptors.shape}")
        self.keys, self.descriptors = list(keys), descriptors

    @classmethod
    def from_files(cls, files: dict[str, str | Path]) -> IconIndex:
        """An index of {key: image path}."""
        return cls(list(files), np.stack([icon_descriptor(read_icon(path)) for path in files.values()]))

    def nearest(self, image: np.ndarray, k: int = 1) -> list[tuple[str, float]]:
        """The k nearest icons to an (H, W, 3|4) uint8 image: (key, L2 distance), nearest first."""
        d = np.linalg.norm(self.descriptors - icon_descriptor(image)[None], axis=1)
        order = np.argsort(d, kind="stable")[:k]
        return [(self.keys[i], float(d[i])) for i in order]


__all__ = ["IconIndex", "has_alpha", "icon_descriptor", "ink_mask", "read_icon"]
