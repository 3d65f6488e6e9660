"""Stage 1's layout stretched to the image's silhouette (partgen.pipelines.proportions): the framing of
masks, a known stretch recovered from a rendered silhouette, small gains dropped, and the bundled
pipeline's layout fitting an icon better than the reference it carries; or stretched to dimensions a
user gives (box_stretch), which are checked first."""

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from partgen.data_pipeline.sh3d_icons import ICON_EXTENT, silhouette_iou
from partgen.pipelines.proportions import (
    MAX_BOX_STRETCH,
    MAX_STRETCH,
    box_stretch,
    check_dimensions,
    fit_proportions,
    framed_mask,
    image_mask,
    layout_silhouette,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_framed_mask_centres_the_object_and_scales_its_longer_side():
    mask = np.zeros((300, 200), bool)
    mask[10:40, 120:180] = True  # 30 x 60, off centre
    out = framed_mask(mask, 128)
    rows, cols = np.nonzero(out.any(1))[0], np.nonzero(out.any(0))[0]
    width, height = cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
    assert abs(width - ICON_EXTENT * 128) <= 1 and abs(height - ICON_EXTENT * 64) <= 1  # proportions kept
    assert abs((cols[0] + cols[-1]) / 2 - 63.5) <= 1 and abs((rows[0] + rows[-1]) / 2 - 63.5) <= 1
    with pytest.raises(ValueError, match="object pixels"):
        framed_mask(np.zeros((8, 8), bool))


def test_image_mask_reads_alpha_or_what_is_not_white(tmp_path):
    from PIL import Image

    rgb = np.full((90, 120, 3), 255, np.uint8)
    rgb[20:50, 10:100] = (200, 30, 30)  # a 30 x 90 red bar on white, no alpha
    rgba = np.zeros((90, 120, 4), np.uint8)
    rgba[20:50, 10:100] = (255, 255, 255, 255)  # a white bar, opaque on transparent: alpha says where
    for name, pixels in (("rgb.png", rgb), ("rgba.png", rgba)):
        Image.fromarray(pixels).save(tmp_path / name)
        mask = image_mask(tmp_path / name)
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert mask.shape == (128, 128) and abs((cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1) - 3.0) < 0.15


def box(extents) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.creation.box(extents)
    return mesh.vertices, mesh.faces


@pytest.mark.parametrize("extents", [(1.0, 0.8, 0.8), (0.8, 1.0, 0.85), (0.75, 0.75, 0.9)])
def test_a_stretched_box_is_recovered_from_its_silhouette(extents):
    target = layout_silhouette(*box(extents))
    vertices, faces = box((0.8, 0.8, 0.8))
    fit = fit_proportions(vertices, faces, target)
    assert fit.applied and fit.after > max(0.97, fit.before + 0.03)
    got = np.ptp(vertices * fit.scale, 0)
    # the proportions, not the size (the framing removes the size)
    assert np.allclose(got / got.max(), np.asarray(extents) / max(extents), atol=0.04)
    assert silhouette_iou(layout_silhouette(vertices * fit.scale, faces), target) == pytest.approx(fit.after)


def test_the_stretch_is_bounded():
    vertices, faces = box((0.8, 0.8, 0.8))
    fit = fit_proportions(vertices, faces, layout_silhouette(*box((1.0, 0.4, 0.4))))
    assert fit.applied and np.all(np.abs(np.log(fit.scale)) <= MAX_STRETCH + 1e-9)
    assert np.abs(np.log(fit.scale)).max() == pytest.approx(MAX_STRETCH)  # as far as it may go
    wide = fit_proportions(vertices, faces, layout_silhouette(*box((1.0, 0.4, 0.4))), bound=np.log(3.0))
    assert wide.after > fit.after


def test_a_fit_that_gains_little_is_dropped():
    vertices, faces = box((1.0, 0.5, 0.5))
    own = fit_proportions(vertices, faces, layout_silhouette(vertices, faces))
    assert not own.applied and np.array_equal(own.scale, np.ones(3)) and own.after == own.before > 0.97
    near = layout_silhouette(*box((1.0, 0.52, 0.5)))  # a stretch that gains ~2% IoU
    free = fit_proportions(vertices, faces, near, min_gain=0.0, penalty=0.0)
    assert free.applied and 0.0 < free.after - free.before < 0.05
    assert not fit_proportions(vertices, faces, near, min_gain=0.05).applied


def test_the_bundled_stage_1_layout_fits_the_icon_it_was_made_from():
    from partgen.pipelines.generate import PartGenerator

    generator = PartGenerator.from_folder(parts="geometric")
    icon = sorted(p for p in EXAMPLES.glob("*.png") if not p.name.startswith("scopia"))[0]
    image, _ = generator.load_image(icon)
    mask = image_mask(icon)
    coords, (v0, f0), _, _, given = generator.sample_layout(image, seed=0)
    fitted, (v1, f1), scale = generator.stretch_layout(coords, (v0, f0), mask)
    before = silhouette_iou(layout_silhouette(v0, f0), mask)
    after = silhouette_iou(layout_silhouette(v1, f1), mask)
    assert given is not None and len(scale) == 3 and np.array_equal(f0, f1)
    # the chair icon was drawn from another angle than the typical view: its layout is stretched
    assert scale != [1.0, 1.0, 1.0] and after >= before + 0.02
    # stage 2's voxels are the stretched layout's
    extent = lambda a: np.ptp(a, 0) / np.ptp(a, 0).max()  # noqa: E731
    assert np.allclose(extent(fitted), extent(v1), atol=0.05)
    # given dimensions (a chair 45 wide, 50 deep, 90 high) the layout takes their proportions instead
    boxed, (v2, f2), factors = generator.stretch_layout(coords, (v0, f0), None, (45, 50, 90))
    assert np.array_equal(f0, f2) and np.median(factors) == pytest.approx(1.0, abs=1e-3)
    assert np.allclose(extent(v2), np.array([45, 90, 50]) / 90, atol=1e-6)
    assert np.allclose(extent(boxed), np.array([45, 90, 50]) / 90, atol=0.05)


@pytest.mark.parametrize(
    ("extents", "dimensions", "want"),
    [
        ((1.0, 1.0, 1.0), (3.0, 2.0, 1.0), (3.0, 1.0, 2.0)),  # width along x, height along y, depth along z
        ((1.2, 0.78, 0.75), (80, 160, 75), (80, 75, 160)),  # a wide table made deep: examples/table.obj's box
        ((0.5, 1.0, 0.5), (50, 50, 100), (50, 100, 50)),  # already so: factors 1
    ],
)
def test_box_stretch_gives_the_dimensions_proportions(extents, dimensions, want):
    vertices, _ = box(extents)
    factors = box_stretch(vertices, dimensions)
    got = np.ptp(vertices * factors, 0)
    assert np.allclose(got / got.max(), np.asarray(want) / max(want), atol=1e-9)
    assert np.median(factors) == pytest.approx(1.0)
    if tuple(extents) == (0.5, 1.0, 0.5):
        assert np.allclose(factors, 1.0)


def test_box_stretch_does_not_blow_up_a_flat_sheet():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)  # no depth at all
    factors = box_stretch(vertices, (100, 40, 100))  # asked to be 40% as deep as wide
    assert np.isfinite(factors).all() and np.abs(np.log(factors)).max() == pytest.approx(MAX_BOX_STRETCH)
    assert np.ptp(vertices * factors, 0)[2] == 0.0  # stretching cannot make a sheet a box


@pytest.mark.parametrize(
    "bad", [(1, 2), (1, -2, 3), (1, 0, 3), (float("nan"), 1, 1), (1, 2, float("inf")), "8x6x7", 5, None]
)
def test_dimensions_must_be_three_positive_numbers(bad):
    with pytest.raises(ValueError, match="dimensions must be three positive numbers"):
        check_dimensions(bad)
    assert check_dimensions([120, "60", 75.5]).tolist() == [120.0, 60.0, 75.5]
