"""Training linears on packed oneDNN weights (vitkit.perf.linear) compute what nn.Linear computes."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from vitkit import create_model
from vitkit.perf import enable_activation_checkpointing, fast_training
from vitkit.perf.fast import mkldnn_linear_available
from vitkit.perf.linear import packed_linears

pytestmark = pytest.mark.skipif(not mkldnn_linear_available(torch.bfloat16), reason="no oneDNN bf16 linear here")


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


@pytest.mark.parametrize("bf16,checkpointing", [(True, False), (True, True), (False, False)])
def test_outputs_and_every_gradient_match_the_plain_layers(bf16: bool, checkpointing: bool) -> None:
    plain = _model()
    packed = packed_linears(copy.deepcopy(plain))
    if checkpointing:
        enable_activation_checkpointing(packed)
    assert type(packed.blocks[0].mlp.fc1).__name__ == "TrainPackedLinear"
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 7
    logits_p, grads_p = _step(plain, x, y, bf16)
    fc1 = packed.blocks[0].mlp.fc1
    h = torch.randn(2, 520, fc1.in_features, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
        assert "PackedLinearFn" in type(fc1(h).grad_fn).__name__  # the packed path runs
    logits_f, grads_f = _step(packed, x, y, bf16)
    # bf16: the same bf16 operands, fp32 accumulation and one rounding (bitwise on the 2-core
    # EPYC); fp32: oneDNN vs MKL summation order. Both far below bf16's own error (~4e-3).
    tol = 1e-3 if bf16 else 1e-5
    assert torch.allclose(logits_f, logits_p, rtol=0, atol=tol * logits_p.abs().max())
    assert grads_f.keys() == grads_p.keys()
    for k in grads_p:
        assert grads_f[k].dtype == grads_p[k].dtype, k
        scale = grads_p[k].abs().max().clamp_min(1e-12)
        assert (grads_f[k] - grads_p[k]).abs().max() <= tol * scale, k


def test_the_packed_path_runs_only_in_cpu_training() -> None:
    m = packed_linears(_model())
    fc1 = m.blocks[0].mlp.fc1
    x = torch.randn(2, 520, fc1.in_features, requires_grad=True)
    for ctx in (nullcontext(), torch.autocast("cpu", dtype=torch.bfloat16)):
        with ctx:
            assert "PackedLinearFn" in type(fc1(x).grad_fn).__name__
            small = x[:, :100]  # 200 rows: too few to pay for packing -> the plain op
            assert "PackedLinearFn" not in type(fc1(small).grad_fn).__name__
            with torch.no_grad():  # evaluation: the plain op, bit for bit
                assert torch.equal(fc1(x), F.linear(x, fc1.weight, fc1.bias))
    narrow = packed_linears(create_model("ViT-Ti_16", num_classes=3, image_size=32, hidden_size=64, mlp_dim=128,
                                         num_heads=2, num_layers=1)).blocks[0].mlp.fc1
    assert type(narrow).__name__ == "TrainPackedLinear"
    xn = torch.randn(4, 520, 64, requires_grad=True)
    assert "PackedLinearFn" not in type(narrow(xn).grad_fn).__name__  # width 64: the plain op
    xd = x.detach().double()
    fc1.double()
    assert torch.equal(fc1(xd), F.linear(xd, fc1.weight, fc1.bias))  # other dtypes: plain


def test_state_dict_unchanged_and_copyable() -> None:
    m = _model()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    packed_linears(m)
    packed_linears(m)  # twice is a no-op
    assert sd.keys() == m.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
    assert type(m.head).__name__ == "Linear"  # only the blocks' token-wise layers
    copy.deepcopy(m)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_fast_training_per_precision(precision: str) -> None:
    m = fast_training(_model(), precision)
    fc1 = type(m.blocks[0].mlp.fc1).__name__
    assert fc1 == ("Linear" if precision == "fp16" else "TrainPackedLinear")
    assert (type(m.blocks[0].mlp).__name__ == "FastGeluMlp") == (precision == "bf16")
