"""URLs and catalogue names: downloaded once from a local HTTP server, cached, resumed, verified, offline."""

import hashlib
import urllib.request

import pytest
import torch
from http_server import FileServer

import vitkit
from vitkit.checkpoints import CheckpointError
from vitkit.checkpoints.catalogue import lookup
from vitkit.download import cache_path

TINY = dict(num_classes=3, image_size=16, patch_size=4, num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64)


def _files(tmp_path):
    """A tiny model as vitkit safetensors and as an official .npz, as bytes."""
    model = vitkit.create_model("ViT-Ti_16", **TINY)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    vitkit.save_model(model, tmp_path / "m.safetensors")
    vitkit.save_model(model, tmp_path / "m.npz")
    return model.eval(), (tmp_path / "m.safetensors").read_bytes(), (tmp_path / "m.npz").read_bytes()


def test_url_downloads_once_then_loads_with_the_server_stopped(tmp_path, cache):
    model, st, _ = _files(tmp_path)
    x = torch.randn(2, 3, 16, 16)
    with FileServer({"/w/m.safetensors": st}) as srv:
        url = srv.url + "/w/m.safetensors"
        first = vitkit.load_model(url, progress=False)
        again = vitkit.load_model(url, progress=False)
        assert len(srv.requests) == 1  # the second load came from the cache
    with torch.no_grad():
        torch.testing.assert_close(first(x), model(x), atol=0, rtol=0)
        torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)
    path = cache_path(url)
    assert path.is_file() and path.read_bytes() == st
    assert (path.parent / (path.name + ".sha256")).read_text().split()[0] == hashlib.sha256(st).hexdigest()
    with torch.no_grad():  # server gone: still loads from the cache
        torch.testing.assert_close(vitkit.load_model(url, progress=False)(x), model(x), atol=0, rtol=0)


def test_catalogue_name_from_a_local_base_url(tmp_path, cache, monkeypatch):
    model, _, npz = _files(tmp_path)
    name = "imagenet21k+imagenet2012/ViT-B_16-224"
    with FileServer({f"/bucket/{name}.npz": npz}) as srv:
        monkeypatch.setenv("VITKIT_WEIGHTS_URL", srv.url + "/bucket")
        assert lookup(name).url == f"{srv.url}/bucket/{name}.npz"
        loaded = vitkit.load_model(name, progress=False)
        assert len(srv.requests) == 1
    assert loaded.config.name == "ViT-B_16"  # the catalogue names the model
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=0)
        # served no more: the cached copy
        torch.testing.assert_close(vitkit.load_model(name, progress=False)(x), model(x), atol=1e-6, rtol=0)


def test_a_download_cut_in_half_resumes_with_a_range_request(tmp_path, cache):
    _, st, _ = _files(tmp_path)
    with FileServer({"/m.safetensors": st}) as srv:
        url = srv.url + "/m.safetensors"
        srv.cut_next = 1
        with pytest.raises(CheckpointError, match="interrupted.*run again to resume"):
            vitkit.load_model(url, progress=False)
        path = cache_path(url)
        assert not path.exists()  # nothing complete-looking in the cache
        part = path.with_name(path.name + ".part")
        half = part.stat().st_size
        assert 0 < half < len(st)
        vitkit.load_model(url, progress=False)
        assert srv.requests[-1] == ("/m.safetensors", f"bytes={half}-")
    assert path.read_bytes() == st and not part.exists()


def test_a_server_that_ignores_range_restarts_the_file(tmp_path, cache):
    _, st, _ = _files(tmp_path)
    with FileServer({"/m.safetensors": st}) as srv:
        url = srv.url + "/m.safetensors"
        srv.cut_next, srv.ignore_range = 1, True
        with pytest.raises(CheckpointError, match="interrupted"):
            vitkit.load_model(url, progress=False)
        vitkit.load_model(url, progress=False)
    assert cache_path(url).read_bytes() == st


def test_offline_uncached_is_one_line_naming_url_and_path(cache, monkeypatch):
    monkeypatch.setenv("VITKIT_OFFLINE", "1")
    monkeypatch.setenv("VITKIT_WEIGHTS_URL", "http://127.0.0.1:9/vit_models")
    with pytest.raises(CheckpointError) as e:
        vitkit.load_model("imagenet21k/ViT-B_16")
    msg = str(e.value)
    url = "http://127.0.0.1:9/vit_models/imagenet21k/ViT-B_16.npz"
    official = cache_path(lookup("imagenet21k/ViT-B_16").official_url)  # cached under its official path
    assert "\n" not in msg and url in msg and str(official) in msg
    assert str(cache) in str(official)


def test_later_corruption_of_the_cache_is_detected(tmp_path, cache):
    _, st, _ = _files(tmp_path)
    with FileServer({"/m.safetensors": st}) as srv:
        url = srv.url + "/m.safetensors"
        vitkit.load_model(url, progress=False)
    path = cache_path(url)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        vitkit.load_model(url, progress=False)


def test_unknown_names_say_what_a_source_can_be(cache):
    with pytest.raises(FileNotFoundError, match="hf-hub:google/vit-base-patch16-224"):
        vitkit.load_model("google/vit-base-patch16-224")
    with pytest.raises(FileNotFoundError, match="imagenet21k/ViT-B_16"):
        vitkit.load_model("ViT-B/16")
    with pytest.raises(FileNotFoundError, match="not a catalogue name"):
        vitkit.load_model("augreg/Q_16-nonsense")


def test_a_complete_part_file_is_restarted_on_http_416(tmp_path, cache):
    _, st, _ = _files(tmp_path)
    with FileServer({"/m.safetensors": st}) as srv:
        url = srv.url + "/m.safetensors"
        part = cache_path(url).with_name("m.safetensors.part")
        part.parent.mkdir(parents=True)
        part.write_bytes(st)  # a previous run died between the last byte and the rename
        first = urllib.request.urlopen(url)  # the validator the first run kept
        part.with_name(part.name + ".validator").write_text(first.headers["ETag"])
        first.close()
        srv.requests.clear()
        vitkit.load_model(url, progress=False)
        assert [r[1] for r in srv.requests] == [f"bytes={len(st)}-", None]
    assert cache_path(url).read_bytes() == st


def test_concurrent_loads_download_once(tmp_path, cache):
    import threading

    _, st, _ = _files(tmp_path)
    with FileServer({"/m.safetensors": st}) as srv:
        url = srv.url + "/m.safetensors"
        errors = []

        def load():
            try:
                vitkit.load_model(url, progress=False)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(srv.requests) == 1


def test_the_md5_a_gcs_bucket_publishes_is_checked(tmp_path, cache):
    import base64

    _, st, _ = _files(tmp_path)
    good = base64.b64encode(hashlib.md5(st).digest()).decode()
    with FileServer({"/a.safetensors": st, "/b.safetensors": st}) as srv:
        srv.headers = {"x-goog-hash": f"crc32c=AAAAAA==, md5={good}"}
        srv.cut_next = 1  # also across a resume
        with pytest.raises(CheckpointError, match="interrupted"):
            vitkit.load_model(srv.url + "/a.safetensors", progress=False)
        vitkit.load_model(srv.url + "/a.safetensors", progress=False)
        srv.headers = {"x-goog-hash": "crc32c=AAAAAA==,md5=" + base64.b64encode(b"0" * 16).decode()}
        with pytest.raises(CheckpointError, match="MD5 .* does not match .*x-goog-hash"):
            vitkit.load_model(srv.url + "/b.safetensors", progress=False)
    assert cache_path(srv.url + "/a.safetensors").is_file()
    bad = cache_path(srv.url + "/b.safetensors")
    assert not bad.exists() and not bad.with_name(bad.name + ".part").exists()
