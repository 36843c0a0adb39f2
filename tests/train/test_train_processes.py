"""Real processes: torchrun (DDP/FSDP on gloo) and interrupted runs (SIGKILL, SIGTERM)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vitkit.train import loop
from vitkit.train.build import build_train_model
from vitkit.train.config import apply_overrides, load_yaml
from vitkit.train.presets import get_preset

TINY = ["model.patch_size=4", "model.hidden_size=32", "model.mlp_dim=64", "model.num_heads=2",
        "model.num_layers=2", "data.train=digits", "data.image_size=8", "data.batch_size=16",
        "data.num_workers=0", "data.eval_limit=64", "data.crop_area=0.6,1", "data.flip=false",
        "schedule.warmup_steps=2", "threads=1", "precision=fp32", "log_every=5",
        "device=cpu"]  # gloo on CPU: two processes, whatever GPUs the machine has
BIN = Path(sys.executable).parent


def _env():
    # PYTHONFAULTHANDLER: a worker killed by a signal prints every thread's Python stack.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    env.pop("VITKIT_DEBUG", None)
    return env


def _params(path):
    return load_file(str(path))


def _assert_weights_moved(over, params):
    init = build_train_model(apply_overrides(get_preset("default"), over), 10, None).state_dict()
    moved = sum(not torch.equal(init[k], params[k]) for k in params)
    assert moved > len(params) // 2, "the run did not change the weights; the comparison would be empty"


def _torchrun(out, over, *flags):
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "vitkit.cli.main", "train",
           "--out", str(out), "--no-progress", *flags, *over]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    if r.returncode != 0:  # show the workers' own messages, not only torchrun's summary
        keep = [x for x in r.stderr.splitlines()
                if any(w in x for w in ("rank", "Error", "error", "terminate", "File ", "Thread ", "Fatal"))]
        raise AssertionError("\n".join(keep[:60]) or r.stderr[-3000:])
    return r


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, strategy):
    # Two processes with 8 images each must make the update of one process with 16 (gloo on CPU).
    # SGD: Adam would blow the rounding noise of near-zero gradients up to lr-sized steps.
    over = [*TINY, "optim.name=sgd", "optim.lr=0.1", "optim.clip_norm=0.5", "schedule.steps=3", "eval_every=0"]
    _torchrun(tmp_path / "two", over, f"dist.strategy={strategy}")
    loop.train(apply_overrides(get_preset("default"), [*over, f"out={tmp_path / 'one'}"]), progress=False)
    a, b = _params(tmp_path / "one" / "model.safetensors"), _params(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    _assert_weights_moved(over, a)
    import json

    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["micro_batch_size"] == 8


@pytest.mark.slow
def test_fsdp_resume_matches_uninterrupted(tmp_path):
    # A 2-process FSDP run checkpoints at steps 3 and 6; its end state is the reference. Going back
    # to the step-3 checkpoint (sharded model and optimiser gathered into one file, schedule, RNG,
    # data position) and resuming must end at the same parameters.
    over = [*TINY, "dist.strategy=fsdp", "optim.name=adamw", "schedule.steps=6", "checkpoint_every=3",
            "keep_last=2", "eval_every=0", "deterministic=true", "model.dropout_rate=0.1", "data.limit=64"]
    out = tmp_path / "run"
    _torchrun(out, over)
    ref = _params(out / "model.safetensors")
    ckpts = sorted((out / "checkpoints").glob("step_*.pt"))
    assert [c.name for c in ckpts] == ["step_00000003.pt", "step_00000006.pt"]
    ckpts[-1].unlink()
    (out / "model.safetensors").unlink()
    r = _torchrun(out, over, "--resume")
    assert "step 3" in r.stderr or "step_00000003" in r.stderr, r.stderr[-2000:]
    got = _params(out / "model.safetensors")
    _assert_weights_moved(over, ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


def _start(out, over):
    cmd = [sys.executable, "-m", "vitkit.cli.main", "train", "--out", str(out), "--no-progress", *over]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc, out, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if list((out / "checkpoints").glob("step_*.pt")) if (out / "checkpoints").is_dir() else []:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before a checkpoint appeared: {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    loop.train(apply_overrides(get_preset("default"), [*_INTERRUPT, f"out={out}"]), progress=False)
    return _params(out / "model.safetensors")


# Long enough that the kill lands mid-run; deterministic so the comparison is bitwise.
_INTERRUPT = [*TINY, "schedule.steps=300", "checkpoint_every=10", "keep_last=2", "deterministic=true",
              "eval_every=0", "model.dropout_rate=0.1", "data.limit=160"]


def _resume_and_compare(out, reference):
    cfg = load_yaml(out / "config.yaml")
    assert cfg.out == str(out)
    summary = loop.train(cfg, resume=True, progress=False)
    assert summary["steps"] == 300
    got = _params(out / "model.safetensors")
    for k in reference:
        assert torch.equal(got[k], reference[k]), k


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(out, _INTERRUPT)
    _wait_for_checkpoint(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "model.safetensors").exists(), "the run finished before the kill; the test proved nothing"
    _resume_and_compare(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_and_exits_128_plus_signal(tmp_path, reference, sig, code):
    # 130 / 143 as a shell reports a signal-killed process: `vitkit train ... && vitkit eval ...` stops.
    out = tmp_path / "run"
    proc = _start(out, _INTERRUPT)
    _wait_for_checkpoint(proc, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    name = signal.Signals(sig).name
    assert "Traceback" not in err and f"stopped by {name}" in err and "--resume" in err
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == name and not summary["finished"]
    saved = summary["checkpoint"]
    assert saved.endswith(f"step_{summary['steps']:08d}.pt") and Path(saved).is_file()
    _resume_and_compare(out, reference)


def test_cli_rejects_bad_override_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vitkit.cli.main", "train", "--out", str(tmp_path / "x"),
                        "optim.lr=fast"], env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "optim.lr" in r.stderr and "float" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
