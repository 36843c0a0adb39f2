"""`vitkit models --pretrained`, `vitkit download`, and URLs in --model / convert (local HTTP server only)."""

import json
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.checkpoints.download import cache_path, recorded_sha256
from vitkit.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "checkpoints"))
from http_server import FileServer  # noqa: E402


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VITKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    m = vitkit.create_model("ViT-Ti_16", num_classes=3, image_size=16, patch_size=4, num_layers=1, hidden_size=32,
                            num_heads=2, mlp_dim=64)
    vitkit.save_model(m, tmp_path / "m.npz")
    vitkit.save_model(m, tmp_path / "m.safetensors")
    return tmp_path


def test_models_pretrained_lists_the_catalogue(env, capsys):
    assert main(["models", "--pretrained", "--json", "--filter", "augreg"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 18 and all(r["name"].startswith("augreg/") and not r["cached"] for r in rows)
    assert {"model", "resolution", "pretrain", "finetune", "accuracy", "url"} <= set(rows[0])
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "imagenet21k+imagenet2012/ViT-B_16-224" in out and "81.20%" in out and "VITKIT_WEIGHTS_URL" in out


def test_download_then_models_shows_it_cached(env, capsys, monkeypatch):
    name = "imagenet21k/ViT-B_32"
    with FileServer({f"/vm/{name}.npz": (env / "m.npz").read_bytes()}) as srv:
        monkeypatch.setenv("VITKIT_WEIGHTS_URL", srv.url + "/vm")
        assert main(["download", name, "--check", "--json"]) == 0
        row = json.loads(capsys.readouterr().out)[0]
        url = f"{srv.url}/vm/{name}.npz"
    assert Path(row["path"]) == cache_path(url) and row["sha256"] == recorded_sha256(cache_path(url))
    assert row["entry"]["model"] == "ViT-B_32" and "2 heads" in row["model"]
    assert main(["models", "--pretrained", "--json", "--filter", "ViT-B_32"]) == 0
    cached = {r["name"]: r["cached"] for r in json.loads(capsys.readouterr().out)}
    assert cached[name] and not cached["imagenet21k+imagenet2012/ViT-B_32"]


def test_urls_in_model_and_convert_are_not_mangled(env, capsys):
    with FileServer({"/w/m.safetensors": (env / "m.safetensors").read_bytes()}) as srv:
        url = srv.url + "/w/m.safetensors"
        assert main(["convert", url, str(env / "out.npz")]) == 0
        assert f"read    {url} (vitkit)" in capsys.readouterr().out
        assert main(["predict", "--model", url, "digits", "--limit", "1"]) == 0
        assert f"{url} stores no class names" in capsys.readouterr().err
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(vitkit.load_model(env / "out.npz")(x), vitkit.load_model(url)(x), atol=1e-6, rtol=0)
    dead = "http://127.0.0.1:9/x/m.safetensors"
    assert main(["eval", "--model", dead, "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert dead in err and "http:/1" not in err and len(err.strip().splitlines()) == 1
