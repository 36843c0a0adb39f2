"""Batches onto the device (pinned, asynchronous copies on CUDA) and the optional ``torch.compile``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def to_device(batch: Any, device: torch.device | str, *, non_blocking: bool = True) -> Any:
    """Move a tensor / tuple / list / dict batch to ``device``.

    On CUDA the copy is asynchronous when the source is pinned (see :func:`pin_batch`, or
    ``DataLoader(pin_memory=True)``); on CPU this returns the tensors unchanged.
    """
    dev = torch.device(device)
    if isinstance(batch, torch.Tensor):
        if batch.device == dev:
            return batch
        return batch.to(dev, non_blocking=non_blocking and dev.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: to_device(v, dev, non_blocking=non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, dev, non_blocking=non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, dev, non_blocking=non_blocking) for v in batch)
    return batch


def pin_batch(batch: Any) -> Any:
    """Page-locked copies of a batch's CPU tensors, when a CUDA device exists (else unchanged)."""
    if not torch.cuda.is_available():
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory() if batch.device.type == "cpu" else batch
    if isinstance(batch, Mapping):
        return {k: pin_batch(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(pin_batch(v) for v in batch)
    return batch


def maybe_compile(model: nn.Module, enabled: bool, **kwargs: Any) -> nn.Module:
    """``torch.compile(model)`` when enabled (inductor: C++/OpenMP on CPU, Triton on CUDA)."""
    if not enabled:
        return model
    return torch.compile(model, **kwargs)  # type: ignore[return-value]
