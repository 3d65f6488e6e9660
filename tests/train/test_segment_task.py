"""SegmentTask on tiny fake records: datasets and splits, a finite loss with gradients, a loss that
falls under a few dozen optimiser steps, bounded validation metrics, and the adjusted Rand index."""

import functools
import json

import numpy as np
import pytest
import torch

from partgen.data_pipeline.datasets import split_of
from partgen.data_pipeline.taxonomy import CLASSES, NUM_CLASSES
from partgen.models.point_transformer import PointSegmenter, PointTransformerSeg
from partgen.train.tasks.segment import SegmentTask

NAMES = ("Seat", "Pied_1", "Cube.001")  # seat, leg, unclassed
SAMPLES = 192


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine


def synthetic_shape(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A box split into three slabs along y (part 0 on top): points (S, 3) and part ids (S,)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.5, 0.5, (SAMPLES, 3)).astype(np.float32)
    points[:, 0] *= 0.4 + 0.2 * seed  # shapes differ in proportions
    part = np.digitize(-points[:, 1], [-1 / 6, 1 / 6]).astype(np.int16)  # top, middle, bottom
    return points, part


def write_record(out, key, seed, names=NAMES):
    rec = out / "records" / key
    rec.mkdir(parents=True)
    points, part = synthetic_shape(seed)
    rng = np.random.default_rng(seed + 100)
    normals = rng.normal(size=points.shape)
    normals = (normals / np.linalg.norm(normals, axis=1, keepdims=True)).astype(np.float32)
    with open(rec / "samples.npz", "wb") as f:
        np.savez(f, points=points, normals=normals, part=part, sharp=np.zeros(len(points), bool))
    source = f"/cache/sweethome3d/libraries/default/models/{key}.obj"
    meta = {"key": key, "source": source, "library": "default", "parts": {"names": list(names), "flags": []}}
    (rec / "meta.json").write_text(json.dumps(meta))
    return {"key": key, "source": source, "status": "ok", "reason": "", "record": f"records/{key}"}


def keys_for(val_fraction: float, train: int, val: int) -> list[str]:
    """The first asset keys whose hash split gives `train` train and `val` val keys."""
    picked = {"train": [], "val": []}
    i = 0
    while len(picked["train"]) < train or len(picked["val"]) < val:
        key = f"default-{i:04d}-shape"
        split = split_of(key, val_fraction, seed=0)
        if len(picked[split]) < (train if split == "train" else val):
            picked[split].append(key)
        i += 1
    return picked["train"] + picked["val"]


@pytest.fixture
def records(tmp_path):
    out = tmp_path / "ann"
    rows = [write_record(out, key, seed=i) for i, key in enumerate(keys_for(0.5, train=2, val=1))]
    # a one-part shape with an unclassed name: no signal for any loss, left out of both splits
    rows.append(write_record(out, "default-9999-blob", seed=9, names=("Cube.002",)))
    (out / "manifest-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def tiny_model(seed=0) -> PointSegmenter:
    torch.manual_seed(seed)
    backbone = functools.partial(
        PointTransformerSeg,
        widths=(16, 32),
        encoder_blocks=(1, 1),
        decoder_blocks=(1, 1),
        neighbours=(8, 8),
        norm="layer",
    )
    return PointSegmenter(backbone, num_classes=NUM_CLASSES, embed_dim=8, use_normals=True)


def make_task(records, mode="both", **extra) -> SegmentTask:
    options = dict(mode=mode, num_points=SAMPLES, val_fraction=0.5, augment=False, eval_max_shapes=4)
    return SegmentTask(str(records), **{**options, **extra})


def test_datasets_split_and_skip_shapes_without_signal(records):
    task = make_task(records)
    train, val = task.train_dataset(), task.val_dataset()
    assert len(train) == 2 and len(val) == 1
    keys = {train[i]["key"] for i in range(2)}
    assert val[0]["key"] not in keys and "default-9999-blob" not in keys
    batch = task.collate([train[0], train[1]])
    assert batch.points.feats.shape == (2 * SAMPLES, 0)  # xyz and normals reach the model as coords/normals
    assert batch.points.normals.shape == (2 * SAMPLES, 3) and batch.points.part.shape == (2 * SAMPLES,)
    assert batch.semantic.shape == (2 * SAMPLES,)
    assert len(make_task(records, limit=1).train_dataset()) == 1
    with pytest.raises(FileNotFoundError, match="partgen-annotate"):
        SegmentTask(str(records / "missing"), mode="both", num_points=64, val_fraction=0.5).train_dataset()
    with pytest.raises(ValueError, match="mode"):
        SegmentTask(str(records), mode="instances", num_points=64, val_fraction=0.5)


@pytest.mark.parametrize("mode", ["semantic", "parts", "both"])
def test_training_step_gives_a_finite_loss_with_gradients(records, mode):
    task = make_task(records, mode)
    ds = task.train_dataset()
    model = tiny_model().train()
    loss, logs = task.training_step(model, task.collate([ds[0], ds[1]]))
    assert loss.dim() == 0 and bool(torch.isfinite(loss))
    assert ("loss/semantic" in logs) == (mode != "parts") and ("loss/contrastive" in logs) == (mode != "semantic")
    assert all(isinstance(v, float) and np.isfinite(v) for v in logs.values())
    loss.backward()
    # every parameter joins the graph, the other head's too (DDP waits for every gradient)
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    head = model.classifier if mode != "parts" else model.embedder
    assert any(float(p.grad.abs().max()) > 0 for p in head.parameters())
    assert any(float(p.grad.abs().max()) > 0 for p in model.backbone.parameters())


def test_a_few_dozen_steps_reduce_the_loss(records):
    task = make_task(records, "both")
    ds = task.train_dataset()
    batch = task.collate([ds[0], ds[1]])
    model = tiny_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    logs = []
    for _ in range(40):
        loss, log = task.training_step(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        logs.append(log)
    # the contrastive loss has a floor near log(|positives|) ~ log(64): it falls less than the cross-entropy
    assert logs[-1]["loss/semantic"] < 0.5 * logs[0]["loss/semantic"]
    assert logs[-1]["loss/contrastive"] < logs[0]["loss/contrastive"] - 0.3
    # and the held-out shape (other proportions) is segmented well
    assert task.evaluate(model)["miou"] > 0.6


def test_evaluate_reports_bounded_metrics_and_restores_the_mode(records):
    task = make_task(records, "both")
    model = tiny_model().train()
    logs = task.evaluate(model)
    assert model.training  # evaluate puts the model back as it found it
    for key in ("miou", "accuracy", "ari", "rand_index_error"):
        assert key in logs and np.isfinite(logs[key])
    for key in ("miou", "accuracy", "rand_index_error"):
        assert 0.0 <= logs[key] <= 1.0
    assert -1.0 <= logs["ari"] <= 1.0
    # per-class IoU of the classes the val points hold (seat, leg; the unclassed slab is ignored)
    assert {k for k in logs if k.startswith("iou/")} == {"iou/seat", "iou/leg"}
    assert logs["miou"] == pytest.approx((logs["iou/seat"] + logs["iou/leg"]) / 2)
    assert set(make_task(records, "semantic").evaluate(model)) == {"miou", "accuracy", "iou/seat", "iou/leg"}
    assert set(make_task(records, "parts").evaluate(model)) == {"ari", "rand_index_error"}
    assert make_task(records, eval_max_shapes=0).evaluate(model) == {}
    assert set(CLASSES) >= {"seat", "leg"}


@pytest.mark.parametrize("experiment", ["segment_semantic", "segment_parts"])
def test_the_experiments_train_under_debug_tiny_and_serve_the_segmenter(records, tmp_path, experiment):
    from hydra import compose, initialize_config_module

    from partgen.pipelines.segment import Segmenter
    from partgen.train.run import run

    overrides = [
        f"experiment={experiment}",
        "debug=tiny",
        f"task.records={records}",
        "task.val_fraction=0.5",
        f"trainer.run_dir={tmp_path / 'run'}",
        "trainer.device=cpu",
        "trainer.num_workers=0",
        "trainer.progress=false",
        "trainer.tensorboard=false",
    ]
    with initialize_config_module(config_module="partgen.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    summary = run(cfg)
    assert summary["step"] == cfg.trainer.max_steps
    assert 0.0 <= summary["eval"]["miou"] <= 1.0
    assert ("ari" in summary["eval"]) == (experiment == "segment_parts")
    seg = Segmenter.from_checkpoint(tmp_path / "run", device="cpu", num_samples=600)
    assert seg.points_per_pass == cfg.size.num_points  # read back from the run's trainer.json
    labels, names = seg.segment_mesh(*synthetic_mesh(), num_parts=2)
    assert labels.shape == (12,) and labels.max() + 1 == len(names)


def synthetic_mesh() -> tuple[np.ndarray, np.ndarray]:
    """A unit cube: 8 vertices, 12 triangles."""
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    f = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1]]
    f += [[2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    return v, np.array(f)
