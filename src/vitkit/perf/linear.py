"""bf16 training linears on oneDNN's packed weights: autocast's result, a little faster on CPU.

Under bf16 autocast a token-wise ``nn.Linear`` becomes ``addmm(bias, x, W.t())``, which on CPU
first copies the broadcast bias into the (tokens x out) output and then accumulates the GEMM onto
it, with the weight in its plain layout. oneDNN's linear with a freshly packed (blocked) weight
adds the bias inside the kernel and runs the GEMM closer to the machine's peak. Packing the bf16
weight costs ~0.2 ms per layer per step, so it is redone every forward (the optimiser changes the
weight every step). Measured on the 2-core EPYC, M = 6304 tokens (ViT-S/16, batch 32): fc1
20.9 -> 18.7 ms, qkv 15.2 -> 13.5 ms, fc2 19.0 -> 18.4 ms, proj 5.0 -> 4.5 ms forward,
packing included; about 2-3% of a training step. The backward GEMMs stay on ``torch.mm``
(packing W.t() for the input gradient costs what it saves).

The values are autocast's, bit for bit on this machine (the same bf16 inputs, fp32 accumulation,
one rounding; tests/perf/test_linear.py compares outputs and every gradient with the plain
model's): the input gradient is ``g @ W``, the weight gradient ``g.t() @ x`` and the bias gradient
``g.sum(0)``, each in bf16 and widened to the fp32 parameter's dtype, as autocast's backward does.
Hand-written because no library ships a training (autograd) linear on oneDNN's packed weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._swap import subclass_once

_BF16 = torch.bfloat16


class _PackedBf16Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        w = weight.to(_BF16)
        x2 = x.to(_BF16).reshape(-1, x.shape[-1])
        packed = torch.ops.mkldnn._reorder_linear_weight(w, x2.shape[0])
        y = torch.ops.mkldnn._linear_pointwise(x2, packed, None if bias is None else bias.to(_BF16), "none", [], "")
        ctx.save_for_backward(x2, w)
        ctx.x_shape, ctx.x_dtype, ctx.has_bias = x.shape, x.dtype, bias is not None
        ctx.w_dtype = weight.dtype
        return y.reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, w = ctx.saved_tensors
        g = grad.to(_BF16).reshape(-1, w.shape[0])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = (g @ w).reshape(ctx.x_shape).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            gw = (g.t() @ x2).to(ctx.w_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0).to(ctx.w_dtype)
        return gx, gw, gb


def _usable(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and torch.is_grad_enabled()
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == _BF16
        and not torch.compiler.is_compiling()
    )


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if _usable(x) and self.weight.dtype == torch.float32:
        return _PackedBf16Linear.apply(x, self.weight, self.bias)
    return F.linear(x, self.weight, self.bias)


def packed_bf16_linears(model: nn.Module) -> nn.Module:
    """Run the token-wise linear layers of ``model.blocks`` on packed oneDNN weights in bf16
    training (see the module docstring). Outside bf16 autocast with gradients, or where oneDNN's
    bf16 linear is missing, the layers run as plain ``nn.Linear``. Returns ``model``; state_dict
    unchanged."""
    from .fast import mkldnn_linear_available

    blocks = getattr(model, "blocks", None)
    if blocks is None or not mkldnn_linear_available(_BF16):
        return model
    for block in blocks:
        for m in block.modules():
            if type(m) is nn.Linear:
                m.__class__ = subclass_once(nn.Linear, "PackedBf16", {"forward": _packed_forward})
    return model
