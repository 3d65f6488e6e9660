"""Stage 1 at inference: an image -> VecSet latents (layout flow) -> coarse occupancy -> sparse voxels.

Legend: L latent tokens, C channels, R grid resolution, V voxels at the stage-2 resolution.

LayoutGenerator holds a trained VecSetVAE and LayoutFlow (model folders as partgen-train writes
them; EMA weights preferred) and runs, for one image:
    sample_sets       L latents by Euler sampling of the flow with classifier-free guidance
                      (partgen.diffusion.flow, the flow model as the callable, its image context bound)
    vae.decode        the latent set -> tokens
    vae.decode_grid   the occupancy on an R^3 grid, hierarchically (coarse first, refined at the surface)
    occupancy_to_voxels  the stage-2 coordinates at `voxel_resolution`, dilated by `dilation`
and reports the time of each. The grid also gives a coarse mesh (vecset_vae.extract_mesh). With a
reference bank the flow starts from a training shape instead (of those whose icons are nearest, the
one whose outline best explains the image's: choose_reference) and moves it (flow_edit, or
sample_sets from it: reference_edit), and the shape's own mesh, carried by the moved anchors,
replaces the decoded occupancy (partgen.pipelines.references).

coordinates="anchors" (an anchored VAE only) takes the stage-2 coordinates from the generated
latents' anchors instead (vecset_vae.anchor_voxels: the voxels within `anchor_band` of an anchor):
the layout VAE decodes a blur whose 0.5 level lies several voxels outside the surface, while its
anchors are surface points. On the 48 val shapes' own latents (posterior means of the second
bundle's anchored layout VAE) the surface crossing gives voxel IoU 0.04 / recall 0.32 with 59k voxels, a band of 2
gives 0.27 / 0.74 with 19k, a band of 3 0.21 / 0.90 with 38k. On generated latents the gain is
smaller (its flow, 48 held-out icons, unguided: surface 0.081 / 0.40 with 45k voxels, band 3 0.096 / 0.48
with 40k), and end to end on 8 held-out icons a band of 2 (stage 2 trained on surface voxels all
the same) gave Chamfer 0.051 / F@0.05 0.53 against 0.058 / 0.47 from the surface, with 20k tokens
against 16k: partgen-generate uses "auto", a band of 2.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import torch

from partgen.diffusion.flow import flow_edit, sample_sets
from partgen.models.io import load_trained
from partgen.models.layout_flow import LayoutFlow
from partgen.models.vecset_vae import GridValues, VecSetVAE, anchor_voxels, occupancy_to_voxels
from partgen.pipelines.references import ReferenceBank, ReferenceMesh, deform_by_anchors
from partgen.structures import cu_seqlens_from_lengths


@dataclasses.dataclass
class Layout:
    """One generated layout: latents (L, C), voxels (V, 3) int32, seconds per stage, and either the
    occupancy grid the VAE decoded (grid) or, when the flow started from a reference shape, that
    shape's coarse mesh carried by the generated anchors with its parts (mesh) and its key."""

    latents: torch.Tensor
    grid: GridValues | None
    voxels: torch.Tensor
    times: dict[str, float]
    mesh: ReferenceMesh | None = None
    reference: str | None = None
    part_count: int | None = None  # the image's likely authored part count (ReferenceBank.part_count), if any


def cube_surface_voxels(vertices, faces, resolution: int):
    """A mesh normalised into the cube as every record is, and the voxels its surface crosses at
    `resolution`: ((n, 3) float64 vertices, (V, 3) int64 coordinates), stage 2's layout."""
    import numpy as np

    from partgen.data_pipeline.mesh_io import normalise
    from partgen.data_pipeline.voxelize import voxelize_surface

    vertices = np.asarray(vertices, np.float64)
    vertices = normalise(vertices, faces).apply(vertices)
    return vertices, voxelize_surface(vertices, faces, resolution).coords.astype(np.int64)


class LayoutGenerator:
    """See the module docstring. steps, guidance, shift: of the flow sampler; resolution, coarse:
    of the occupancy grid; voxel_resolution, dilation: of the stage-2 coordinates; coordinates:
    "surface" (the decoded surface's voxels), "anchors" (within anchor_band voxels of an anchor) or
    "auto" (anchors when the VAE is anchored); references, strength: a ReferenceBank (of the
    VAE's latents) and the time the flow starts at from the chosen reference's latents (strength
    1 or no bank: from pure noise; see partgen.pipelines.references); candidates,
    silhouette_weight: how a call given the image's mask chooses that reference (choose_reference;
    on the training icons, leave one out, 8 and 3 raise the reference's view IoU 0.634 -> 0.659
    against the nearest icon's shape, generator README); reference_edit: how the flow
    moves the reference, "flowedit" (by the difference of its velocities under the image and under
    the reference's own icon, which the bank must hold; `steps` Euler steps, unguided) or
    "sdedit" (noised to t = strength, then sampled with the image); part_neighbours: a layout
    carried from a reference also brings the part count the image's object likely has, from that
    many icons nearest by embedding (ReferenceBank.part_count; 0: none, the reference's own parts
    stand). The defaults are partgen-generate's (conf/generate.yaml: layout_steps, layout_cfg,
    dilation, coordinates, anchor_band, reference_strength, reference_edit, part_neighbours)."""

    def __init__(
        self,
        vae: VecSetVAE,
        flow: LayoutFlow,
        steps: int = 25,
        guidance: float = 1.0,
        shift: float = 1.0,
        resolution: int = 128,
        coarse: int = 32,
        voxel_resolution: int = 64,
        dilation: int = 0,
        coordinates: str = "auto",
        anchor_band: int = 2,
        references: ReferenceBank | None = None,
        strength: float = 0.7,
        reference_edit: str = "flowedit",
        candidates: int = 8,
        silhouette_weight: float = 3.0,
        part_neighbours: int = 8,
    ):
        if coordinates not in ("auto", "surface", "anchors"):
            raise ValueError(f"coordinates must be 'auto', 'surface' or 'anchors', got {coordinates!r}")
        if coordinates == "auto":
            coordinates = "anchors" if vae.anchored else "surface"
        if coordinates == "anchors" and not vae.anchored:
            raise ValueError("coordinates='anchors' needs an anchored layout VAE (its latents lead with positions)")
        self.coordinates, self.anchor_band = coordinates, int(anchor_band)
        if flow.latent_channels != vae.latent_dim:
            raise ValueError(f"the flow makes {flow.latent_channels}-channel latents, the VAE reads {vae.latent_dim}")
        self.vae, self.flow = vae, flow
        self.steps, self.guidance, self.shift = int(steps), float(guidance), float(shift)
        self.resolution, self.coarse = int(resolution), int(coarse)
        self.voxel_resolution, self.dilation = int(voxel_resolution), int(dilation)
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if references is not None:
            if references.latents.shape[1:] != (vae.num_latents, vae.latent_dim) or not vae.anchored:
                raise ValueError(
                    f"the reference bank holds {tuple(references.latents.shape[1:])} latent sets; this layout "
                    f"VAE makes anchored ({vae.num_latents}, {vae.latent_dim}) sets: build the bank with it"
                )
        if reference_edit not in ("flowedit", "sdedit"):
            raise ValueError(f"reference_edit must be 'flowedit' or 'sdedit', got {reference_edit!r}")
        if reference_edit == "flowedit" and references is not None and references.icons is None:
            raise ValueError(
                "reference_edit='flowedit' needs the references' icons, and this bank has none (built before "
                "them): rebuild it with scripts/build_references.py, or set reference_edit=sdedit"
            )
        if int(candidates) < 1 or silhouette_weight < 0 or int(part_neighbours) < 0:
            raise ValueError(
                "candidates must be at least 1, silhouette_weight and part_neighbours at least 0, got "
                f"{candidates}, {silhouette_weight}, {part_neighbours}"
            )
        self.references, self.strength, self.reference_edit = references, float(strength), reference_edit
        self.candidates, self.silhouette_weight = int(candidates), float(silhouette_weight)
        self.part_neighbours = int(part_neighbours)
        self._embedder = None

    @classmethod
    def from_checkpoints(cls, vae: str | Path, flow: str | Path, **options) -> LayoutGenerator:
        vae_model = load_trained(vae, VecSetVAE, "train one with partgen-train experiment=layout_vae")
        flow_model = load_trained(flow, LayoutFlow, "train one with partgen-train experiment=layout_flow")
        return cls(vae_model, flow_model, **options)

    @property
    def image_size(self) -> int:
        return int(self.flow.image_encoder.image_size)

    @property
    def uses_references(self) -> bool:
        return self.references is not None and self.strength < 1.0

    def image_embedding(self, image: torch.Tensor) -> torch.Tensor:
        """(E,) the unit ImageNet EfficientNet-Lite0 embedding of image (3, S, S), as the bank's icons have."""
        from partgen.models.efficientnet import efficientnet_lite0

        if self._embedder is None:
            self._embedder = efficientnet_lite0().to(image.device)
        return self._embedder.embed(image[None])[0].cpu()

    def choose_reference(self, image: torch.Tensor, mask=None, embedding: torch.Tensor | None = None) -> int:
        """The bank index of the reference for image (3, S, S): the one whose icon is nearest
        (ReferenceBank.distances), or, given the image's framed object mask (proportions.image_mask),
        the one among the `candidates` nearest whose distance + silhouette_weight x (1 - its outline's
        best IoU with the mask over the icon views, proportions.best_view_iou) is least: of two icons
        alike, the shape that can look like the image from some view wins. embedding: the image's
        (image_embedding), when the caller has it."""
        import numpy as np

        from partgen.eval.retrieval import icon_descriptor
        from partgen.pipelines.proportions import best_view_iou

        embedding = self.image_embedding(image) if embedding is None else embedding
        pixels = (image.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        distances = self.references.distances(embedding, torch.from_numpy(icon_descriptor(pixels)))
        if mask is None or self.candidates == 1 or self.silhouette_weight == 0:
            return int(distances.argmin())
        nearest = torch.argsort(distances)[: self.candidates].tolist()
        scores = []
        for index in nearest:
            ref = self.references.meshes[index]
            scores.append(
                float(distances[index]) + self.silhouette_weight * (1 - best_view_iou(ref.vertices, ref.faces, mask))
            )
        return nearest[int(np.argmin(scores))]

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        seed: int = 0,
        num_latents: int | None = None,
        progress: str | None = None,
        mask=None,
    ) -> Layout:
        """image (3, S, S) in [0, 1] (partgen.models.image_encoder.load_image) -> Layout; progress: a
        label for a progress bar over the sampling steps (None: quiet); mask: None, or the image's
        framed object mask (proportions.image_mask), with which the reference is chosen by its
        outline too (choose_reference)."""
        if image.shape != (3, self.image_size, self.image_size):
            raise ValueError(f"image must be (3, {self.image_size}, {self.image_size}), got {tuple(image.shape)}")
        times = {}
        t0 = time.perf_counter()
        flow, start, index, count = self.flow, None, None, None
        if self.uses_references:
            embedding = self.image_embedding(image)
            index = self.choose_reference(image, mask, embedding)
            if self.part_neighbours:
                count = self.references.part_count(embedding, self.part_neighbours)
            start = flow.standardise(self.references.latents[index].to(image.device))
            num_latents = len(start)
            times["retrieve_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        cu = cu_seqlens_from_lengths([num_latents or self.vae.num_latents], device=image.device)
        context = flow.encode_images(image[None])
        if start is not None and self.reference_edit == "flowedit":
            source = flow.encode_images(self.references.icon(index, self.image_size)[None].to(image.device))
            x = flow_edit(
                lambda x, t: flow(x, cu, t, context=source),
                lambda x, t: flow(x, cu, t, context=context),
                start,
                self.strength,
                steps=self.steps,
                generator=torch.Generator().manual_seed(seed),
                progress=progress,
            )
        else:
            x = sample_sets(
                functools.partial(flow, context=context),
                cu,
                flow.latent_channels,
                guidance=self.guidance,
                steps=self.steps,
                shift=self.shift,
                generator=torch.Generator().manual_seed(seed),
                progress=progress,
                start=start,
                strength=self.strength if start is not None else 1.0,
            )
        latents = flow.unstandardise(x)
        times["flow_s"] = time.perf_counter() - t0
        if index is not None:
            return self._carry_reference(index, latents, times, count)
        t0 = time.perf_counter()
        grid = self.vae.decode_grid(self.vae.decode(latents, cu), resolution=self.resolution, coarse=self.coarse)
        times["decode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.coordinates == "anchors":
            voxels = anchor_voxels(latents, self.voxel_resolution, self.anchor_band)
        else:
            voxels = occupancy_to_voxels(grid, self.voxel_resolution, self.dilation)
        times["voxels_s"] = time.perf_counter() - t0
        return Layout(latents, grid, voxels, times)

    def _carry_reference(
        self, index: int, latents: torch.Tensor, times: dict[str, float], part_count: int | None = None
    ) -> Layout:
        """The reference's coarse mesh moved with its anchors to the generated ones (deform_by_anchors),
        normalised into the cube as every record is -> its surface voxels at voxel_resolution."""
        t0 = time.perf_counter()
        ref = self.references.meshes[index]
        before = self.references.latents[index][:, :3].numpy()
        moved = deform_by_anchors(ref.vertices, before, latents[:, :3].cpu().double().numpy())
        moved, voxels = cube_surface_voxels(moved, ref.faces, self.voxel_resolution)
        times["voxels_s"] = time.perf_counter() - t0
        mesh = ReferenceMesh(moved, ref.faces, ref.face_part, ref.part_names)
        return Layout(
            latents, None, torch.from_numpy(voxels).int(), times, mesh, self.references.keys[index], part_count
        )


__all__ = ["Layout", "LayoutGenerator", "cube_surface_voxels"]
