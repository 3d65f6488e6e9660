"""Image-conditioned layout generation as a training task: the rectified flow of stage 1.

Legend: B shapes, L latent tokens per shape, C latent channels.

Pairs come from annotated records: the image is the record's Sweet Home 3D icon (icon/icon.png,
the catalogue's own rendering, what a user would hand in) and the target is the shape's VecSet
latent set from a trained, frozen VAE (`vae`: a layout_vae run). The latents (posterior mean and
std of each shape) are computed once, when the data is first needed, from a fixed subset of
`num_points` surface samples (`encodings` > 1: from that many subsets per training shape, each a
valid set of other anchors, so the flow cannot just memorise one set per icon). With
posterior="sample" each step draws a posterior sample (the flow learns the VAE's latent
distribution); with posterior="mean" (the CPU config's) the flow learns the posterior means:
where the KL weight is small the posterior variance can exceed the spread of the means across
shapes (measured on the layout_vae run: 0.5-4.9 against 0.1-2.9 per channel), and the samples
are then mostly noise no image can predict.

prepare(model) stores the per-channel mean and std of the training latents (4 posterior samples
per shape: the distribution the flow models; the means alone under-state the channels the KL keeps
near the prior) in the model (LayoutFlow.set_latent_stats) before the optimiser and EMA see it. Each step: t per shape from a
logit-normal, x_t = (1 - t) x_0 + t eps on standardised latents, the model predicts eps - x_0 (MSE);
a `drop_image` share of the shapes sees the null image (classifier-free guidance).

With moment_weight > 0 (the model needs moment_head) the step adds the MSE of the moments the
image predicts for the shape's standardised latent set (layout_flow.set_moments), for the shapes
that see their image: the flow-matching loss alone barely depends on the image (on the anchored
layout VAE, 3000 steps: val loss 0.7786 with the icon, 0.7792 without), so the encoder it trains
learns little, and the generated sets' extents did not follow the icons (extent_r 0.04 below).

evaluate, on the val split with a fixed noise and times t in {0.1, 0.3, 0.5, 0.7, 0.9}: loss (the
flow-matching MSE with the image) and loss_null (with the null image); with a moment head,
moment_mse; with eval_sample_steps, moment_r and extent_r: the correlation across val shapes of
the generated and the true sets' spread per channel (extent_r: the anchor channels, the shapes'
extents). loss_null - loss > 0 and extent_r > 0 say the model reads the image.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from partgen.data_pipeline.datasets import RecordError, ShapeRecords
from partgen.diffusion.flow import interpolate, sample_sets
from partgen.models.image_encoder import ImageError, image_from_bytes
from partgen.models.io import load_trained
from partgen.models.layout_flow import set_moments
from partgen.models.vecset_vae import VecSetVAE, encode_record_samples
from partgen.structures import cu_seqlens_from_lengths
from partgen.train.distributed import unwrap
from partgen.train.tasks.flow import FlowMatchingTask

VAE_HINT = "train the VAE first: partgen-train experiment=layout_vae hydra.run.dir=runs/layout_vae"
EVAL_GUIDANCE = (
    3.0  # classifier-free guidance of the generations evaluate scores (conf/experiment/layout_flow.yaml: cfg 3)
)


class LatentImagePairs(torch.utils.data.Dataset):
    """(posterior mean, std) of latent sets with their images: row m of mean/std belongs to image
    image_index[m] (several rows per shape: its encodings from different surface subsets). Items
    carry a posterior sample: a fresh one each time in training, one fixed per row (noise_seed)
    otherwise; `jitter` > 0 (training sets only) moves and scales each image at random (jitter_image);
    `views` (training sets only: (images, n, 3, S, S) uint8, each image's shape from n other views,
    data_pipeline.icon_views) stand in for the image with probability 1 - icon_share, one at random."""

    def __init__(
        self,
        keys: list[str],
        mean: torch.Tensor,
        std: torch.Tensor,
        images: torch.Tensor,
        sample: bool,
        noise_seed: int = 0,
        image_index: torch.Tensor | None = None,
        jitter: float = 0.0,
        views: torch.Tensor | None = None,
        icon_share: float = 1.0,
    ):
        self.keys, self.mean, self.std, self.images, self.sample = keys, mean, std, images, sample
        if views is not None and (views.dim() != 5 or len(views) != len(images) or views.shape[2:] != images.shape[1:]):
            raise ValueError(
                f"views must be ({len(images)}, n, {', '.join(map(str, images.shape[1:]))}), got {tuple(views.shape)}"
            )
        self.views, self.icon_share = views, float(icon_share)
        self.image_index = torch.arange(len(mean)) if image_index is None else image_index.long()
        if len(self.image_index) != len(mean) or len(keys) != len(mean):
            raise ValueError(f"{len(mean)} latent rows, {len(self.image_index)} image indices, {len(keys)} keys")
        self.jitter = float(jitter)
        self.fixed = (
            None
            if sample
            else mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(noise_seed))
        )

    def __len__(self) -> int:
        return len(self.keys)

    def draw(self, count: int, seed: int) -> torch.Tensor:
        """(count * len, L, C) posterior samples of every row (seeded): the distribution the flow models."""
        g = torch.Generator().manual_seed(seed)
        return torch.cat([self.mean + self.std * torch.randn(self.mean.shape, generator=g) for _ in range(count)])

    def __getitem__(self, index: int) -> dict:
        z = (
            self.mean[index] + self.std[index] * torch.randn(self.mean[index].shape)
            if self.sample
            else self.fixed[index]
        )
        owner = self.image_index[index]
        if self.views is not None and float(torch.rand(())) >= self.icon_share:
            image = self.views[owner, int(torch.randint(self.views.shape[1], ()))].float() / 255.0
        else:
            image = self.images[owner].float() / 255.0
        if self.jitter > 0:
            image = jitter_image(image, self.jitter)
        return {"latents": z, "image": image, "key": self.keys[index]}


def jitter_image(image: torch.Tensor, amount: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(3, S, S) in [0, 1] on white -> the same picture scaled by a factor in [1 - amount, 1 + amount]
    and shifted by up to amount x S/2 per axis (uniform), the uncovered border white. The object keeps
    its proportions (one scale for both axes), so the image still says the shape's extents."""
    u = torch.rand(3, generator=generator) * 2 - 1
    scale, shift = 1.0 + amount * float(u[0]), amount * u[1:]
    theta = torch.tensor([[1.0 / scale, 0.0, float(shift[0])], [0.0, 1.0 / scale, float(shift[1])]])
    grid = torch.nn.functional.affine_grid(theta[None], [1, *image.shape], align_corners=False)
    moved = torch.nn.functional.grid_sample(image[None] - 1.0, grid, align_corners=False, padding_mode="zeros")
    return (moved[0] + 1.0).clamp(0.0, 1.0)


class LatentCache:
    """A safetensors file of encoded (latent sets, icon) pairs for LayoutFlowTask (its `cache`).

    Tensors: "<key>/mean" (E, L, C) float16 posterior means (E encodings of the record),
    "<key>/std" the same for stds (posterior="sample" only: the means' otherwise are zero) and
    "<key>/icon" the icon file's bytes (uint8), "<key>/view/<j>" the files of its other views (uint8,
    LayoutFlowTask(views=n): data_pipeline.icon_views). Metadata: "settings" (JSON: what the latents depend
    on besides the record, LayoutFlowTask._cache_settings; a file made with other values is refused,
    naming them) and "splits" (JSON: each split's keys in order, so a run without the records
    reads the same split). Writes are atomic (a temporary file, then a rename)."""

    def __init__(self, path: str | Path, settings: dict):
        from safetensors import safe_open

        self.path, self.settings = Path(path), dict(settings)
        self.tensors: dict[str, torch.Tensor] = {}
        self.splits: dict[str, list[str]] = {}
        self.dirty = False
        if not self.path.is_file():
            return
        try:
            with safe_open(str(self.path), "pt") as f:
                meta = f.metadata() or {}
                self.tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (no __iter__)
            stored, self.splits = json.loads(meta.get("settings", "{}")), json.loads(meta.get("splits", "{}"))
        except Exception as err:  # a torn or foreign file
            raise ValueError(f"{self.path}: not a readable latent cache ({err!r}); delete it to rebuild it") from None
        differ = sorted(k for k in self.settings if stored.get(k) != self.settings[k])
        if differ:
            made = ", ".join(f"{k}={stored.get(k)!r}" for k in differ)
            want = ", ".join(f"{k}={self.settings[k]!r}" for k in differ)
            raise ValueError(
                f"{self.path}: made with {made}, this task has {want}; delete it or set another task.cache"
            )

    def split_keys(self, split: str) -> list[str] | None:
        return self.splits.get(split)

    def set_split_keys(self, split: str, keys: list[str]) -> None:
        if self.splits.get(split) != list(keys):
            self.splits[split], self.dirty = list(keys), True

    def get(self, key: str, count: int) -> tuple[torch.Tensor, torch.Tensor, bytes] | None:
        """(count, L, C) float32 means and stds and the icon's bytes of `key`, or None when the file
        holds fewer than `count` latent sets of it."""
        mean = self.tensors.get(f"{key}/mean")
        if mean is None or len(mean) < count or f"{key}/icon" not in self.tensors:
            return None
        std = self.tensors.get(f"{key}/std")
        mean = mean[:count].float()
        std = torch.zeros_like(mean) if std is None else std[:count].float()
        return mean, std, self.tensors[f"{key}/icon"].numpy().tobytes()

    def put(self, key: str, mean: torch.Tensor, std: torch.Tensor | None, icon: bytes) -> None:
        self.tensors[f"{key}/mean"] = mean.to(torch.float16).contiguous()
        if std is not None:
            self.tensors[f"{key}/std"] = std.to(torch.float16).contiguous()
        self.tensors[f"{key}/icon"] = torch.frombuffer(bytearray(icon), dtype=torch.uint8).clone()
        self.dirty = True

    def get_views(self, key: str, count: int) -> list[bytes] | None:
        """The first `count` view files of `key`, or None when the file holds fewer."""
        names = [f"{key}/view/{j}" for j in range(count)]
        if any(n not in self.tensors for n in names):
            return None
        return [self.tensors[n].numpy().tobytes() for n in names]

    def put_views(self, key: str, views: list[bytes]) -> None:
        for j, data in enumerate(views):
            self.tensors[f"{key}/view/{j}"] = torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        from safetensors.torch import save_file

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        meta = {"settings": json.dumps(self.settings, sort_keys=True), "splits": json.dumps(self.splits)}
        save_file(self.tensors, str(tmp), metadata=meta)
        os.replace(tmp, self.path)
        self.dirty = False


def column_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, K), (N, K) -> (K,) Pearson correlation of each column pair (NaN for a constant column)."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))


def collate_pairs(items: list[dict]) -> dict:
    return {
        "latents": torch.cat([it["latents"] for it in items]),
        "cu_seqlens": cu_seqlens_from_lengths([len(it["latents"]) for it in items]),
        "images": torch.stack([it["image"] for it in items]),
        "keys": [it["key"] for it in items],
    }


class LayoutFlowTask(FlowMatchingTask):
    """Train a LayoutFlow on (icon, VAE latents) pairs (module docstring).

    records:        partgen-annotate output folder(s) (with icons and volume samples)
    vae:            a trained VecSet VAE: run folder, its model/ or a checkpoint step folder
    image_size:     side of the square images the encoder reads
    num_points:     surface samples each shape is encoded from (a fixed subset per shape)
    encodings:      latent sets per training shape, each encoded from its own random subset of
                    num_points samples (other surface points, so other anchors: the same shape
                    in several valid sets); an epoch sees each shape that many times. 1: one set
    image_jitter:   in training, scale each icon by a factor in [1 - j, 1 + j] and shift it by up
                    to j x half its side, at random (jitter_image); 0: the icon as it is
    views:          training shapes are also seen in this many other views, their mesh in the icon's
                    colours (icon/views/NNN.png: scripts/render_icon_views.py), one at random in place
                    of the icon for a 1 - icon_share share of the items; 0: the icons only. Val
                    scores the icons only (what a user hands in)
    val_fraction, seed: the split (the seeded hash of asset keys every partgen task uses)
    drop_image:     share of training shapes that see the null image (classifier-free guidance)
    t_mean, t_std:  of the logit-normal timestep distribution
    posterior:      "sample" (a posterior sample per step) or "mean" (the posterior means)
    eval_max_shapes, eval_batch_size: validation size
    limit:          at most this many training shapes (the first by key)
    moment_weight:  weight of the auxiliary moment target (needs model.moment_head; module docstring)
    eval_sample_steps: Euler steps of the generation evaluate scores (0: none)
    cache:          a safetensors file of the encoded pairs (LatentCache): each record's latent sets
                    (float16) and its icon file, and the two splits' keys. Records it lacks are
                    encoded and added; with it complete, training needs neither `records` nor the
                    encoding time (a GPU machine gets the file, not the 1.4 GB of records). It
                    holds the settings it was made with and refuses others; retraining the VAE at
                    the same path needs a new file. null: encode every run
    """

    # validation scores the flow alone (the moment head has its own figure, moment_mse)
    eval_runs = {"loss": (False, {"aux": False}), "loss_null": (True, {"aux": False})}

    def __init__(
        self,
        records,
        vae: str,
        image_size: int = 128,
        num_points: int = 4096,
        val_fraction: float = 0.1,
        seed: int = 0,
        drop_image: float = 0.1,
        t_mean: float = 0.0,
        t_std: float = 1.0,
        posterior: Literal["sample", "mean"] = "sample",
        eval_max_shapes: int = 32,
        eval_batch_size: int = 8,
        limit: int | None = None,
        moment_weight: float = 0.0,
        eval_sample_steps: int = 0,
        encodings: int = 1,
        image_jitter: float = 0.0,
        cache: str | None = None,
        views: int = 0,
        icon_share: float = 0.5,
    ):
        if not 0.0 <= drop_image < 1.0:
            raise ValueError(f"drop_image must lie in [0, 1), got {drop_image}")
        if posterior not in ("sample", "mean"):
            raise ValueError(f"posterior must be 'sample' or 'mean', got {posterior!r}")
        self.posterior = posterior
        self.records, self.vae_path = records, vae
        self.image_size, self.num_points = int(image_size), int(num_points)
        self.val_fraction, self.seed = float(val_fraction), int(seed)
        self.drop_image, self.t_mean, self.t_std = float(drop_image), float(t_mean), float(t_std)
        self.eval_max_shapes, self.eval_batch_size = int(eval_max_shapes), int(eval_batch_size)
        self.limit = None if limit is None else int(limit)
        self.moment_weight, self.eval_sample_steps = float(moment_weight), int(eval_sample_steps)
        if int(encodings) < 1 or not 0.0 <= image_jitter < 1.0:
            raise ValueError(f"need encodings >= 1 and image_jitter in [0, 1), got {encodings}, {image_jitter}")
        self.encodings, self.image_jitter = int(encodings), float(image_jitter)
        if int(views) < 0 or not 0.0 < icon_share <= 1.0:
            raise ValueError(f"need views >= 0 and icon_share in (0, 1], got {views}, {icon_share}")
        self.views, self.icon_share = int(views), float(icon_share)
        self.cache = LatentCache(cache, self._cache_settings()) if cache else None
        self._vae: VecSetVAE | None = None
        self._pairs: dict[str, LatentImagePairs] = {}

    # --- data -------------------------------------------------------------------------------------

    def vae(self) -> VecSetVAE:
        if self._vae is None:
            self._vae = load_trained(self.vae_path, VecSetVAE, VAE_HINT)
        return self._vae

    def _cache_settings(self) -> dict:
        """What a cached latent set depends on besides the record (LatentCache refuses other values)."""
        return {
            "vae": str(self.vae_path),
            "num_points": self.num_points,
            "encodings": self.encodings,
            "posterior": self.posterior,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
        }

    def _split_keys(self, split: str) -> tuple[list[str], ShapeRecords | None]:
        """The split's keys (the records', or the cache's when the records folder is absent)."""
        try:
            ds = ShapeRecords(self.records, split=split, val_fraction=self.val_fraction, seed=self.seed)
        except FileNotFoundError as err:
            keys = self.cache.split_keys(split) if self.cache is not None else None
            if keys is None:
                raise RecordError(f"{err}; no complete latent cache (task.cache) stands in for it") from None
            return keys, None
        if self.cache is not None:
            self.cache.set_split_keys(split, ds.keys)
        return ds.keys, ds

    def _encode(self, ds: ShapeRecords, i: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(count, L, C) posterior means and stds of record i from `count` seeded subsets of its samples."""
        vae = self.vae()
        data = ds.load(i)
        means, stds = [], []
        for k in range(count):  # the first subset is the one a single encoding (and the bank) uses
            post = encode_record_samples(vae, data, self.num_points, self.seed, i, k)
            means.append(post.mean)
            stds.append(torch.exp(0.5 * post.logvar) if self.posterior == "sample" else torch.zeros_like(post.mean))
        return torch.stack(means), torch.stack(stds)

    @torch.no_grad()
    def pairs(self, split: Literal["train", "val"]) -> LatentImagePairs:
        if split in self._pairs:
            return self._pairs[split]
        split_keys, ds = self._split_keys(split)
        cap = self.eval_max_shapes if split == "val" else self.limit
        count = len(split_keys) if cap is None else min(cap, len(split_keys))
        encodings = self.encodings if split == "train" else 1
        n_views = self.views if split == "train" else 0
        keys, means, stds, images, owner, views = [], [], [], [], [], []
        for i, key in enumerate(split_keys[:count]):
            hit = self.cache.get(key, encodings) if self.cache is not None else None
            if hit is None:
                if ds is None:
                    raise RecordError(
                        f"record {key}: not in the latent cache {self.cache.path} and no records to encode it"
                    )
                icon = Path(ds.records[i].path) / "icon" / "icon.png"
                if not icon.is_file():
                    raise RecordError(f"record {key}: {icon} is missing (annotate with icon_camera=typical)")
                mean, std = self._encode(ds, i, encodings)
                icon_bytes = icon.read_bytes()
                if self.cache is not None:
                    self.cache.put(key, mean, std if self.posterior == "sample" else None, icon_bytes)
                    mean, std, icon_bytes = self.cache.get(key, encodings)  # float16-rounded: as a later run reads them
            else:
                mean, std, icon_bytes = hit
            image = self._picture(icon_bytes, f"record {key}: icon/icon.png", "annotate with icon_camera=typical")
            if n_views:
                views.append(self._views(key, ds, i, n_views))
            for k in range(encodings):
                keys.append(key)
                owner.append(len(images))
                means.append(mean[k])
                stds.append(std[k])
            images.append(image)
        if self.cache is not None:
            self.cache.save()
        if split == "train" and not keys:
            raise ValueError(f"no training shape in {self.records}")
        if means:
            mean, std = torch.stack(means), torch.stack(stds)
        else:
            vae = self.vae()
            mean = std = torch.zeros(0, vae.num_latents, vae.latent_dim)
        img = torch.stack(images) if images else torch.zeros(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
        self._pairs[split] = LatentImagePairs(
            keys,
            mean,
            std,
            img,
            sample=split == "train",
            noise_seed=self.seed,
            image_index=torch.tensor(owner, dtype=torch.long),
            jitter=self.image_jitter if split == "train" else 0.0,
            views=torch.stack(views) if views else None,
            icon_share=self.icon_share,
        )
        return self._pairs[split]

    def _views(self, key: str, ds: ShapeRecords | None, i: int, count: int) -> torch.Tensor:
        """(count, 3, S, S) uint8: record i's other views (icon/views/NNN.png), from the cache or the records."""
        files = self.cache.get_views(key, count) if self.cache is not None else None
        if files is None:
            if ds is None:
                raise RecordError(
                    f"record {key}: its views are not in the latent cache {self.cache.path} and no records"
                )
            folder = Path(ds.records[i].path) / "icon" / "views"
            paths = [folder / f"{j:03d}.png" for j in range(count)]
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise RecordError(
                    f"record {key}: {missing[0]} is missing ({count} views wanted): render them with "
                    f"scripts/render_icon_views.py --records <the records folder> --views {count}"
                )
            files = [p.read_bytes() for p in paths]
            if self.cache is not None:
                self.cache.put_views(key, files)
        remedy = "render it again with scripts/render_icon_views.py"
        return torch.stack([self._picture(data, f"record {key}: view {j}", remedy) for j, data in enumerate(files)])

    def _picture(self, data: bytes, source: str, remedy: str) -> torch.Tensor:
        """(3, S, S) uint8 of an image file's bytes; RecordError naming the source and the remedy."""
        try:
            return (image_from_bytes(data, self.image_size, source) * 255).round().to(torch.uint8)
        except ImageError as err:
            raise RecordError(f"{err} ({remedy})") from None

    def train_dataset(self) -> torch.utils.data.Dataset:
        return self.pairs("train")

    def collate(self, items: list) -> dict:
        return collate_pairs(items)

    def prepare(self, model: nn.Module) -> None:
        """Standardise the flow's space with the training latents' per-channel statistics."""
        train = self.pairs("train")
        if self.cache is not None:
            self.pairs("val")  # the cache then holds both splits: a run without the records trains from it
        if model.latent_channels != train.mean.shape[-1]:
            raise ValueError(
                f"the flow has {model.latent_channels} latent channels, the VAE {train.mean.shape[-1]} "
                f"(set model.latent_channels)"
            )
        samples = train.draw(4, self.seed)  # posterior samples, not means: channels the KL left near the prior
        model.set_latent_stats(samples.reshape(-1, samples.shape[-1]).to(model.latent_mean.device))  # vary by ~1

    # --- objective --------------------------------------------------------------------------------

    def _loss(
        self,
        model,
        batch: dict,
        t: torch.Tensor,
        noise: torch.Tensor,
        drop: torch.Tensor,
        aux: bool = True,
    ) -> torch.Tensor:
        """The flow-matching MSE, plus (aux) moment_weight x the moment MSE of the shapes that see
        their image."""
        device = next(model.parameters()).device
        flow = unwrap(model)
        x0 = flow.standardise(batch["latents"].to(device))
        cu = batch["cu_seqlens"].to(device)
        rows = torch.repeat_interleave(t.to(device), (cu[1:] - cu[:-1]).long())
        x_t, target = interpolate(x0, noise.to(device), rows)
        images, drop = batch["images"].to(device), drop.to(device)
        if not (aux and self.moment_weight > 0):
            v = model(x_t, cu, t.to(device), images=images, drop=drop)
            return torch.mean((v.float() - target) ** 2)
        true_moments = set_moments(x0, cu)
        v, predicted = model(x_t, cu, t.to(device), images=images, drop=drop, moments=True)
        seen = ~drop
        moment = torch.mean((predicted[seen].float() - true_moments[seen]) ** 2) if bool(seen.any()) else 0.0
        return torch.mean((v.float() - target) ** 2) + self.moment_weight * moment

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The losses (FlowMatchingTask), then, with eval_sample_steps, generated latents against the
        val latents: moment_r, the correlation across shapes of each channel's per-shape std (its
        spread over the set), averaged over channels; extent_r, the same over the anchor xyz
        channels of an anchored VAE (the shapes' extents); both near 0 when the image is ignored.
        With a moment head, moment_mse: its val error on the standardised set moments."""
        out = super().evaluate(model)
        val = self._val()
        flow = unwrap(model)
        if len(val) < 3:
            return out
        batches = [
            self.collate([val[i] for i in range(s, min(s + self.eval_batch_size, len(val)))])
            for s in range(0, len(val), self.eval_batch_size)
        ]
        device = next(model.parameters()).device
        if flow.moment_head is not None:
            errors = []
            for batch in batches:
                cu = batch["cu_seqlens"].to(device)
                x0 = flow.standardise(batch["latents"].to(device))
                predicted = flow.predict_moments(flow.encode_images(batch["images"].to(device)))
                errors.append(((predicted.float() - set_moments(x0, cu)) ** 2).mean(1))
            out["moment_mse"] = float(torch.cat(errors).mean())
        if self.eval_sample_steps > 0:
            g = torch.Generator().manual_seed(self.seed)
            true, generated = [], []
            for batch in batches:
                cu = batch["cu_seqlens"]
                length = int(cu[1] - cu[0])
                images = batch["images"].to(device)
                gcu = cu_seqlens_from_lengths([length] * images.shape[0], device=device)
                x = sample_sets(
                    functools.partial(flow, context=flow.encode_images(images)),
                    gcu,
                    flow.latent_channels,
                    EVAL_GUIDANCE,
                    steps=self.eval_sample_steps,
                    generator=g,
                )
                z = flow.unstandardise(x)
                true.append(set_moments(batch["latents"].float(), cu)[:, flow.latent_channels :])
                generated.append(set_moments(z.float().cpu(), gcu.cpu())[:, flow.latent_channels :])
            r = column_correlation(torch.cat(true), torch.cat(generated))
            out["moment_r"] = float(r.nanmean())
            if self.vae().anchored:
                out["extent_r"] = float(r[:3].nanmean())
        return out

    def _latents(self, batch: dict) -> torch.Tensor:
        return batch["latents"]

    def _val(self) -> LatentImagePairs:
        return self.pairs("val")


__all__ = ["LatentCache", "LatentImagePairs", "LayoutFlowTask", "collate_pairs", "jitter_image"]
