"""partgen-generate with the bundled model set (partgen/assets/generator): the files it writes and
what they hold, images it accepts (RGB, RGBA, greyscale) and refuses (one line, exit 1, nothing
written), model sets that are incomplete or name classes outside partgen, and the pieces
(voxel parts, the icon camera, decimation)."""

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from hydra import compose, initialize_config_module
from PIL import Image

from conftest import assert_python_defaults, sphere_blocks
from partgen.cli import run_generate
from partgen.models.part_dit import attention_groups
from partgen.pipelines.generate import (
    DEFAULT_MODELS,
    STAGES,
    PartGenerator,
    absorb_label_islands,
    absorb_stray_pieces,
    clean_mesh,
    icon_projection,
    merge_small_parts,
    mesh_parts,
    part_pieces,
    resolve_models,
    simplify,
    smooth_part_labels,
    surface_band,
    unique_names,
    voxel_parts,
    whole_mesh,
)
from partgen.pipelines.layout import LayoutGenerator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
TRAINING_ICON = sorted(p for p in EXAMPLES.glob("*.png") if not p.name.startswith("scopia"))[0]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def config(image, output, **kw):
    """conf/generate.yaml as partgen-generate composes it, shrunk to 4 stage-2 steps, with overrides."""
    overrides = {"image": image, "output": output, "steps": 4, "progress": "false"} | kw
    with initialize_config_module(config_module="partgen.conf", version_base="1.3"):
        return compose(config_name="generate", overrides=[f"{k}={v}" for k, v in overrides.items()])


def main(cfg):
    return run_generate(cfg)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "out"
    assert main(config(TRAINING_ICON, out)) == 0
    return out


def test_python_defaults_are_the_generate_config():
    """conf/generate.yaml is the one source of generation's defaults: the CLI builds the pipeline from
    its `pipeline:` node, and the Python API (from_folder, PartGenerator, LayoutGenerator) states
    the same values."""
    cfg = config("x.png", "out", steps=25)
    assert cfg.pipeline._target_ == "partgen.pipelines.generate.PartGenerator.from_folder"
    pipeline = assert_python_defaults(cfg.pipeline, PartGenerator.from_folder, PartGenerator)
    stage1 = inspect.signature(LayoutGenerator).parameters
    for key, name in [("layout_steps", "steps"), ("layout_guidance", "guidance"), ("coordinates", "coordinates"),
                      ("anchor_band", "anchor_band"), ("dilation", "dilation"),
                      ("reference_strength", "strength"), ("reference_edit", "reference_edit"),
                      ("reference_candidates", "candidates"), ("silhouette_weight", "silhouette_weight"),
                      ("part_neighbours", "part_neighbours")]:  # fmt: skip
        assert stage1[name].default == pipeline[key], f"LayoutGenerator {name}"


def test_outputs_hold_named_parts_and_a_report(generated):
    files = sorted(p.name for p in generated.iterdir())
    assert files == ["layout.ply", "mesh.obj", "mesh.ply", "parts.glb", "preview.png", "report.json"]
    report = json.loads((generated / "report.json").read_text())
    names = [p["name"] for p in report["parts"]]
    scene = trimesh.load(generated / "parts.glb")
    assert sorted(scene.graph.nodes_geometry) == sorted(names) and len(set(names)) == len(names)
    # every part a real surface; the whole mesh is the parts together
    faces = sum(len(g.faces) for g in scene.geometry.values())
    assert all(len(g.faces) > 0 for g in scene.geometry.values())
    assert len(trimesh.load(generated / "mesh.obj", process=False).faces) == faces
    assert all(v <= 0.5 + 1e-6 for g in scene.geometry.values() for v in np.abs(g.vertices).max(0))
    tokens = report["tokens"]
    assert tokens["voxels"] == sum(tokens["parts"].values()) > 0
    assert tokens["part_attention_pairs"] < tokens["global_attention_pairs"] or len(tokens["parts"]) == 1
    assert tokens["mesh_resolution"] == 4 * tokens["resolution"] == 256
    for stage in (
        "layout_retrieve_s",
        "layout_flow_s",
        "layout_voxels_s",
        "parts_s",
        "stage2_s",
        "decode_s",
        "total_s",
    ):
        assert report["times_s"][stage] >= 0
    # the bundled set has a reference bank: stage 1 started from a training shape and carried its parts
    from partgen.data_pipeline.datasets import split_of

    assert split_of(report["layout_reference"], 0.1, 0) == "train"
    assert report["settings"]["reference_strength"] == 0.7 and report["settings"]["reference_edit"] == "flowedit"
    assert report["settings"]["reference_candidates"] == 8 and report["settings"]["silhouette_weight"] == 3.0
    assert report["settings"]["detail_strength"] == 0.3
    assert report["settings"]["layout_shell"] == 0.3 and report["settings"]["fit_proportions"] is True
    assert report["settings"]["layout_band"] == 1.0 and report["settings"]["part_neighbours"] == 8
    # the parts were brought to the count the image's nearest icons ask
    assert 1 <= report["layout_part_count"] <= 8 and len(report["parts"]) <= report["layout_part_count"]
    assert len(report["layout_scale"]) == 3 and all(0.5 <= x <= 2.0 for x in report["layout_scale"])
    assert report["times_s"]["layout_proportions_s"] >= 0
    assert report["settings"]["seed"] == 0 and report["versions"]["torch"] == torch.__version__
    assert np.asarray(Image.open(generated / "preview.png")).shape == (256, 4 * 256, 3)


def test_same_seed_same_mesh_and_a_global_bf16_run(tmp_path, generated):
    assert main(config(TRAINING_ICON, tmp_path / "again")) == 0
    a = trimesh.load(generated / "mesh.obj", process=False)
    b = trimesh.load(tmp_path / "again" / "mesh.obj", process=False)
    # the same mesh (threaded signed distances, where stage 2 starts, may order the pieces differently)
    assert len(a.faces) == len(b.faces)
    assert np.allclose(np.sort(a.vertices, axis=0), np.sort(b.vertices, axis=0), atol=1e-5)
    out = tmp_path / "global"
    assert main(config(TRAINING_ICON, out, schedule="global", parts="geometric", precision="bf16", layout_cfg=1.5)) == 0
    report = json.loads((out / "report.json").read_text())
    settings = report["settings"]
    assert settings["schedule"] == "global" and settings["parts"] == "geometric" and settings["precision"] == "bf16"
    assert settings["layout_cfg"] == 1.5 and settings["cfg"] == 3.0  # stage 1 has its own guidance
    assert len(trimesh.load(out / "mesh.obj", process=False).faces) > 100
    with pytest.raises(ValueError, match="precision"):
        PartGenerator.from_folder(precision="fp16")


def test_a_given_coarse_mesh_stands_in_for_stage_1(tmp_path):
    mesh = EXAMPLES.parent / "table.obj"
    assert main(config(TRAINING_ICON, tmp_path / "out", layout=str(mesh), parts="geometric")) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["settings"]["layout"] == str(mesh) and "layout_from_mesh_s" in report["times_s"]
    assert len(report["parts"]) >= 2  # the table's top and legs come apart geometrically
    assert main(config(TRAINING_ICON, tmp_path / "bad", layout=str(tmp_path / "none.obj"))) == 1


def test_given_dimensions_set_the_layouts_proportions(tmp_path, capsys):
    """dimensions=[W,D,H]: the layout (here a given one, examples/table.obj, 1.2 x 0.78 x 0.75 in x, y,
    z) takes their proportions, recorded in the report; bad dimensions fail in one line, writing nothing."""
    from partgen.data_pipeline.mesh_io import load_mesh

    mesh = EXAMPLES.parent / "table.obj"
    out = tmp_path / "out"
    assert main(config(TRAINING_ICON, out, layout=str(mesh), parts="geometric", dimensions="[80,160,75]")) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["dimensions"] == [80.0, 160.0, 75.0] and report["times_s"]["layout_proportions_s"] >= 0
    layout = load_mesh(out / "layout.ply").vertices
    assert np.allclose(np.ptp(layout, 0) / np.ptp(layout, 0).max(), np.array([80, 75, 160]) / 160, atol=1e-4)
    assert np.median(report["layout_scale"]) == pytest.approx(1.0, abs=1e-3) and report["layout_scale"][2] > 1.5
    generated = load_mesh(out / "mesh.obj").vertices
    assert np.allclose(np.ptp(generated, 0) / np.ptp(generated, 0).max(), np.array([80, 75, 160]) / 160, atol=0.05)
    for bad in ("[80,160]", "[80,-1,75]", "80"):
        capsys.readouterr()
        assert main(config(TRAINING_ICON, tmp_path / "bad", dimensions=bad)) == 1
        err = capsys.readouterr().err.strip()
        assert "dimensions must be three positive numbers" in err and "\n" not in err
        assert not (tmp_path / "bad").exists()


def test_stage_2_started_from_the_layout_surface_keeps_it(tmp_path):
    """detail_strength < 1 (SDEdit from the layout's encoded signed distances) gives a surface whose
    normals follow the layout's; from pure noise the same model gives specks (normal consistency
    near the 0.5 of random normals)."""
    from partgen.data_pipeline.mesh_io import load_mesh, normalise
    from partgen.eval.geometry import surface_metrics
    from partgen.pipelines.generate import whole_mesh

    mesh = load_mesh(EXAMPLES.parent / "table.obj")
    table = (normalise(mesh.vertices).apply(mesh.vertices), mesh.faces)
    scores = {}
    for strength in (0.3, 1.0):
        generator = PartGenerator.from_folder(parts="geometric", steps=4, detail_strength=strength)
        gen = generator(TRAINING_ICON, layout=table)
        scores[strength] = surface_metrics(whole_mesh(gen.parts)[:2], table, 5000)["normal_consistency"]
    assert scores[0.3] > 0.8 and scores[0.3] > scores[1.0] + 0.15, scores
    with pytest.raises(ValueError, match="detail_strength"):
        PartGenerator.from_folder(detail_strength=0.0)


def test_a_band_round_the_layout_closes_the_slits_of_a_one_voxel_shell():
    """Stage 2's decoded surface wanders a little off the layout's; on the voxels the layout crosses
    alone it is cut open wherever it leaves them (slits on the table's flat sides). With the
    neighbours within a voxel (layout_band=1) it closes; a band that would pass max_tokens is
    dropped for the plain shell, not refused."""
    from partgen.data_pipeline.mesh_io import load_mesh, normalise
    from partgen.pipelines.generate import whole_mesh

    mesh = load_mesh(EXAMPLES.parent / "table.obj")
    table = (normalise(mesh.vertices).apply(mesh.vertices), mesh.faces)
    open_edges, voxels = {}, {}
    for band in (0.0, 1.0):
        gen = PartGenerator.from_folder(parts="geometric", steps=4, layout_band=band)(TRAINING_ICON, layout=table)
        welded = trimesh.Trimesh(*whole_mesh(gen.parts)[:2])  # parts share their cut edges again
        open_edges[band] = int((np.unique(welded.edges_sorted, axis=0, return_counts=True)[1] == 1).sum())
        voxels[band] = len(gen.voxels.coords)
    assert open_edges[1.0] < 0.3 * open_edges[0.0], open_edges  # measured: 1,582 against 14,059
    assert voxels[0.0] < voxels[1.0] < 2.5 * voxels[0.0], voxels
    capped = PartGenerator.from_folder(parts="geometric", steps=1, layout_band=1.0, max_tokens=voxels[0.0] + 10)
    assert len(capped(TRAINING_ICON, layout=table).voxels.coords) == voxels[0.0]
    with pytest.raises(ValueError, match="layout_band"):
        PartGenerator.from_folder(layout_band=-1)


def test_a_single_sided_wall_survives_stage_2_as_a_shell():
    """A folded card (two single-sided squares meeting at a right angle: a screen, a pane, a fan
    blade) has no inside, so its plain signed distances never change sign and stage 2 started from
    them, in a band of voxels round the card as stage 1 gives, decodes patches of it; with
    layout_shell the card is encoded as a thin shell and comes back."""
    from partgen.eval.geometry import surface_metrics
    from partgen.models.vecset_vae import anchor_voxels
    from partgen.pipelines.generate import whole_mesh

    vertices = np.array([[-0.4, -0.4, 0.0], [0.4, -0.4, 0.0], [0.4, 0.4, 0.0], [-0.4, 0.4, 0.0],
                         [-0.4, 0.4, 0.4], [0.4, 0.4, 0.4]])  # fmt: skip
    faces = np.array([[0, 1, 2], [0, 2, 3], [3, 2, 5], [3, 5, 4]])
    points = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, faces), 256, seed=0)[0]
    coords = anchor_voxels(torch.from_numpy(points), 64, band=2).numpy().astype(np.int64)
    part = np.zeros(len(coords), np.int64)
    score = {}
    for shell in (0.0, 0.3):
        generator = PartGenerator.from_folder(parts="geometric", steps=4, layout_shell=shell)
        image = generator.load_image(TRAINING_ICON)[1]
        voxels, _ = generator.sample_latents(coords, part, image, vertices, faces=faces)
        parts = generator.decode(voxels, part, ["card"])
        score[shell] = surface_metrics(whole_mesh(parts)[:2], (vertices, faces), 5000)["f_0.02"] if parts else 0.0
    assert score[0.3] > 0.7 and score[0.3] > score[0.0] + 0.2, score  # measured: 0.79 against 0.49


def test_rgba_and_greyscale_images_are_read_as_rgb(tmp_path):
    generator = PartGenerator.from_folder(parts="geometric")
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[10:30, 20:40] = (200, 30, 30, 255)  # a red square, transparent around it
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgba[:, :, 0]).save(tmp_path / "grey.png")
    for name in ("rgba.png", "grey.png"):
        for image in generator.load_image(tmp_path / name):
            assert image.shape[0] == 3 and float(image[:, 0, 0].min()) == 1.0  # white where transparent/padded


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_bad_images_fail_in_one_line_and_write_nothing(tmp_path, capsys, content):
    (tmp_path / "bad.png").write_bytes(content)
    assert main(config(tmp_path / "bad.png", tmp_path / "out")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("partgen-generate:") and "bad.png" in err and "\n" not in err
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["bad.png"]
    assert main(config(tmp_path / "missing.png", tmp_path / "out")) == 1


@pytest.mark.parametrize(
    "size, colour, reason",
    [((128, 128), (255, 255, 255), "no object in the image"), ((1, 1), (0, 0, 0), "too small to show an object")],
)
def test_images_without_an_object_are_refused_in_seconds(tmp_path, capsys, size, colour, reason):
    import time

    Image.new("RGB", size, colour).save(tmp_path / "empty.png")
    start = time.perf_counter()
    assert main(config(tmp_path / "empty.png", tmp_path / "out")) == 1
    assert time.perf_counter() - start < 30  # models load, nothing samples (it ran > 5 min before)
    err = capsys.readouterr().err.strip()
    assert err.startswith("partgen-generate:") and "empty.png" in err and reason in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_a_layout_over_the_token_cap_is_refused(tmp_path, capsys):
    mesh = EXAMPLES.parent / "table.obj"
    assert main(config(TRAINING_ICON, tmp_path / "out", layout=str(mesh), max_tokens=100)) == 1
    err = capsys.readouterr().err.strip()
    assert "more than max_tokens=100" in err and "\n" not in err and not (tmp_path / "out").exists()
    remedy = err.split("(seed 0)")[1]  # another seed does not change a given layout's voxels
    assert remedy.endswith("raise max_tokens") and "seed" not in remedy


def test_model_sets_that_lack_a_stage_or_name_foreign_code_are_refused(tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(DEFAULT_MODELS, models)
    shutil.rmtree(models / "slat_vae")
    with pytest.raises(FileNotFoundError, match="slat_vae"):
        resolve_models(models)
    shutil.copytree(DEFAULT_MODELS / "slat_vae", models / "slat_vae")
    config_path = models / "part_dit" / "model.yaml"
    config_path.write_text(config_path.read_text().replace("partgen.models.part_dit.PartDiT", "os.system", 1))
    assert main(config(TRAINING_ICON, tmp_path / "out", checkpoint=str(models))) == 1
    assert "refusing `_target_: os.system`" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert set(STAGES) <= {p.name for p in DEFAULT_MODELS.iterdir()}


def test_bundled_model_set_is_small():
    size = sum(p.stat().st_size for p in DEFAULT_MODELS.rglob("*") if p.is_file())
    segmenter = sum(p.stat().st_size for p in (DEFAULT_MODELS.parent / "segmenter").rglob("*") if p.is_file())
    assert size + segmenter <= 60 * 2**20


def test_voxel_parts_icon_camera_and_decimation():
    box = trimesh.creation.box((0.8, 0.2, 0.8))
    face_part = (box.triangles_center[:, 0] > 0).astype(np.int64)  # two halves along x
    coords = np.array([[4, 8, 8], [12, 8, 8]])  # R = 16: one voxel each side
    assert voxel_parts(coords, 16, box.vertices, box.faces, face_part).tolist() == [0, 1]
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.4)
    p = icon_projection(sphere.vertices, 128)
    h = np.c_[sphere.vertices, np.ones(len(sphere.vertices))] @ p.double().numpy().T
    uv = h[:, :2] / h[:, 2:]
    assert (h[:, 2] > 0).all() and uv.min() > 0 and uv.max() < 1 and uv.max() - uv.min() > 0.8
    v, f = simplify(sphere.vertices, sphere.faces, 500)
    assert len(f) <= 500 and np.abs(np.linalg.norm(v, axis=1) - 0.4).max() < 0.05
    assert simplify(sphere.vertices, sphere.faces, 10**6)[1] is sphere.faces


def test_voxels_on_a_big_face_take_its_part():
    """A table top of two triangles (part 0) over a finely cut leg (part 1) at one corner: the top's
    voxels away from the leg are part 0 (the nearest face centroid would give many of them the leg's
    part: the top's centroids lie far from its corners)."""
    from partgen.data_pipeline.voxelize import voxelize_surface

    top_v = np.array([[-0.45, 0.01, -0.45], [0.45, 0.01, -0.45], [0.45, 0.01, 0.45], [-0.45, 0.01, 0.45]])
    top_f = np.array([[0, 1, 2], [0, 2, 3]])
    leg = trimesh.creation.box((0.06, 0.45, 0.06)).subdivide().subdivide()
    leg_v = leg.vertices + [0.38, -0.23, 0.38]
    vertices = np.concatenate([top_v, leg_v])
    faces = np.concatenate([top_f, leg.faces + 4])
    face_part = np.r_[np.zeros(2, np.int64), np.ones(len(leg.faces), np.int64)]
    coords = voxelize_surface(vertices, faces, 32).coords.astype(np.int64)
    part = voxel_parts(coords, 32, vertices, faces, face_part)
    centres = (coords + 0.5) / 32 - 0.5
    on_top = np.abs(centres[:, 1] - 0.01) < 1 / 32
    far = np.hypot(centres[:, 0] - 0.38, centres[:, 2] - 0.38) > 0.1
    assert (on_top & far).sum() > 500 and (part[on_top & far] == 0).all()
    assert (part[centres[:, 1] < -0.1] == 1).all()  # the leg below the top


def test_parts_are_merged_split_and_named():
    coords = np.stack(np.meshgrid(np.arange(10), np.arange(10), np.arange(2), indexing="ij"), -1).reshape(-1, 3)
    part = (coords[:, 0] >= 5).astype(np.int64)  # two halves of 100 voxels
    part[0] = 2  # a one-voxel part: merged into its neighbour's part
    merged, kept = merge_small_parts(coords, part, max_parts=8, min_fraction=0.05)
    # largest first: part 1 (100 voxels) becomes 0, part 0 (99) becomes 1 and takes back the stray voxel
    assert kept == [1, 0] and merged[0] == 1 and np.bincount(merged).tolist() == [100, 100]
    assert merge_small_parts(coords, part, max_parts=1, min_fraction=0.0)[1] == [1]
    group = attention_groups(coords, merged, max_group=30)
    sizes = np.bincount(group)
    assert len(sizes) == 8 and sizes.max() <= 30 and sizes.sum() == 200
    for g in range(len(sizes)):  # a group lies in one part and is a compact slab
        assert len(np.unique(merged[group == g])) == 1 and np.ptp(coords[group == g, 0]) <= 1
    assert unique_names(["leg", "leg_2", "top", "leg"]) == ["leg", "leg_2", "top", "leg_3"]


def test_surface_band_adds_the_neighbours_near_the_surface():
    """layout_band: the voxels a sphere's surface crosses, and those around them whose centres lie
    within the band of it (measured exactly: | |centre| - r |), none farther."""
    from partgen.data_pipeline.voxelize import voxelize_surface

    res, r = 32, 0.3
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=r)
    crossed = voxelize_surface(sphere.vertices, sphere.faces, res).coords.astype(np.int64)
    band = surface_band(crossed, sphere.vertices, sphere.faces, res, 1.0)
    assert np.array_equal(band[: len(crossed)], crossed) and len(np.unique(band, axis=0)) == len(band)
    new = band[len(crossed) :]
    distance = lambda c: np.abs(np.linalg.norm((c + 0.5) / res - 0.5, axis=1) - r) * res  # noqa: E731
    assert len(new) > 0.2 * len(crossed) and distance(new).max() <= 1.0
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    around = np.unique((crossed[:, None] + offsets).reshape(-1, 3), axis=0)
    near = around[distance(around) <= 0.8]  # the samples lie within 0.2 voxels of every surface point
    keys = lambda c: (c[:, 0] * res + c[:, 1]) * res + c[:, 2]  # noqa: E731
    assert np.isin(keys(near), keys(band)).all()
    assert np.array_equal(surface_band(crossed, sphere.vertices, sphere.faces, res, 0.0), crossed)


def test_clean_mesh_drops_specks_and_smooths_bumps():
    from partgen.eval.geometry import surface_metrics

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.4)
    rng = np.random.default_rng(0)
    bumpy = sphere.vertices * (1 + rng.normal(0, 0.02, (len(sphere.vertices), 1)))
    speck = trimesh.creation.icosphere(subdivisions=0, radius=0.01)  # 20 faces, away from the sphere
    vertices = np.concatenate([bumpy, speck.vertices + [0.0, 0.47, 0.0]])
    faces = np.concatenate([sphere.faces, speck.faces + len(bumpy)])
    v, f = clean_mesh(vertices, faces, min_component_faces=50, smooth_iterations=5)
    assert len(f) == len(sphere.faces) and np.abs(v).max() <= 0.5  # the speck is gone
    before = surface_metrics((vertices, faces), (sphere.vertices, sphere.faces), 5000)
    after = surface_metrics((v, f), (sphere.vertices, sphere.faces), 5000)
    assert after["normal_consistency"] > before["normal_consistency"] + 0.02
    assert np.abs(np.linalg.norm(v, axis=1).mean() - 0.4) < 0.01  # Taubin keeps the size
    # a part made of pieces that are all small keeps its largest; 0 turns each step off
    assert len(clean_mesh(speck.vertices, speck.faces, 50, 0)[1]) == 20
    assert np.array_equal(clean_mesh(vertices, faces, 0, 0)[1], faces)


def test_parts_are_cut_from_one_surface_without_cracks_or_holes():
    """A sphere's blocks in two halves, with single voxels of the right half's part lying on the left
    half (the specks a carried reference's labels leave): the parts are cut from one surface, so
    together they close up into the sphere; meshing each part alone drops the specks as small pieces
    and leaves holes."""
    from partgen.models.slat_vae import blocks_to_mesh

    res, r = 24, 0.3
    coords, blocks = sphere_blocks(res, 4, r)
    part = (coords[:, 0] >= res // 2).astype(np.int64)
    far_left = np.nonzero(coords[:, 0] < res // 2 - 4)[0]
    specks = far_left[:: len(far_left) // 6][:6]
    part[specks] = 1

    for share in (0.0, 0.005):  # the specks' faces kept as the right part's, or given to the left
        parts = mesh_parts(coords, blocks, part, ["left", "right"], res, 0.0, 50, 5, island_share=share)
        assert [p.name for p in parts] == ["left", "right"]
        assert [p.voxels for p in parts] == [int((part == 0).sum()), int((part == 1).sum())]
        whole = trimesh.Trimesh(*whole_mesh(parts)[:2], process=False)
        whole.merge_vertices()
        assert whole.is_watertight and whole.volume == pytest.approx(4 / 3 * np.pi * r**3, rel=0.02)
        assert (parts[1].vertices[:, 0] < -0.15).any() == (share == 0)
    alone = [clean_mesh(*blocks_to_mesh(coords[part == p], blocks[part == p], res), 50, 5) for p in (0, 1)]
    cracked = trimesh.util.concatenate([trimesh.Trimesh(v, f, process=False) for v, f in alone])
    cracked.merge_vertices()
    assert not cracked.is_watertight
    assert mesh_parts(coords[:0], blocks[:0], part[:0], ["left"], res) == []


def test_specks_of_a_part_on_another_join_it_but_its_largest_island_stays():
    sphere = trimesh.creation.icosphere(subdivisions=5)  # 20480 faces
    centre = sphere.triangles_center
    part = (centre[:, 0] > 0).astype(np.int64)  # two halves

    def near(point, radius):  # the faces within radius of the direction `point` on the unit sphere
        return np.linalg.norm(centre - np.asarray(point) / np.linalg.norm(point), axis=1) < radius

    speck = near((-0.6, 0.6, 0.5), 0.08)  # 28 faces of part 1 on part 0's half
    patch = near((-0.5, -0.5, -0.7), 0.3)  # ~460 faces: more than 0.5% of the faces
    lone = near((0.5, -0.6, 0.6), 0.06)  # part 2: one small island, its largest
    labelled = part.copy()
    labelled[speck | patch] = 1
    labelled[lone] = 2
    assert 0 < speck.sum() < 0.005 * len(part) < patch.sum()
    out = absorb_label_islands(sphere.faces, labelled)
    assert (out[speck] == 0).all() and (out[patch] == 1).all() and (out[lone] == 2).all()
    assert np.array_equal(out[~speck], labelled[~speck])
    assert np.array_equal(absorb_label_islands(sphere.faces, labelled, 0.0), labelled)
    # an island bordering no other part (a separate piece of surface) keeps its part
    apart = trimesh.creation.icosphere(subdivisions=1)
    faces = np.concatenate([sphere.faces, apart.faces + len(sphere.vertices)])
    alone = np.concatenate([labelled, np.ones(len(apart.faces), np.int64)])
    assert (absorb_label_islands(faces, alone)[len(labelled) :] == 1).all()


def test_stray_pieces_join_the_part_they_touch():
    """A part's pieces beyond its two largest join the part they touch most; a piece touching no
    other part stays, and nothing else moves."""
    coords = np.stack(np.meshgrid(np.arange(12), np.arange(12), np.arange(2), indexing="ij"), -1).reshape(-1, 3)
    part = (coords[:, 0] >= 6).astype(np.int64)  # two slabs of 144 voxels, touching at x = 5 | 6
    # three slivers of part 1 on part 0's face, apart from each other and from part 1's slab
    slivers = [(coords[:, 0] == 1) & (coords[:, 1] == y) for y in (1, 5, 9)]
    for s in slivers:
        part[s] = 1
    assert part_pieces(coords, part) == [1, 4]
    out = absorb_stray_pieces(coords, part, max_pieces=2)
    assert part_pieces(coords, out) == [1, 2]
    moved = out != part
    # the smallest-ranked slivers went back to part 0; part 1 kept its slab and one sliver
    assert moved.sum() == 2 * 2 and (out[moved] == 0).all() and (out[coords[:, 0] >= 6] == 1).all()
    assert (absorb_stray_pieces(coords, part, max_pieces=0) == part).all()
    # an island touching no other part stays where it is
    island = np.array([[30, 30, 0]])
    c2, p2 = np.concatenate([coords, island]), np.concatenate([part, [0]])
    p2[(c2[:, 0] == 1) & (c2[:, 1] == 1)] = 0  # part 0 now: its slab, the island; part 1: slab + 2 slivers
    assert part_pieces(c2, p2) == [2, 3]
    out2 = absorb_stray_pieces(c2, p2, max_pieces=1)
    assert out2[-1] == 0 and part_pieces(c2, out2) == [2, 1]


def test_mode_filter_clears_interleaved_stripes_and_keeps_real_parts():
    """Two parts whose labels alternate in one-voxel stripes over a flat face (where two authored
    surfaces overlap) come out as solid regions; a thin part (a one-voxel leg) keeps its voxels but
    the one against the top."""
    coords = np.stack(np.meshgrid(np.arange(20), np.arange(20), np.arange(1), indexing="ij"), -1).reshape(-1, 3)
    part = np.where(coords[:, 0] < 10, 0, 1)  # two halves of a top
    stripes = (coords[:, 0] < 9) & (coords[:, 1] % 4 == 2)  # one-voxel stripes of part 1 on part 0's half
    part[stripes] = 1
    leg = np.stack([np.full(8, 5), np.full(8, 5), np.arange(1, 9)], 1)  # a column below the top
    coords, part = np.concatenate([coords, leg]), np.concatenate([part, np.full(8, 2)])
    out = smooth_part_labels(coords, part, passes=2)
    assert (out[:400][stripes] == 0).all() and (out[:400][coords[:400, 0] >= 11] == 1).all()
    assert (out[401:] == 2).all() and out[400] == 0
    assert (smooth_part_labels(coords, part, passes=0) == part).all()


def test_carried_parts_are_brought_to_the_count_the_image_asks():
    """A layout carried from a reference brings its authored parts; given the count the image's
    nearest icons ask (Layout.part_count), the smallest parts join their nearest kept one, or, with
    too few, the parts are cut where the geometric cut would cut the whole surface and the pieces
    keep their part's name. No part falls into more than max_part_pieces pieces."""
    from partgen.data_pipeline.mesh_io import load_mesh
    from partgen.pipelines.layout import cube_surface_voxels

    mesh = load_mesh(EXAMPLES.parent / "table.obj")  # a top, four legs and a shelf: six pieces
    vertices, coords = cube_surface_voxels(mesh.vertices, mesh.faces, 64)
    generator = PartGenerator.from_folder(parts="geometric", steps=1)
    whole = (np.zeros(len(mesh.faces), np.int64), ["table"])
    part, names = generator.assign_parts(coords, vertices, mesh.faces, given=whole)
    assert names == ["table"] and (part == 0).all()  # no count: the reference's parts stand
    part, names = generator.assign_parts(coords, vertices, mesh.faces, given=whole, count=4)
    assert names == ["table", "table_2", "table_3", "table_4"]
    sizes = np.bincount(part, minlength=4)
    assert len(sizes) == 4 and sizes.min() > 0.03 * len(part), sizes
    assert max(part_pieces(coords, part)) <= 2
    # five slabs across x, the middle one widest: to two, the two largest stay and take the rest
    fine_vertices, fine_faces = trimesh.remesh.subdivide_to_size(vertices, mesh.faces, 0.03)
    slabs = np.digitize(fine_vertices[fine_faces].mean(1)[:, 0], [-0.35, -0.2, 0.2, 0.35])
    given = (slabs, ["a", "b", "middle", "d", "e"])
    _, five = generator.assign_parts(coords, fine_vertices, fine_faces, given=given)
    part, two = generator.assign_parts(coords, fine_vertices, fine_faces, given=given, count=2)
    assert len(five) == 5 and len(two) == 2 and "middle" in two and len(np.unique(part)) == 2
    assert len(generator.assign_parts(coords, vertices, mesh.faces, given=whole, count=20)[1]) <= generator.max_parts
