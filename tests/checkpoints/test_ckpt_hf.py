"""Hugging Face transformers ViT: equality in both directions, files and directories."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import vitkit  # noqa: E402
from vitkit.checkpoints import CheckpointError  # noqa: E402
from vitkit.checkpoints.hf import from_hf, from_hf_state_dict, to_hf  # noqa: E402

TOL = 1e-5
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=16,
             patch_size=4)


def _perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def _hf_classifier(**kw):
    cfg = transformers.ViTConfig(**{**SMALL, "num_labels": 3, **kw})
    return _perturb(transformers.ViTForImageClassification(cfg))


def _ours(**kw):
    base = dict(hidden_size=32, mlp_dim=64, num_heads=4, num_layers=2, patch_size=4, image_size=16, num_classes=3)
    return _perturb(vitkit.create_model("ViT-B_16", **{**base, **kw}))


@pytest.mark.parametrize("act,eps", [("gelu", 1e-12), ("gelu_pytorch_tanh", 1e-6), ("gelu_new", 1e-5)])
def test_import_from_hf_module(act, eps):
    hf = _hf_classifier(hidden_act=act, layer_norm_eps=eps)
    m = from_hf(hf)
    assert m.config.gelu == ("exact" if act == "gelu" else "tanh") and m.config.layer_norm_eps == eps
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x), hf(x).logits, atol=TOL, rtol=0)


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_export_to_hf_module(gelu):
    m = _ours(gelu=gelu)
    hf = to_hf(m)
    assert isinstance(hf, transformers.ViTForImageClassification)
    assert hf.config.layer_norm_eps == 1e-6
    assert hf.config.hidden_act == {"tanh": "gelu_pytorch_tanh", "exact": "gelu"}[gelu]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, m(x), atol=TOL, rtol=0)
    # The exact-vs-tanh choice matters at this tolerance: the other activation gives other logits.
    wrong = to_hf(m)
    wrong.config.hidden_act = "gelu" if gelu == "tanh" else "gelu_pytorch_tanh"
    other = transformers.ViTForImageClassification(wrong.config).eval()
    other.load_state_dict(wrong.state_dict())
    with torch.no_grad():
        assert (other(x).logits - m(x)).abs().max() > TOL


def test_pooler_is_the_representation_layer():
    hf = _perturb(transformers.ViTModel(transformers.ViTConfig(**SMALL), add_pooling_layer=True))
    m = from_hf(hf)
    assert m.config.representation_size == 32 and m.config.num_classes == 0
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x), hf(x).pooler_output, atol=TOL, rtol=0)
        back = to_hf(m)
        assert isinstance(back, transformers.ViTModel) and back.pooler is not None
        torch.testing.assert_close(back(x).pooler_output, hf(x).pooler_output, atol=TOL, rtol=0)


def test_save_pretrained_directory_both_ways(tmp_path):
    hf = _hf_classifier(id2label={0: "cat", 1: "dog", 2: "eel"}, label2id={"cat": 0, "dog": 1, "eel": 2})
    hf.save_pretrained(tmp_path / "hf")
    x = torch.randn(2, 3, 16, 16)
    m = vitkit.load_model(tmp_path / "hf")
    assert m.config.class_names == ("cat", "dog", "eel")
    single = vitkit.load_model(tmp_path / "hf" / "model.safetensors")  # config.json found next to it
    with torch.no_grad():
        want = hf(x).logits
        torch.testing.assert_close(m(x), want, atol=TOL, rtol=0)
        torch.testing.assert_close(single(x), want, atol=TOL, rtol=0)
    out = vitkit.save_model(m, tmp_path / "out", format="hf")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["layer_norm_eps"] == 1e-12 and cfg["hidden_act"] == "gelu"
    back = transformers.ViTForImageClassification.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, want, atol=TOL, rtol=0)


def test_bare_state_dict_with_hints(tmp_path):
    hf = _hf_classifier()
    path = tmp_path / "weights.pth"
    torch.save(hf.state_dict(), path)
    m = vitkit.load_model(path, num_heads=4)  # no config.json: HF defaults (exact GELU, eps 1e-12) + shapes
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x), hf(x).logits, atol=TOL, rtol=0)


def test_export_refusals():
    with pytest.raises(CheckpointError, match="classifier='gap'"):
        to_hf(_ours(classifier="gap"))
    with pytest.raises(CheckpointError, match="classifier='token_unpooled'"):  # logits for every token
        to_hf(_ours(classifier="token_unpooled"))
    with pytest.raises(CheckpointError, match="representation layer"):
        to_hf(_ours(representation_size=8))


def test_pytorch_model_bin_directory_and_state_dict_api(tmp_path):
    hf = _hf_classifier(hidden_act="gelu_pytorch_tanh")
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")  # plain tensors: weights_only loads it
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = hf(x).logits
        torch.testing.assert_close(vitkit.load_model(tmp_path / "hf")(x), want, atol=TOL, rtol=0)
        m = from_hf_state_dict(hf.state_dict(), hf.config)
        assert m.config.gelu == "tanh"
        torch.testing.assert_close(m(x), want, atol=TOL, rtol=0)
