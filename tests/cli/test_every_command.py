"""Every sub-command of ``vitkit`` (``vitkit.cli.main.COMMANDS``) runs once through ``main()`` on tiny inputs.

Deeper tests of each command live beside their packages; this module makes sure no command is left without a run
(a new command without a case here fails ``test_every_command_has_a_case``).
"""

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli.main import COMMANDS, main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
from http_server import FileServer  # noqa: E402  (the local HTTP server that stands in for the internet)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 10-class checkpoint (digits), a PNG and a scratch folder."""
    root = tmp_path_factory.mktemp("every_command")
    model = vitkit.create_model("ViT-Ti_16", num_classes=10, image_size=16, patch_size=4, num_layers=1,
                                hidden_size=16, num_heads=2, mlp_dim=32)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    ckpt = vitkit.save_model(model, root / "m.safetensors")
    png = root / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(png)
    return {"ckpt": str(ckpt), "png": str(png), "root": root}


def _models(t, d, env):
    return ["models", "--filter", "Ti_16", "--image-size", "32", "--json"], lambda out: "ViT-Ti_16" in out


def _download(t, d, env):
    stack, monkeypatch = env
    srv = stack.enter_context(FileServer({"/w/m.safetensors": Path(t["ckpt"]).read_bytes()}))
    monkeypatch.setenv("VITKIT_CACHE", str(d / "cache"))
    monkeypatch.delenv("VITKIT_OFFLINE", raising=False)
    return ["download", srv.url + "/w/m.safetensors", "--check", "--json"], \
        lambda out: Path(json.loads(out)[0]["path"]).is_file()


def _data(t, d, env):
    _, monkeypatch = env
    monkeypatch.setenv("VITKIT_DATA", str(d / "data"))
    return ["data", "list", "--json"], lambda out: {r["name"] for r in json.loads(out)} >= {"cifar10", "pets"}


def _demo(t, d, env):
    argv = ["demo", "--out", str(d), "--no-progress", "pretrain.schedule.steps=2", "finetune.schedule.steps=1",
            "schedule.warmup_steps=1", "eval_every=0", "data.eval_limit=16"]
    return argv, lambda out: (d / "summary.json").is_file()


def _convert(t, d, env):
    d.mkdir(parents=True)
    return ["convert", t["ckpt"], str(d / "m.npz")], lambda out: vitkit.load_model(d / "m.npz").config.num_classes == 10


def _train(t, d, env):
    argv = ["train", "--out", str(d), "--no-progress", "model.num_layers=1", "data.image_size=8",
            "model.patch_size=4", "data.batch_size=8", "schedule.steps=2", "schedule.warmup_steps=1", "eval_every=0",
            "data.eval_limit=16", "data.num_workers=0", "threads=1"]
    return argv, lambda out: json.loads((d / "summary.json").read_text())["steps"] == 2


def _eval(t, d, env):
    argv = ["eval", "--model", t["ckpt"], "--data", "digits", "--limit", "16", "--out", str(d)]
    return argv, lambda out: json.loads((d / "eval.json").read_text())["image_size"] == [16, 16]


def _fewshot(t, d, env):
    argv = ["fewshot", "--model", t["ckpt"], "--train", "digits", "--test", "digits", "--shots", "1", "--seeds", "1",
            "--train-limit", "100", "--test-limit", "16", "--out", str(d)]
    return argv, lambda out: (d / "fewshot.json").is_file()


def _analyze(t, d, env):
    argv = ["analyze", "--model", t["ckpt"], "--images", t["png"], "--num-images", "1", "--out", str(d)]
    return argv, lambda out: (d / "analysis.json").is_file()


def _predict(t, d, env):
    return ["predict", "--model", t["ckpt"], t["png"], "--json"], lambda out: len(json.loads(out)["predictions"]) == 1


def _export(t, d, env):
    pytest.importorskip("onnxruntime")
    argv = ["export", "--model", t["ckpt"], "--exporter", "torchscript", str(d / "m.onnx")]
    return argv, lambda out: (d / "m.onnx").is_file() and "max abs diff" in out


def _bench(t, d, env):
    argv = ["bench", "--model", "ViT-Ti_16", "--image-size", "32", "--batch", "2", "--num-classes", "10", "--steps",
            "1", "--warmup", "0", "--peak-size", "64", "--json"]
    return argv, lambda out: json.loads(out)["results"]["vitkit"]["images_per_s"] > 0


CASES = {"models": _models, "download": _download, "data": _data,
         "demo": _demo, "convert": _convert, "train": _train, "eval": _eval, "fewshot": _fewshot,
         "analyze": _analyze, "predict": _predict, "export": _export, "bench": _bench}


def test_every_command_has_a_case():
    assert set(CASES) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_runs(command, tiny, tmp_path, capsys, monkeypatch):
    with contextlib.ExitStack() as stack:
        argv, ok = CASES[command](tiny, tmp_path / command, (stack, monkeypatch))
        rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert ok(out), out[-2000:]
