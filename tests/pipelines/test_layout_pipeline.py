"""LayoutGenerator with tiny untrained models: the stage-2 coordinates from the decoded surface or
from the generated anchors, determinism under a seed, and the errors a wrong pairing gets."""

import pytest
import torch

from partgen.models.image_encoder import ViTEncoder
from partgen.models.layout_flow import LayoutFlow
from partgen.models.vecset_vae import VecSetVAE, anchor_voxels, occupancy_to_voxels
from partgen.pipelines.layout import LayoutGenerator


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def models(anchored: bool) -> tuple[VecSetVAE, LayoutFlow]:
    torch.manual_seed(0)
    vae = VecSetVAE(
        num_latents=8, latent_channels=4, width=32, heads=4, decoder_depth=1, num_freqs=4, anchored=anchored
    )
    flow = LayoutFlow(ViTEncoder(32, 8, 32, 1, 4), latent_channels=vae.latent_dim, width=32, depth=1, heads=4)
    return vae.eval(), flow.eval()


def test_coordinates_from_the_surface_or_the_anchors():
    image = torch.rand(3, 32, 32)
    options = {"steps": 2, "guidance": 3.0, "resolution": 32, "coarse": 8, "voxel_resolution": 16}
    vae, flow = models(anchored=True)
    surface = LayoutGenerator(vae, flow, coordinates="surface", dilation=1, **options)(image, seed=3)
    assert torch.equal(surface.voxels, occupancy_to_voxels(surface.grid, 16, 1))
    anchors = LayoutGenerator(vae, flow, coordinates="anchors", anchor_band=1, **options)
    layout = anchors(image, seed=3)
    assert torch.equal(layout.latents, surface.latents)  # the same sample: only the coordinates differ
    assert torch.equal(layout.voxels, anchor_voxels(layout.latents, 16, 1)) and len(layout.voxels) > 0
    assert torch.equal(anchors(image, seed=3).voxels, layout.voxels)
    assert LayoutGenerator(vae, flow, coordinates="auto").coordinates == "anchors"
    assert LayoutGenerator(*models(anchored=False), coordinates="auto").coordinates == "surface"
    with pytest.raises(ValueError, match="'surface' or 'anchors'"):
        LayoutGenerator(vae, flow, coordinates="grid")
    with pytest.raises(ValueError, match="needs an anchored layout VAE"):
        LayoutGenerator(*models(anchored=False), coordinates="anchors")
