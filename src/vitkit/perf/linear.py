"""Training linears on freshly packed oneDNN weights: the same layer, faster on CPU.

A token-wise ``nn.Linear`` in training is ``addmm(bias, x, W.t())``. On CPU, in fp32 that goes to
MKL's sgemm, and under bf16 autocast it first copies the broadcast bias into the (tokens x out)
output before accumulating the GEMM onto it. oneDNN's linear on a *packed* (blocked) weight adds
the bias in the kernel and runs closer to the machine's peak. Packing costs ~0.2-0.3 ms per
layer, so it is redone on every call (the optimiser changes the weight every step). Measured on
the 2-core EPYC at M = 6304 tokens (ViT-S/16, batch 32), packing included:

* bf16 forward: fc1 21.2 -> 19.0 ms, qkv 16.6 -> 14.3, fc2 19.0 -> 17.5, proj 5.5 -> 4.7. The
  input gradient stays on ``torch.mm`` (packing ``W.t()`` costs what it saves in bf16).
* fp32 forward: fc1 56.0 -> 47.4 ms, fc2 53.5 -> 35.4, qkv 31.1 -> 28.7, proj 11.7 -> 9.9; input
  gradient on a packed ``W.t()``: 45.6 -> 35.6, 58.7 -> 53.7, 30.7 -> 28.0, 11.9 -> 10.5.

The weight gradient ``g.t() @ x`` and the bias gradient ``g.sum(0)`` are plain torch ops (there
is no weight to pack). bf16 values are autocast's bit for bit on this machine (the same bf16
operands, fp32 accumulation, one rounding, gradients widened to the fp32 parameters as
autocast's backward does); fp32 values differ from MKL's only by summation order
(tests/perf/test_linear.py). Hand-written because no library ships a training (autograd)
linear on oneDNN's packed weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._swap import subclass_once
from .fast import mkldnn_linear_available

_BF16 = torch.bfloat16


def _packed(w: torch.Tensor, rows: int) -> torch.Tensor:
    # ``rows`` is oneDNN's batch-size hint for choosing the blocking; any size works at run time.
    return torch.ops.mkldnn._reorder_linear_weight(w, rows)


class _PackedLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                dtype: torch.dtype) -> torch.Tensor:
        w = weight.to(dtype)
        x2 = x.to(dtype).reshape(-1, x.shape[-1])
        b = None if bias is None else bias.to(dtype)
        y = torch.ops.mkldnn._linear_pointwise(x2, _packed(w, x2.shape[0]), b, "none", [], "")
        ctx.save_for_backward(x2, w)
        ctx.x_shape, ctx.x_dtype, ctx.w_dtype, ctx.has_bias = x.shape, x.dtype, weight.dtype, bias is not None
        return y.reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, w = ctx.saved_tensors
        g = grad.to(w.dtype).reshape(-1, w.shape[0])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            if w.dtype == torch.float32:  # packing W.t() pays in fp32 only (module docstring)
                wt = _packed(w.t().contiguous(), g.shape[0])
                gx = torch.ops.mkldnn._linear_pointwise(g, wt, None, "none", [], "")
            else:
                gx = g @ w
            gx = gx.reshape(ctx.x_shape).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            gw = (g.t() @ x2).to(ctx.w_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0).to(ctx.w_dtype)
        return gx, gw, gb, None


# Below these sizes packing every call costs more than it saves. Measured (forward, packing
# included, vs addmm): fp32 M=1088 K=N=64 0.35x, K=128 N=512 0.79x; M=8320 K=128 N=512 1.04x,
# K=512 N=128 1.14x; bf16 M=1088 K=N=64 0.33x, M=8320 K=N=128 1.12x; ViT-S (K, N >= 384) 1.08-1.5x.
# The demo's width-64 model trained 23% slower packed (20.6 vs 25.3 ms/step, fp32, 1 thread).
_MIN_FEATURES = 256
_MIN_ROWS = 1024


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The packed path's dtype for this call, or None for the plain layer."""
    if x.device.type != "cpu" or weight.dtype != torch.float32 or not torch.is_grad_enabled():
        return None
    if min(weight.shape) < _MIN_FEATURES or x.numel() < _MIN_ROWS * x.shape[-1]:
        return None
    if torch.compiler.is_compiling():
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        return _BF16 if dtype == _BF16 and mkldnn_linear_available(_BF16) else None
    return torch.float32 if x.dtype == torch.float32 and mkldnn_linear_available(torch.float32) else None


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    dtype = _compute_dtype(x, self.weight)
    if dtype is None:
        return F.linear(x, self.weight, self.bias)
    return _PackedLinearFn.apply(x, self.weight, self.bias, dtype)


def packed_linears(model: nn.Module) -> nn.Module:
    """Run the token-wise linear layers of ``model.blocks`` on packed oneDNN weights when training
    on CPU in fp32 or under bf16 autocast, for layers of at least 256 inputs and outputs applied
    to at least 1024 rows (see the module docstring). Anywhere else (smaller layers, evaluation,
    GPUs, fp16, ``torch.compile``, no oneDNN) they run as plain ``nn.Linear``. Returns ``model``;
    state_dict unchanged."""
    for block in getattr(model, "blocks", ()):
        for m in block.modules():
            if type(m) is nn.Linear:
                m.__class__ = subclass_once(nn.Linear, "TrainPacked", {"forward": _packed_forward})
    return model
