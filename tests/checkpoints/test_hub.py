"""save_pretrained / from_pretrained / push_to_hub, and the torch.hub entry points (hubconf.py)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers

import vitkit
from vitkit.checkpoints import hub as hub_module
from vitkit.errors import UserError
from vitkit.models import BiTResNet, VisionTransformer

ROOT = Path(__file__).resolve().parents[2]


def _random(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def _tiny(name="ViT-Ti/16", **kw):
    torch.manual_seed(0)
    kw = {"image_size": 32, "num_layers": 2, "num_classes": 3, "class_names": ("ant", "bee", "cat"), **kw}
    return _random(vitkit.create_model(name, **kw))


def test_a_plain_vit_is_saved_as_transformers_loads_it(tmp_path):
    model = _tiny()
    out = model.save_pretrained(tmp_path / "m", card={"data": "digits", "result": "top-1 90%", "license": "mit"})
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= {
        p.name for p in out.iterdir()}
    hf = transformers.ViTForImageClassification.from_pretrained(out).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x).logits, model(x), rtol=1e-5, atol=1e-5)
    assert hf.config.id2label == {0: "ant", 1: "bee", 2: "cat"}
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "license: mit" in card and "digits" in card
    assert "width 192, depth 2, 3 heads" in card and "top-1 90%" in card
    back = VisionTransformer.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=1e-5, atol=1e-5)
    assert back.config.class_names == ("ant", "bee", "cat")


@pytest.mark.parametrize("kw", [{"classifier": "gap"}, {"stem_channels": (8,), "stem_strides": (2,),
                                                        "patch_size": 8}])
def test_what_transformers_cannot_hold_is_a_vitkit_folder(tmp_path, kw):
    model = _tiny(**kw)
    out = model.save_pretrained(tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["library_name"] == "vitkit" and cfg["vitkit_config"]["name"] == model.config.name
    assert "library_name: vitkit" in (out / "README.md").read_text()
    assert "Not stated" in (out / "README.md").read_text()
    x = torch.randn(2, 3, 32, 32)
    for back in (VisionTransformer.from_pretrained(out), vitkit.load_model(out)):
        with torch.no_grad():
            assert torch.equal(back(x), model(x))
    with pytest.raises(UserError, match="not a BiTResNet"):
        BiTResNet.from_pretrained(out)


def test_a_bit_resnet_round_trips(tmp_path):
    model = _tiny("BiT-R50x1", resnet={"num_layers": (1,), "width_factor": 1}, class_names=None)
    out = model.save_pretrained(tmp_path / "r")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(BiTResNet.from_pretrained(out)(x), model(x))


def test_from_pretrained_reads_a_hub_repository_id(tmp_path, monkeypatch):
    from tests.checkpoints.test_sources_hub import make_repo

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _tiny(classifier="gap")
    saved = model.save_pretrained(tmp_path / "m")
    make_repo(tmp_path / "hf", "someone/tiny", {p.name: p.read_bytes() for p in saved.iterdir()})
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(VisionTransformer.from_pretrained("someone/tiny")(x), model(x))
        assert torch.equal(vitkit.load_model("hf-hub:someone/tiny")(x), model(x))


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kw):
            calls["create"] = (repo_id, kw)

        def upload_folder(self, *, repo_id, folder_path, **kw):
            calls["upload"] = (repo_id, kw)
            calls["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            return type("Info", (), {"commit_url": f"https://hub.invalid/{repo_id}/commit/1"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = _tiny()
    url = model.push_to_hub("me/tiny-vit", private=True, token="t0k", card={"data": "digits"})
    assert url.endswith("me/tiny-vit/commit/1") and calls["token"] == "t0k"
    assert calls["create"] == ("me/tiny-vit", {"private": True, "exist_ok": True, "repo_type": "model"})
    local = model.save_pretrained(tmp_path / "local", card={"data": "digits"})
    assert calls["files"] == {p.name: p.read_bytes() for p in local.iterdir()}  # exactly the folder, byte for byte
    assert hub_module.push_to_hub.__doc__


def test_torch_hub_entry_points():
    # what torch.hub.list lists for a GitHub repository (it takes no local folder): hubconf's public callables
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    names = [f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith("_")]
    assert "vit_base_patch16_224" in names and "vit_base_r50_s16_384" in names and "vit" in names
    model = torch.hub.load(str(ROOT), "vit_tiny_patch16_224", source="local", num_classes=3, image_size=32,
                           num_layers=1)
    assert isinstance(model, VisionTransformer) and model.config.gelu == "exact"
    assert model.config.num_classes == 3 and model.config.image_size == (32, 32)
    official = torch.hub.load(str(ROOT), "vit", source="local", name="R+ViT-Ti_16", num_layers=1)
    assert official.config.resnet is not None and official.config.gelu == "tanh"


def test_torch_hub_pretrained_reads_weights(tmp_path):
    model = vitkit.create_model("vit_tiny_patch16_224", num_classes=2, image_size=32, num_layers=1)
    path = vitkit.save_model(_random(model), tmp_path / "w.safetensors")
    with pytest.raises(Exception, match="num_layers 1"):  # the entry checks the weights are its architecture
        torch.hub.load(str(ROOT), "vit_tiny_patch16_224", source="local", pretrained=str(path))
    loaded = torch.hub.load(str(ROOT), "vit_tiny_patch16_224", source="local", pretrained=str(path), num_layers=1)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
