"""Two torchrun agents on this machine as two nodes (c10d rendezvous on localhost, one process each), reading
their shards over http from a server started here: the result is the single-process run's, and a run whose second
node is killed resumes to the uninterrupted result."""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vitkit.data import write_wds_shards
from vitkit.train import loop
from vitkit.train.build import build_train_model
from vitkit.train.config import apply_overrides
from vitkit.train.presets import get_preset

pytest.importorskip("aiohttp")

BIN = Path(sys.executable).parent
TINY = ["model.patch_size=4", "model.hidden_size=32", "model.mlp_dim=64", "model.num_heads=2", "model.num_layers=2",
        "data.image_size=8", "data.batch_size=16", "data.num_workers=0", "data.crop_area=0.6,1", "data.flip=false",
        "schedule.warmup_steps=2", "threads=1", "precision=fp32", "log_every=5", "device=cpu", "eval_every=0",
        "optim.name=sgd", "optim.lr=0.1", "optim.clip_norm=0.5"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def shards_url(tmp_path_factory):
    """http URL of 4 shards of 40 8x8 images (3 classes) with meta.json, served from 127.0.0.1."""
    root = tmp_path_factory.mktemp("www")
    rng = np.random.default_rng(0)
    samples = [(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), int(i % 3)) for i in range(160)]
    write_wds_shards(samples, str(root / "train-%03d.tar"), samples_per_shard=40)
    (root / "meta.json").write_text(json.dumps({"num_classes": 3, "num_examples": {"train": 160}}))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    env.pop("VITKIT_DEBUG", None)
    return env


def _nodes(out: Path, over: list[str], *flags: str) -> list[subprocess.Popen]:
    """Two torchrun agents (the two 'nodes'), started in their own process groups so one can be killed whole."""
    port, rdzv = _free_port(), f"vitkit-test-{time.time_ns()}"
    cmd = [str(BIN / "torchrun"), "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
           f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={rdzv}", "--max-restarts=0", "-m", "vitkit.cli.main",
           "train", "--out", str(out), "--no-progress", *flags, *over]
    return [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True) for _ in range(2)]


def _wait(procs: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_node(p.pid)
            _, err = p.communicate()
        errs.append(err)
    if any(p.returncode for p in procs):
        keep = [x for e in errs for x in e.splitlines()
                if any(w in x for w in ("rank", "Error", "error", "File ", "Fatal"))]
        raise AssertionError("\n".join(keep[:60]) or errs[0][-3000:])
    return errs


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc): torchrun starts its workers in sessions of their own, so the
    agent's process group does not hold them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        out.extend(kids := children.get(todo.pop(), []))
        todo.extend(kids)
    return out


def _kill_node(agent_pid: int) -> None:
    """A node dies whole: its agent and every worker under it, at once (SIGKILL)."""
    for pid in [*_descendants(agent_pid), agent_pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _params(path):
    return load_file(str(path))


@pytest.mark.slow
def test_two_nodes_over_http_match_one_process(tmp_path, shards_url):
    # The shards come over http and are decoded into memory (cache=memory): then each rank's 8 images of a step
    # are the single process's 16 split in two, so the DDP update is the single-process update (as in the
    # one-machine DDP test, same tolerance).
    over = [*TINY, f"data.train=wds:{shards_url}/train-{{000..003}}.tar?cache=memory", "schedule.steps=3"]
    _wait(_nodes(tmp_path / "two", over))
    loop.train(apply_overrides(get_preset("default"), [*over, f"out={tmp_path / 'one'}"]), progress=False)
    a, b = _params(tmp_path / "one" / "model.safetensors"), _params(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    init = build_train_model(apply_overrides(get_preset("default"), over), 3, None).state_dict()
    assert sum(not torch.equal(init[k], a[k]) for k in a) > len(a) // 2, "the weights did not move"
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["micro_batch_size"] == 8


@pytest.mark.slow
def test_killed_node_resumes_to_the_uninterrupted_result(tmp_path, shards_url):
    # Streamed shards (no cache): each node reads its own shards over http in the seeded order. One node's agent
    # and its worker are killed (SIGKILL) after a checkpoint; the other then fails; both are relaunched with
    # --resume and must end bitwise where an uninterrupted two-node run ends.
    over = [*TINY, f"data.train=wds:{shards_url}/train-{{000..003}}.tar", "data.shuffle_buffer=20",
            "schedule.steps=120", "checkpoint_every=10", "keep_last=2", "deterministic=true"]
    _wait(_nodes(tmp_path / "ref", over))
    ref = _params(tmp_path / "ref" / "model.safetensors")
    out = tmp_path / "run"
    procs = _nodes(out, over)
    t0 = time.time()
    while not list(out.glob("checkpoints/step_*.pt")):
        assert time.time() - t0 < 180 and all(p.poll() is None for p in procs), "no checkpoint appeared"
        time.sleep(0.01)
    _kill_node(procs[1].pid)
    for p in procs:
        try:
            p.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # the survivor must not hang on its dead peer
            _kill_node(p.pid)
            raise AssertionError("the surviving node did not stop after its peer was killed") from None
    assert not (out / "model.safetensors").exists(), "the run finished before the kill; the test proved nothing"
    errs = _wait(_nodes(out, over, "--resume"))
    assert "resumed from" in "".join(errs) and "(step 0)" not in "".join(errs), errs[0][-2000:]
    got = _params(out / "model.safetensors")
    init = build_train_model(apply_overrides(get_preset("default"), over), 3, None).state_dict()
    assert sum(not torch.equal(init[k], ref[k]) for k in ref) > len(ref) // 2, "the weights did not move"
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
