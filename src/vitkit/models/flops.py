"""Parameter and FLOP counts without allocating weights (the model is built on the meta device)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import ViTConfig
from .registry import build_model


def count_params(cfg: ViTConfig) -> int:
    with torch.device("meta"):
        model = build_model(cfg)
    return sum(p.numel() for p in model.parameters())


def count_flops(cfg: ViTConfig, image_size: int | tuple[int, int] | None = None) -> int:
    """Forward FLOPs for one image (a multiply-add counts as 2), as PyTorch's flop counter sees them."""
    if image_size is not None:
        cfg = cfg.replace(image_size=image_size)
    with torch.device("meta"):
        model = build_model(cfg).eval()
        x = torch.empty(1, cfg.in_chans, *cfg.image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())
