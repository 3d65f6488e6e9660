"""PartRecords over tiny fake annotation records: splits, evaluation libraries, items, augmentation, collate."""

import json

import numpy as np
import pytest
import torch

from partgen.data_pipeline.datasets import (
    PartRecords,
    RecordError,
    augment_points,
    collate_points,
    split_of,
)
from partgen.data_pipeline.taxonomy import CLASSES, IGNORE

NAMES = ("Seat", "Pied_1", "Cube.001")  # seat, leg, meaningless


def write_record(out, key, *, library="default", names=NAMES, samples=300, seed=0, status="ok", points=None):
    """One record folder as partgen-annotate writes it, plus its manifest row (returned, not written)."""
    rng = np.random.default_rng(seed)
    rec = out / "records" / key
    rec.mkdir(parents=True)
    if points is None:
        points = rng.uniform(-0.5, 0.5, (samples, 3)).astype(np.float32)
    normals = rng.normal(size=points.shape)
    normals = (normals / np.linalg.norm(normals, axis=1, keepdims=True)).astype(np.float32)
    part = (np.arange(len(points)) % len(names)).astype(np.int16)
    with open(rec / "samples.npz", "wb") as f:
        np.savez(f, points=points, normals=normals, part=part, sharp=np.zeros(len(points), bool))
    source = f"/cache/sweethome3d/libraries/{library}/models/{key}.obj"
    meta = {"key": key, "source": source, "library": library, "parts": {"names": list(names), "flags": []}}
    (rec / "meta.json").write_text(json.dumps(meta))
    return {"key": key, "source": source, "status": status, "reason": "", "record": f"records/{key}"}


def write_manifest(out, rows, name="manifest-00000-of-00001.jsonl"):
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out / name


@pytest.fixture
def corpus(tmp_path):
    out = tmp_path / "ann"
    rows = [write_record(out, f"default-{i:04d}-item", seed=i) for i in range(40)]
    write_manifest(out, rows)
    return out, rows


def test_split_is_disjoint_deterministic_and_order_free(corpus, tmp_path):
    out, rows = corpus
    train = set(PartRecords(out, split="train", val_fraction=0.25).keys)
    val = set(PartRecords(out, split="val", val_fraction=0.25).keys)
    everything = set(PartRecords(out, split="all").keys)
    assert train and val
    assert not train & val
    assert train | val == everything == {r["key"] for r in rows}
    assert set(PartRecords(out, split="val", val_fraction=0.25).keys) == val  # deterministic
    # the same records listed in reverse order, and a subset: every key keeps its split
    write_manifest(out, rows[::-1])
    assert set(PartRecords(out, split="val", val_fraction=0.25).keys) == val
    for row in rows[:10]:
        row["record"] = str(out / row["record"])  # a manifest elsewhere pointing at the same folders
    subset = write_manifest(tmp_path / "sub", rows[:10])
    assert set(PartRecords(subset, split="val", val_fraction=0.25).keys) == val & {r["key"] for r in rows[:10]}
    # another seed gives another split
    assert set(PartRecords(out, split="val", val_fraction=0.25, seed=1).keys) != val
    assert split_of("a", 0.0) == "train"


def test_evaluation_library_is_refused_outside_eval(tmp_path):
    out = tmp_path / "ann"
    rows = [write_record(out, "default-0001-chair"), write_record(out, "Scopia-0001-chair", library="Scopia")]
    write_manifest(out, rows)
    for split in ("train", "val", "all"):
        with pytest.raises(ValueError, match="evaluation-only.*Scopia-0001-chair"):
            PartRecords(out, split=split)
    assert sorted(PartRecords(out, split="eval").keys) == ["Scopia-0001-chair", "default-0001-chair"]
    # recognised from the source path too, when meta.json carries no library
    meta_path = out / "records" / "Scopia-0001-chair" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["library"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="evaluation-only"):
        PartRecords(out, split="train")
    with pytest.raises(ValueError, match="training only"):
        PartRecords(out, split="eval", augment=True)


def test_items_shapes_dtypes_and_semantics(corpus):
    out, _ = corpus
    ds = PartRecords(out, split="all", num_points=100)
    item = ds[0]
    assert set(item) == {"points", "normals", "part", "semantic", "key"}
    assert item["points"].shape == (100, 3) and item["points"].dtype == torch.float32
    assert item["normals"].shape == (100, 3) and item["normals"].dtype == torch.float32
    assert item["part"].shape == (100,) and item["part"].dtype == torch.int64
    assert item["semantic"].shape == (100,) and item["semantic"].dtype == torch.int64
    assert item["key"] == ds.keys[0]
    expected = torch.tensor([CLASSES.index("seat"), CLASSES.index("leg"), IGNORE])
    assert torch.equal(item["semantic"], expected[item["part"]])
    # no augmentation outside training: points are a subset of the record's samples, normals unit
    full = ds.load(0)["points"]
    assert all((np.abs(full - p).sum(1) == 0).any() for p in item["points"].numpy()[:10])
    assert torch.allclose(item["normals"].norm(dim=1), torch.ones(100), atol=1e-5)
    # fixed subset outside training, a fresh one each time in training
    assert torch.equal(ds[0]["points"], ds[0]["points"])
    train = PartRecords(out, split="train", num_points=100, augment=False)
    assert not torch.equal(train[0]["points"], train[0]["points"])
    # fewer samples than num_points: all of them; no normals when not asked
    small = PartRecords(out, split="all", num_points=10_000, with_normals=False)
    assert len(small[0]["points"]) == 300 and "normals" not in small[0]


def test_filtered_records_are_left_out_by_default(tmp_path):
    out = tmp_path / "ann"
    rows = [write_record(out, "default-0001-a"), write_record(out, "default-0002-b", status="filtered")]
    rows.append({"key": "default-0003-c", "status": "failed", "reason": "MeshError: empty"})
    write_manifest(out, rows)
    assert PartRecords(out, split="all").keys == ["default-0001-a"]
    assert PartRecords(out, split="all", statuses=("ok", "filtered")).keys == ["default-0001-a", "default-0002-b"]


def test_bad_records_name_the_record(tmp_path):
    out = tmp_path / "ann"
    nan = np.full((50, 3), np.nan, np.float32)
    rows = [write_record(out, "default-0001-nan", points=nan), write_record(out, "default-0002-gone")]
    write_manifest(out, rows)
    (out / "records" / "default-0002-gone" / "samples.npz").unlink()
    with pytest.raises(RecordError, match="default-0002-gone.*samples.npz"):
        PartRecords(out, split="all")
    write_manifest(out, rows[:1])
    ds = PartRecords(out, split="all")
    with pytest.raises(RecordError, match="default-0001-nan.*NaN"):
        ds[0]
    # part ids beyond the names meta.json lists
    out2 = tmp_path / "ann2"
    write_manifest(out2, [write_record(out2, "default-0003-names", names=("Seat",))])
    meta = out2 / "records" / "default-0003-names" / "meta.json"
    assert json.loads(meta.read_text())["parts"]["names"] == ["Seat"]
    write_record_parts(out2, "default-0003-names", 3)
    with pytest.raises(RecordError, match="default-0003-names.*names 1 parts"):
        PartRecords(out2, split="all")[0]
    with pytest.raises(FileNotFoundError, match="no manifest"):
        PartRecords(tmp_path / "ann2" / "records", split="all")


def write_record_parts(out, key, num_parts):
    file = out / "records" / key / "samples.npz"
    with np.load(file) as z:
        data = dict(z)
    data["part"] = (np.arange(len(data["part"])) % num_parts).astype(np.int16)
    with open(file, "wb") as f:
        np.savez(f, **data)


def test_augmentation_keeps_normals_unit_and_on_the_rotated_plane():
    rng = np.random.default_rng(0)
    # points on the plane n . p = 0.1 with n tilted away from every axis
    n = np.array([0.3, 0.8, -0.52])
    n /= np.linalg.norm(n)
    u = np.cross(n, [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    ab = rng.uniform(-0.4, 0.4, (500, 2))
    points = (0.1 * n + ab[:, :1] * u + ab[:, 1:] * v).astype(np.float32)
    normals = np.tile(n, (500, 1)).astype(np.float32)
    for trial in range(5):
        p2, n2 = augment_points(points, normals, np.random.default_rng(trial), jitter=0.0)
        assert np.allclose(np.linalg.norm(n2, axis=1), 1.0, atol=1e-5)
        assert np.allclose(n2, n2[0], atol=1e-5)  # a plane stays a plane with one normal
        offsets = (p2 - p2[0]) @ n2[0]
        assert np.abs(offsets).max() < 1e-5  # the transformed normal is normal to the transformed plane
        assert not np.allclose(p2, points, atol=1e-3)
        # rotation about Y: heights only scale
        ratio = p2[:, 1] / points[:, 1]
        assert np.allclose(ratio, ratio[0], atol=1e-4) and 0.8 - 1e-6 <= ratio[0] <= 1.2 + 1e-6
    # with jitter, points move by at most the clip, normals stay unit
    p3, n3 = augment_points(points, normals, np.random.default_rng(9), jitter=0.005, jitter_clip=0.02)
    p4, _ = augment_points(points, normals, np.random.default_rng(9), jitter=0.0)
    assert np.abs(p3 - p4).max() <= 0.02 + 1e-6
    assert np.allclose(np.linalg.norm(n3, axis=1), 1.0, atol=1e-5)


def test_training_items_are_augmented(corpus):
    out, _ = corpus
    ds = PartRecords(out, split="train", val_fraction=0.25, num_points=None)
    assert ds.augment
    item, full = ds[0], ds.load(0)
    assert item["points"].shape == full["points"].shape
    assert not np.allclose(item["points"].numpy(), full["points"], atol=1e-3)
    assert torch.allclose(item["normals"].norm(dim=1), torch.ones(len(item["normals"])), atol=1e-5)


def test_collate_builds_valid_points(corpus):
    out, _ = corpus
    ds = PartRecords(out, split="val", val_fraction=0.25, num_points=64)
    ds_small = PartRecords(out, split="val", val_fraction=0.25, num_points=17)
    batch = collate_points([ds[0], ds_small[1], ds[2]])
    pts = batch.points.validate()
    assert pts.cu_seqlens.tolist() == [0, 64, 81, 145] and pts.cu_seqlens.dtype == torch.int32
    assert pts.feats.shape == (145, 6) and torch.equal(pts.feats[:, :3], pts.coords)
    assert pts.normals.shape == (145, 3) and pts.part.dtype == torch.int64
    assert batch.semantic.shape == (145,) and batch.semantic.dtype == torch.int64
    assert batch.keys == [ds.keys[0], ds.keys[1], ds.keys[2]]
    points, semantic, keys = batch  # unpacks like a tuple
    assert torch.equal(semantic[64:81], ds_small[1]["semantic"])
    no_normals = PartRecords(out, split="val", val_fraction=0.25, num_points=8, with_normals=False)
    plain = collate_points([no_normals[0], no_normals[1]]).points.validate()
    assert plain.normals is None and plain.feats.shape == (16, 3)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_points)
    first = next(iter(loader))
    assert first.points.batch_size == 4
