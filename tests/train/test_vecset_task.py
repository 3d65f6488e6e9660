"""VecSetTask and ShapeRecords on tiny fake records (spheres of different radii): items and splits,
a shell target for open sheets, a loss that falls, bounded validation metrics, clear record errors."""

import json

import numpy as np
import pytest
import torch

from conftest import write_sphere
from partgen.data_pipeline.datasets import RecordError, ShapeRecords
from partgen.models.vecset_vae import VecSetVAE
from partgen.train.tasks.vecset import VecSetTask


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def records(tmp_path):
    rows = [write_sphere(tmp_path, f"default-{i:04d}-ball", 0.2 + 0.03 * i, i) for i in range(8)]
    (tmp_path / "manifest-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_items_hold_surface_points_and_balanced_queries(records):
    ds = ShapeRecords(records, split="all", num_points=256, num_queries=100, near_fraction=0.25)
    item = ds[0]
    assert item["points"].shape == item["normals"].shape == (256, 3) and item["sharp"].dtype == torch.bool
    assert item["queries"].shape == (100, 3) and item["sdf"].shape == (100,)
    near = (item["sdf"].abs() < 0.1).sum()  # the near queries lie within a few sigma of the surface
    assert 20 <= int(near) <= 60
    val = ShapeRecords(records, split="val", val_fraction=0.5, num_points=256)
    assert torch.equal(val[0]["queries"], val[0]["queries"])  # fixed subsets outside training
    assert set(val.keys).isdisjoint(ShapeRecords(records, split="train", val_fraction=0.5).keys)


def test_missing_volume_samples_name_the_record_and_the_fix(tmp_path):
    row = write_sphere(tmp_path, "default-0000-ball", 0.3, 0, volume=False)
    (tmp_path / "manifest-00000-of-00001.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=r"default-0000-ball.*volume.npz is missing \(annotate with num_volume"):
        ShapeRecords(tmp_path, split="all")[0]


def test_the_shell_target_keeps_open_sheets():
    task = VecSetTask("unused", shell=0.01)
    sdf = torch.tensor([-0.2, 0.005, 0.02])  # inside, on an open sheet (never "inside"), outside
    assert task.target(sdf).tolist() == [1.0, 1.0, 0.0]


def test_training_lowers_the_loss_and_evaluation_is_bounded(records):
    task = VecSetTask(records, num_points=256, num_queries=256, val_fraction=0.25, eval_queries=400, eval_batch_size=2)
    torch.manual_seed(0)
    model = VecSetVAE(num_latents=16, latent_channels=4, width=32, heads=4, decoder_depth=1, num_freqs=6)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    ds = task.train_dataset()
    losses = []
    for step in range(80):
        batch = task.collate([ds[(2 * step + i) % len(ds)] for i in range(2)])
        loss, logs = task.training_step(model, batch)
        assert torch.isfinite(loss) and set(logs) == {"loss/recon", "kl", "accuracy"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(logs["loss/recon"]))
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:4])  # 0.69 (chance) -> below 0.41
    metrics = task.evaluate(model.eval())
    assert set(metrics) == {"iou", "iou_near", "loss/recon"}
    assert 0.3 < metrics["iou"] <= 1.0 and 0.0 <= metrics["iou_near"] <= 1.0


def test_augmented_training_items_are_symmetries_of_the_square_about_y(records):
    from partgen.data_pipeline.datasets import square_symmetry

    turns = [square_symmetry(i) for i in range(8)]
    for turn in turns:  # orthogonal, y kept, all 8 distinct
        assert np.allclose(turn @ turn.T, np.eye(3)) and np.allclose(turn[:, 1], [0, 1, 0])
    assert len({turn.round().astype(int).tobytes() for turn in turns}) == 8
    train = ShapeRecords(records, split="train", val_fraction=0.0, num_points=600, augment=True)
    raw = train.load(0)
    seen = set()
    for _ in range(24):
        item = train[0]  # all 600 points in record order, turned by one symmetry
        match = [i for i, t in enumerate(turns) if np.allclose(item["points"].numpy(), raw["points"] @ t.T, atol=1e-6)]
        assert len(match) == 1 and np.allclose(item["normals"].numpy(), raw["normals"] @ turns[match[0]].T, atol=1e-6)
        seen.add(match[0])
    assert len(seen) >= 4
    val = ShapeRecords(records, split="all", num_points=600, augment=True)  # not training: never turned
    assert np.allclose(val[0]["points"].numpy(), val.load(0)["points"])
