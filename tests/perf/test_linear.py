"""Training linears on packed oneDNN weights (vitkit.perf.linear) compute what autocast computes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from vitkit import create_model
from vitkit.perf import enable_activation_checkpointing
from vitkit.perf.fast import mkldnn_linear_available
from vitkit.perf.linear import packed_bf16_linears

pytestmark = pytest.mark.skipif(not mkldnn_linear_available(torch.bfloat16), reason="no oneDNN bf16 linear here")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model("ViT-Ti_16", num_classes=7, image_size=32, patch_size=8, num_layers=2)
    with torch.no_grad():  # non-zero head and biases, so that every gradient is exercised
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def _step(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = m(x)
    F.cross_entropy(logits.float(), y).backward()
    return logits.detach().float(), {k: p.grad.clone() for k, p in m.named_parameters()}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_outputs_and_every_gradient_match_autocast(checkpointing: bool) -> None:
    plain = _model()
    packed = packed_bf16_linears(copy.deepcopy(plain))
    if checkpointing:
        enable_activation_checkpointing(packed)
    assert type(packed.blocks[0].mlp.fc1).__name__ == "PackedBf16Linear"
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 6])
    logits_p, grads_p = _step(plain, x, y)
    logits_f, grads_f = _step(packed, x, y)
    assert logits_f.grad_fn is None and torch.allclose(logits_f, logits_p, rtol=0, atol=1e-2)
    assert grads_f.keys() == grads_p.keys()
    for k in grads_p:
        assert grads_f[k].dtype == grads_p[k].dtype, k
        # Same bf16 operands, fp32 accumulation, one rounding: equal up to the GEMM's summation
        # order (bitwise on the 2-core EPYC); far below bf16's own error of ~4e-3 relative.
        scale = grads_p[k].abs().max().clamp_min(1e-12)
        assert (grads_f[k] - grads_p[k]).abs().max() <= 1e-3 * scale, k


def test_the_packed_path_runs_only_in_bf16_training() -> None:
    m = packed_bf16_linears(_model())
    fc1 = m.blocks[0].mlp.fc1
    x = torch.randn(2, 5, fc1.in_features, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "PackedBf16Linear" in type(fc1(x).grad_fn).__name__
        with torch.no_grad():
            assert torch.equal(fc1(x), F.linear(x, fc1.weight, fc1.bias))  # evaluation: autocast's op
    y32 = fc1(x)  # fp32: the plain layer, bit for bit
    assert "PackedBf16Linear" not in type(y32.grad_fn).__name__
    assert torch.equal(y32, F.linear(x, fc1.weight, fc1.bias))


def test_state_dict_unchanged_and_copyable() -> None:
    m = _model()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    packed_bf16_linears(m)
    packed_bf16_linears(m)  # twice is a no-op
    assert sd.keys() == m.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
    assert type(m.head).__name__ == "Linear"  # only the blocks' token-wise layers
    copy.deepcopy(m)
