"""Ctrl-C (SIGINT) and SIGTERM in every long command: exit 130 / 143 and one last line saying what was kept and how
to continue. Real signals to real processes, sent once the command has reported that its work started (a progress
or log line); and the demo, stopped in its second step, continues where it stopped when run again."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import vitkit
from vitkit.cli.main import main


def _env(**extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    env.pop("VITKIT_DEBUG", None)
    return env


def _interrupt(argv, marker, sig, *, env=None, timeout=240):
    """Run ``vitkit ARGV``, send ``sig`` once a stderr line contains ``marker``; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "vitkit.cli.main", *argv], env=env or _env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if marker in line:
                break
        else:
            proc.wait()
            raise AssertionError(f"the command ended (exit {proc.returncode}) before {marker!r}:\n{''.join(seen)}")
        proc.send_signal(sig)
        rest = proc.stderr.read()
        proc.wait()
    finally:
        watchdog.cancel()
    return proc.returncode, "".join(seen) + rest


def _check_stopped(code, err, command, sig):
    name = signal.Signals(sig).name
    assert code == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"vitkit {command}: stopped by {name}"), err[-3000:]
    return last


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    # Slow enough per image (64 px, 256 patches) that each command runs for several seconds on one core.
    path = tmp_path_factory.mktemp("signals") / "m.safetensors"
    torch.manual_seed(0)
    m = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=64, patch_size=4, num_layers=4, hidden_size=192,
                            num_heads=3, mlp_dim=384)
    vitkit.save_model(m, path)
    return path


def test_eval_sigterm(model_file):
    code, err = _interrupt(["eval", "--model", str(model_file), "--data", "digits", "--split", "train",
                            "--batch-size", "16", "--num-workers", "0", "--precision", "fp32"],
                           "vitkit: eval: 10%", signal.SIGTERM)
    last = _check_stopped(code, err, "eval", signal.SIGTERM)
    assert "nothing was written" in last and "run the same command again" in last


def test_fewshot_sigint(model_file):
    code, err = _interrupt(["fewshot", "--model", str(model_file), "--data", "digits", "--train-limit", "800",
                            "--limit", "200", "--shots", "1", "--seeds", "1", "--batch-size", "16", "--num-workers",
                            "0", "--precision", "fp32"], "vitkit: train features: 10%", signal.SIGINT)
    last = _check_stopped(code, err, "fewshot", signal.SIGINT)
    assert "nothing was written" in last


def test_export_sigterm(model_file, tmp_path):
    out = tmp_path / "m.onnx"
    code, err = _interrupt(["export", "--model", str(model_file), "--out", str(out)], "vitkit export: exporting",
                           signal.SIGTERM)
    last = _check_stopped(code, err, "export", signal.SIGTERM)
    assert f"nothing was written to {out}" in last
    assert not list(tmp_path.iterdir()), "an unfinished export was left behind"


def test_bench_sigint():
    code, err = _interrupt(["bench", "--model", "ViT-Ti_16", "--image-size", "224", "--batch-size", "1", "--steps",
                            "200", "--warmup", "1", "--peak-size", "64", "--num-classes", "10", "--threads", "1"],
                           "vitkit: bench infer: ", signal.SIGINT)
    assert "nothing was written" in _check_stopped(code, err, "bench", signal.SIGINT)


def test_train_sigterm(tmp_path):
    out = tmp_path / "r"
    code, err = _interrupt(["train", "--out", str(out), "model.num_layers=1", "model.hidden_size=16",
                            "model.mlp_dim=32", "model.num_heads=2", "data.image_size=8", "model.patch_size=4",
                            "data.batch_size=8", "data.num_workers=0", "threads=1", "eval_every=0",
                            "schedule.steps=100000", "log_every=5"], "vitkit train: step 5/", signal.SIGTERM)
    last = _check_stopped(code, err, "train", signal.SIGTERM)
    summary = json.loads((out / "summary.json").read_text())
    assert f"kept checkpoint {summary['checkpoint']}" in last and summary["checkpoint"]
    assert last.endswith(f"continue with: vitkit train --out {out} --resume")


class _SlowFile(BaseHTTPRequestHandler):
    body = bytes(range(256)) * (8 * 4096)  # 8 MiB, sent in 128 pieces 50 ms apart (6.4 s)

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            for i in range(0, len(self.body), 65536):
                self.wfile.write(self.body[i:i + 65536])
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_download_sigterm(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowFile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/w/slow.safetensors"
        code, err = _interrupt(["download", url], "vitkit: download slow.safetensors: ", signal.SIGTERM,
                               env=_env(VITKIT_CACHE=str(tmp_path / "cache")))
    finally:
        server.shutdown()
        server.server_close()
    last = _check_stopped(code, err, "download", signal.SIGTERM)
    assert "the same command continues it" in last and str(tmp_path / "cache") in last
    parts = list((tmp_path / "cache").rglob("*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(_SlowFile.body)


DEMO = ["pretrain.schedule.steps=12", "finetune.schedule.steps=300", "eval_every=0", "schedule.warmup_steps=1",
        "data.eval_limit=40", "log_every=2", "pretrain.model.num_layers=1", "pretrain.model.hidden_size=32",
        "pretrain.model.mlp_dim=64", "pretrain.model.representation_size=32", "finetune.checkpoint_every=0"]


def test_demo_sigint_then_continues_where_it_stopped(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), *DEMO]
    # Stopped in the fine-tuning (after its first logged steps): the pre-training is finished.
    code, err = _interrupt(argv, "vitkit train: step 2/300", signal.SIGINT)
    last = _check_stopped(code, err, "demo", signal.SIGINT)
    assert "1/2 pre-training" in err and "2/2 fine-tuning" in err
    summary = json.loads((out / "finetune" / "summary.json").read_text())
    stopped_at = summary["steps"]
    assert summary["stopped_by"] == "SIGINT" and 2 <= stopped_at < 300
    assert f"kept the fine-tuning at step {stopped_at} of 300" in last
    assert last.endswith("continue with: vitkit demo --out " + " ".join([str(out), *DEMO]))
    pretrained = out / "pretrain" / "model.safetensors"
    before = (pretrained.stat().st_mtime_ns, (out / "pretrain" / "metrics.jsonl").read_text())

    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "the pre-training: finished earlier" in err, err
    assert (pretrained.stat().st_mtime_ns, (out / "pretrain" / "metrics.jsonl").read_text()) == before
    assert f"resumed from {out / 'finetune' / 'checkpoints'}" in err and f"(step {stopped_at})" in err, err
    steps = [json.loads(x)["step"] for x in (out / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 2 and steps[-1] == 300 and len(steps) == len(set(steps)) + 1  # + the final evaluation
    final = json.loads((out / "summary.json").read_text())
    assert final["finetune_top1"] == json.loads((out / "finetune" / "summary.json").read_text())["eval_top1"]
