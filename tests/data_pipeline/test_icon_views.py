"""Other views of a record in its icon's colours (partgen.data_pipeline.icon_views) and the script
that writes them (scripts/render_icon_views.py): a two-part box whose icon shows one part red and
the other blue, from the typical icon view."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from conftest import load_script
from partgen.data_pipeline import sh3d_icons as si
from partgen.data_pipeline.icon_views import icon_face_colours, read_record_mesh, render_icon_views, view_angles
from partgen.data_pipeline.render import render

RED, BLUE = (220, 30, 30), (30, 30, 220)


def write_record(root: Path, key: str) -> Path:
    """A record: a box (x in [-0.5, 0.5]) subdivided, part 0 where x < 0 and part 1 where x > 0, and
    its 64 px icon from TYPICAL_VIEW (yaw 30: the +x side and the front show) with camera.json."""
    box = trimesh.creation.box((1.0, 0.6, 0.4)).subdivide().subdivide()
    vertices, faces = box.vertices, box.faces
    part = (box.triangles_center[:, 0] > 0).astype(np.int16)
    rec = root / "records" / key
    (rec / "icon").mkdir(parents=True)
    np.savez(rec / "mesh.npz", vertices=vertices.astype(np.float32), faces=faces.astype(np.int32), face_part=part)
    camera = si.frame_to_points(si.preview_camera(si.TYPICAL_VIEW, (64, 64)), vertices)
    colours = np.where(part[:, None] == 0, RED, BLUE).astype(np.uint8)
    out = render(vertices, faces, camera, face_colors=colours, ambient=1.0)
    Image.fromarray(np.dstack([out["rgb"], out["alpha"]])).save(rec / "icon" / "icon.png")
    (rec / "icon" / "camera.json").write_text(json.dumps(camera.to_dict()))
    return rec


def test_faces_take_the_icon_colours_and_unseen_ones_their_parts():
    box = trimesh.creation.box((1.0, 0.6, 0.4)).subdivide().subdivide()
    part = (box.triangles_center[:, 0] > 0).astype(np.int64)
    camera = si.frame_to_points(si.preview_camera(si.TYPICAL_VIEW, (64, 64)), box.vertices)
    colours = np.where(part[:, None] == 0, RED, BLUE).astype(np.uint8)
    out = render(box.vertices, box.faces, camera, face_colors=colours, ambient=1.0)
    icon = np.dstack([out["rgb"], out["alpha"]])
    got, shown = icon_face_colours(icon, camera, box.vertices, box.faces, part)
    assert 0.2 < shown < 0.8  # the back, the bottom and the -x side do not show
    # seen or not, every triangle takes its own part's colour (the edges blend a little)
    assert np.abs(got[part == 0] - np.array(RED) / 255).max() < 0.15
    assert np.abs(got[part == 1] - np.array(BLUE) / 255).max() < 0.15
    with pytest.raises(ValueError, match="RGBA"):
        icon_face_colours(icon[..., :3], camera, box.vertices, box.faces, part)


def test_views_show_the_mesh_framed_as_icons_in_its_colours(tmp_path):
    rec = write_record(tmp_path, "default-0001-box")
    images, cameras, shown = render_icon_views(rec, count=6, size=64)
    assert len(images) == len(cameras) == 6 and shown > 0.2
    for image in images:
        mask = image["alpha"] >= 128
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        span = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
        assert abs(span - si.ICON_EXTENT * 64) <= 2  # framed as the icons are
        rgb = image["rgb"][mask].astype(int)
        reddish, bluish = (rgb[:, 0] > rgb[:, 2] + 40).mean(), (rgb[:, 2] > rgb[:, 0] + 40).mean()
        assert reddish + bluish > 0.95  # every pixel one of the icon's two colours, shaded
    # views from -x show more red (part 0's side) than views from +x
    yaws = np.array([v.yaw for v in view_angles(rec.name, 6)])
    red_share = [((im["rgb"][..., 0].astype(int) > im["rgb"][..., 2] + 40) & (im["alpha"] >= 128)).sum() /
                 (im["alpha"] >= 128).sum() for im in images]  # fmt: skip
    assert np.corrcoef(np.sin(yaws), red_share)[0, 1] < -0.5
    assert all(math.radians(-45) <= y <= math.radians(75) for y in yaws)
    again, _, _ = render_icon_views(rec, count=6, size=64)  # seeded by the key
    assert all(np.array_equal(a["rgb"], b["rgb"]) for a, b in zip(images, again, strict=True))
    vertices, faces, face_part = read_record_mesh(rec)
    assert np.ptp(vertices, 0).max() == pytest.approx(1.0) and set(np.unique(face_part)) == {0, 1}


def test_the_script_writes_views_resumes_and_names_a_record_it_cannot_render(tmp_path, capsys):
    script = load_script("render_icon_views")
    good = write_record(tmp_path, "default-0001-box")
    bad = write_record(tmp_path, "default-0002-box")
    (bad / "icon" / "icon.png").unlink()
    assert script.main(["--records", str(tmp_path), "--views", "3", "--size", "64", "--workers", "1"]) == 1
    out = capsys.readouterr()
    assert "default-0002-box" in out.err and "no icon" in out.err
    views = good / "icon" / "views"
    assert sorted(p.name for p in views.glob("*.png")) == ["000.png", "001.png", "002.png"]
    assert Image.open(views / "000.png").mode == "RGBA" and Image.open(views / "000.png").size == (64, 64)
    frames = json.loads((views / "cameras.json").read_text())["frames"]
    assert [f["file_path"] for f in frames] == ["000.png", "001.png", "002.png"]
    assert json.loads((views / "views.json").read_text())["settings"]["views"] == 3
    before = (views / "000.png").stat().st_mtime_ns
    assert script.main(["--records", str(tmp_path), "--views", "3", "--size", "64", "--workers", "1"]) == 1
    assert "1 already rendered, 1 to render" in capsys.readouterr().out
    assert (views / "000.png").stat().st_mtime_ns == before  # a finished record is not rendered again
    assert script.main(["--records", str(tmp_path), "--views", "4", "--size", "64", "--workers", "1"]) == 1
    assert (views / "003.png").is_file()  # other settings: rendered again
