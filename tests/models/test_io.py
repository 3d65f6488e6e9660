from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from partgen.models.io import load_model, save_model
from partgen.nn.blocks import FeedForward

CFG = {"_target_": "partgen.nn.blocks.FeedForward", "dim": 8, "mlp_ratio": 2.0}


def test_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = FeedForward(dim=8, mlp_ratio=2.0)
    save_model(tmp_path / "m", model, CFG)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.safetensors", "model.yaml"]
    loaded = load_model(tmp_path / "m")
    x = torch.randn(5, 8)
    assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize(
    "config",
    [
        {"_target_": "os.system", "command": "touch /tmp/pwned"},
        {"_target_": "partgen.nn.blocks.FeedForward", "dim": 8, "act": {"_target_": "subprocess.Popen"}},
        {"dim": 8},
    ],
)
def test_refuses_configs_that_build_anything_but_partgen(tmp_path, config):
    model = FeedForward(dim=8, mlp_ratio=2.0)
    save_model(tmp_path / "m", model, CFG)
    import yaml

    (tmp_path / "m" / "model.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="_target_"):
        load_model(tmp_path / "m")
    with pytest.raises(ValueError, match="_target_"):
        save_model(tmp_path / "n", model, config)


def test_weights_are_safetensors_not_pickle(tmp_path):
    save_model(tmp_path / "m", FeedForward(dim=8, mlp_ratio=2.0), CFG)
    head = (tmp_path / "m" / "model.safetensors").read_bytes()[:8]
    header_len = int(np.frombuffer(head, dtype="<u8")[0])
    assert header_len < 10_000  # a safetensors header length, not a pickle opcode stream


def test_removed_experiment_options_load_when_off_and_are_refused_when_on(tmp_path):
    """The bundled model set names options of experiments that left main at their off value
    (moment_condition: false, query_mlp_ratio: 0.0, output: occupancy): they still load."""
    from partgen.models.io import REMOVED_OPTIONS, load_config, upgrade_config

    bundled = Path(__file__).resolve().parents[2] / "partgen" / "assets" / "generator"
    raw = OmegaConf.to_container(OmegaConf.load(bundled / "layout_vae" / "model.yaml"))
    assert raw["query_mlp_ratio"] == 0.0 and raw["output"] == "occupancy"
    assert "query_mlp_ratio" not in load_config(bundled / "layout_vae")
    assert "moment_condition" not in load_config(bundled / "layout_flow")
    for target, options in REMOVED_OPTIONS.items():
        for key, off in options.items():
            assert upgrade_config({"_target_": target, key: off, "x": 1}) == {"_target_": target, "x": 1}
            on = 2 if not isinstance(off, str) else "sdf"
            with pytest.raises(ValueError, match=f"{key}=.*left main"):
                upgrade_config({"nested": {"_target_": target, key: on}})


def test_a_segmenter_config_of_the_old_form_gets_its_backbone_as_a_config():
    """PointSegmenter(backbone="vector", widths=..., width=...) as the bundled segmenter's model.yaml
    has it -> backbone: {_target_: PointTransformerSeg, _partial_: true, its own arguments}."""
    from partgen.models.io import load_config, upgrade_config

    bundled = Path(__file__).resolve().parents[2] / "partgen" / "assets" / "segmenter"
    assert OmegaConf.load(bundled / "model.yaml").backbone == "vector"
    cfg = load_config(bundled)
    assert cfg["backbone"] == {
        "_target_": "partgen.models.point_transformer.PointTransformerSeg",
        "_partial_": True,
        "widths": [32, 64, 128, 256],
        "encoder_blocks": [1, 1, 1, 1],
        "decoder_blocks": [1, 1, 1, 1],
        "neighbours": [8, 16, 16, 16],
        "share_planes": 8,
        "norm": "batch",
        "fps_start": "first",
    }
    assert not {"width", "depth", "heads", "patch_size", "widths"} & set(cfg)
    old = {"_target_": "partgen.models.point_transformer.PointSegmenter", "backbone": "serialized", "width": 8}
    assert upgrade_config(old)["backbone"]["width"] == 8
    with pytest.raises(ValueError, match="unknown PointSegmenter backbone 'mlp'"):
        upgrade_config(old | {"backbone": "mlp"})
