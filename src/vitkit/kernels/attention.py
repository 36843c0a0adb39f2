"""Scaled dot-product attention: the fused kernel or the explicit matmul-softmax-matmul, whichever
is faster for the shape, and the explicit one whenever the probabilities are wanted."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Largest attention matrix (batch x heads x tokens x tokens elements, per layer) for which the
# explicit path is used with bf16 input on CPU: 64 MB. Measured on the 2-core EPYC
# (torch 2.13): at 197 tokens PyTorch's CPU flash-attention kernel takes 75 ms for forward +
# backward of ViT-S/16's attention at batch 32 vs 31 ms for two bf16 batched matmuls and a
# softmax (18 vs 12 ms forward only, ViT-B/16 batch 16); in fp32, or for long sequences (577
# tokens), the fused kernel is as fast or faster and never materialises the matrix.
EXPLICIT_MAX_ELEMENTS = 1 << 25


def explicit_is_faster(keys: torch.Tensor) -> bool:
    # Decided on the keys' shape (the full T x T matrix), so that a query subset (the class token
    # of the last block) takes the same kernels as the full block and computes the same numbers.
    b, h, t, _ = keys.shape
    return keys.device.type == "cpu" and keys.dtype == torch.bfloat16 and b * h * t * t <= EXPLICIT_MAX_ELEMENTS


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
              need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, heads, Tq, hd) output of queries ``q`` over keys ``k`` / values ``v`` (scale hd^-1/2),
    and the probabilities (N, heads, Tq, Tk) when ``need_weights``. ``dropout_p`` acts on the
    probabilities (pass 0 in evaluation)."""
    if need_weights or explicit_is_faster(k):
        # Explicit path, as Flax's dot_product_attention: scale q, softmax in float32 (for
        # bf16 input PyTorch's CPU softmax accumulates in float32 and rounds once on output).
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        probs = scores.float().softmax(dim=-1).to(q.dtype) if need_weights else scores.softmax(dim=-1)
        out = F.dropout(probs, dropout_p, dropout_p > 0) @ v
        return out, probs if need_weights else None
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p), None
