"""The training loop on the smoke task: it learns, checkpoints are complete and pickle-free, and a run
killed with SIGKILL resumes (resume=auto) to exactly the losses of the run that never stopped."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from safetensors.torch import load_file

from partgen.models.io import load_model, trained_weights
from partgen.train import checkpoint as ckpt
from partgen.train.run import ConfigError, run

CKPT_FILES = {
    "model.safetensors",
    "model.yaml",
    "ema.safetensors",
    "optimizer.safetensors",
    "optimizer.json",
    "trainer.json",
}
# 60 steps of 16 out of 256 items: epochs end at steps 16, 32, 48, so a resume lands mid-epoch
SMOKE = ["experiment=train_smoke", "trainer.max_steps=60", "trainer.eval_every=20"]


def compose_train(overrides):
    with initialize_config_module(config_module="partgen.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run_smoke(run_dir, *overrides) -> dict:
    torch.set_num_threads(1)  # the subprocess runs use one thread too: same kernels, same bits
    return run(compose_train([*SMOKE, f"trainer.run_dir={run_dir}", *overrides]))


def read_metrics(run_dir) -> tuple[dict[int, dict], dict[int, dict]]:
    train, evals = {}, {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        (train if row["kind"] == "train" else evals)[row["step"]] = row
    return train, evals


def test_short_run_learns_and_writes_complete_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    summary = run_smoke(run_dir, "trainer.ckpt_every=20", "trainer.keep_checkpoints=2")
    assert summary["step"] == 60 and summary["resumed_from"] is None
    train, evals = read_metrics(run_dir)
    assert sorted(train) == list(range(1, 61))
    losses = [train[s]["loss"] for s in range(1, 61)]
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    assert sorted(evals) == [20, 40, 60] and evals[60]["eval/mse"] < evals[20]["eval/mse"]
    assert train[1]["lr"] < train[5]["lr"] and train[60]["lr"] < train[6]["lr"]  # warm-up, then cosine

    root = run_dir / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000040", "step_0000060"]  # pruned to 2
    assert (root / "latest").read_text().strip() == "step_0000060"
    for folder in ("step_0000040", "step_0000060"):
        assert {p.name for p in (root / folder).iterdir()} == CKPT_FILES
    for path in run_dir.rglob("*"):  # nothing torch.save or pickle could have written
        assert path.suffix not in {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"}
        if path.is_file():
            head = path.read_bytes()[:2]
            assert head[:1] != b"\x80" and head != b"PK", path

    last = root / "step_0000060"
    state = ckpt.read_trainer_state(last)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (60, 3, 12)
    assert state["config"]["model"]["_target_"] == "partgen.train.tasks.smoke.TinyMLP"
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"}
    assert state["scheduler"]["last_epoch"] == 60

    # load_model rebuilds the architecture from model.yaml: the same function as the config's model
    cfg = compose_train(SMOKE)
    reference = instantiate(cfg.model)
    reference.load_state_dict(load_file(str(last / "model.safetensors")))
    x = torch.randn(32, 8)
    raw = load_model(last).eval()
    assert torch.equal(raw(x), reference.eval()(x))
    # the EMA weights of the checkpoint reproduce the evaluation the run logged, to the bit
    ema = load_model(last, weights="ema.safetensors").eval()
    assert not torch.equal(ema(x), raw(x))
    with torch.no_grad():
        assert instantiate(cfg.task).evaluate(ema)["mse"] == summary["eval"]["mse"] == evals[60]["eval/mse"]
    shipped = load_model(run_dir / "model").eval()
    assert torch.equal(shipped(x), ema(x))

    with pytest.raises(ConfigError, match="already holds checkpoints"):  # a fresh run never mixes into an old one
        run_smoke(run_dir)
    with pytest.raises(ConfigError, match="went on to step_0000060"):  # nor does a branch off an older step
        run_smoke(run_dir, f"trainer.resume={root / 'step_0000040'}")


def test_refuses_targets_outside_partgen(tmp_path):
    # ConfigError: what the CLI reports in one line (exit 1) before anything is built or imported
    with pytest.raises(ConfigError, match="os.system"):
        run_smoke(tmp_path, "model._target_=os.system")
    with pytest.raises(ConfigError, match="builtins.exec"):
        run_smoke(tmp_path, "task._target_=builtins.exec")
    with pytest.raises(ConfigError, match="no `task`"):
        run(compose_train(["debug=tiny", f"trainer.run_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="unknown trainer keys: bogus"):
        run_smoke(tmp_path, "+trainer.bogus=1")


def test_checkpoint_folders_survive_interrupted_saves(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    config = {"_target_": "partgen.train.tasks.smoke.TinyMLP"}
    state = {"epoch": 0, "batch_in_epoch": 1, "scheduler": {}, "rng": [ckpt.rng_state()]}
    for step in (1, 2):
        ckpt.save_checkpoint(
            tmp_path,
            step,
            model=model,
            model_config=config,
            optimizer_state=opt.state_dict(),
            trainer_state=state,
            keep=None,
        )
    root = tmp_path / "checkpoints"
    (root / ".tmp-step_0000003-99").mkdir()  # a save killed before its rename
    (root / ".tmp-step_0000003-99" / "model.safetensors").write_bytes(b"partial")
    (root / "step_0000004").mkdir()  # a folder that is not a checkpoint
    (root / "latest").write_text("step_0000009\n")  # a pointer gone stale
    assert ckpt.latest_checkpoint(tmp_path) == root / "step_0000002"
    assert ckpt.resolve_resume("auto", tmp_path) == root / "step_0000002"
    assert ckpt.resolve_resume(str(root / "step_0000001"), tmp_path) == root / "step_0000001"
    assert ckpt.resolve_resume(None, tmp_path) is None
    with pytest.raises(ValueError):
        ckpt.resolve_resume(str(tmp_path / "nowhere"), tmp_path)

    # the optimiser state comes back whole: tensors, tuples (betas), int keys
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1.0)
    ckpt.load_checkpoint(root / "step_0000002", model=torch.nn.Linear(3, 2), optimizer=fresh)
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for key in a["state"]:
        assert a["state"][key].keys() == b["state"][key].keys()
        for name in a["state"][key]:
            assert torch.equal(a["state"][key][name], b["state"][key][name])
    saved = ckpt.save_checkpoint(
        tmp_path, 5, model=model, model_config=config, optimizer_state=opt.state_dict(), trainer_state=state, keep=2
    )
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_0000002", "step_0000004", "step_0000005"]
    assert saved == root / "step_0000005" and ckpt.is_complete(saved)


KILLABLE = textwrap.dedent(
    """
    import sys, torch
    from hydra import compose, initialize_config_module
    from partgen.train.run import ConfigError, run
    torch.set_num_threads(1)
    with initialize_config_module(config_module="partgen.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=sys.argv[1:])
    run(cfg)
    """
)


def test_sigkilled_run_resumes_to_the_same_losses(tmp_path):
    common = ["trainer.ckpt_every=10", "trainer.keep_checkpoints=2"]
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "killed"
    run_smoke(ref_dir, *common)

    # the same run, slowed down (seconds of margin before it would finish), killed without warning
    # once it is past its first checkpoint
    args = [*SMOKE, f"trainer.run_dir={kill_dir}", *common, "task.step_delay_s=0.06"]
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, *args], stderr=subprocess.PIPE, text=True)
    metrics = kill_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.exists() and '"step": 13,' in metrics.read_text():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    killed_at = max(read_metrics(kill_dir)[0])
    assert 13 <= killed_at < 60
    latest = ckpt.latest_checkpoint(kill_dir)
    assert latest is not None and latest.name < "step_0000060"

    summary = run_smoke(kill_dir, *common, "trainer.resume=auto")
    assert summary["resumed_from"] == str(latest) and summary["step"] == 60
    ref_train, ref_eval = read_metrics(ref_dir)
    got_train, got_eval = read_metrics(kill_dir)
    assert sorted(got_train) == list(range(1, 61))
    for step in range(1, 61):  # loader position, RNGs, optimiser, scheduler: any one lost breaks this
        assert (got_train[step]["loss"], got_train[step]["lr"]) == (ref_train[step]["loss"], ref_train[step]["lr"])
    assert {s: r["eval/mse"] for s, r in got_eval.items()} == {s: r["eval/mse"] for s, r in ref_eval.items()}
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        ref = load_file(str(ref_dir / "checkpoints" / "step_0000060" / name))
        got = load_file(str(kill_dir / "checkpoints" / "step_0000060" / name))
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref), name


def test_init_weights_starts_a_fresh_run_from_a_trained_model(tmp_path):
    first = tmp_path / "first"
    run_smoke(first, "trainer.max_steps=20", "trainer.eval_every=0")
    trained = load_file(str(first / "model" / trained_weights(first / "model")))
    second = tmp_path / "second"
    run_smoke(second, "trainer.max_steps=0", "trainer.eval_every=0", f"trainer.init_weights={first}")
    started = load_file(str(second / "model" / "model.safetensors"))
    assert set(started) == set(trained) and all(torch.equal(started[k], trained[k]) for k in trained)
    train, _ = read_metrics(first)
    third = tmp_path / "third"
    run_smoke(third, "trainer.max_steps=1", "trainer.eval_every=0", f"trainer.init_weights={first}")
    assert read_metrics(third)[0][1]["loss"] < train[1]["loss"]  # it starts where the first run ended
    with pytest.raises(ConfigError, match="init_weights"):
        run_smoke(tmp_path / "bad", "trainer.max_steps=0", "model.hidden=7", f"trainer.init_weights={first}")


def test_time_budget_ends_the_run_with_a_checkpoint_and_the_cosine_at_zero(tmp_path, monkeypatch):
    """trainer.max_minutes: the run stops when the budget is spent (long before max_steps), saves a
    checkpoint and the model, and the cosine, paced by the clock, has reached 0 by then."""
    from partgen.train import trainer as trainer_module

    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: clock["now"])
    step = trainer_module.Trainer._train_step

    def timed_step(self, batches):  # each step takes 3 s of the fake clock: 1 minute is 20 steps
        clock["now"] += 3.0
        return step(self, batches)

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", timed_step)
    run_dir = tmp_path / "run"
    summary = run_smoke(run_dir, "trainer.max_steps=100000", "trainer.max_minutes=1", "trainer.warmup_steps=2")
    assert summary["step"] == 20
    train, _ = read_metrics(run_dir)
    assert max(train) == 20 and train[20]["lr"] < 0.02 * train[3]["lr"]  # logged before the last update
    assert (
        train[10]["lr"] < 0.7 * train[3]["lr"]
    )  # 45% of the time spent: well down the cosine, not at step 10 of 100000
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_0000020"
    assert load_model(run_dir / "model") is not None
    with pytest.raises(ConfigError, match="max_minutes"):
        run_smoke(tmp_path / "other", "trainer.max_minutes=-1")
