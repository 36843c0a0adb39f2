"""vitkit.kernels.Linear on packed oneDNN weights computes what nn.Linear computes, in training
(autograd) and in inference (cached packed weights, GELU fused), and follows weight updates."""

from __future__ import annotations

import copy
import pickle
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from vitkit import create_model
from vitkit.kernels import Linear, mkldnn_linear_available
from vitkit.kernels import linear as kernel_linear

needs_onednn = pytest.mark.skipif(not mkldnn_linear_available(torch.float32), reason="no oneDNN in this torch build")
needs_bf16 = pytest.mark.skipif(not mkldnn_linear_available(torch.bfloat16), reason="no oneDNN bf16 linear here")


def _model() -> torch.nn.Module:
    # Width 256 (the packed path's minimum); 16 images of 64 + 1 tokens are 1040 rows (>= 1024).
    torch.manual_seed(0)
    m = create_model("ViT-Ti_16", num_classes=7, image_size=32, patch_size=4, num_layers=2, hidden_size=256,
                     mlp_dim=512, num_heads=4)
    with torch.no_grad():  # non-zero head and biases, so that every gradient is exercised
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def _step(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
          bf16: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
        logits = m(x)
    F.cross_entropy(logits.float(), y).backward()
    return logits.detach().float(), {k: p.grad.clone() for k, p in m.named_parameters()}


def _packed_ran(y: torch.Tensor) -> bool:
    return "PackedLinearFn" in type(y.grad_fn).__name__


@needs_bf16
@pytest.mark.parametrize("bf16,checkpointing", [(True, False), (True, True), (False, False)])
def test_outputs_and_every_gradient_match_the_plain_layers(bf16: bool, checkpointing: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the linears differ: the same GELU (aten's) on both sides, and the same last block and stream.
    monkeypatch.setattr(kernel_linear, "gelu", lambda y, approximate, fast: F.gelu(y, approximate=approximate))
    plain = _model()
    for m in plain.modules():
        if isinstance(m, Linear):
            m.fast = False
    fast = copy.deepcopy(plain)
    for m in fast.modules():
        if isinstance(m, Linear):
            m.fast = True
    fast.set_grad_checkpointing(checkpointing)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 7
    logits_p, grads_p = _step(plain, x, y, bf16)
    fc1 = fast.blocks[0].mlp.fc1
    h = torch.randn(2, 520, fc1.in_features, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
        assert _packed_ran(fc1(h))  # the packed path runs
    logits_f, grads_f = _step(fast, x, y, bf16)
    # bf16: the same bf16 operands, fp32 accumulation and one rounding (bitwise on the 2-core
    # EPYC); fp32: oneDNN vs MKL summation order. Both far below bf16's own error (~4e-3).
    tol = 1e-3 if bf16 else 1e-5
    assert torch.allclose(logits_f, logits_p, rtol=0, atol=tol * logits_p.abs().max())
    assert grads_f.keys() == grads_p.keys()
    for k in grads_p:
        assert grads_f[k].dtype == grads_p[k].dtype, k
        scale = grads_p[k].abs().max().clamp_min(1e-12)
        assert (grads_f[k] - grads_p[k]).abs().max() <= tol * scale, k


@needs_bf16
def test_the_training_path_runs_only_where_it_pays() -> None:
    fc1 = _model().blocks[0].mlp.fc1
    x = torch.randn(2, 520, fc1.in_features, requires_grad=True)
    for ctx in (nullcontext(), torch.autocast("cpu", dtype=torch.bfloat16)):
        with ctx:
            assert _packed_ran(fc1(x))
            small = x[:, :100]  # 200 rows: too few to pay for packing -> the plain op
            assert not _packed_ran(fc1(small))
    narrow = create_model("ViT-Ti_16", num_classes=3, image_size=32, hidden_size=64, mlp_dim=128,
                          num_heads=2, num_layers=1).blocks[0].mlp.fc1
    assert isinstance(narrow, Linear)
    assert not _packed_ran(narrow(torch.randn(4, 520, 64, requires_grad=True)))  # width 64: the plain op
    with torch.autocast("cpu", dtype=torch.float16):  # fp16: the plain op
        assert not _packed_ran(fc1(x))
    xd = x.detach().double()
    fc1.double()
    assert torch.equal(fc1(xd), F.linear(xd, fc1.weight, fc1.bias))  # other dtypes: plain


@needs_onednn
@pytest.mark.parametrize("activation", [None, "tanh", "none"])
def test_inference_path_fuses_gelu_and_matches(activation: str | None) -> None:
    torch.manual_seed(0)
    lin = Linear(48, 40)
    x = torch.randn(3, 7, 48)
    want = F.linear(x, lin.weight, lin.bias)
    if activation is not None:
        want = F.gelu(want, approximate=activation)
    with torch.inference_mode():
        got = lin(x, activation)
    assert lin._packed  # the packed weight was made and kept
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    lin.fast = False
    with torch.inference_mode():  # the reference: F.linear and aten's GELU, bit for bit
        assert torch.equal(lin(x, activation), want)


@needs_onednn
def test_inference_cache_follows_weight_updates() -> None:
    torch.manual_seed(0)
    lin = Linear(32, 16)
    x = torch.randn(4, 32)
    with torch.no_grad():
        lin(x)
        lin.weight.mul_(1.5)  # in place: the version counter moves
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), rtol=0, atol=1e-5)
    # A fused optimiser changes parameters without bumping their version counters.
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1, fused=True)
    for p in lin.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    with torch.inference_mode():
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), rtol=0, atol=1e-5)
    with torch.no_grad():
        lin.bias.add_(1.0)
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), rtol=0, atol=1e-5)


@needs_onednn
def test_state_dict_unchanged_and_copies_drop_the_cache() -> None:
    m = _model()
    with torch.inference_mode():
        m.eval()(torch.randn(1, 3, 32, 32))
    fc1 = m.blocks[0].mlp.fc1
    assert fc1._packed
    assert all(not k.endswith("_packed") for k in m.state_dict())
    assert type(m.head) is torch.nn.Linear  # only the blocks' token-wise layers
    c = copy.deepcopy(m)
    assert not c.blocks[0].mlp.fc1._packed and fc1._packed  # the copy re-packs on first use
    back = pickle.loads(pickle.dumps(c))
    assert isinstance(back.blocks[0].mlp.fc1, Linear)
    m.train()(torch.randn(16, 3, 32, 32)).sum().backward()  # training again: the stale copy is let go
    assert not fc1._packed
