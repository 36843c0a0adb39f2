"""Run-time policy around the model: precision, autocast, allocator, device copies.

The model's own speed (fast kernels, class-token-only last block, bf16 residual stream,
activation checkpointing) is declared on the model (:class:`vitkit.models.VisionTransformer`,
kernels in :mod:`vitkit.kernels`); nothing here changes a model.

Precision ``auto`` (the default everywhere):

* CUDA: bf16 autocast where supported, else fp16.
* CPU with native bf16 arithmetic (AVX512-BF16 or AMX, as reported by oneDNN): bf16 -- about
  2x the fp32 matmul rate; logits agree with fp32 to ~1e-2 relative (top-1 agreement, not
  bit-equality).
* other CPUs: fp32.

``fp32`` is the exact path (within 1e-5 of the plain model).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import UserError
from ..kernels import mkldnn_linear_available
from .allocator import tune_cpu_allocator
from .device import maybe_compile, pin_batch, to_device

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

__all__ = [
    "PRECISIONS", "autocast", "cpu_has_fast_bf16", "inference_model", "maybe_compile", "pin_batch",
    "resolve_precision", "to_device", "tune_cpu_allocator",
]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU does bf16 matmuls natively (oneDNN's check: AVX512-BF16 or AMX).

    ``VITKIT_CPU_AUTO_PRECISION=fp32`` makes ``auto`` choose fp32 on CPU regardless.
    """
    if os.environ.get("VITKIT_CPU_AUTO_PRECISION", "").lower() == "fp32":
        return False
    return mkldnn_linear_available(torch.bfloat16)


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``auto``: bf16 where the hardware does it natively, else fp32 (fp16 on pre-Ampere CUDA)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision={precision!r}; expected one of {PRECISIONS}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if dev.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Autocast for the resolved precision (a no-op for fp32)."""
    dev = torch.device(device)
    p = resolve_precision(precision, dev)
    if p == "fp32":
        yield
        return
    dtype = torch.bfloat16 if p == "bf16" else torch.float16
    with torch.autocast(device_type=dev.type, dtype=dtype):
        yield


def inference_model(model: nn.Module, precision: str = "auto") -> nn.Module:
    """``model`` in eval mode, checked for ``precision`` (which the caller's :func:`autocast` applies).

    The model chooses its fast inference kernels itself (packed oneDNN linears with GELU fused,
    bf16 weights packed once under bf16 autocast; :class:`vitkit.kernels.Linear`), so there is
    nothing to copy or convert: this is kept so that the commands say in one place what running
    a model for inference means.
    """
    resolve_precision(precision)
    return model.eval()
