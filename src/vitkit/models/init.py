"""Flax/JAX initialisers, expressed on PyTorch weight layouts.

PyTorch stores linear weights as (out, in) and conv weights as (out, in, kh, kw); Flax as
(in, out) and (kh, kw, in, out). Fan-in and fan-out are the same numbers either way, so the
variance-scaling formulas carry over unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# jax.nn.initializers.variance_scaling(..., "truncated_normal") divides by the std of a unit
# normal truncated to [-2, 2] so the *truncated* distribution has the requested variance.
_TRUNC_STD = 0.87962566103423978


def _fans(w: torch.Tensor) -> tuple[int, int]:
    receptive = math.prod(w.shape[2:]) if w.dim() > 2 else 1
    return w.shape[1] * receptive, w.shape[0] * receptive


@torch.no_grad()
def lecun_normal_(w: torch.Tensor) -> torch.Tensor:
    """``jax.nn.initializers.lecun_normal()``: the default kernel init of Flax Dense and Conv."""
    fan_in, _ = _fans(w)
    std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
    return nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2 * std, b=2 * std)


@torch.no_grad()
def xavier_uniform_(w: torch.Tensor) -> torch.Tensor:
    """``jax.nn.initializers.xavier_uniform()`` (identical to PyTorch's for 2-D weights)."""
    fan_in, fan_out = _fans(w)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return w.uniform_(-limit, limit)


def zero_head(dim: int, num_classes: int, bias_init: float = 0.0) -> nn.Module:
    """The official head: zero-initialised kernel, constant bias; ``num_classes=0`` gives features."""
    if not num_classes:
        return nn.Identity()
    head = nn.Linear(dim, num_classes)
    nn.init.zeros_(head.weight)
    nn.init.constant_(head.bias, bias_init)
    return head
