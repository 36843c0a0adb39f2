"""The inference fast path against the plain model (the reference), and its caching rules."""

from __future__ import annotations

import pytest
import torch

from vitkit.models.config import ViTConfig
from vitkit.models.registry import build_model
from vitkit.perf import autocast, inference_model, resolve_precision
from vitkit.perf.fast import PackedLinear, mkldnn_linear_available

needs_onednn = pytest.mark.skipif(not mkldnn_linear_available(torch.float32), reason="no oneDNN in this torch build")


def _tiny(gelu: str = "tanh", classifier: str = "token", **kw) -> torch.nn.Module:
    cfg = ViTConfig(name="tiny", patch_size=8, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=2,
                    num_classes=7, image_size=32, gelu=gelu, classifier=classifier, **kw)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():  # the zero head would make every logit 0
            p.add_(torch.randn_like(p) * 0.05)
    return model


@needs_onednn
@pytest.mark.parametrize("gelu,classifier", [("tanh", "token"), ("exact", "gap")])
def test_fp32_fast_path_matches_plain_model(gelu: str, classifier: str) -> None:
    model = _tiny(gelu, classifier, representation_size=32 if classifier == "token" else None)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x)
        ref_feat = model.forward_head(model.forward_features(x), pre_logits=True)
    fast = inference_model(model, "fp32")
    assert fast is not model
    assert any(isinstance(m, PackedLinear) for m in fast.modules())
    with torch.inference_mode():
        out = fast(x)
        feat = fast.forward_head(fast.forward_features(x), pre_logits=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(feat, ref_feat, rtol=0, atol=1e-5)
    # Parameters are shared, not copied; the state_dict layout is that of the model.
    assert fast.state_dict().keys() == model.state_dict().keys()
    assert fast.blocks[0].attn.qkv.weight is model.blocks[0].attn.qkv.weight


@needs_onednn
def test_fast_path_follows_weight_updates_and_caches() -> None:
    model = _tiny()
    x = torch.randn(2, 3, 32, 32)
    fast = inference_model(model, "fp32")
    with torch.inference_mode():
        fast(x)
    assert inference_model(model, "fp32") is fast  # cached per model
    with torch.no_grad():  # what an optimiser step does: in-place update
        model.blocks[1].mlp.fc1.weight.mul_(1.5)
        ref = model.eval()(x)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), ref, rtol=0, atol=1e-5)
    # A fused optimiser changes parameters without bumping their version counters.
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    fast = inference_model(model, "fp32")
    with torch.no_grad():
        ref = model(x)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), ref, rtol=0, atol=5e-5)  # larger weights; oneDNN's order differs by CPU
    model.reset_head(3)
    fast2 = inference_model(model, "fp32")
    assert fast2 is not fast
    with torch.inference_mode():
        assert fast2(x).shape == (2, 3)


@needs_onednn
def test_fast_path_falls_back_with_autograd() -> None:
    model = _tiny()
    fast = inference_model(model, "fp32")
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    fast(x).sum().backward()
    ref_x = x.detach().clone().requires_grad_(True)
    model(ref_x).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not mkldnn_linear_available(torch.bfloat16), reason="no native bf16 on this CPU")
@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_bf16_fast_path_close_to_fp32(classifier: str) -> None:
    model = _tiny(classifier=classifier)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x)
        with autocast("bf16"):
            plain_bf16 = model(x).float()  # the reference path in bf16: autocast, fp32 residual stream
    fast = inference_model(model, "bf16")
    with torch.inference_mode(), autocast("bf16"):
        out = fast(x).float()
        stream = fast.forward_features(x)
    assert stream.dtype == torch.bfloat16  # the residual stream really is held in bf16
    # bf16 has an 8-bit mantissa: ~0.4% per rounding; a few layers of it stay within a few %.
    scale = ref.abs().max()
    err, plain_err = (out - ref).abs().max(), (plain_bf16 - ref).abs().max()
    assert err <= 0.03 * scale
    assert err > 0  # it really ran in bf16
    # Holding the stream in bf16 costs at most a few times autocast's own rounding error.
    assert err <= 4 * plain_err + 2e-3 * scale


def test_precision_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp64")
    assert resolve_precision("fp32") == "fp32"
    monkeypatch.setenv("VITKIT_CPU_AUTO_PRECISION", "fp32")
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.delenv("VITKIT_CPU_AUTO_PRECISION")
    expected = "bf16" if mkldnn_linear_available(torch.bfloat16) else "fp32"
    assert resolve_precision("auto", "cpu") == expected


def test_non_vit_module_passes_through() -> None:
    m = torch.nn.Sequential()
    assert inference_model(m, "fp32") is m
