"""PartDiTTask on fake records made by the real pipeline functions (spheres voxelised, sub-grid signed
distances, an icon rendered with a known camera): items and cameras, latent statistics, a falling
loss, the three validation losses, clear record errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_slat_task import SUB, write_ball

from partgen.data_pipeline.datasets import RecordError
from partgen.data_pipeline.render import orbit_cameras, render
from partgen.models.image_encoder import ViTEncoder
from partgen.models.io import save_model
from partgen.models.part_dit import PartDiT, part_image_groups
from partgen.models.slat_vae import SLatVAE
from partgen.train.tasks.part_dit import PartDiTTask

SLAT = {"_target_": "partgen.models.slat_vae.SLatVAE", "subdiv": SUB, "latent_channels": 4, "width": 16,
        "heads": 2, "encoder_depth": 1, "decoder_depth": 1, "window_size": 4, "pos_channels": 4}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def write_icon(record, size=32):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    camera = orbit_cameras(1, size=size)[0]
    rgb = render(mesh.vertices, mesh.faces, camera)["rgb"]
    (record / "icon").mkdir()
    Image.fromarray(rgb).save(record / "icon" / "icon.png")
    (record / "icon" / "camera.json").write_text(json.dumps(camera.to_dict()))
    return camera


@pytest.fixture
def records(tmp_path):
    rows = [write_ball(tmp_path / "data", f"default-{i:04d}-ball", 0.25 + 0.04 * i) for i in range(6)]
    for row in rows:
        write_icon(tmp_path / "data" / row["record"])
    (tmp_path / "data" / "manifest-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    save_model(tmp_path / "slat", SLatVAE(**{k: v for k, v in SLAT.items() if k != "_target_"}), SLAT)
    return tmp_path


def tiny_dit(**kw):
    encoder = ViTEncoder(image_size=32, patch_size=8, width=16, depth=1, heads=2)
    return PartDiT(in_channels=4, width=32, depth=2, heads=2, num_part_embeddings=4, image_encoder=encoder, **kw)


def test_items_cameras_and_statistics(records):
    task = PartDiTTask(records / "data", records / "slat", image_size=32, val_fraction=0.3, max_voxels=None)
    train = task.train_dataset()
    item = train[0]
    assert item["voxels"].feats.shape == (len(item["voxels"]), 4) and item["image"].shape == (3, 32, 32)
    assert item["camera"].shape == (3, 4)
    # the camera puts the ball's voxels onto the icon: every voxel projects inside the image
    centres = item["voxels"].centers()
    h = centres @ item["camera"][:, :3].T + item["camera"][:, 3]
    uv = h[:, :2] / h[:, 2:]
    assert bool((h[:, 2] > 0).all()) and bool(((uv > 0) & (uv < 1)).all())
    # the two halves of the ball see different patches of the icon
    batch = task.collate([item])
    model = tiny_dit()
    ctx = model.encode_images(batch["images"])
    groups = part_image_groups(batch["voxels"], batch["voxels"].part_groups(), ctx[1], batch["cameras"], 4)
    cu = groups.cu_seqlens.tolist()
    seen = [set(groups.perm[cu[g] : cu[g + 1]].tolist()) for g in range(2)]
    assert seen[0] != seen[1] and all(0 < len(s) < 16 for s in seen)
    # fresh posterior samples in training
    assert not torch.equal(train[0]["voxels"].feats, train[0]["voxels"].feats)
    task.prepare(model)
    z = torch.cat([train[i]["voxels"].feats for i in range(len(train))])
    assert 0.7 < float(model.standardise(z).std()) < 1.3
    with pytest.raises(ValueError, match="in_channels"):
        task.prepare(PartDiT(in_channels=3, width=32, depth=1, heads=2, image_encoder=ViTEncoder(32, 8, 16, 1, 2)))


def test_loss_falls_and_validation_reports_three_losses(records):
    task = PartDiTTask(records / "data", records / "slat", image_size=32, val_fraction=0.3, max_voxels=None)
    torch.manual_seed(0)
    model = tiny_dit()
    task.prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = task.collate([task.train_dataset()[i] for i in range(2)])
    t = torch.tensor([0.3, 0.7])
    noise = torch.randn(batch["voxels"].feats.shape)
    drop = torch.zeros(2, dtype=torch.bool)
    loss, logs = task.training_step(model, batch)  # random t, noise and drops
    assert loss.requires_grad and 0.0 <= logs["dropped"] <= 1.0
    first = task._loss(model, batch, t, noise, drop).item()
    for _ in range(60):  # fit fixed times and noise: the velocity the image and parts determine
        loss = task._loss(model, batch, t, noise, drop)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert task._loss(model, batch, t, noise, drop).item() < 0.5 * first
    metrics = task.evaluate(model.eval())
    assert set(metrics) == {"loss", "loss_null", "loss_global"} and all(np.isfinite(list(metrics.values())))
    assert metrics["loss_global"] != metrics["loss"]  # the same weights, another attention scope


def test_record_errors_name_the_record(records):
    (records / "data" / "records" / "default-0000-ball" / "icon" / "icon.png").write_bytes(b"")
    task = PartDiTTask(records / "data", records / "slat", image_size=32, val_fraction=0.0, max_voxels=None)
    with pytest.raises(RecordError, match="default-0000-ball.*icon"):
        task.train_dataset()
    with pytest.raises(FileNotFoundError, match="slat_vae"):
        PartDiTTask(records / "data", records / "nothing", image_size=32).train_dataset()
