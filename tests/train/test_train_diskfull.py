"""A full disk during training: the run stops with one error naming the file and the lack of space (exit 2), the
checkpoints and good.json written before stay usable, and --resume continues once there is space, to the very
weights of a run that never failed. Fault injection (a write of each of the run's files failing with ENOSPC in
turn) and a real small tmpfs (as root; skipped where mounting is not permitted)."""

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from vitkit.fileio import DiskFull
from vitkit.train import loop
from vitkit.train.config import apply_overrides
from vitkit.train.presets import get_preset
from vitkit.training_checkpoint import last_good_checkpoint, list_checkpoints, load_checkpoint

TINY = ["model.patch_size=4", "model.hidden_size=16", "model.mlp_dim=32", "model.num_heads=2",
        "model.num_layers=1", "data.train=digits", "data.image_size=8", "data.batch_size=16",
        "data.num_workers=0", "data.eval_limit=32", "data.limit=96", "schedule.warmup_steps=1",
        "log_every=2", "eval_every=3", "checkpoint_every=2", "keep_last=1", "threads=1", "precision=fp32",
        "deterministic=true", "schedule.steps=6"]


def _cfg(out):
    return apply_overrides(get_preset("default"), [*TINY, f"out={out}"])


class _Faults:
    """``open`` (and ``io.open``, TensorBoard's) for files under ``root`` opened for writing: each ``write`` call
    is counted (``calls``: the file each went to) and call number ``fail_at`` raises ENOSPC."""

    def __init__(self, root, fail_at=None):
        self.root, self.fail_at, self.calls = str(root), fail_at, []
        self.real = builtins.open

    def open(self, file, mode="r", *args, **kw):
        f = self.real(file, mode, *args, **kw)
        name = os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else ""
        if name.startswith(self.root) and set(mode) & set("wa+"):
            return _Counted(f, self, os.path.basename(name))
        return f


class _Counted:
    def __init__(self, f, faults, name):
        self._f, self._faults, self._name = f, faults, name

    def write(self, data):
        faults = self._faults
        faults.calls.append(self._name)
        if len(faults.calls) - 1 == faults.fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._name)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _kind(name):
    """The file a write went to, without step numbers, pids and TensorBoard's host/time stamps."""
    if name.startswith(".step_") or name.startswith("step_"):
        return "checkpoint"
    if name.startswith("events.out.tfevents"):
        return "tensorboard"
    return name.lstrip(".").split(".tmp")[0]


def _train(cfg, faults, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setattr(builtins, "open", faults.open)
        m.setattr(io, "open", faults.open)
        return loop.train(cfg, progress=False, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A run that never failed: its final weights, and the files its writes went to, in order."""
    out = tmp_path_factory.mktemp("ref") / "r"
    faults = _Faults(out)
    mp = pytest.MonkeyPatch()
    try:
        _train(_cfg(out), faults, mp)
    finally:
        mp.undo()
    return load_file(str(out / "model.safetensors")), faults.calls


def _check_left_usable(out):
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "a temporary file was left"
    for _, path in list_checkpoints(out):
        load_checkpoint(path)  # whole, readable
    good = out / "checkpoints" / "good.json"
    if good.exists():
        json.loads(good.read_text())
        assert last_good_checkpoint(out) is not None


def _last_calls_of_each_file(calls):
    last = {}
    for i, name in enumerate(calls):
        last[_kind(name)] = i
    return last


def test_reference_writes_every_kind_of_file(reference):
    kinds = set(_last_calls_of_each_file(reference[1]))
    assert {"checkpoint", "good.json", "latest.json", "metrics.jsonl", "tensorboard", "summary.json",
            "config.yaml"} <= kinds, kinds


@pytest.mark.parametrize("kind", ["checkpoint", "good.json", "latest.json", "metrics.jsonl", "tensorboard",
                                  "summary.json", "config.yaml"])
def test_each_write_failing_with_enospc(tmp_path, monkeypatch, reference, kind):
    weights, calls = reference
    fail_at = _last_calls_of_each_file(calls)[kind]  # the last write of that file: earlier ones are on disk
    out = tmp_path / "r"
    faults = _Faults(out, fail_at)
    with pytest.raises(DiskFull, match="no space left on device while writing") as e:
        _train(_cfg(out), faults, monkeypatch)
    if kind != "tensorboard":  # TensorBoard writes in a thread: its error reaches the run at its next record
        assert len(faults.calls) == fail_at + 1, "the run went on writing after the failure"
    assert str(out) in e.value.path and "\n" not in str(e.value)
    _check_left_usable(out)
    # Space again: --resume continues from the last whole checkpoint to the weights of the run that never failed.
    loop.train(_cfg(out), resume=True, progress=False)
    got = load_file(str(out / "model.safetensors"))
    for k in weights:
        assert torch.equal(got[k], weights[k]), k


def test_final_model_failing_with_enospc(tmp_path, monkeypatch, reference):
    # safetensors writes from Rust (not through Python's open); its error only says "os error 28".
    from vitkit.checkpoints import native

    def full(*a, **k):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    out = tmp_path / "r"
    with monkeypatch.context() as m:
        m.setattr(native, "save_file", full)
        with pytest.raises(DiskFull, match=f"while writing {out / 'model.safetensors'}"):
            loop.train(_cfg(out), progress=False)
    _check_left_usable(out)
    assert not (out / "model.safetensors").exists()
    loop.train(_cfg(out), resume=True, progress=False)
    got = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(got[k], v) for k, v in reference[0].items())


def test_small_tmpfs(tmp_path, reference):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    # 160 KiB: the config, logs and the step-2 checkpoint (~83 KB) fit, the step-4 one beside it does not.
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs not permitted here: {r.stderr.strip()}")
    try:
        out = mnt / "r"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("VITKIT_DEBUG", None)
        p = subprocess.run([sys.executable, "-m", "vitkit.cli.main", "train", "--out", str(out), "--no-progress",
                            "--quiet", *TINY], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 2, p.stderr[-3000:]
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
        assert lines[0].startswith(f"vitkit train: error: no space left on device while writing {out}"), lines[0]
        assert lines[0].endswith(f"continue with: vitkit train --out {out} --resume"), lines[0]
        assert list_checkpoints(out), "nothing was saved before the disk filled; the test proved little"
        assert not [x for x in out.rglob("*") if ".tmp" in x.name], "a temporary file was left"
        good = out / "checkpoints" / "good.json"
        assert not good.exists() or (out / "checkpoints" / json.loads(good.read_text())["file"]).is_file()
        subprocess.run(["mount", "-o", "remount,size=4m", str(mnt)], check=True)  # space freed
        # The resume in its own process too: this one keeps no file of the mount open (checkpoints are read
        # memory-mapped), so that it can be unmounted.
        p = subprocess.run([sys.executable, "-m", "vitkit.cli.main", "train", "--out", str(out), "--resume",
                            "--quiet"], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        got = safetensors.torch.load((out / "model.safetensors").read_bytes())
        assert all(torch.equal(got[k], v) for k, v in reference[0].items())
        assert not [x for x in out.rglob("*") if ".tmp" in x.name]
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)  # detached now, freed when unused
