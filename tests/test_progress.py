"""Progress bars only on a terminal: with stderr a pipe or a file, or with --no-progress, long commands log a line
every 10% (eval, fewshot, download) or every log_every steps (train) instead; on a terminal (a pty here) tqdm draws
its bar."""

import logging
import os
import pty
import subprocess
import sys
import termios
import threading

import pytest
import torch

import vitkit
from vitkit.progress import Progress, bars_allowed, disable_bars


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("VITKIT_DEBUG", None)
    return env


def _run(argv, *, tty):
    """(exit code, stderr) of ``vitkit ARGV``, stderr a pty (a terminal) or a pipe."""
    cmd = [sys.executable, "-m", "vitkit.cli.main", *argv]
    if not tty:
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
        return r.returncode, r.stderr
    master, slave = pty.openpty()
    termios.tcsetwinsize(slave, (24, 100))  # a new pty is 0 columns wide, where tqdm draws nothing
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []

    def read():  # drained while the command runs: a full pty buffer would block it
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command closed its end
                return
            if not data:
                return
            chunks.append(data)

    t = threading.Thread(target=read)
    t.start()
    code = proc.wait(timeout=240)
    t.join(timeout=30)
    os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "m.safetensors"
    torch.manual_seed(0)
    m = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=8, patch_size=4, num_layers=1, hidden_size=16,
                            num_heads=2, mlp_dim=32)
    vitkit.save_model(m, path)
    return path


def _lines(text, prefix):
    return [x for x in text.replace("\r", "\n").splitlines() if x.startswith(prefix)]


@pytest.mark.parametrize("mode", ["pipe", "tty", "tty --no-progress"])
def test_eval_bar_on_a_terminal_lines_elsewhere(model_file, mode):
    argv = ["eval", "--model", str(model_file), "--data", "digits", "--limit", "100", "--batch-size", "10",
            "--num-workers", "0", "--precision", "fp32"] + (["--no-progress"] if "no-progress" in mode else [])
    code, err = _run(argv, tty=mode.startswith("tty"))
    assert code == 0, err
    lines = _lines(err, "vitkit: eval: ")
    if mode == "tty":
        assert "\r" in err and ("batch/s" in err or "s/batch" in err), err  # tqdm's bar
        assert not lines, err
    else:
        assert "batch/s" not in err and "s/batch" not in err, err
        assert [x.split()[2] for x in lines] == [f"{p}%" for p in range(10, 101, 10)], err
        assert lines[0].endswith("(1 of 10 batch)"), lines[0]


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "tty"])
def test_train_bar_on_a_terminal_lines_every_log_every_elsewhere(tmp_path, tty):
    argv = ["train", "--out", str(tmp_path / "r"), "model.num_layers=1", "model.hidden_size=16", "model.mlp_dim=32",
            "model.num_heads=2", "data.image_size=8", "model.patch_size=4", "data.batch_size=8",
            "data.num_workers=0", "threads=1", "eval_every=0", "schedule.steps=6", "schedule.warmup_steps=1",
            "log_every=3", "data.eval_limit=16"]
    code, err = _run(argv, tty=tty)
    assert code == 0, err
    lines = [x for x in _lines(err, "vitkit train: step ") if "/" in x.split()[3]]  # not "step 6: eval ..."
    if tty:
        assert "step/s" in err or "s/step" in err, err
        assert not lines, err
    else:
        assert "step/s" not in err and "s/step" not in err, err
        assert [x.split()[3] for x in lines] == ["3/6", "6/6"], err


def test_progress_lines_every_tenth():
    class Tty:
        def isatty(self):
            return True

    assert not bars_allowed()  # pytest captures stderr: not a terminal
    assert bars_allowed(Tty())
    disable_bars()
    try:
        assert not bars_allowed(Tty())
    finally:
        disable_bars(False)

    msgs = []

    class Keep(logging.Handler):
        def emit(self, record):
            msgs.append(record.getMessage())

    log, keep = logging.getLogger("vitkit"), Keep()
    # Other tests in this process may have set the logger's level or disabled it (dictConfig's
    # disable_existing_loggers): this test wants INFO records through.
    level, disabled, off = log.level, log.disabled, logging.root.manager.disable
    log.setLevel(logging.INFO)
    log.disabled = False
    logging.disable(logging.NOTSET)
    log.addHandler(keep)
    try:
        bar = Progress(2**21, desc="download x", unit="B")
        for _ in range(16):
            bar.update(2**17)
        Progress(5, desc="quiet", unit="item", enabled=False).update(5)
    finally:
        log.removeHandler(keep)
        log.setLevel(level)
        log.disabled = disabled
        logging.disable(off)
    assert msgs[0] == "vitkit: download x: 12% (256.0 KiB of 2.0 MiB)"
    assert msgs[-1] == "vitkit: download x: 100% (2.0 MiB of 2.0 MiB)"
    assert len(msgs) == 10  # one line per 10% mark passed, never two for one mark; nothing from "quiet"
