"""Stage 2's Part-Attention DiT as a training task: the rectified flow over SLat latents, given an icon.

Legend: B shapes, N active voxels of a batch, C latent channels.

Items come from annotated records with sub-grid signed distances and icons (BlockRecords; annotate
with block_subdiv=4 and an icon camera): the target is each voxel's latent from a trained, frozen
SLat VAE (`vae`: a slat_vae run), the condition is the record's Sweet Home 3D icon and the camera
that renders it (icon/camera.json), so each part cross-attends to the icon patches its voxels
project onto (PartDiT, part_image_groups). The latents (posterior mean and std per voxel) are
computed once, when the data is first needed; each step draws a posterior sample.

prepare(model) stores per-channel latent statistics (LatentStatistics) before the optimiser and EMA
see the model. Each step: t per shape from a logit-normal, x_t = (1 - t) x_0 + t eps on standardised
latents, the model predicts eps - x_0 (MSE); a `drop_image` share of the shapes sees the null image.

evaluate, on the val split with fixed noise and t in {0.1, 0.3, 0.5, 0.7, 0.9}: loss (the flow MSE
with the icon, the model's schedule), loss_null (null image) and loss_global (the same weights with
every layer global attention: what Part Attention costs in the objective).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from partgen.data_pipeline.datasets import BlockRecords, RecordError
from partgen.data_pipeline.render import Camera
from partgen.diffusion.flow import interpolate
from partgen.models.image_encoder import ImageError, load_image
from partgen.models.io import load_trained
from partgen.models.part_dit import attention_groups
from partgen.models.slat_vae import SLatVAE
from partgen.structures import SparseVoxels
from partgen.train.distributed import unwrap
from partgen.train.tasks.flow import FlowMatchingTask

VAE_HINT = "train the SLat VAE first: partgen-train experiment=slat_vae hydra.run.dir=runs/slat_vae"


def icon_condition(record: Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A record's icon (3, S, S) in [0, 1] and its camera as a (3, 4) normalised projection."""
    try:
        image = load_image(record / "icon" / "icon.png", image_size)
        camera = Camera.from_dict(json.loads((record / "icon" / "camera.json").read_text()))
    except (ImageError, OSError, ValueError, KeyError) as err:
        raise RecordError(f"record {record.name}: no usable icon ({err}); annotate with icon_camera=typical") from None
    return image, torch.from_numpy(camera.normalised_projection()).float()


class LatentVoxels(torch.utils.data.Dataset):
    """Per shape: voxels with the posterior (mean, std) of their latents, the icon and its camera.
    Items carry a posterior sample as feats: fresh each time in training, fixed (noise_seed) otherwise."""

    def __init__(self, keys, voxels, means, stds, images, cameras, sample: bool, noise_seed: int = 0):
        self.keys, self.voxels, self.means, self.stds = keys, voxels, means, stds
        self.images, self.cameras, self.sample = images, cameras, sample
        g = torch.Generator().manual_seed(noise_seed)
        self.fixed = (
            None if sample else [m + s * torch.randn(m.shape, generator=g) for m, s in zip(means, stds, strict=True)]
        )

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        mean, std = self.means[index], self.stds[index]
        z = mean + std * torch.randn(mean.shape) if self.sample else self.fixed[index]
        return {
            "voxels": self.voxels[index].replace(feats=z),
            "image": self.images[index].float() / 255.0,
            "camera": self.cameras[index],
            "key": self.keys[index],
        }


def collate_latent_voxels(items: list[dict]) -> dict:
    return {
        "voxels": SparseVoxels.collate([it["voxels"] for it in items]),
        "images": torch.stack([it["image"] for it in items]),
        "cameras": torch.stack([it["camera"] for it in items]),
        "keys": [it["key"] for it in items],
    }


class PartDiTTask(FlowMatchingTask):
    """Train a PartDiT on (icon + camera, voxels + parts, SLat latents) (module docstring).

    records:        partgen-annotate output folder(s) with sdf_blocks.npz and icons
    vae:            a trained SLat VAE: run folder, its model/ or a checkpoint step folder
    image_size:     side of the square images the encoder reads
    val_fraction, seed: the split (the seeded hash of asset keys every partgen task uses)
    max_voxels:     shapes with more active voxels are skipped (memory and time per step; the val
                    split too: loss_global is quadratic in them)
    max_group:      parts larger than this are cut into slabs (partgen.models.part_dit.attention_groups,
                    as sampling cuts them); None: each part one attention group
    use_camera:     parts see the icon patches they project onto (else the whole icon)
    drop_image:     share of training shapes that see the null image (classifier-free guidance)
    t_mean, t_std:  of the logit-normal timestep distribution
    eval_max_shapes, eval_batch_size: validation size
    limit:          at most this many training shapes (the first by key)
    """

    def __init__(
        self,
        records,
        vae: str,
        image_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        max_voxels: int | None = 8000,
        max_group: int | None = 2048,
        use_camera: bool = True,
        drop_image: float = 0.1,
        t_mean: float = 0.0,
        t_std: float = 1.0,
        eval_max_shapes: int = 8,
        eval_batch_size: int = 2,
        limit: int | None = None,
    ):
        if not 0.0 <= drop_image < 1.0:
            raise ValueError(f"drop_image must lie in [0, 1), got {drop_image}")
        self.records, self.vae_path, self.image_size = records, vae, int(image_size)
        self.val_fraction, self.seed = float(val_fraction), int(seed)
        self.max_voxels = None if max_voxels is None else int(max_voxels)
        self.max_group = None if max_group is None else int(max_group)
        self.use_camera, self.drop_image = bool(use_camera), float(drop_image)
        self.t_mean, self.t_std = float(t_mean), float(t_std)
        self.eval_max_shapes, self.eval_batch_size = int(eval_max_shapes), int(eval_batch_size)
        self.limit = None if limit is None else int(limit)
        self._vae: SLatVAE | None = None
        self._data: dict[str, LatentVoxels] = {}

    # --- data -------------------------------------------------------------------------------------

    def vae(self) -> SLatVAE:
        if self._vae is None:
            self._vae = load_trained(self.vae_path, SLatVAE, VAE_HINT)
        return self._vae

    @torch.no_grad()
    def data(self, split: Literal["train", "val"]) -> LatentVoxels:
        if split in self._data:
            return self._data[split]
        ds = BlockRecords(self.records, split, self.val_fraction, self.seed, self.max_voxels)
        cap = self.eval_max_shapes if split == "val" else self.limit
        count = len(ds) if cap is None else min(cap, len(ds))
        vae = self.vae()
        keys, voxels, means, stds, images, cameras = [], [], [], [], [], []
        for i in range(count):
            x, key = ds[i]
            if x.feats.shape[1] != vae.corners:
                raise RecordError(f"record {key}: blocks of {x.feats.shape[1]} corners, the VAE reads {vae.corners}")
            image, camera = icon_condition(ds.records[i].path, self.image_size)
            post = vae.encode(x)
            keys.append(key)
            if self.max_group is not None:
                coords, part = x.coords[:, 1:].numpy(), x.part.numpy()
                x = x.replace(part=torch.from_numpy(attention_groups(coords, part, self.max_group)))
            voxels.append(x.replace(feats=torch.zeros(len(x), 0)))
            means.append(post.mean)
            stds.append(torch.exp(0.5 * post.logvar))
            images.append((image * 255).round().to(torch.uint8))
            cameras.append(camera)
        if split == "train" and not keys:
            raise ValueError(f"no training shape in {self.records}")
        self._data[split] = LatentVoxels(
            keys, voxels, means, stds, images, cameras, sample=split == "train", noise_seed=self.seed
        )
        return self._data[split]

    def train_dataset(self) -> torch.utils.data.Dataset:
        return self.data("train")

    def collate(self, items: list) -> dict:
        return collate_latent_voxels(items)

    def prepare(self, model: nn.Module) -> None:
        """Standardise the flow's space with per-channel statistics of training posterior samples."""
        train = self.data("train")
        if model.in_channels != self.vae().latent_channels:
            raise ValueError(
                f"the DiT has {model.in_channels} channels, the SLat VAE {self.vae().latent_channels} "
                "(set model.in_channels)"
            )
        g = torch.Generator().manual_seed(self.seed)
        samples = torch.cat(
            [m + s * torch.randn(m.shape, generator=g) for m, s in zip(train.means, train.stds, strict=True)]
        )
        model.set_latent_stats(samples.to(model.latent_mean.device))

    # --- objective --------------------------------------------------------------------------------

    eval_runs = {"loss": (False, {}), "loss_null": (True, {}), "loss_global": (False, {"schedule": "global"})}

    def _loss(self, model, batch: dict, t, noise, drop, schedule=None) -> torch.Tensor:
        device = next(model.parameters()).device
        x = batch["voxels"].to(device)
        x0 = unwrap(model).standardise(x.feats)
        x_t, target = interpolate(x0, noise.to(device), t.to(device)[x.batch_index()])
        cameras = batch["cameras"].to(device) if self.use_camera else None
        v = model(
            x.replace(feats=x_t),
            t.to(device),
            drop=drop.to(device),
            schedule=schedule,
            images=batch["images"].to(device),
            cameras=cameras,
        )
        return torch.mean((v.float() - target) ** 2)

    def _latents(self, batch: dict) -> torch.Tensor:
        return batch["voxels"].feats

    def _val(self) -> LatentVoxels:
        return self.data("val")


__all__ = ["LatentVoxels", "PartDiTTask", "collate_latent_voxels", "icon_condition"]
