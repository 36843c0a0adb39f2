"""The loss and top-k definitions, written once: the training step and every evaluation use these."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError

LOSSES = ("softmax", "sigmoid")


def compute_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str, label_smoothing: float) -> torch.Tensor:
    """Mean loss of a batch. ``targets``: class indices, or (soft / multi-hot) target vectors.

    ``softmax``: cross-entropy; ``sigmoid``: per-class binary cross-entropy summed over classes (big_vision's
    ``sigmoid_xent``, for multi-label data). ``label_smoothing`` applies to index targets.
    """
    logits = logits.float()
    k = logits.shape[-1]
    if kind == "softmax":
        if targets.dtype in (torch.int64, torch.int32):
            return F.cross_entropy(logits, targets.long(), label_smoothing=label_smoothing)
        return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
    if kind != "sigmoid":
        raise UserError(f"loss={kind!r}; expected one of {', '.join(LOSSES)}")
    if targets.dtype in (torch.int64, torch.int32):
        targets = F.one_hot(targets.long(), k).float()
        if label_smoothing:
            targets = targets * (1 - label_smoothing) + label_smoothing / k
    return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").sum(-1).mean()


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Hits per k as a tensor on the logits' device (no host sync). A k above the number of classes is clipped to it.

    ``labels``: class indices, or multi-hot rows (a hit when a top-k prediction is any positive label).
    """
    maxk = min(max(ks), logits.shape[-1])
    pred = logits.topk(maxk, dim=-1).indices
    hit = labels.gather(1, pred).gt(0) if labels.dim() > 1 else pred.eq(labels.view(-1, 1))
    return torch.stack([hit[:, : min(k, maxk)].any(1).sum() for k in ks])


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """:func:`topk_hits` as Python ints."""
    return [int(x) for x in topk_hits(logits, labels, ks).tolist()]
