"""The segmentation pipeline with a tiny untrained PointSegmenter saved as partgen-train saves it:
checkpoint resolution (EMA preferred), per-face and per-point labels, partgen-segment's outputs
and its one-line refusals, and the learned annotator hook."""

import json

import numpy as np
import pytest
import torch
import trimesh
from hydra import compose, initialize_config_module
from safetensors.torch import save_file

import partgen.pipelines.segment as segment
from conftest import REPO_ROOT, assert_python_defaults
from partgen.cli import run_segment
from partgen.data_pipeline.parts import learned_face_parts
from partgen.data_pipeline.taxonomy import CLASSES
from partgen.eval.rand_index import rand_index_error
from partgen.models.io import save_model
from partgen.pipelines.segment import Segmenter, read_shape, resolve_checkpoint

MODEL = {
    "_target_": "partgen.models.point_transformer.PointSegmenter",
    "backbone": {
        "_target_": "partgen.models.point_transformer.PointTransformerSeg",
        "_partial_": True,
        "widths": [16, 32],
        "encoder_blocks": [1, 1],
        "decoder_blocks": [1, 1],
        "neighbours": [8, 8],
    },
    "num_classes": len(CLASSES),
    "embed_dim": 8,
    "use_normals": True,
}
FAST = {"num_samples": 1500, "points_per_pass": 500}  # small enough for a test, several passes per shape


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A run folder as partgen-train leaves it: checkpoints/step_*/ (model + EMA weights, trainer.json)."""
    from hydra.utils import instantiate

    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = instantiate(MODEL)
    for step in (10, 20):
        folder = run / "checkpoints" / f"step_{step:07d}"
        save_model(folder, model, MODEL)
        ema = {k: v.clone() for k, v in model.state_dict().items()}
        ema["classifier.3.bias"] = torch.full_like(ema["classifier.3.bias"], float(step))  # marks the EMA weights
        save_file(ema, str(folder / "ema.safetensors"))
        (folder / "trainer.json").write_text(json.dumps({"step": step, "config": {"task": {"num_points": 700}}}))
    return run


def two_boxes() -> trimesh.Trimesh:
    """A slab on a post: 24 faces, two obvious pieces."""
    top = trimesh.creation.box((1.0, 0.2, 1.0))
    post = trimesh.creation.box((0.2, 1.0, 0.2))
    post.apply_translation((0.0, -0.6, 0.0))
    return trimesh.util.concatenate([top, post])


def config(tmp_path, input, checkpoint, **extra):
    """conf/segment.yaml as partgen-segment composes it, with these overrides."""
    overrides = {"input": input, "output": tmp_path / "out", "checkpoint": checkpoint} | FAST | extra
    return compose_segment([f"{k}={v}" for k, v in overrides.items()])


def main(cfg):
    return run_segment(cfg)


def test_python_defaults_are_the_segment_config(tmp_path):
    """conf/segment.yaml is the one source of the segmenter's defaults: the CLI builds the Segmenter
    from its `pipeline:` node and the Python API states the same values."""
    cfg = compose_segment(["input=x.obj", "output=out"])
    assert cfg.pipeline._target_ == "partgen.pipelines.segment.Segmenter.from_checkpoint"
    assert_python_defaults(cfg.pipeline, Segmenter.from_checkpoint, Segmenter)


def compose_segment(overrides):
    with initialize_config_module(config_module="partgen.conf", version_base="1.3"):
        return compose(config_name="segment", overrides=overrides)


def test_checkpoints_resolve_to_the_newest_step_with_ema_weights(checkpoint, tmp_path, monkeypatch):
    newest = checkpoint / "checkpoints" / "step_0000020"
    assert resolve_checkpoint(checkpoint) == newest
    assert resolve_checkpoint(checkpoint / "checkpoints") == newest
    assert resolve_checkpoint(newest) == newest
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu")
    assert float(seg.model.classifier[3].bias[0]) == 20.0  # EMA weights, not the raw ones
    assert seg.points_per_pass == 700  # the training run's task.num_points (trainer.json)
    assert not seg.model.training
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nowhere")
    monkeypatch.setattr(segment, "BUNDLED", tmp_path / "assets" / "segmenter")
    with pytest.raises(FileNotFoundError, match="partgen-train experiment=segment_parts"):
        Segmenter.from_checkpoint(None)


def test_segment_mesh_gives_one_label_per_face_and_names(checkpoint):
    mesh = two_boxes()
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu", **FAST)
    labels, names = seg.segment_mesh(mesh.vertices, mesh.faces, num_parts=2)
    assert labels.shape == (len(mesh.faces),) and labels.dtype == np.int64
    assert sorted(set(labels.tolist())) == list(range(len(names))) and 1 <= len(names) <= 2
    assert len(set(names)) == len(names)
    assert all(name.split("_")[0] in CLASSES for name in names)
    again, _ = seg.segment_mesh(mesh.vertices, mesh.faces, num_parts=2)
    assert np.array_equal(labels, again)  # deterministic
    # the same mesh anywhere in space, at any scale: the same labels (it is normalised first)
    moved, _ = seg.segment_mesh(mesh.vertices * 7.0 + 3.0, mesh.faces, num_parts=2)
    assert np.array_equal(labels, moved)
    # one class per part instead of clustering
    seg.parts_from = "semantic"
    labels, names = seg.segment_mesh(mesh.vertices, mesh.faces)
    assert set(names) <= set(CLASSES) and labels.max() + 1 == len(names)


def test_segment_points_labels_every_point(checkpoint):
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu", **FAST)
    points = two_boxes().sample(2000, seed=0)  # more points than num_samples: the rest follow their neighbours
    out = seg.segment_points(points, num_parts=3)  # no normals: estimated
    assert out["semantic"].shape == (2000,) and out["parts"].shape == (2000,)
    assert out["embedding"].shape == (2000, 8)
    assert out["parts"].max() + 1 == len(out["names"]) <= 3
    assert out["semantic"].min() >= 0 and out["semantic"].max() < len(CLASSES)


def test_main_writes_the_outputs(checkpoint, tmp_path, capsys):
    mesh = two_boxes()
    mesh.export(tmp_path / "chair.obj")
    assert main(config(tmp_path, tmp_path / "chair.obj", checkpoint, num_parts=2)) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["faces.npy", "labels.json", "parts.glb", "parts.ply"]
    labels = json.loads((out / "labels.json").read_text())
    faces = np.load(out / "faces.npy")
    assert labels["kind"] == "mesh" and labels["num_faces"] == len(mesh.faces) == len(faces)
    assert len(labels["semantic"]) == len(labels["part"]) == len(mesh.faces)
    assert set(labels["semantic"]) <= set(CLASSES)
    assert faces[:, 0].tolist() == labels["part"]
    assert [CLASSES[c] for c in faces[:, 1]] == labels["semantic"]
    names = [p["name"] for p in labels["parts"]]
    assert sum(p["faces"] for p in labels["parts"]) == len(mesh.faces)
    scene = trimesh.load(out / "parts.glb")
    assert sorted(scene.graph.nodes_geometry) == sorted(names)
    coloured = trimesh.load(out / "parts.ply", process=False)
    assert len(coloured.faces) == len(mesh.faces)
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("partgen-segment: chair.obj (24 faces) ->") and "\n" not in printed
    # a second run into the same, now full, folder refuses rather than mixing outputs
    assert main(config(tmp_path, tmp_path / "chair.obj", checkpoint)) == 1
    assert "exists" in capsys.readouterr().err
    assert main(config(tmp_path, tmp_path / "chair.obj", checkpoint, overwrite=True)) == 0


def test_main_on_bad_input_says_one_line_and_leaves_nothing(checkpoint, tmp_path, capsys):
    corrupt = tmp_path / "broken.ply"
    corrupt.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_hea")
    empty_cloud = tmp_path / "empty.xyz"
    empty_cloud.write_text("# no points\n")
    nan_cloud = tmp_path / "nan.xyz"
    np.savetxt(nan_cloud, np.full((20, 3), np.nan))
    garbage = tmp_path / "garbage.obj"
    garbage.write_bytes(b"v 0 0 0\nf 1 2 3\n\x00\xff not an obj")
    for bad in (corrupt, empty_cloud, nan_cloud, garbage, tmp_path / "missing.obj", tmp_path / "mesh.fbx"):
        assert main(config(tmp_path, bad, checkpoint)) == 1, bad
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("partgen-segment: "), err
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))) == []
    two_boxes().export(tmp_path / "good.obj")
    assert main(config(tmp_path, tmp_path / "good.obj", tmp_path / "no-checkpoint")) == 1
    assert "partgen-train" in capsys.readouterr().err


def test_a_cloud_ply_gets_per_point_labels(checkpoint, tmp_path):
    points = two_boxes().sample(900, seed=1)
    trimesh.PointCloud(points).export(tmp_path / "scan.ply")
    shape = read_shape(tmp_path / "scan.ply")
    assert shape.faces is None and shape.vertices.shape == (900, 3)
    assert main(config(tmp_path, tmp_path / "scan.ply", checkpoint, num_parts=2)) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "parts.glb", "parts.ply", "points.npy"]
    labels = json.loads((out / "labels.json").read_text())
    assert labels["kind"] == "points" and labels["num_points"] == 900
    assert np.load(out / "points.npy").shape == (900, 2)
    assert len(trimesh.load(out / "parts.ply").vertices) == 900


def test_the_learned_annotator_hook(checkpoint):
    mesh = two_boxes()
    labels, names = learned_face_parts(mesh.vertices, mesh.faces, 2, checkpoint=str(checkpoint))
    labels = np.asarray(labels)
    assert labels.shape == (len(mesh.faces),) and labels.max() + 1 == len(names) <= 2


def test_faces_vote_by_majority_and_unsampled_faces_take_the_nearest_sample(checkpoint):
    votes_face = np.array([0, 0, 0, 2, 2, 2, 2])
    votes_label = np.array([1, 1, 0, 3, 4, 4, 3])
    assert segment._majority(votes_face, votes_label, 4).tolist() == [1, -1, 3, -1]  # a tie: the smaller label
    mesh = two_boxes()
    # a zero-area face draws no sample: it takes the label of the sample nearest to it
    faces = np.concatenate([mesh.faces, [[0, 0, 1]]])
    seg = Segmenter.from_checkpoint(checkpoint, device="cpu", **FAST).label_mesh(mesh.vertices, faces, num_parts=2)
    assert seg.part.shape == seg.semantic.shape == (len(faces),)
    assert seg.part.min() >= 0 and seg.semantic.min() >= 0
    assert len(seg.names) == len(seg.part_class) == seg.part.max() + 1


def test_mesh_parts_graph_keeps_parts_connected_and_cluster_is_the_alternative(checkpoint):
    mesh = two_boxes()
    top = np.arange(len(mesh.faces)) < 12  # the slab's faces come first (two_boxes)
    graph = Segmenter.from_checkpoint(checkpoint, device="cpu", **FAST)
    assert graph.mesh_parts == "graph"
    seg = graph.label_mesh(mesh.vertices, mesh.faces, num_parts=2)
    # the slab and the post are separate pieces: the face graph keeps each whole, whatever the weights
    assert len(np.unique(seg.part[top])) == 1 and len(np.unique(seg.part[~top])) == 1
    assert seg.part[top][0] != seg.part[~top][0]
    cluster = Segmenter.from_checkpoint(checkpoint, device="cpu", mesh_parts="cluster", **FAST)
    seg = cluster.label_mesh(mesh.vertices, mesh.faces, num_parts=2)
    assert seg.part.shape == (len(mesh.faces),) and seg.part.max() + 1 == len(seg.names) <= 2
    with pytest.raises(ValueError, match="mesh_parts"):
        Segmenter.from_checkpoint(checkpoint, device="cpu", mesh_parts="magic")
    labels, _ = learned_face_parts(mesh.vertices, mesh.faces, 2, checkpoint=str(checkpoint), mesh_parts="cluster")
    assert np.asarray(labels).shape == (len(mesh.faces),)


def test_the_bundled_segmenter_ships_loads_and_cuts_a_mesh():
    folder = segment.resolve_checkpoint(None)
    assert folder == segment.BUNDLED
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert {"model.safetensors", "model.yaml"} <= set(files) and sum(files.values()) < 10 * 2**20
    seg = Segmenter.from_checkpoint(None, device="cpu")
    assert seg.points_per_pass == 2048  # the density it was trained at (its run's config beside the weights)
    mesh = two_boxes()
    labels, names = learned_face_parts(mesh.vertices, mesh.faces, 2)  # parts.method=learned's default
    labels = np.asarray(labels)
    assert labels.shape == (len(mesh.faces),) and len(names) == 2 and len(np.unique(labels)) == 2


def test_the_bundled_boundary_model_carries_the_mesh_cut(checkpoint):
    import sys

    sys.path.insert(0, str(REPO_ROOT / "tests" / "data_pipeline"))
    from test_geometric import dumbbell

    from partgen.models.boundary_net import BoundaryNet

    assert (segment.BUNDLED_BOUNDARY / "model.yaml").is_file()
    with_boundary = Segmenter.from_checkpoint(checkpoint, device="cpu", **FAST)
    assert isinstance(with_boundary.boundary, BoundaryNet) and "boundary" in with_boundary.source
    without = Segmenter.from_checkpoint(checkpoint, device="cpu", boundary=None, **FAST)
    assert without.boundary is None
    vertices, faces, truth = dumbbell()
    # the tiny untrained point model's embedding stays out of the cut: the boundary model alone
    # finds the drums and the neck (given the count; choosing it, it may split a drum's cap off too)
    seg = with_boundary.label_mesh(vertices, faces, num_parts=3)
    assert rand_index_error(seg.part, [truth]) < 0.03
    auto = with_boundary.label_mesh(vertices, faces).part
    assert 3 <= len(np.unique(auto)) <= 8
    for part in np.unique(auto):  # the neck is cut off at both creases; no part crosses them
        assert len(np.unique(truth[auto == part])) == 1
