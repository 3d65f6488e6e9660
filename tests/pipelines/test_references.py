"""Reference-augmented stage 1 (partgen.pipelines.references): the anchor-driven deformation, the
bank's file round trip and retrieval, and LayoutGenerator starting its flow from a reference
(tiny untrained models; the bank built by hand)."""

import numpy as np
import pytest
import torch
import trimesh

from partgen.eval.retrieval import icon_descriptor
from partgen.models.efficientnet import efficientnet_lite0
from partgen.models.image_encoder import ViTEncoder
from partgen.models.layout_flow import LayoutFlow
from partgen.models.vecset_vae import VecSetVAE
from partgen.pipelines.layout import LayoutGenerator
from partgen.pipelines.references import (
    ReferenceBank,
    ReferenceMesh,
    decimate_parts,
    deform_by_anchors,
    part_class_names,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_points_follow_the_anchors_round_them():
    rng = np.random.default_rng(0)
    anchors = rng.uniform(-0.5, 0.5, (64, 3))
    points = np.concatenate([rng.uniform(-0.5, 0.5, (500, 3)), anchors[0] + rng.normal(0, 0.01, (5, 3))])
    assert np.allclose(deform_by_anchors(points, anchors, anchors), points)
    shift = np.array([0.1, -0.2, 0.05])
    assert np.allclose(deform_by_anchors(points, anchors, anchors + shift), points + shift)
    # stretch x by 1.5: the field is smooth, so points move about as the stretch does
    stretched = deform_by_anchors(points, anchors, anchors * [1.5, 1, 1])
    assert np.abs(stretched[:, 0] - 1.5 * points[:, 0]).mean() < 0.05
    # one anchor moves: only the points nearest to it follow
    moved = anchors.copy()
    moved[0] += [0.3, 0, 0]
    out = deform_by_anchors(points, anchors, moved)
    near = np.linalg.norm(points - anchors[0], axis=1) < 0.04
    far = np.linalg.norm(points - anchors[0], axis=1) > 0.4
    assert (out[near, 0] - points[near, 0]).min() > 0.2 and np.abs(out[far] - points[far]).max() < 0.03
    with pytest.raises(ValueError, match="anchors"):
        deform_by_anchors(points, anchors, anchors[:3])


def test_parts_are_decimated_apart_and_named_by_the_taxonomy():
    box = trimesh.creation.box((1, 0.2, 0.6)).subdivide().subdivide()
    face_part = (box.triangles_center[:, 0] > 0).astype(np.int64)
    v, f, p = decimate_parts(box.vertices, box.faces, face_part, 100)
    assert len(f) <= 110 and set(np.unique(p)) == {0, 1}
    assert (v[f[p == 1]].mean((0, 1))[0] > 0) and (v[f[p == 0]].mean((0, 1))[0] < 0)  # each part stays where it was
    assert decimate_parts(box.vertices, box.faces, face_part, 10**6)[1] is box.faces
    assert part_class_names(["Pied_1", "Assise", "Cube.001"]) == ["leg", "seat", "part"]


def tiny_models():
    torch.manual_seed(0)
    vae = VecSetVAE(num_latents=16, latent_channels=4, width=32, heads=4, decoder_depth=1, num_freqs=4, anchored=True)
    flow = LayoutFlow(ViTEncoder(32, 8, 32, 1, 4), latent_channels=vae.latent_dim, width=32, depth=1, heads=4)
    return vae.eval(), flow.eval()


def images() -> list[torch.Tensor]:
    """A red disc and a blue bar on white, (3, 32, 32) in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disc, bar = ((xx - 16) ** 2 + (yy - 16) ** 2 < 100), ((xx - 16).abs() < 3) & ((yy - 16).abs() < 13)
    out = []
    for mask, colour in ((disc, (0.9, 0.1, 0.1)), (bar, (0.1, 0.1, 0.9))):
        im = torch.ones(3, 32, 32)
        for c in range(3):
            im[c][mask] = colour[c]
        out.append(im)
    return out


def bank_of(vae: VecSetVAE, pictures: list[torch.Tensor]) -> ReferenceBank:
    """Two references: a box (parts left/right) and a tall box, with latents whose anchors lie on them."""
    net = efficientnet_lite0()
    meshes, latents = [], []
    for size in ((0.8, 0.3, 0.5), (0.2, 0.9, 0.2)):
        box = trimesh.creation.box(size).subdivide()
        part = (box.triangles_center[:, 0] > 0).astype(np.int64)
        meshes.append(ReferenceMesh(box.vertices.astype(np.float32), box.faces, part, ["leg", "seat"]))
        anchors = torch.from_numpy(box.sample(vae.num_latents, seed=0)).float()
        latents.append(torch.cat([anchors, torch.randn(vae.num_latents, vae.latent_dim - 3)], 1))
    with torch.no_grad():
        emb = torch.cat([net.embed(p[None]) for p in pictures])
    desc = torch.stack(
        [torch.from_numpy(icon_descriptor((p.permute(1, 2, 0).numpy() * 255).astype(np.uint8))) for p in pictures]
    )
    icons = [png_bytes(p) for p in pictures]
    return ReferenceBank(["box", "tall"], torch.stack(latents), emb, desc, meshes, (0.5, 5.0), icons)


def png_bytes(picture: torch.Tensor) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_bank_round_trips_and_retrieves_the_nearest_icon(tmp_path):
    vae, _ = tiny_models()
    pictures = images()
    bank = bank_of(vae, pictures)
    back = ReferenceBank.load(bank.save(tmp_path / "references.safetensors"))
    assert back.keys == ["box", "tall"] and back.scales == (0.5, 5.0)
    assert torch.allclose(back.latents, bank.latents) and back.meshes[1].part_names == ["leg", "seat"]
    assert np.allclose(back.meshes[0].vertices, bank.meshes[0].vertices, atol=1e-3)
    assert np.array_equal(back.meshes[0].faces, bank.meshes[0].faces)
    assert back.icons == bank.icons and torch.allclose(back.icon(1, 32), pictures[1], atol=1 / 255)
    for i in range(2):
        assert int(back.distances(bank.embeddings[i], bank.descriptors[i]).argmin()) == i
    with pytest.raises(ValueError, match="not a reference bank"):
        ReferenceBank.load(tmp_path / "missing.safetensors")


def test_the_flow_starts_from_the_nearest_reference_and_carries_its_mesh():
    vae, flow = tiny_models()
    pictures = images()
    bank = bank_of(vae, pictures)
    options = {"steps": 3, "voxel_resolution": 16, "resolution": 32, "coarse": 8}
    generator = LayoutGenerator(vae, flow, references=bank, strength=0.1, **options)
    layout = generator(pictures[1], seed=0)
    assert layout.reference == "tall" and layout.grid is None
    # strength 0.1: the set stays nearer the reference it started from than the other one; its mesh is
    # that reference's, moved and normalised
    own, other = ((layout.latents[:, :3] - bank.latents[i][:, :3]).abs().mean() for i in (1, 0))
    assert own < other
    extent = np.ptp(layout.mesh.vertices, 0)
    assert extent.max() == pytest.approx(1.0) and extent[1] > 2 * extent[0]  # still the tall box
    assert layout.mesh.part_names == ["leg", "seat"] and np.array_equal(layout.mesh.faces, bank.meshes[1].faces)
    assert len(layout.voxels) > 0 and layout.voxels.max() < 16
    assert torch.equal(generator(pictures[1], seed=0).voxels, layout.voxels)  # seeded
    assert generator(pictures[0], seed=0).reference == "box"
    plain = LayoutGenerator(vae, flow, references=bank, strength=1.0, **options)(pictures[1], seed=0)
    assert plain.reference is None and plain.mesh is None and plain.grid is not None
    with pytest.raises(ValueError, match="build the bank with it"):
        LayoutGenerator(
            VecSetVAE(num_latents=8, latent_channels=4, width=32, heads=4, anchored=True), flow, references=bank
        )
    with pytest.raises(ValueError, match="strength"):
        LayoutGenerator(vae, flow, strength=0.0)


def test_the_reference_is_chosen_among_the_nearest_icons_by_its_outline_too():
    """Given the image's object mask, the reference is the candidate whose distance + weight x (1 -
    its best view IoU) is least: a disc's icon (nearest: the box's) whose outline is a tall bar takes
    the tall box; one candidate, or weight 0, keeps the nearest icon's shape."""
    from partgen.pipelines.proportions import best_view_iou, framed_mask

    vae, flow = tiny_models()
    pictures = images()
    bank = bank_of(vae, pictures)
    bar = framed_mask(pictures[1].sum(0) < 2.5)
    tall, wide = (best_view_iou(m.vertices, m.faces, bar) for m in (bank.meshes[1], bank.meshes[0]))
    assert tall > 0.7 and wide < tall - 0.2
    options = {"steps": 2, "voxel_resolution": 16, "resolution": 32, "coarse": 8, "strength": 0.1}

    def chosen(**kw) -> str:
        return LayoutGenerator(vae, flow, references=bank, **(options | kw))(pictures[0], seed=0, mask=bar).reference

    assert LayoutGenerator(vae, flow, references=bank, **options)(pictures[0], seed=0).reference == "box"  # no mask
    assert chosen(candidates=2, silhouette_weight=100.0) == "tall"
    assert chosen(candidates=1, silhouette_weight=100.0) == "box"
    assert chosen(candidates=2, silhouette_weight=0.0) == "box"
    with pytest.raises(ValueError, match="candidates"):
        LayoutGenerator(vae, flow, references=bank, candidates=0)


def test_flowedit_moves_the_reference_only_where_the_image_differs_from_its_icon(tmp_path):
    """reference_edit="flowedit": given the reference's own icon, the velocities under the image and
    under the icon agree and the set comes back as the reference's, whatever the noise; another
    image moves it. A bank without icons is refused for flowedit, by name."""
    vae, flow = tiny_models()
    with torch.no_grad():  # off adaLN-Zero's zero start, so the velocity reads the image
        for p in flow.parameters():
            torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else None
    pictures = images()
    bank = bank_of(vae, pictures)
    options = {"steps": 4, "voxel_resolution": 16, "resolution": 32, "coarse": 8, "reference_edit": "flowedit"}
    generator = LayoutGenerator(vae, flow, references=bank, strength=0.7, **options)
    own = generator(bank.icon(1, 32), seed=3)  # the bar as its PNG gives it (the float picture differs by rounding)
    assert own.reference == "tall"
    torch.testing.assert_close(own.latents, bank.latents[1], atol=1e-5, rtol=0)
    sdedit = LayoutGenerator(vae, flow, references=bank, strength=0.7, **(options | {"reference_edit": "sdedit"}))
    assert (sdedit(pictures[1], seed=3).latents - bank.latents[1]).abs().max() > 1e-2  # SDEdit moves it anyway
    fields = (bank.keys, bank.latents, bank.embeddings, bank.descriptors, bank.meshes, bank.scales)
    swapped = ReferenceBank(*fields, bank.icons[::-1])  # "tall" (still retrieved) now carries the disc's icon
    moved = LayoutGenerator(vae, flow, references=swapped, strength=0.7, **options)(pictures[1], seed=3)
    assert moved.reference == "tall" and (moved.latents - bank.latents[1]).abs().max() > 1e-3
    bare = ReferenceBank(*fields)
    with pytest.raises(ValueError, match="needs the references' icons"):
        LayoutGenerator(vae, flow, references=bare, **options)
    with pytest.raises(ValueError, match="reference_edit"):
        LayoutGenerator(vae, flow, references=bank, reference_edit="inversion")


def test_the_part_count_is_the_one_most_nearest_icons_are_within_one_of():
    """ReferenceBank.part_count: the count (1..max_parts) within one of the most authored counts of the
    `neighbours` icons nearest by embedding; a tie goes to the count nearest the nearest icon's."""
    # icon i's embedding at angle i: a query at angle 0 has icon 0 nearest, then 1, ...
    angles = torch.linspace(0.0, 1.5, 9)
    embeddings = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    box = trimesh.creation.box()
    counts = [5, 6, 6, 1, 1, 1, 1, 1, 12]
    meshes = [ReferenceMesh(box.vertices, box.faces, np.zeros(12, np.int64), ["part"] * c) for c in counts]
    bank = ReferenceBank(
        [str(i) for i in range(9)], torch.zeros(9, 2, 4), embeddings, torch.zeros(9, 3), meshes, (1, 1)
    )
    query = embeddings[0]
    assert bank.part_count(query, neighbours=1) == 5  # one icon: its own count
    assert bank.part_count(query, neighbours=3) == 5  # 5 and 6 are within one of all three: nearer the nearest's 5
    # five icons of one part outvote three of five or six; 1 and 2 are within one of all five, 2 nearer 5
    assert bank.part_count(query, neighbours=8) == 2
    assert bank.part_count(embeddings[8], neighbours=1) == 8  # counts beyond max_parts are max_parts
    assert bank.part_count(embeddings[8], neighbours=1, max_parts=16) == 12
    bank.embedding_distances = lambda e: torch.full((9,), float("inf"))  # every icon hidden
    with pytest.raises(ValueError, match="no reference"):
        bank.part_count(query)
