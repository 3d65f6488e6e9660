"""Every config composes; every model and optim _target_ instantiates under debug=tiny; every
experiment composes and names a model and a task inside partgen."""

import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from conftest import REPO_ROOT

APPS = ["annotate", "train", "generate", "segment"]
CONF = REPO_ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_app(app: str, overrides=()):
    with initialize_config_module(config_module="partgen.conf", version_base="1.3"):
        return compose(config_name=app, overrides=list(overrides))


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("debug", [[], ["debug=tiny"]])
def test_apps_compose(app, debug):
    cfg = compose_app(app, debug)
    expected = {
        "annotate": ["input", "output", "resolution", "parts", "shard", "num_shards", "workers"],
        "train": ["optim", "trainer", "size", "seed"],
        "generate": ["image", "output", "checkpoint", "seed", "steps", "cfg"],
        "segment": ["input", "output", "checkpoint"],
    }[app]
    assert set(expected) <= set(cfg.keys())
    if debug:
        assert cfg.size.data_limit == 1


@pytest.mark.parametrize("group", ["model", "optim", "trainer", "parts", "experiment", "image_encoder"])
def test_groups_exist(group):
    assert (CONF / group).is_dir()


@pytest.mark.parametrize("model", options("model"))
def test_models_instantiate_tiny(model):
    cfg = compose_app("train", [f"model={model}", "debug=tiny"])
    net = instantiate(cfg.model)
    assert isinstance(net, torch.nn.Module)
    assert sum(p.numel() for p in net.parameters()) < 200_000  # tiny really is tiny
    full = instantiate(compose_app("train", [f"model={model}"]).model)
    assert sum(p.numel() for p in full.parameters()) > sum(p.numel() for p in net.parameters())


def test_optim_instantiates():
    cfg = compose_app("train", ["debug=tiny"])
    opt = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == cfg.optim.lr


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose_with_a_model_and_a_task(experiment):
    cfg = compose_app("train", [f"experiment={experiment}"])
    for key in ("model", "task"):
        assert str(cfg[key]._target_).startswith("partgen."), key


def test_generate_cli_refuses_a_bad_image_in_one_line(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    res = subprocess.run(
        [*_app("generate"), "image=empty.png", "output=out"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert res.returncode == 1 and not (tmp_path / "out").exists()
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partgen-generate:") and "empty.png" in lines[0]


def _app(name):
    exe = REPO_ROOT / ".venv" / "bin" / f"partgen-{name}"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", f"from partgen.cli import {name}; {name}()"]


def test_train_without_a_task_fails_in_one_line(tmp_path):
    res = subprocess.run([*_app("train"), "debug=tiny"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partgen-train:") and "no `task`" in lines[0]


def test_train_cli_runs_an_experiment_and_checkpoints(tmp_path):
    args = ["experiment=train_smoke", "trainer.max_steps=5", f"hydra.run.dir={tmp_path / 'run'}"]
    res = subprocess.run([*_app("train"), *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "partgen-train: 5 steps" in res.stdout
    assert (tmp_path / "run" / "checkpoints" / "step_0000005" / "model.safetensors").exists()


def test_segment_cli_refuses_a_missing_input_in_one_line(tmp_path):
    res = subprocess.run(
        [*_app("segment"), f"input={tmp_path / 'nowhere.obj'}", f"output={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partgen-segment:") and "nowhere.obj" in lines[0]
    assert not (tmp_path / "out").exists()


def test_generate_cli_takes_the_parts_group_and_refuses_authored_parts(tmp_path):
    """parts= names the conf/parts group (as partgen-annotate's): geometric parses and reaches the
    image check; authored (an asset's own parts) cannot cut a generated layout."""
    run = [*_app("generate"), "image=empty.png", "output=out"]
    (tmp_path / "empty.png").write_bytes(b"")
    geometric = subprocess.run([*run, "parts=geometric"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert geometric.returncode == 1 and "empty.png" in geometric.stderr
    authored = subprocess.run([*run, "parts=authored"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = authored.stderr.strip().splitlines()
    assert authored.returncode == 1 and len(lines) == 1 and "parts=authored" in lines[0]
    assert not (tmp_path / "out").exists()
