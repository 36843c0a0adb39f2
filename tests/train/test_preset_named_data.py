"""A preset names its data set: ``vitkit train --preset cifar10_cpu`` on a machine without any local copy fetches
``cifar10`` (here through VITKIT_DATA_URL from a loopback server serving a tiny archive in the official layout)
and trains."""

import json
import sys
from pathlib import Path

from vitkit.cli.main import main
from vitkit.train.presets import PRESETS, get_preset

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "checkpoints"), str(TESTS / "data")]
from http_server import FileServer  # noqa: E402
from named_archives import cifar10, sha256sums  # noqa: E402


def test_cifar10_cpu_names_the_data_set():
    cfg = get_preset("cifar10_cpu")
    assert (cfg.data.train, cfg.data.test) == ("cifar10", "cifar10")


def test_presets_hold_no_absolute_paths():
    for name in PRESETS:
        d = get_preset(name).data
        for spec in (d.train, d.test):
            path = (spec or "").split(":", 1)[-1]
            assert not path.startswith(("/", "~")), f"{name}: {spec}"


def test_cifar10_cpu_fetches_cifar10_and_trains(tmp_path, monkeypatch, capsys):
    files = cifar10()
    served = {f"/m/{n}": b for n, b in files.items()} | {"/m/SHA256SUMS": sha256sums(files)}
    monkeypatch.setenv("VITKIT_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("VITKIT_OFFLINE", raising=False)
    with FileServer(served) as srv:
        monkeypatch.setenv("VITKIT_DATA_URL", srv.url + "/m")
        rc = main(["train", "--preset", "cifar10_cpu", "--out", str(tmp_path / "run"), "--no-progress",
                   "schedule.steps=2", "schedule.warmup_steps=1", "eval_every=0", "data.batch_size=4",
                   "data.eval_batch_size=5", "data.num_workers=0", "threads=1", "model.num_layers=1",
                   "data.shuffle_buffer=8", "precision=fp32"])
        assert rc == 0, capsys.readouterr().err
        assert [p for p, _ in srv.requests] == ["/m/SHA256SUMS", "/m/cifar-10-python.tar.gz"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["eval"]["examples"] == 10  # the archive's test_batch
    assert (tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == files["cifar-10-python.tar.gz"]
