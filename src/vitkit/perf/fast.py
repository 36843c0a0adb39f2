"""Inference fast path: the model's linear layers on pre-packed oneDNN weights.

``torch.nn.functional.linear`` on CPU goes through the BLAS (MKL), which re-lays the weight out
on every call and cannot fuse the GELU that follows ``fc1``. oneDNN can keep the weight in its
own blocked layout (packed once) and apply GELU in the same kernel. Measured on the 2-core EPYC
this is worth 10-20% per linear layer in fp32 and lets bf16 run without autocast's per-call
weight casts (see benchmarks/README.md).

The fast model shares every parameter with the original (no extra copy of fp32 weights); the
packed copy is rebuilt when a parameter changes (its ``_version`` moves, e.g. an optimiser step
between two evaluations during training), so a stale packed weight is never used.
"""

from __future__ import annotations

import copy
import sys
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._swap import subclass_once

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@cache  # a property of this torch build and CPU; asked on every training linear's call
def mkldnn_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN packed linear layers work here for ``dtype`` (CPU builds with oneDNN)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def _sample(t: torch.Tensor, n: int = 16) -> tuple[float, ...]:
    """A few evenly spaced values of ``t``: cheap evidence that its content changed."""
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // n)
    return tuple(flat[::step][:n].tolist())


def refresh_if_changed(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m.refresh_if_changed()


class PackedLinear(nn.Module):
    """A stand-in for ``nn.Linear`` (sharing its parameters) that runs on a packed oneDNN weight.

    ``activation`` ("gelu_tanh", "gelu" or None) is fused into the matmul. Only used without
    autograd (inference); with gradients enabled it falls back to the plain ops.
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, activation: str | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Parameters are shared with the original model, so state_dict() is unchanged.
        self.weight = linear.weight
        self.bias = linear.bias
        self.dtype = dtype
        self.activation = activation
        self._key: tuple[Any, ...] | None = None
        self._packed: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, dtype={self.dtype}, activation={self.activation}"

    def _fingerprint(self) -> tuple[Any, ...]:
        w, b = self.weight, self.bias
        return (w._version, w.data_ptr(), _sample(w), None if b is None else (b._version, _sample(b)))

    def refresh_if_changed(self) -> None:
        """Forget the packed weight if the parameters' content changed without a version bump."""
        if self._key is not None and self._fingerprint() != self._key:
            self._key = None

    def _pack(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        w, b = self.weight, self.bias
        if self._key is None or self._key[0] != w._version or self._key[1] != w.data_ptr() or (
            b is not None and self._key[3][0] != b._version
        ):
            with torch.no_grad():
                wd = w.detach().to(self.dtype)
                # The batch hint only tunes the blocking; any size works at run time.
                self._packed = torch.ops.mkldnn._reorder_linear_weight(wd, 1024)
                self._bias = None if b is None else b.detach().to(self.dtype)
            self._key = self._fingerprint()
        assert self._packed is not None
        return self._packed, self._bias

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias.to(self.dtype)
        y = F.linear(x.to(self.dtype), self.weight.to(self.dtype), b)
        if self.activation == "gelu_tanh":
            y = F.gelu(y, approximate="tanh")
        elif self.activation == "gelu":
            y = F.gelu(y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad) or x.device.type != "cpu":
            return self._reference(x)
        packed, bias = self._pack()
        if self.activation is None:
            attr, algo = "none", ""
        else:
            attr, algo = "gelu", ("tanh" if self.activation == "gelu_tanh" else "none")
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype).contiguous(), packed, bias, attr, [], algo)


class _FusedMlp(nn.Module):
    """``Mlp`` with GELU fused into ``fc1`` (dropout is a no-op in eval mode)."""

    def __init__(self, mlp: nn.Module, dtype: torch.dtype):
        super().__init__()
        act = "gelu_tanh" if getattr(mlp, "approximate", "none") == "tanh" else "gelu"
        self.fc1 = PackedLinear(mlp.fc1, dtype, act)
        self.fc2 = PackedLinear(mlp.fc2, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


def shared_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers are the original tensors."""
    memo: dict[int, Any] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


def pack_linears(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Replace (in ``model``, which should be a :func:`shared_copy`) linear layers by packed ones."""
    from ..models.vit import Mlp

    for name, child in list(model.named_children()):
        if isinstance(child, Mlp):
            setattr(model, name, _FusedMlp(child, dtype))
        elif type(child) is nn.Linear:
            setattr(model, name, PackedLinear(child, dtype))
        else:
            pack_linears(child, dtype)
    return model


def _logits_read_class_token_only(model: nn.Module) -> bool:
    """Whether the model's (frozen) config makes the logits depend on the class token alone."""
    return model.config.classifier == "token" and not model.config.norm_after_pool


def _last_block_for_class_token(model: nn.Module) -> nn.Module | None:
    """The last encoder block of a swapped model, unless something needs its full ``forward()``
    (checked on each call: hooks and sharding can be added after the swap); else None."""
    if len(model.blocks) == 0:
        return None
    last = model.blocks[-1]
    if not hasattr(last, "forward_class_token") or last._forward_hooks or last._forward_pre_hooks:
        return None  # hooks on the block expect its forward() to run
    # fully_shard gathers a block's parameters in hooks around forward(), which this path skips.
    return None if _is_fsdp_module(last) else last


def _is_fsdp_module(module: nn.Module) -> bool:
    """Whether ``fully_shard`` wrapped ``module``. Read from ``sys.modules``: nothing can be
    sharded before torch.distributed.fsdp is imported, so a run without FSDP neither pays its
    ~0.9 s import nor, under torch.compile, traces a cached import function on every forward."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(module, fsdp.FSDPModule)


def _class_token_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``forward`` with the last block evaluated for the class token only.

    With ``classifier="token"`` the logits depend on the last block's output at token 0 alone
    (:meth:`Block.forward_class_token`): ~3/4 of a block saved, 6% of ViT-B/16's FLOPs, in
    inference and in training alike (the same function and, without dropout, the same gradients).
    """
    last = _last_block_for_class_token(self)
    if last is None:
        return self._plain_forward(x)
    x = self.embed(x)
    for block in self.blocks[:-1]:
        x = block(x)[0]
    return self.forward_head(self.norm(last.forward_class_token(x)))


def skip_unused_last_block(model: nn.Module) -> nn.Module:
    """Swap a class-token :class:`VisionTransformer`'s ``forward`` for :func:`_class_token_forward`
    (in place; parameters and state_dict unchanged; GAP and other models are returned as they
    are: their logits read every token)."""
    from ..models.vit import VisionTransformer

    if (isinstance(model, VisionTransformer) and _logits_read_class_token_only(model)
            and type(model).forward is not _class_token_forward):
        # The plain forward is kept by name, not looked up as the next class in the MRO: a wrapper
        # that subclasses this class again (fully_shard applied afterwards) puts itself there.
        cls = type(model)
        model.__class__ = subclass_once(cls, "ClassToken", {"forward": _class_token_forward,
                                                            "_plain_forward": cls.forward})
    return model


def fast_inference_copy(model: nn.Module, precision: str) -> nn.Module:
    """The eval-mode fast copy of ``model`` for a resolved precision ("fp32" or "bf16")."""
    from ..models.vit import VisionTransformer

    dtype = _DTYPES[precision]
    fast = shared_copy(model).eval()
    pack_linears(fast, dtype)
    if isinstance(fast, VisionTransformer):  # also when trained with vitkit.perf.fast_training
        skip_unused_last_block(fast)
        if dtype == torch.bfloat16:
            # The residual stream in bf16 too, as in training (the packed linears already return
            # bf16): measured +6-8% images/s on ViT-B/16; logits within bf16 tolerance of fp32
            # (tests/perf/test_fast_path.py). Acts under bf16 autocast, as the commands run it.
            from .training import bf16_residual_stream

            bf16_residual_stream(fast)
    fast._vitkit_fast = precision  # type: ignore[assignment]
    return fast
