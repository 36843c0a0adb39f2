"""``nn.Linear`` on packed oneDNN weights where that is faster on CPU: the same layer, same parameters.

``F.linear`` on CPU goes through the BLAS (MKL), which re-lays the weight out on every call, and,
under bf16 autocast, first copies the broadcast bias into the (tokens x out) output. oneDNN's
linear on a *packed* (blocked) weight adds the bias in the kernel, can apply the GELU that
follows ``fc1`` in the same kernel, and runs closer to the machine's peak. Two uses:

* Training (autograd on): packed afresh on every call (~0.2-0.3 ms per layer; the optimiser
  changes the weight every step), for layers of at least 256 inputs and outputs applied to at
  least 1024 rows. Measured on the 2-core EPYC at M = 6304 tokens (ViT-S/16, batch 32), packing
  included: bf16 forward fc1 21.2 -> 19.0 ms, qkv 16.6 -> 14.3, fc2 19.0 -> 17.5, proj 5.5 -> 4.7
  (the input gradient stays on ``torch.mm``: packing ``W.t()`` costs what it saves in bf16); fp32
  forward fc1 56.0 -> 47.4 ms, fc2 53.5 -> 35.4, qkv 31.1 -> 28.7, proj 11.7 -> 9.9, input
  gradient on a packed ``W.t()`` 45.6 -> 35.6, 58.7 -> 53.7, 30.7 -> 28.0, 11.9 -> 10.5.
* Inference (autograd off): packed once and cached with the layer, GELU fused, any size: 10-20%
  per layer in fp32; in bf16 no per-call weight cast. The cache is re-made when the parameter
  changes (its version, storage or a sample of its values: fused optimisers update in place
  without bumping the version), so a stale weight is never used, and dropped when the layer
  trains again (an evaluation inside a training loop does not keep a second copy of the weights).

bf16 values are autocast's bit for bit on this machine (the same bf16 operands, fp32
accumulation, one rounding); fp32 values differ from MKL's only by summation order
(tests/kernels/test_linear.py). Hand-written because no library ships a linear layer on oneDNN's
packed weights with autograd.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .common import cpu_autocast_dtype, mkldnn_linear_available, tracing
from .gelu import gelu

_BF16 = torch.bfloat16
# GELU fused into oneDNN's kernel: (attr, algorithm) per ``approximate``.
_FUSED = {None: ("none", ""), "tanh": ("gelu", "tanh"), "none": ("gelu", "none")}

# Below these sizes packing on every call costs more than it saves. Measured (forward, packing
# included, vs addmm): fp32 M=1088 K=N=64 0.35x, K=128 N=512 0.79x; M=8320 K=128 N=512 1.04x,
# K=512 N=128 1.14x; bf16 M=1088 K=N=64 0.33x, M=8320 K=N=128 1.12x; ViT-S (K, N >= 384) 1.08-1.5x.
# The demo's width-64 model trained 23% slower packed (20.6 vs 25.3 ms/step, fp32, 1 thread).
_MIN_FEATURES = 256
_MIN_ROWS = 1024


def _pack(w: torch.Tensor, rows: int) -> torch.Tensor:
    # ``rows`` is oneDNN's batch-size hint for choosing the blocking; any size works at run time.
    return torch.ops.mkldnn._reorder_linear_weight(w, rows)


class _PackedLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                dtype: torch.dtype) -> torch.Tensor:
        w = weight.to(dtype)
        x2 = x.to(dtype).reshape(-1, x.shape[-1])
        b = None if bias is None else bias.to(dtype)
        y = torch.ops.mkldnn._linear_pointwise(x2, _pack(w, x2.shape[0]), b, "none", [], "")
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
                gx = torch.ops.mkldnn._linear_pointwise(g, _pack(w.t().contiguous(), g.shape[0]), None, "none", [], "")
            else:
                gx = g @ w
            gx = gx.reshape(ctx.x_shape).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            gw = (g.t() @ x2).to(ctx.w_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0).to(ctx.w_dtype)
        return gx, gw, gb, None


def _sample(t: torch.Tensor, n: int = 16) -> tuple[float, ...]:
    """A few evenly spaced values of ``t``: cheap evidence that its content changed."""
    flat = t.detach().reshape(-1)
    return tuple(flat[:: max(1, flat.numel() // n)][:n].tolist())


def packed_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype the packed path computes in for this call (what autocast or the input asks for),
    or None where the plain op is used (not CPU, fp16, not fp32 parameters, tracing, no oneDNN)."""
    if x.device.type != "cpu" or weight.dtype != torch.float32 or tracing():
        return None
    autocast = cpu_autocast_dtype()
    if autocast is not None:
        return _BF16 if autocast == _BF16 and mkldnn_linear_available(_BF16) else None
    return torch.float32 if x.dtype == torch.float32 and mkldnn_linear_available(torch.float32) else None


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state_dict) that picks its CPU kernel per call.

    ``forward(x, activation)`` also applies GELU (``activation`` = "tanh" or "none", the
    ``approximate`` of ``F.gelu``), fused into the matmul where the kernel allows. ``fast=False``
    makes it the plain layer (``F.linear``, aten GELU): the reference the fast path is tested
    against. See the module docstring for where each path is taken and what it measured.
    """

    fast: bool = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs: Any):
        super().__init__(in_features, out_features, bias, **kwargs)
        self._packed: dict[torch.dtype, tuple[tuple[Any, ...], torch.Tensor, torch.Tensor | None]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Copies (deepcopy, pickling) re-pack on first use instead of carrying the cache along.
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        return {**state, "_packed": {}}

    def forward(self, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
        dtype = packed_dtype(x, self.weight) if self.fast else None
        if dtype is not None:
            if not torch.is_grad_enabled() or not (x.requires_grad or self.weight.requires_grad
                                                   or (self.bias is not None and self.bias.requires_grad)):
                return self._cached(x, dtype, activation)
            if self._packed:  # training again after an evaluation: its packed weights are stale
                self._packed.clear()
            if min(self.weight.shape) >= _MIN_FEATURES and x.numel() >= _MIN_ROWS * x.shape[-1]:
                y = _PackedLinearFn.apply(x, self.weight, self.bias, dtype)
                return y if activation is None else gelu(y, activation, self.fast)
        y = F.linear(x, self.weight, self.bias)
        return y if activation is None else gelu(y, activation, self.fast)

    def _fingerprint(self) -> tuple[Any, ...]:
        w, b = self.weight, self.bias
        return (w._version, w.data_ptr(), _sample(w), None if b is None else (b._version, b.data_ptr(), _sample(b)))

    def _cached(self, x: torch.Tensor, dtype: torch.dtype, activation: str | None) -> torch.Tensor:
        key = self._fingerprint()
        hit = self._packed.get(dtype)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                w = self.weight.detach().to(dtype)
                # The batch hint only tunes the blocking; any size works at run time.
                hit = (key, _pack(w, 1024), None if self.bias is None else self.bias.detach().to(dtype))
            self._packed[dtype] = hit
        attr, algo = _FUSED[activation]
        return torch.ops.mkldnn._linear_pointwise(x.to(dtype).contiguous(), hit[1], hit[2], attr, [], algo)
