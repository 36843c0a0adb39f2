"""One process per run folder, with real processes: a second `vitkit train --out R` (with or without --resume) while
R is in use exits 2 naming the process that holds it; a lock left by a SIGKILLed run does not block --resume."""

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from vitkit.train import loop
from vitkit.train.config import load_yaml
from vitkit.train.runlock import HOLDER, LOCK, RunInUse, run_lock
from vitkit.training_checkpoint import latest_checkpoint

TINY = ["model.num_layers=1", "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2", "data.image_size=8",
        "model.patch_size=4", "data.batch_size=8", "data.num_workers=0", "threads=1", "eval_every=0",
        "checkpoint_every=3", "log_every=3", "data.eval_limit=16"]


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("VITKIT_DEBUG", None)
    return env


def _vitkit(*argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "vitkit.cli.main", *argv], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_second_process_is_refused_and_a_killed_ones_lock_does_not_block(tmp_path):
    out = tmp_path / "r"
    first = _vitkit("train", "--out", str(out), "schedule.steps=100000", *TINY)
    killer = threading.Timer(300, first.kill)
    killer.start()
    try:
        seen = []
        for line in first.stderr:  # the first run is stepping (and has written a checkpoint at step 3)
            seen.append(line)
            if "vitkit train: step 3/" in line:
                break
        else:
            raise AssertionError("".join(seen))
        again = _vitkit("train", "--out", str(out), "schedule.steps=100000", *TINY)
        resume = _vitkit("train", "--out", str(out), "--resume")
        for proc in (again, resume):
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 2, err
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
            assert f"{out} is in use by process {first.pid} on host {socket.gethostname()}" in err, err
            assert "train --out" in err, err
        assert first.poll() is None, "the running process was disturbed"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        killer.cancel()
        first.kill()
    assert (out / LOCK).exists() and (out / HOLDER).exists()  # what the killed process left
    ckpt = latest_checkpoint(out)
    step = int(ckpt.stem.split("_")[1])
    summary = loop.train(load_yaml(out / "config.yaml"), resume=True, progress=False, stop_at=step + 1)
    assert summary["steps"] == step + 1
    assert not (out / HOLDER).exists()  # released


def test_lock_is_one_holder_at_a_time_in_one_process_too(tmp_path):
    with run_lock(tmp_path / "r"):
        with pytest.raises(RunInUse, match=f"in use by process {os.getpid()}"):
            with run_lock(tmp_path / "r"):
                pass
    with run_lock(tmp_path / "r"):  # released: free again
        pass
