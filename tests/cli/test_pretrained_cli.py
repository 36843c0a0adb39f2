"""`vitkit models --pretrained`, `vitkit download`, and URLs in --model / convert (local HTTP server only)."""

import json
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.checkpoints.catalogue import lookup
from vitkit.cli.main import main
from vitkit.download import cache_path, recorded_sha256

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


def test_a_mirror_fetch_is_cached_under_the_catalogue_name(env, capsys, monkeypatch):
    name = "imagenet21k/ViT-B_32"
    with FileServer({f"/vm/{name}.npz": (env / "m.npz").read_bytes()}) as srv:
        monkeypatch.setenv("VITKIT_WEIGHTS_URL", srv.url + "/vm")
        assert main(["download", name, "--json"]) == 0
        row = json.loads(capsys.readouterr().out)[0]
    official = cache_path(lookup(name).official_url)
    assert Path(row["path"]) == official and row["sha256"] == recorded_sha256(official)
    monkeypatch.delenv("VITKIT_WEIGHTS_URL")
    monkeypatch.setenv("VITKIT_OFFLINE", "1")  # the mirror is gone and so is the variable: still found
    assert vitkit.load_model(name, progress=False).config.hidden_size == 32


def test_check_and_models_refuse_a_file_of_another_architecture(env, capsys, monkeypatch):
    name = "imagenet21k/ViT-B_32"  # served: a tiny model (width 32, 1 block, patch 4)
    with FileServer({f"/vm/{name}.npz": (env / "m.npz").read_bytes()}) as srv:
        monkeypatch.setenv("VITKIT_WEIGHTS_URL", srv.url + "/vm")
        assert main(["download", name, "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the download's progress line
    path = cache_path(lookup(name).official_url)
    assert err.startswith("vitkit download: error: ") and f"delete {path}" in err
    for what in ("hidden_size 32 (catalogue: 768)", "num_layers 1 (catalogue: 12)", "patch_size 4 (catalogue: 32)"):
        assert what in err
    assert main(["models", "--pretrained", "--json", "--filter", "ViT-B_32"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[name]["cached"] and "not a ViT-B_32" in rows[name]["problem"]
    assert not rows["imagenet21k+imagenet2012/ViT-B_32"]["cached"]
    assert main(["models", "--pretrained", "--filter", "ViT-B_32"]) == 0
    assert f"BAD: {name}: the cached file is not a ViT-B_32" in capsys.readouterr().out


def test_check_accepts_the_right_architecture_force_refetches_corruption_is_reported(env, capsys, monkeypatch):
    name = "augreg/Ti_16"  # the README's recommended ViT-Ti/16: width 192, 12 blocks, patch 16
    entry = lookup(name)

    def ti16(seed: int) -> bytes:
        torch.manual_seed(seed)
        m = vitkit.create_model("ViT-Ti_16", num_classes=2, image_size=32)
        return vitkit.save_model(m, env / f"ti{seed}.npz").read_bytes()

    first, second = ti16(0), ti16(1)
    served = {f"/vm/{entry.name}.npz": first}
    with FileServer(served) as srv:
        monkeypatch.setenv("VITKIT_WEIGHTS_URL", srv.url + "/vm")
        assert main(["download", name, "--check", "--json"]) == 0, capsys.readouterr().err
        assert "12 blocks, hidden 192" in json.loads(capsys.readouterr().out)[0]["model"]
        srv.files[f"/vm/{entry.name}.npz"] = second
        assert main(["download", name, "--json"]) == 0  # cached: not fetched again
        assert main(["download", name, "--force", "--json"]) == 0
        assert len(srv.requests) == 2
    path = cache_path(entry.official_url)
    assert path.read_bytes() == second and json.loads(capsys.readouterr().out.split("\n]\n")[1] + "\n]")[0][
        "sha256"] == recorded_sha256(path)
    data = bytearray(second)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main(["models", "--pretrained", "--json", "--filter", "Ti_16"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == entry.name)
    assert "does not match the recorded" in row["problem"] and f"delete {path}" in row["problem"]


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
