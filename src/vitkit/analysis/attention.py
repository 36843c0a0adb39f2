"""Attention rollout and mean attention distance (the paper's Figures 6 and 7, right).

``attentions`` is always the list of per-layer attention probabilities, each (batch, heads,
tokens, tokens), rows summing to one, in layer order: what
``VisionTransformer.get_attention_maps`` returns. The patch grid is square; a class token, if
present, is token 0 and is recognised from the token count (``n*n + 1`` tokens) unless
``num_prefix_tokens`` says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..image_size import as_hw


def _stack(attentions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(attentions, torch.Tensor):
        attentions = [attentions] if attentions.dim() == 4 else list(attentions)
    atts = list(attentions)
    if not atts:
        raise ValueError("attentions is empty: pass one (batch, heads, tokens, tokens) tensor per layer")
    shape = atts[0].shape
    for i, a in enumerate(atts):
        if a.dim() != 4 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"attentions[{i}] must be (batch, heads, tokens, tokens), got shape {tuple(a.shape)}")
        if a.shape[0] != shape[0] or a.shape[-1] != shape[-1]:
            raise ValueError(
                f"attentions[{i}] has shape {tuple(a.shape)} but attentions[0] has {tuple(shape)}: "
                "batch and token counts must agree across layers"
            )
    return atts


def _prefix_and_side(tokens: int, num_prefix_tokens: int | None) -> tuple[int, int]:
    """(number of non-patch tokens in front, side of the square patch grid)."""
    if num_prefix_tokens is None:
        side = math.isqrt(tokens)
        if side * side == tokens:
            num_prefix_tokens = 0
        else:
            side = math.isqrt(tokens - 1)
            if side * side != tokens - 1:
                raise ValueError(
                    f"{tokens} tokens is neither a square patch grid nor a square grid plus a class token; "
                    "pass num_prefix_tokens"
                )
            num_prefix_tokens = 1
    patches = tokens - num_prefix_tokens
    side = math.isqrt(max(patches, 0))
    if patches < 1 or side * side != patches:
        raise ValueError(f"{patches} patch tokens ({tokens} tokens - {num_prefix_tokens} prefix) is not a square grid")
    return num_prefix_tokens, side


def attention_rollout(attentions: Sequence[torch.Tensor], num_prefix_tokens: int | None = None) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema 2020): (batch, patches) relevance of each patch.

    Per layer: average the heads, add the identity (the residual connection) and renormalise
    the rows; multiply the layers with the later layer on the left
    (``R = A_L ... A_2 A_1``). The result is the class token's row of ``R`` restricted to the
    patch columns; for a model without class token, the mean of ``R``'s rows over all query
    tokens. Computed in float64; returned in float32. The values are not rescaled (for display,
    divide by the maximum).
    """
    atts = _stack(attentions)
    prefix, _ = _prefix_and_side(atts[0].shape[-1], num_prefix_tokens)
    t = atts[0].shape[-1]
    eye = torch.eye(t, dtype=torch.float64, device=atts[0].device)
    rollout = None
    for a in atts:
        a = a.detach().to(torch.float64).mean(dim=1) + eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    assert rollout is not None
    if prefix:
        out = rollout[:, 0, prefix:]
    else:
        out = rollout.mean(dim=1)
    return out.float()


def patch_distances(side: int, patch_size: int | Sequence[int]) -> torch.Tensor:
    """(side^2, side^2) Euclidean distances in pixels between patch centres, row-major grid."""
    ph, pw = as_hw(patch_size, "patch_size")
    r, c = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    y = (r.reshape(-1) * ph).to(torch.float64)
    x = (c.reshape(-1) * pw).to(torch.float64)
    return torch.sqrt((y[:, None] - y[None, :]) ** 2 + (x[:, None] - x[None, :]) ** 2)


def mean_attention_distance(
    attentions: Sequence[torch.Tensor],
    patch_size: int | Sequence[int],
    num_prefix_tokens: int | None = None,
    renormalize: bool = True,
) -> torch.Tensor:
    """Mean attention distance in pixels, (layers, heads): the paper's Figure 7 (right).

    For each query patch, the attention-weighted mean of the pixel distance between its centre
    and the centres of the patches it attends to; averaged over query patches and images.
    ``patch_size`` is the number of pixels per token (for a hybrid: the patch size times the
    ResNet reduction, i.e. ``config.stride``).

    The class token has no position, so it is excluded both as a query and as a key.
    ``renormalize=True`` (the default) divides each query's attention over the patch keys by
    its sum, so the value is a true weighted mean of distances, as the paper describes it
    ("the distance ... weighted by the attention weight"); otherwise a head that mostly attends
    to the class token would look local. ``renormalize=False`` reproduces the widely used
    public implementation (``compute_mean_attention_dist`` of the "probing ViTs" notebooks),
    which drops the class token's weight without renormalising. Without class token both are
    the same.
    """
    atts = _stack(attentions)
    prefix, side = _prefix_and_side(atts[0].shape[-1], num_prefix_tokens)
    dist = patch_distances(side, patch_size).to(atts[0].device)
    rows = []
    for a in atts:
        a = a.detach().to(torch.float64)[:, :, prefix:, prefix:]
        if renormalize:
            a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        per_query = (a * dist).sum(dim=-1)  # (batch, heads, queries)
        rows.append(per_query.mean(dim=(0, 2)))
    return torch.stack(rows).float()
