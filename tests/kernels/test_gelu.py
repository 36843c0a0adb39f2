"""The compiled tanh-GELU (vitkit.kernels.gelu) computes what PyTorch's kernel computes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from vitkit import create_model
from vitkit.kernels import gelu as fast_gelu_mod
from vitkit.kernels.gelu import gelu, gelu_tanh


def _ref(x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.detach().double().requires_grad_()
    y = F.gelu(xr, approximate="tanh")
    (gx,) = torch.autograd.grad(y, xr, g.double())
    return y.detach(), gx


def test_bf16_values_and_gradients_match_pytorchs_kernel() -> None:
    torch.manual_seed(0)
    x = (torch.randn(257, 96) * 3).bfloat16().requires_grad_()
    g = torch.randn(257, 96).bfloat16()
    y_ref, g_ref = _ref(x, g)
    y_aten = F.gelu(x, approximate="tanh")
    (g_aten,) = torch.autograd.grad(y_aten, x, g)
    y_fast = gelu_tanh(x)
    assert y_fast.grad_fn is not None and "GeluTanh" in type(y_fast.grad_fn).__name__  # the fast path ran
    (g_fast,) = torch.autograd.grad(y_fast, x, g)
    assert y_fast.dtype == g_fast.dtype == torch.bfloat16
    # Both compute in fp32 and round once: same error against float64, and at most one bf16 ulp apart.
    err_aten, err_fast = (y_aten.double() - y_ref).abs().max(), (y_fast.double() - y_ref).abs().max()
    assert err_fast <= err_aten * 1.01 + 1e-6
    assert (g_fast.double() - g_ref).abs().max() <= (g_aten.double() - g_ref).abs().max() * 1.01 + 1e-6
    ulp = torch.finfo(torch.bfloat16).eps * y_aten.double().abs().clamp_min(1e-2)
    assert ((y_fast.double() - y_aten.double()).abs() <= ulp).all()


def test_only_bf16_with_grad_takes_the_compiled_path() -> None:
    x32 = torch.randn(8, 16, requires_grad=True)
    assert "Gelu" in type(F.gelu(x32, approximate="tanh").grad_fn).__name__
    assert "GeluTanh" not in type(gelu_tanh(x32).grad_fn).__name__  # fp32: aten's kernel
    xb = torch.randn(8, 16).bfloat16().requires_grad_()
    with torch.inference_mode():  # inference: fc1 fuses GELU itself; alone, aten, bit for bit
        assert torch.equal(gelu_tanh(xb), F.gelu(xb, approximate="tanh"))
    with torch.no_grad():  # evaluation during training: the compiled forward, within one bf16 ulp
        y, ref = gelu_tanh(xb).double(), F.gelu(xb, approximate="tanh").double()
        assert ((y - ref).abs() <= torch.finfo(torch.bfloat16).eps * ref.abs().clamp_min(1e-2)).all()


def test_gelu_dispatch_and_the_models_mlp_use() -> None:
    xb = torch.randn(8, 16).bfloat16().requires_grad_()
    assert "GeluTanh" in type(gelu(xb, "tanh").grad_fn).__name__
    assert "GeluTanh" not in type(gelu(xb, "tanh", fast=False).grad_fn).__name__  # the reference: aten
    assert "GeluTanh" not in type(gelu(xb, "none").grad_fn).__name__  # erf GELU: aten is fast already
    m = create_model("ViT-Ti_16", num_classes=5, image_size=32, num_layers=1)
    h = torch.randn(2, 5, 192).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "GeluTanh" in type(m.blocks[0].mlp.act(h).grad_fn).__name__
        m.set_fast_paths(False)
        assert "GeluTanh" not in type(m.blocks[0].mlp.act(h).grad_fn).__name__


def test_bf16_training_step_matches_the_plain_model() -> None:
    torch.manual_seed(0)
    plain = create_model("ViT-Ti_16", num_classes=5, image_size=32, patch_size=8, num_layers=2).set_fast_paths(False)
    fast = copy.deepcopy(plain).set_fast_paths(True)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    out = {}
    for name, m in (("plain", plain), ("fast", fast)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = m(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        out[name] = (logits.float(), {k: p.grad.clone() for k, p in m.named_parameters()})
    assert torch.allclose(out["fast"][0], out["plain"][0], atol=0.05)
    for k, g in out["plain"][1].items():
        gf = out["fast"][1][k]
        assert (gf - g).norm() <= 0.05 * g.norm() + 1e-6, k


def test_falls_back_to_pytorch_with_a_warning_when_inductor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(*a: object, **k: object) -> object:
        def fn(*args: object) -> object:
            raise RuntimeError("no C++ compiler")
        return fn

    monkeypatch.setattr(fast_gelu_mod, "_compiled", {})
    monkeypatch.setattr(fast_gelu_mod, "_broken", [])
    monkeypatch.setattr(torch, "compile", broken_compile)
    x = torch.randn(4, 8).bfloat16().requires_grad_()
    with pytest.warns(RuntimeWarning, match="compiled tanh-GELU is not available"):
        y = gelu_tanh(x)
    assert torch.equal(y, F.gelu(x, approximate="tanh"))
    y.sum().backward()  # backward falls back too
    assert "GeluTanh" not in type(gelu_tanh(x).grad_fn).__name__  # later calls skip the compiled path
