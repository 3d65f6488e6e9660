"""SLatTask on fake records made by the real pipeline functions (sphere meshes voxelised, sub-grid
signed distances by block_sdf): items, a falling loss, validation with meshes, clear record errors."""

import json

import numpy as np
import pytest
import torch
import trimesh

from partgen.data_pipeline.datasets import BlockRecords, RecordError
from partgen.data_pipeline.samples import block_sdf
from partgen.data_pipeline.voxelize import voxelize_surface
from partgen.models.slat_vae import SLatVAE
from partgen.train.tasks.slat import SLatTask

RES, SUB = 12, 2


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def write_ball(out, key, radius, blocks=True):
    rec = out / "records" / key
    rec.mkdir(parents=True)
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    v, f = mesh.vertices, mesh.faces
    coords = voxelize_surface(v, f, RES).coords
    part = (coords[:, 0] >= RES // 2).astype(np.int16)
    np.savez(rec / "voxels.npz", coords=coords.astype(np.int16), part=part)
    counts = {"voxels": len(coords)}
    if blocks:
        np.savez(rec / "sdf_blocks.npz", values=block_sdf(v, f, coords, RES, SUB).astype(np.float16), subdiv=SUB)
    np.savez(rec / "mesh.npz", vertices=v.astype(np.float32), faces=f.astype(np.int32))
    np.savez(
        rec / "samples.npz", points=v.astype(np.float32), normals=v.astype(np.float32), part=np.zeros(len(v), np.int16)
    )
    meta = {
        "key": key,
        "library": "default",
        "resolution": RES,
        "parts": {"names": ["a", "b"]},
        "counts": counts,
    }
    (rec / "meta.json").write_text(json.dumps(meta))
    return {"key": key, "status": "ok", "reason": "", "record": f"records/{key}"}


@pytest.fixture
def records(tmp_path):
    rows = [write_ball(tmp_path, f"default-{i:04d}-ball", 0.25 + 0.04 * i) for i in range(6)]
    (tmp_path / "manifest-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_items_training_and_validation_with_meshes(records):
    voxels, key = BlockRecords(records, split="all")[0]
    assert voxels.feats.shape[1] == (SUB + 1) ** 3 and voxels.resolution == RES and voxels.part is not None
    task = SLatTask(records, val_fraction=0.3, eval_mesh_shapes=1, compare_points=2000)
    torch.manual_seed(0)
    model = SLatVAE(subdiv=SUB, latent_channels=4, width=32, heads=4, encoder_depth=1, decoder_depth=1, window_size=4)
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    ds = task.train_dataset()
    losses = []
    for step in range(50):
        batch = task.collate([ds[(2 * step + i) % len(ds)] for i in range(2)])
        loss, logs = task.training_step(model, batch)
        assert set(logs) == {"l1", "kl", "sign_accuracy"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["l1"])
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    metrics = task.evaluate(model.eval())
    assert 0.5 < metrics["sign_accuracy"] <= 1.0 and metrics["l1"] < 1.0
    assert {"chamfer", "f_score_0.01"} <= set(metrics) and metrics["chamfer"] < 0.1


def test_missing_blocks_and_voxel_caps(records, tmp_path):
    row = write_ball(tmp_path / "other", "default-0100-ball", 0.3, blocks=False)
    (tmp_path / "other" / "manifest-00000-of-00001.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=r"default-0100-ball: sdf_blocks.npz is missing \(annotate with block_subdiv"):
        BlockRecords(tmp_path / "other", split="all")[0]
    assert len(BlockRecords(records, split="all", max_voxels=1)) == 0
