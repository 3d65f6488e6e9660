"""Rectified flow helpers, the image encoder and LayoutFlow: exact sampling on straight paths,
guidance, set-permutation equivariance, the null image, save/load, image input handling."""

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from partgen.diffusion.flow import flow_edit, guided, interpolate, logit_normal_timesteps, sample, sample_sets
from partgen.models.image_encoder import ImageError, ViTEncoder, image_tensor, load_image
from partgen.models.io import load_model, save_model
from partgen.models.layout_flow import LayoutFlow
from partgen.structures import cu_seqlens_from_lengths

CONFIG = {
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


def tiny(**options) -> LayoutFlow:
    from hydra.utils import instantiate

    torch.manual_seed(0)
    model = instantiate(CONFIG | options)
    for p in model.parameters():  # leave adaLN-Zero's zero start: an identity model tests nothing
        torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else None
    return model


def test_euler_sampling_is_exact_on_a_straight_path():
    x0 = torch.randn(10, 3)
    noise = torch.randn(10, 3)
    x_half, target = interpolate(x0, noise, torch.tensor(0.5))
    assert torch.allclose(x_half, 0.5 * (x0 + noise)) and torch.allclose(target, noise - x0)
    # the true velocity of the straight path from noise to x0 is constant: any step count lands on x0
    out = sample(lambda x, t: noise - x0, noise, steps=3)
    assert torch.allclose(out, x0, atol=1e-5)
    seen = []
    sample(lambda x, t: seen.append(float(t)) or torch.zeros_like(x), noise, steps=4)
    assert seen[0] == pytest.approx(1.0) and all(a > b for a, b in zip(seen, seen[1:], strict=False))
    t = logit_normal_timesteps(1000, generator=torch.Generator().manual_seed(0))
    assert 0 < float(t.min()) and float(t.max()) < 1 and abs(float(t.median()) - 0.5) < 0.05


def test_flow_edit_moves_only_by_what_the_target_asks_differently():
    """FlowEdit between two point-mass conditions, whose exact velocities are (x - a) / t and
    (x - b) / t: the noise cancels and the edit of a lands on b, at any strength and step count;
    under the same condition twice nothing moves, whatever the noise."""
    a, b = torch.randn(6, 3), torch.randn(6, 3)
    to_a, to_b = (lambda x, t: (x - a) / t), (lambda x, t: (x - b) / t)
    for strength, steps in ((0.3, 1), (0.7, 5), (1.0, 12)):
        g = torch.Generator().manual_seed(steps)
        torch.testing.assert_close(flow_edit(to_a, to_b, a, strength, steps, generator=g), b)
    model = lambda x, t: torch.sin(3 * x) * (1 + t)  # noqa: E731 (any velocity: the difference is 0)
    torch.testing.assert_close(flow_edit(model, model, a, 0.5, 4, generator=torch.Generator().manual_seed(0)), a)
    with pytest.raises(ValueError, match="strength"):
        flow_edit(to_a, to_b, a, 0.0)


def test_guidance_extrapolates_from_the_unconditional_velocity():
    v = guided(lambda x, t: x + 1, lambda x, t: x, scale=3.0)
    assert torch.equal(v(torch.zeros(2), torch.tensor(0.5)), torch.full((2,), 3.0))


def test_velocity_is_equivariant_to_the_set_order_and_reads_the_image():
    model = tiny().eval()
    x = torch.randn(12, 4)
    cu = cu_seqlens_from_lengths([7, 5])
    images = torch.rand(2, 3, 32, 32)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        v = model(x, cu, t, images=images)
        perm = torch.cat([torch.randperm(7), 7 + torch.randperm(5)])
        assert torch.allclose(model(x[perm], cu, t, images=images), v[perm], atol=1e-5)
        # shape 0's velocity depends on its own image, not on the other shape's
        other = images.clone()
        other[1] = torch.rand(3, 32, 32)
        changed = model(x, cu, t, images=other)
        assert torch.allclose(changed[:7], v[:7], atol=1e-5) and not torch.allclose(changed[7:], v[7:], atol=1e-3)
        # the null image replaces the picture: the output no longer depends on it
        drop = torch.tensor([True, True])
        assert torch.allclose(model(x, cu, t, images=images, drop=drop), model(x, cu, t, images=other, drop=drop))
    with pytest.raises(ValueError, match="images"):
        model(x, cu, t)
    with pytest.raises(ValueError, match="one time per shape"):
        model(x, cu, torch.rand(3), images=images)


def generate(model, images, num_latents, steps=3, seed=5):
    """B images -> latents (B L, C), cu_seqlens: the pipelines' sampling (diffusion.flow.sample_sets)."""
    cu = cu_seqlens_from_lengths([num_latents] * images.shape[0])
    context = model.encode_images(images)
    x = sample_sets(functools.partial(model, context=context), cu, model.latent_channels, 3.0, steps=steps,
                    generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return model.unstandardise(x), cu


def test_gradients_generation_and_save_load(tmp_path):
    model = tiny()
    x, cu = torch.randn(12, 4), cu_seqlens_from_lengths([6, 6])
    drop = torch.tensor([True, False])  # so that the null image gets a gradient too
    v = model(x, cu, torch.tensor([0.2, 0.9]), images=torch.rand(2, 3, 32, 32), drop=drop)
    v.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    model.set_latent_stats(torch.randn(100, 4) * 3 + 1)
    images = torch.rand(1, 3, 32, 32)
    a, cu_a = generate(model, images, 9)
    b, _ = generate(model, images, 9)
    assert a.shape == (9, 4) and cu_a.tolist() == [0, 9] and torch.equal(a, b)
    save_model(tmp_path / "flow", model, CONFIG)
    loaded = load_model(tmp_path / "flow").eval()
    assert torch.equal(loaded.latent_std, model.latent_std)  # the statistics travel with the weights
    c, _ = generate(loaded, images, 9)
    assert torch.equal(a, c)
    # a set's sample does not depend on what shares its batch: the first of three is the one alone
    many, cu_many = generate(model, images.expand(3, -1, -1, -1), 9)
    assert cu_many.tolist() == [0, 9, 18, 27] and torch.allclose(many[:9], a, atol=1e-5)
    assert not torch.allclose(many[9:18], a, atol=1e-3)


def test_images_of_every_kind_become_rgb_on_white(tmp_path):
    rgba = np.zeros((20, 40, 4), np.uint8)
    rgba[5:15, 10:30] = [255, 0, 0, 255]  # a red box on a transparent background
    out = image_tensor(rgba, 16)
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out[:, 0, 0], torch.ones(3))  # transparent -> white (and the padding too)
    assert out[0, 8, 8] > 0.9 and out[1, 8, 8] < 0.1  # the box stays red
    grey = image_tensor(np.full((8, 8), 0.5, np.float32), 8)
    assert torch.allclose(grey, torch.full((3, 8, 8), 128 / 255))
    Image.fromarray(rgba).save(tmp_path / "icon.png")
    assert torch.equal(load_image(tmp_path / "icon.png", 16), out)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    for name, reason in (
        ("empty.png", "the file is empty"),
        ("junk.png", "not a readable image"),
        ("none.png", "no such file"),
    ):
        with pytest.raises(ImageError, match=f"{name}: {reason}"):
            load_image(tmp_path / name, 16)
    with pytest.raises(ImageError, match="NaN"):
        image_tensor(np.full((4, 4, 3), np.nan, np.float32), 8)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTEncoder(image_size=30, patch_size=8)


def test_the_cnn_encoder_gives_one_token_per_patch_from_its_own_image():
    from partgen.models.image_encoder import CNNEncoder

    torch.manual_seed(0)
    encoder = CNNEncoder(image_size=32, patch_size=8, width=24, base=8)
    for p in encoder.parameters():  # leave the zero-initialised residual branches: they would test nothing
        torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else None
    images = torch.rand(2, 3, 32, 32)
    tokens, cu = encoder(images)
    assert tokens.shape == (32, 24) and cu.tolist() == [0, 16, 32] and encoder.patch_grid == 4
    other = images.clone()
    other[1, :, :8, :8] = 0.0  # a corner of image 1: its first token changes, image 0's tokens do not
    changed, _ = encoder(other)
    assert torch.allclose(changed[:16], tokens[:16], atol=1e-6)
    assert not torch.allclose(changed[16], tokens[16], atol=1e-4)
    changed.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in encoder.parameters())
    model = LayoutFlow(encoder, latent_channels=4, width=32, depth=1, heads=4)  # what the flow needs of it
    assert model(torch.randn(10, 4), cu_seqlens_from_lengths([4, 6]), torch.rand(2), images=images).shape == (10, 4)
    for size, patch in ((30, 8), (32, 6), (32, 1)):
        with pytest.raises(ValueError, match="power of 2"):
            CNNEncoder(image_size=size, patch_size=patch)


def test_the_dinov2_encoder_names_its_extra_or_its_missing_weights(tmp_path):
    """DinoV2Encoder needs transformers, an optional extra (partgen[pretrained]), and local weights."""
    import importlib.util

    from partgen.models.image_encoder import DinoV2Encoder

    if importlib.util.find_spec("transformers") is None:
        with pytest.raises(ImportError, match=r"pip install -e '\.\[pretrained\]'"):
            DinoV2Encoder(str(tmp_path))
    else:
        with pytest.raises(FileNotFoundError, match="no DINOv2 weights"):
            DinoV2Encoder(str(tmp_path))
