"""The pretrained EfficientNet-Lite0 backbone (partgen.models.efficientnet): the package's ImageNet
weights fill every tensor, and the network names the example icons' objects."""

from pathlib import Path

import pytest
import torch

from partgen.models.efficientnet import EfficientNetLite0, SameConv2d, efficientnet_lite0
from partgen.models.image_encoder import load_image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
# ImageNet classes: 559 folding chair, 765 rocking chair, 423 barber chair, 857 throne; 532 dining table, 526 desk
CHAIRS, TABLES = {559, 765, 423, 857}, {532, 526}


@pytest.fixture(scope="module")
def net():
    torch.set_num_threads(1)
    return efficientnet_lite0()


def test_same_padding_keeps_ceil_of_size_over_stride():
    conv = SameConv2d(1, 1, 5, stride=2, bias=False)
    for size in (7, 8, 112):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)


def test_pretrained_weights_fill_the_network_and_name_the_example_objects(net):
    fresh = EfficientNetLite0().state_dict()
    loaded = net.state_dict()
    assert set(fresh) == set(loaded) and sum(v.numel() for v in loaded.values()) > 4_600_000
    assert not torch.equal(fresh["_conv_stem.weight"], loaded["_conv_stem.weight"])
    images = torch.stack([load_image(EXAMPLES / f"{name}.png", 128) for name in ("chair", "table")])
    with torch.no_grad():
        top = net.logits(torch.nn.functional.interpolate(images, size=224, mode="bilinear")).topk(3).indices
        features = net(images)
    assert int(top[0, 0]) in CHAIRS and int(top[1, 0]) in TABLES
    assert features.shape == (2, 1280, 4, 4) and bool(torch.isfinite(features).all())
