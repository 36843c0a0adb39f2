"""Speed: precision policy, autocast and inference fast paths used by train/eval/predict/fewshot.

Every command goes through these functions, so a speed-up made here reaches all of them.

Precision ``auto`` (the default everywhere):

* CUDA: bf16 autocast where supported, else fp16.
* CPU with native bf16 arithmetic (AVX512-BF16 or AMX, as reported by oneDNN): bf16 -- about
  2x the fp32 matmul rate; logits agree with fp32 to ~1e-2 relative (top-1 agreement, not
  bit-equality).
* other CPUs: fp32.

``fp32`` is the exact path (within 1e-5 of the plain model). Both go through
:func:`inference_model`, which on CPU swaps the linear layers for packed oneDNN ones.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator

import torch
from torch import nn

from .allocator import tune_cpu_allocator
from .memory import peak_memory_bytes, peak_memory_method, reset_peak_memory
from .training import (
    bf16_residual_stream,
    disable_activation_checkpointing,
    enable_activation_checkpointing,
    fast_bf16_training,
    fast_training,
    make_optimizer,
    maybe_compile,
    pin_batch,
    to_device,
)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

__all__ = [
    "PRECISIONS", "autocast", "bf16_residual_stream", "cpu_has_fast_bf16", "disable_activation_checkpointing",
    "enable_activation_checkpointing", "fast_bf16_training", "fast_training", "inference_model", "make_optimizer",
    "maybe_compile", "peak_memory_bytes", "peak_memory_method", "pin_batch", "reset_peak_memory", "resolve_precision",
    "to_device", "tune_cpu_allocator",
]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU does bf16 matmuls natively (oneDNN's check: AVX512-BF16 or AMX).

    ``VITKIT_CPU_AUTO_PRECISION=fp32`` makes ``auto`` choose fp32 on CPU regardless.
    """
    if os.environ.get("VITKIT_CPU_AUTO_PRECISION", "").lower() == "fp32":
        return False
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``auto``: bf16 where the hardware does it natively, else fp32 (fp16 on pre-Ampere CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
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
    """The model prepared for inference at ``precision`` (eval mode).

    On CPU (fp32 or bf16) this is a copy sharing the model's parameters whose linear layers run
    on packed oneDNN weights with GELU fused into ``fc1`` (bf16: weights packed in bf16 once
    instead of cast on every call by autocast). The original model is left untouched (its mode
    is set to eval, as before), so training can continue; a packed weight is re-made when its
    parameter changes. Elsewhere (CUDA, fp16, no oneDNN) the model itself in eval mode.
    Call it under :func:`autocast` with the same precision, as the commands do.
    """
    model.eval()
    try:
        dev = next(model.parameters()).device
    except StopIteration:
        return model
    p = resolve_precision(precision, dev)
    from .fast import _DTYPES, fast_inference_copy, mkldnn_linear_available, refresh_if_changed

    if dev.type != "cpu" or p not in ("fp32", "bf16") or not mkldnn_linear_available(_DTYPES[p]):
        return model
    if getattr(model, "_vitkit_fast", None) is not None:
        return model
    # Cached per (model, precision) so per-batch callers do not re-copy and re-pack; rebuilt when
    # the model's structure or parameter objects change (reset_head, set_image_size, .to()).
    key = tuple(id(t) for t in model.parameters()) + tuple(id(m) for m in model.modules())
    cache = _FAST_CACHE.setdefault(model, {})
    hit = cache.get(p)
    if hit is None or hit[0] != key:
        hit = (key, fast_inference_copy(model, p))
        cache[p] = hit
    else:
        # Fused optimisers (torch AdamW fused=True) update parameters without bumping their
        # version counter, so the packed weights are re-made on every call that finds the
        # parameters' content changed (a sample of each parameter is compared).
        refresh_if_changed(hit[1])
    return hit[1]


_FAST_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[str, tuple[tuple[int, ...], nn.Module]]] = (
    weakref.WeakKeyDictionary()
)
