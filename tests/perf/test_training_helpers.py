"""Activation checkpointing, the optimiser helper, device copies and the memory probe."""

from __future__ import annotations

import copy
from collections import namedtuple

import pytest
import torch

from vitkit.models.config import ViTConfig
from vitkit.models.registry import build_model
from vitkit.perf import (
    disable_activation_checkpointing,
    enable_activation_checkpointing,
    make_optimizer,
    peak_memory_bytes,
    pin_batch,
    reset_peak_memory,
    to_device,
)
from vitkit.perf.memory import rss_bytes


def _model(dropout: float) -> torch.nn.Module:
    cfg = ViTConfig(name="tiny", patch_size=8, hidden_size=32, mlp_dim=64, num_heads=2, num_layers=3,
                    num_classes=5, image_size=16, dropout_rate=dropout, drop_path_rate=dropout)
    model = build_model(cfg)
    with torch.no_grad():
        model.head.weight.normal_(std=0.1)
    return model


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_checkpointing_gives_identical_gradients(dropout: float) -> None:
    ref = _model(dropout).train()
    ck = copy.deepcopy(ref)
    enable_activation_checkpointing(ck)
    assert ck.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    grads = []
    for m in (ref, ck):
        torch.manual_seed(123)  # same dropout masks; checkpointing must replay them in the recompute
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=0, atol=0, msg=k)


def test_checkpointing_is_skipped_in_eval_and_undone() -> None:
    m = enable_activation_checkpointing(_model(0.0))
    assert type(m.blocks[0]).__name__.startswith("Checkpointed")
    m2 = copy.deepcopy(m)  # swapped classes survive a copy
    assert type(m2.blocks[0]) is type(m.blocks[0])
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        out = m.eval()(x)
    disable_activation_checkpointing(m)
    assert type(m.blocks[0]).__name__ == "Block"
    with torch.no_grad():
        torch.testing.assert_close(m(x), out)
    with pytest.raises(ValueError, match="blocks"):
        enable_activation_checkpointing(torch.nn.Linear(2, 2))


def test_make_optimizer_matches_reference_adamw() -> None:
    torch.manual_seed(0)
    ref_params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    params = [torch.nn.Parameter(p.detach().clone()) for p in ref_params]
    opt = make_optimizer([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}], 0.1,
                         weight_decay=0.01)
    assert isinstance(opt, torch.optim.AdamW)
    ref_opt = torch.optim.AdamW([{"params": ref_params[:1]}, {"params": ref_params[1:], "weight_decay": 0.0}],
                                lr=0.1, weight_decay=0.01, foreach=False)
    for _ in range(3):
        for p, q in zip(params, ref_params):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p.data, q.data, rtol=1e-6, atol=1e-6)


def test_to_device_keeps_structure() -> None:
    Pair = namedtuple("Pair", "x y")
    t = torch.zeros(2)
    batch = {"a": (t, [t, 3]), "b": Pair(t, "s")}
    out = to_device(batch, "cpu")
    assert out["a"][0] is t and out["a"][1][1] == 3 and isinstance(out["b"], Pair) and out["b"].y == "s"
    out = to_device(torch.zeros(2, dtype=torch.float64), torch.device("meta"))
    assert out.device.type == "meta"
    if not torch.cuda.is_available():
        assert pin_batch(batch) is batch


def test_peak_memory_sees_a_large_allocation() -> None:
    reset_peak_memory("cpu")
    before = rss_bytes()
    big = torch.ones(64 * 2**20 // 4 * 4)  # 64 MiB written, so resident
    del big
    assert peak_memory_bytes("cpu") >= before + 48 * 2**20


def test_attention_hot_path_matches_explicit_formula() -> None:
    """Attention (fused qkv, unbind split, SDPA) against the textbook formula, values and gradients."""
    from vitkit.models.vit import Attention

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


def _grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def test_bf16_residual_stream_gradients_within_bf16_tolerance() -> None:
    """The bf16 stream against fp32 (the reference), measured against plain autocast's own error."""
    from vitkit.perf import bf16_residual_stream

    torch.manual_seed(0)
    model = _model(0.0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 5, (8,))
    ref = _grads(model, x, y, bf16=False)
    plain = _grads(model, x, y, bf16=True)
    seen = []
    model.blocks[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    bf16_residual_stream(model)
    bf16_residual_stream(model)  # idempotent: one hook
    assert len(model.blocks[0]._forward_pre_hooks) == 1
    stream = _grads(model, x, y, bf16=True)
    assert seen == [torch.bfloat16]  # the stream really is bf16 between blocks
    assert torch.equal(_grads(model, x, y, bf16=False), ref)  # no effect outside bf16 autocast
    err, plain_err = (stream - ref).norm() / ref.norm(), (plain - ref).norm() / ref.norm()
    assert 0 < err <= 0.05
    assert err <= 4 * plain_err + 1e-3
    assert list(model.state_dict()) == list(_model(0.0).state_dict())


@pytest.mark.parametrize("grad", [False, True])
def test_attention_explicit_bf16_path_matches_sdpa(grad: bool) -> None:
    """The explicit bf16 attention (used below the size limit on CPU) against PyTorch's SDPA."""
    import vitkit.models.vit as vit

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 16, dtype=torch.bfloat16, requires_grad=grad) for _ in range(3))
    assert vit._explicit_is_faster(q) and not vit._explicit_is_faster(q.float())
    attn = vit.Attention(48, 3)
    with torch.no_grad():
        attn.qkv.bias.normal_()
    x = torch.randn(2, 7, 48, requires_grad=grad)
    with torch.autocast("cpu", torch.bfloat16):
        out = attn(x)[0]
        old, vit._EXPLICIT_MAX_ELEMENTS = vit._EXPLICIT_MAX_ELEMENTS, 0
        try:
            ref = attn(x)[0]  # the SDPA kernel
        finally:
            vit._EXPLICIT_MAX_ELEMENTS = old
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)
    if grad:
        g1 = torch.autograd.grad(out.float().square().sum(), x)[0]
        g2 = torch.autograd.grad(ref.float().square().sum(), x)[0]
        assert (g1 - g2).norm() <= 0.03 * g2.norm()
