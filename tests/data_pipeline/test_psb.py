"""PSB reader: the real benchmark files, and clear errors for malformed OFF input."""

import numpy as np
import pytest

from conftest import require_shared
from partgen.data_pipeline.psb import PSBDataset, read_off, read_seg


def write(tmp_path, text, name="m.off"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_off_triangulates_polygons_and_ignores_comments(tmp_path):
    path = write(
        tmp_path,
        "OFF # a square and a triangle\n5 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n2 2 2\n4 0 1 2 3\n3 1 4 2 255 0 0\n",
    )
    verts, faces = read_off(path)
    assert verts.shape == (5, 3)
    assert faces.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 2]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "not an OFF file"),
        ("PLY\n", "not an OFF file"),
        ("OFF\n3\n", "malformed vertex/face counts"),
        ("OFF\n0 0 0\n", "empty mesh"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n", "truncated"),
        ("OFF\n3 1 0\n0 0 0\n1 0 nan\n0 1 0\n3 0 1 2\n", "NaN or inf"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", r"outside \[0, 3\)"),
        ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1\n", "face 0 has 2 of 3"),
        ("OFF\n3 1 0\n0 0 0\n1 0 x\n0 1 0\n3 0 1 2\n", "malformed vertex"),
    ],
)
def test_read_off_names_file_and_reason(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as err:
        read_off(path)
    assert str(path) in str(err.value)


def test_read_seg_checks_face_count(tmp_path):
    path = write(tmp_path, "0\n1\n1\n", "m.seg")
    assert read_seg(path, 3).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="3 labels for a mesh with 4 faces"):
        read_seg(path, 4)


def test_psb_dev_meshes_and_segmentations():
    ds = PSBDataset(require_shared("psb-dev.tar.gz"), categories=["Chair", "Cup"], limit=2)
    assert len(ds) == 4 and ds.categories == ["Cup", "Chair"]
    mesh = ds[0]
    assert mesh.category == "Cup" and mesh.faces.shape[1] == 3
    assert mesh.faces.max() < len(mesh.vertices)
    assert len(mesh.segmentations) >= 1
    for seg in mesh.segmentations:
        assert seg.shape == (len(mesh.faces),) and seg.min() == 0
    assert np.isfinite(mesh.vertices).all()


def test_psb_full_index_has_19_categories_of_12():
    ds = PSBDataset(require_shared("psb-dev.tar.gz"))
    assert len(ds.categories) == 19 and len(ds) == 228


def test_psb_unknown_category_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="unknown PSB categories"):
        PSBDataset(require_shared("psb-dev.tar.gz"), categories=["Spaceship"])
    with pytest.raises(FileNotFoundError, match="PSB data not found"):
        PSBDataset(tmp_path / "absent.tar.gz")
