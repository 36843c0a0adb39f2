"""Hugging Face transformers' ViT with the same architecture and weights, the speed reference."""

from __future__ import annotations

import torch
from torch import nn

from ..checkpoints.hf import to_hf


def hf_model_like(model: nn.Module) -> nn.Module:
    """``transformers.ViTForImageClassification`` computing the same function as ``model``.

    Its forward returns the logits tensor (not a ModelOutput) so both run through the same code.
    """
    hf = to_hf(model).to(next(model.parameters()).device)
    return _LogitsOnly(hf)


class _LogitsOnly(nn.Module):
    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(pixel_values=x).logits
