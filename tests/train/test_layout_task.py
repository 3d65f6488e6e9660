"""LayoutFlowTask on fake sphere records with icons and a tiny saved VAE: latents and images are
paired once, prepare() sets the latent statistics before training, the loss falls, validation
reports the loss with and without the image, clear errors for records and checkpoints."""

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from conftest import write_sphere
from partgen.data_pipeline.datasets import RecordError
from partgen.models.io import save_model
from partgen.train.tasks.layout import LayoutFlowTask

VAE = {
    "_target_": "partgen.models.vecset_vae.VecSetVAE",
    "num_latents": 8,
    "latent_channels": 4,
    "width": 32,
    "heads": 4,
    "decoder_depth": 1,
    "num_freqs": 4,
}
FLOW = {
    "_target_": "partgen.models.layout_flow.LayoutFlow",
    "latent_channels": 4,
    "width": 32,
    "depth": 2,
    "heads": 4,
    "freq_channels": 32,
    "image_encoder": {
        "_target_": "partgen.models.image_encoder.ViTEncoder",
        "image_size": 32,
        "patch_size": 8,
        "width": 32,
        "depth": 1,
        "heads": 4,
    },
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def setup(tmp_path):
    rows = [write_sphere(tmp_path, f"default-{i:04d}-ball", 0.15 + 0.04 * i, i, icon=True) for i in range(8)]
    (tmp_path / "manifest-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    vae = instantiate(VAE)
    with (
        torch.no_grad()
    ):  # a confident posterior (std ~ 0.007): the latents follow the shape, so the flow can learn them
        vae.to_moments[1].bias[VAE["latent_channels"] :] = -10.0
    save_model(tmp_path / "vae", vae, VAE)
    return tmp_path


def task_for(root, **kw) -> LayoutFlowTask:
    return LayoutFlowTask(root, vae=str(root / "vae"), image_size=32, num_points=256, val_fraction=0.25, **kw)


def test_pairs_prepare_and_a_falling_loss(setup):
    task = task_for(setup, drop_image=0.2)
    train = task.train_dataset()
    item = train[0]
    assert item["latents"].shape == (8, 4) and item["image"].shape == (3, 32, 32)
    assert not torch.equal(train[0]["latents"], train[0]["latents"])  # a posterior sample each time
    torch.manual_seed(0)
    model = instantiate(FLOW)
    task.prepare(model)
    samples = train.draw(4, 0).reshape(-1, 4)
    assert torch.allclose(model.latent_mean, samples.mean(0)) and torch.allclose(model.latent_std, samples.std(0))
    # standardised training latents have unit scale per channel
    assert 0.8 < float(model.standardise(torch.cat([train[i]["latents"] for i in range(len(train))])).std()) < 1.2
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    losses = []
    batch = task.collate([train[i] for i in range(3)])
    for _ in range(60):
        torch.manual_seed(1)  # the same times, noise and dropped images each step: the loss must be fitted
        loss, logs = task.training_step(model, batch)
        assert torch.isfinite(loss) and 0.0 <= logs["dropped"] <= 1.0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.3 * losses[0]
    metrics = task.evaluate(model.eval())
    assert set(metrics) == {"loss", "loss_null"} and all(np.isfinite(list(metrics.values())))


def test_mismatched_channels_and_missing_icons_are_named(setup):
    task = task_for(setup)
    model = instantiate(FLOW | {"latent_channels": 3})
    with pytest.raises(ValueError, match="3 latent channels, the VAE 4"):
        task.prepare(model)
    (setup / "records" / "default-0000-ball" / "icon" / "icon.png").unlink()
    with pytest.raises(RecordError, match="default-0000-ball.*icon.png is missing"):
        task_for(setup).train_dataset()
    with pytest.raises(FileNotFoundError, match="train the VAE first"):
        LayoutFlowTask(setup, vae=str(setup / "no_vae")).vae()


def test_partgen_train_runs_layout_flow_and_ships_the_statistics_with_the_ema_weights(setup, tmp_path):
    from hydra import compose, initialize_config_module

    from partgen.models.io import load_model
    from partgen.train.run import run

    overrides = [
        "experiment=layout_flow",
        "size.width=32",
        "size.depth=1",
        "size.heads=4",
        "model.latent_channels=4",
        "model.freq_channels=32",
        "model.image_encoder.image_size=32",
        "model.image_encoder.patch_size=8",
        "model.image_encoder.base=8",
        f"task.records={setup}",
        f"task.vae={setup / 'vae'}",
        "task.num_points=256",
        "task.val_fraction=0.25",
        "trainer.max_steps=4",
        "trainer.batch_size=2",
        "trainer.num_workers=0",
        "trainer.eval_every=4",
        "trainer.ckpt_every=4",
        "trainer.progress=false",
        f"trainer.run_dir={tmp_path / 'run'}",
    ]
    with initialize_config_module(config_module="partgen.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    summary = run(cfg)
    assert summary["step"] == 4
    shipped = load_model(tmp_path / "run" / "model")
    fresh = instantiate(FLOW | {"moment_head": True})
    task_for(setup, posterior=cfg.task.posterior, encodings=cfg.task.encodings).prepare(fresh)  # the experiment's data
    # prepare() ran before the EMA copy was made: the exported EMA weights hold the exact statistics
    assert torch.equal(shipped.latent_mean, fresh.latent_mean) and torch.equal(shipped.latent_std, fresh.latent_std)


def test_posterior_means_are_fixed_targets(setup):
    task = task_for(setup, posterior="mean")
    train = task.train_dataset()
    assert torch.equal(train[0]["latents"], train[0]["latents"]) and torch.equal(train[0]["latents"], train.mean[0])
    with pytest.raises(ValueError, match="posterior"):
        task_for(setup, posterior="mode")


def test_set_moments_are_each_sets_mean_and_std():
    from partgen.models.layout_flow import set_moments
    from partgen.structures import cu_seqlens_from_lengths

    a, b = torch.randn(5, 3), torch.randn(9, 3) * 2 + 1
    moments = set_moments(torch.cat([a, b]), cu_seqlens_from_lengths([5, 9]))
    expected = [torch.cat([s.mean(0), s.std(0, unbiased=False)]) for s in (a, b)]
    assert torch.allclose(moments, torch.stack(expected), atol=1e-5)


def test_the_moment_head_learns_the_sets_moments_and_evaluate_scores_generation(setup):
    anchored = VAE | {"anchored": True}
    torch.manual_seed(0)
    save_model(setup / "vae_anchored", instantiate(anchored), anchored)
    task = LayoutFlowTask(
        setup,
        vae=str(setup / "vae_anchored"),
        image_size=32,
        num_points=256,
        val_fraction=0.5,
        moment_weight=1.0,
        eval_sample_steps=2,
        drop_image=0.0,
    )
    train = task.train_dataset()
    torch.manual_seed(0)
    model = instantiate(FLOW | {"latent_channels": 7, "moment_head": True})
    task.prepare(model)
    with pytest.raises(ValueError, match="no moment head"):
        instantiate(FLOW)(
            torch.zeros(8, 4), torch.tensor([0, 8]), torch.zeros(1), torch.zeros(1, 3, 32, 32), moments=True
        )
    batch = task.collate([train[i] for i in range(len(train))])

    @torch.no_grad()
    def moment_error() -> float:
        from partgen.models.layout_flow import set_moments

        x0 = model.standardise(batch["latents"])
        _, predicted = model(x0, batch["cu_seqlens"], torch.zeros(len(train)), batch["images"], moments=True)
        return float(((predicted - set_moments(x0, batch["cu_seqlens"])) ** 2).mean())

    before = moment_error()
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    for _ in range(60):
        torch.manual_seed(1)
        loss, _ = task.training_step(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert moment_error() < 0.2 * before
    metrics = task.evaluate(model.eval())
    assert set(metrics) == {"loss", "loss_null", "moment_mse", "moment_r", "extent_r"}
    assert np.isfinite(metrics["moment_mse"]) and -1.0 <= metrics["extent_r"] <= 1.0


def test_several_encodings_per_shape_and_jittered_icons_in_training_only(setup):
    one = task_for(setup, posterior="mean").train_dataset()
    task = task_for(setup, posterior="mean", encodings=3, image_jitter=0.2)
    train = task.train_dataset()
    assert len(train) == 3 * len(one) and len(train.images) == len(one.images)
    assert train.keys == [k for k in one.keys for _ in range(3)]
    assert train.image_index.tolist() == [i for i in range(len(one)) for _ in range(3)]
    # the first set of each shape is the one a single encoding gives; the others other subsets' sets
    assert torch.allclose(train.mean[0::3], one.mean, atol=1e-6)
    assert not torch.allclose(train.mean[1], train.mean[0], atol=1e-3)
    assert not torch.allclose(train.mean[2], train.mean[1], atol=1e-3)
    # training icons move at random; each row shows its own shape's icon
    icon = train.images[0].float() / 255.0
    a, b = train[0]["image"], train[1]["image"]
    assert a.shape == icon.shape and not torch.allclose(a, b) and not torch.allclose(a, icon)
    assert torch.equal(train.images[train.image_index[4]], one.images[1])
    val = task.pairs("val")  # one set per shape and the icon as it is
    assert len(val) == len(task_for(setup, posterior="mean").pairs("val"))
    assert torch.equal(val[0]["image"], val.images[0].float() / 255.0)
    with pytest.raises(ValueError, match="encodings >= 1"):
        task_for(setup, encodings=0)
    with pytest.raises(ValueError, match="image_jitter"):
        task_for(setup, image_jitter=1.5)


def test_jitter_image_scales_and_shifts_but_keeps_proportions_and_white():
    from partgen.train.tasks.layout import jitter_image

    image = torch.ones(3, 64, 64)
    image[:, 27:37, 22:42] = 0.0  # a dark 20 x 10 box in the middle
    assert torch.allclose(jitter_image(image, 0.0), image, atol=1e-5)
    g = torch.Generator().manual_seed(0)
    widths = []
    for _ in range(20):
        moved = jitter_image(image, 0.3, generator=g)
        dark = moved.mean(0) < 0.5
        rows, cols = torch.nonzero(dark.any(1))[:, 0], torch.nonzero(dark.any(0))[:, 0]
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert 20 * 0.7 - 2 <= w <= 20 * 1.3 + 2 and abs(w / h - 2.0) < 0.35  # one scale for both axes
        assert float(moved[:, :4, :4].min()) == 1.0 and float(moved.min()) >= 0.0  # the border stays white
        widths.append(w)
    assert max(widths) - min(widths) >= 4  # the scale does vary


def test_latent_cache_stands_in_for_the_records(setup):
    """task.cache: the first run encodes and writes both splits (float16 latents, icon bytes, split
    keys); a run without the records folder reads the same pairs from it; other settings are refused
    by name, and a torn file is named."""
    cache = setup / "cache" / "pairs.safetensors"
    settings = {"vae": str(setup / "vae"), "image_size": 32, "num_points": 256, "val_fraction": 0.25}
    settings |= {"encodings": 2, "posterior": "mean"}
    task = LayoutFlowTask(setup, cache=str(cache), **settings)
    task.prepare(instantiate(FLOW))  # builds train and val, and writes them
    first = {split: task.pairs(split) for split in ("train", "val")}
    assert cache.is_file() and len(first["train"]) == 2 * len(set(first["train"].keys)) > 0
    torch.testing.assert_close(first["train"].mean, first["train"].mean.half().float(), rtol=0, atol=0)

    nowhere = setup / "no-records"
    with pytest.raises(RecordError, match="no-records.*no complete latent cache"):
        LayoutFlowTask(nowhere, **settings).train_dataset()
    again = LayoutFlowTask(nowhere, cache=str(cache), **settings)
    for split in ("train", "val"):
        pairs = again.pairs(split)
        assert pairs.keys == first[split].keys
        assert torch.equal(pairs.mean, first[split].mean) and torch.equal(pairs.images, first[split].images)

    with pytest.raises(ValueError, match="made with encodings=2, this task has encodings=3"):
        LayoutFlowTask(setup, cache=str(cache), **(settings | {"encodings": 3}))
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.raises(ValueError, match="pairs.safetensors: not a readable latent cache"):
        LayoutFlowTask(setup, cache=str(cache), **settings)


def write_views(root, count: int) -> None:
    """count green-square views (icon/views/NNN.png) for every record: unlike any red disc icon."""
    from PIL import Image

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = [40, 200, 40, 255]
    for rec in (root / "records").iterdir():
        (rec / "icon" / "views").mkdir(parents=True, exist_ok=True)
        for j in range(count):
            Image.fromarray(rgba).save(rec / "icon" / "views" / f"{j:03d}.png")


def test_training_items_show_other_views_beside_the_icons_and_the_cache_keeps_them(setup):
    """views=n: each training item shows its icon or, with probability 1 - icon_share, one of its
    shape's n views; val shows the icons only. Missing views are named with the script that makes
    them; a cache keeps the views, so a run without records trains on them too."""
    settings = {"posterior": "mean", "views": 2, "icon_share": 0.5}
    with pytest.raises(RecordError, match="icon/views/000.png is missing.*render_icon_views.py"):
        task_for(setup, **settings).train_dataset()
    write_views(setup, 2)
    train = task_for(setup, **settings).train_dataset()
    assert train.views.shape == (len(train.images), 2, 3, 32, 32)
    torch.manual_seed(0)
    green = [float(train[i % len(train)]["image"][1].mean() > train[i % len(train)]["image"][0].mean())
             for i in range(200)]  # fmt: skip
    assert 0.35 < np.mean(green) < 0.65  # about half the items show a view
    only_icons = task_for(setup, posterior="mean", views=2, icon_share=1.0).train_dataset()
    assert all(only_icons[i]["image"][0].mean() > only_icons[i]["image"][1].mean() for i in range(len(only_icons)))
    val = task_for(setup, **settings).pairs("val")
    assert val.views is None and all(val[i]["image"][0].mean() > val[i]["image"][1].mean() for i in range(len(val)))
    with pytest.raises(ValueError, match="icon_share"):
        task_for(setup, views=2, icon_share=0.0)

    cache = setup / "pairs.safetensors"
    task_for(setup, cache=str(cache), **settings).train_dataset()
    task_for(setup, cache=str(cache), **settings).pairs("val")  # the val keys too, for a run without records
    again = LayoutFlowTask(setup / "gone", vae=str(setup / "vae"), image_size=32, num_points=256, val_fraction=0.25,
                           cache=str(cache), **settings).train_dataset()  # fmt: skip
    assert torch.equal(again.views, train.views)


def test_the_reference_bank_keeps_the_flows_first_latent_set_of_each_shape(setup):
    """build_reference_bank and LayoutFlowTask encode a shape from the same first surface subset
    (vecset_vae.encode_record_samples), so FlowEdit starts from a set the flow was trained on."""
    import trimesh

    from partgen.models.io import load_trained
    from partgen.models.vecset_vae import VecSetVAE
    from partgen.pipelines.references import build_reference_bank

    for rec in (setup / "records").iterdir():
        ball = trimesh.creation.icosphere(1, radius=0.3)
        np.savez(rec / "mesh.npz", vertices=ball.vertices.astype(np.float32), faces=ball.faces.astype(np.int32),
                 face_part=np.zeros(len(ball.faces), np.int16))  # fmt: skip

    bank = build_reference_bank(setup, load_trained(setup / "vae", VecSetVAE), num_points=256, progress=False)
    task = LayoutFlowTask(setup, vae=str(setup / "vae"), image_size=32, num_points=256, val_fraction=0.1,
                          posterior="mean", encodings=2)  # fmt: skip
    train = task.train_dataset()
    assert bank.keys == train.keys[0::2] and len(bank.keys) > 0
    torch.testing.assert_close(bank.latents, train.mean[0::2], atol=1e-5, rtol=0)
    assert not torch.allclose(bank.latents, train.mean[1::2], atol=1e-3)  # the second subset differs
