"""The attention kernel choice (vitkit.kernels.attention) and the model's Attention against the formula."""

from __future__ import annotations

import pytest
import torch

from vitkit.kernels import attention as kattn
from vitkit.models.vit import Attention


def test_attention_hot_path_matches_explicit_formula() -> None:
    """Attention (fused qkv, unbind split, SDPA) against the textbook formula, values and gradients."""
    torch.manual_seed(0)
    d, h = 32, 4
    attn = Attention(d, h)
    with torch.no_grad():
        attn.qkv.bias.normal_()
        attn.proj.bias.normal_()
    x = torch.randn(2, 5, d, requires_grad=True)
    out = attn(x)[0]
    out.square().sum().backward()
    xr = x.detach().clone().requires_grad_(True)
    w, b = attn.qkv.weight, attn.qkv.bias
    q, k, v = (torch.nn.functional.linear(xr, w[i * d:(i + 1) * d], b[i * d:(i + 1) * d]) for i in range(3))
    split = lambda t: t.reshape(2, 5, h, d // h).transpose(1, 2)  # noqa: E731
    a = (split(q) @ split(k).transpose(-1, -2) / (d // h) ** 0.5).softmax(-1) @ split(v)
    ref = attn.proj(a.transpose(1, 2).reshape(2, 5, d))
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grad", [False, True])
def test_attention_explicit_bf16_path_matches_sdpa(grad: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The explicit bf16 attention (used below the size limit on CPU) against PyTorch's SDPA."""
    torch.manual_seed(0)
    q = torch.randn(2, 3, 7, 16, dtype=torch.bfloat16)
    assert kattn.explicit_is_faster(q) and not kattn.explicit_is_faster(q.float())
    attn = Attention(48, 3)
    with torch.no_grad():
        attn.qkv.bias.normal_()
    x = torch.randn(2, 7, 48, requires_grad=grad)
    with torch.autocast("cpu", torch.bfloat16):
        out = attn(x)[0]
        monkeypatch.setattr(kattn, "EXPLICIT_MAX_ELEMENTS", 0)
        ref = attn(x)[0]  # the SDPA kernel
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)
    if grad:
        g1 = torch.autograd.grad(out.float().square().sum(), x)[0]
        g2 = torch.autograd.grad(ref.float().square().sum(), x)[0]
        assert (g1 - g2).norm() <= 0.03 * g2.norm()


def test_class_token_row_and_weights() -> None:
    torch.manual_seed(0)
    attn = Attention(32, 4)
    x = torch.randn(2, 6, 32)
    full, _ = attn(x)
    row, _ = attn(x, class_token_only=True)
    torch.testing.assert_close(row, full[:, :1], rtol=1e-5, atol=1e-6)
    out, w = attn(x, need_weights=True)
    assert w is not None and w.shape == (2, 4, 6, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 6))
    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-6)
