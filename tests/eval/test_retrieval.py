"""The retrieval baseline's icon descriptor and lookup (partgen.eval.retrieval)."""

import numpy as np
import pytest

from partgen.eval.retrieval import IconIndex, icon_descriptor, ink_mask


def icon(shape: str, size: int = 64, margin: int = 8, colour=(200, 40, 40), alpha: bool = True) -> np.ndarray:
    """An RGBA (or RGB on white) image of a filled shape: 'box' (wide), 'bar' (tall) or 'disc'."""
    yy, xx = np.mgrid[:size, :size]
    half, c = size / 2 - margin, size / 2  # the shape scales with size - 2 margin
    x, y = np.abs(xx + 0.5 - c) / half, np.abs(yy + 0.5 - c) / half
    if shape == "box":
        inside = (x < 1) & (y < 0.25)
    elif shape == "bar":
        inside = (x < 0.15) & (y < 1)
    else:
        inside = x**2 + y**2 < 1
    image = np.zeros((size, size, 4), np.uint8) if alpha else np.full((size, size, 3), 255, np.uint8)
    image[inside, :3] = colour
    if alpha:
        image[inside, 3] = 255
    return image


def test_ink_is_alpha_or_what_is_not_white():
    assert ink_mask(icon("disc")).sum() == ink_mask(icon("disc", alpha=False)).sum() > 0
    assert not ink_mask(np.full((8, 8, 3), 255, np.uint8)).any()
    assert ink_mask(np.zeros((8, 8, 4), np.uint8)).sum() == 0  # fully transparent


def test_descriptor_ignores_framing_and_background_but_sees_shape_and_colour():
    d = icon_descriptor(icon("box"))
    assert d.shape == (32 * 32 + 8 * 8 * 3,) and d.dtype == np.float32
    # the same object smaller in the frame, or drawn on white instead of transparent: the same descriptor
    assert np.abs(icon_descriptor(icon("box", size=96, margin=28)) - d).max() < 0.15
    assert np.abs(icon_descriptor(icon("box", alpha=False)) - d).max() < 1e-6
    near = np.linalg.norm(icon_descriptor(icon("box", size=96, margin=28)) - d)
    assert near < np.linalg.norm(icon_descriptor(icon("bar")) - d)
    assert near < np.linalg.norm(icon_descriptor(icon("box", colour=(40, 40, 200))) - d)
    with pytest.raises(ValueError, match="uint8"):
        icon_descriptor(np.zeros((8, 8, 4), np.float32))


def test_index_returns_the_nearest_icons_in_order():
    shapes = {"box": icon("box"), "bar": icon("bar"), "disc": icon("disc"), "blue": icon("box", colour=(40, 40, 200))}
    index = IconIndex(list(shapes), np.stack([icon_descriptor(v) for v in shapes.values()]))
    found = index.nearest(icon("box", size=80, margin=14), k=2)
    assert [k for k, _ in found] == ["box", "blue"] and found[0][1] < found[1][1]
    assert index.nearest(icon("bar", alpha=False))[0][0] == "bar"
    with pytest.raises(ValueError, match="one descriptor row per key"):
        IconIndex(["a"], np.zeros((2, 4)))
