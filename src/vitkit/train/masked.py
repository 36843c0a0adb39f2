"""Evaluation of a masked-patch-prediction run (``objective=masked_patch``): the test images corrupted as in
training, scored on the corrupted patches: the loss, and how often the predicted colour class is the patch's
(``top1`` / ``top5``; for the ``downsized`` target per 4x4 cell; NaN for the ``pixels`` regression)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..models.masked import MaskedOutput, masked_patch_loss
from ..perf import autocast


def _hits(out: MaskedOutput, k: int) -> tuple[float, int]:
    if out.target == "pixels":
        return float("nan"), 1
    pred = out.predictions.float().reshape(-1, out.predictions.shape[-1])
    tgt = out.targets.reshape(-1)
    top = pred.topk(min(k, pred.shape[-1]), dim=-1).indices
    return float((top == tgt[:, None]).any(-1).sum()), int(tgt.numel())


@torch.no_grad()
def masked_patch_scores(model: nn.Module, loader: Iterable, *, precision: str, device: torch.device,
                        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """``loss`` (mean over batches' corrupted patches), ``top1``/``top5`` over the predicted patches, and
    ``examples``; ``reduce`` sums the counts over processes (each evaluated its share)."""
    was = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)  # loss x batches, batches, top1 hits, top5 hits, predictions
    try:
        for images, _labels in loader:
            with autocast(precision, device):
                out = model(images.to(device))
            loss = masked_patch_loss(out)
            h1, n = _hits(out, 1)
            h5, _ = _hits(out, 5)
            sums += torch.tensor([float(loss) * len(images), len(images), h1, h5, n], dtype=torch.float64)
    finally:
        model.train(was)
    if reduce is not None:
        sums = reduce(sums.to(device)).cpu()
    n_img, n_pred = max(float(sums[1]), 1.0), max(float(sums[4]), 1.0)
    return {"loss": float(sums[0]) / n_img, "top1": float(sums[2]) / n_pred, "top5": float(sums[3]) / n_pred,
            "examples": int(sums[1])}
