"""Batched inference over a data loader: top-k accuracy and frozen features."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..perf import autocast, inference_model


def _total(loader: Any, total: int | None) -> int | None:
    if total is not None:
        return total
    try:
        return len(loader)
    except TypeError:
        return None


def _batches(
    model: nn.Module, loader: Iterable, fn: str, precision: str, device: str | torch.device,
    desc: str, total: int | None, progress: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Run ``fn`` on each (images, labels) batch; float32 outputs. ``fn``: "logits", "features", or
    "logits+flip" (logits of the images and of their mirror images, stacked: (2, N, classes))."""
    dev = torch.device(device)
    model = inference_model(model.to(dev), precision)
    bar = tqdm(loader, desc=desc, total=_total(loader, total), unit="batch", disable=not progress, leave=False)
    with torch.inference_mode():
        for images, labels in bar:
            images = images.to(dev, non_blocking=True)
            with autocast(precision, dev):
                if fn == "features":
                    out = model.forward_head(model.forward_features(images), pre_logits=True)
                elif fn == "logits+flip":
                    out = torch.stack([model(images), model(images.flip(-1))])
                else:
                    out = model(images)
            yield out.float().cpu(), torch.as_tensor(labels).long().cpu()


def evaluate_accuracy(
    model: nn.Module,
    loader: Iterable,
    *,
    topk: Sequence[int] = (1, 5),
    precision: str = "auto",
    device: str | torch.device = "cpu",
    total: int | None = None,
    progress: bool = True,
    flip: bool = False,
) -> dict[str, Any]:
    """Top-k accuracies over a loader of ``(images, labels)`` batches.

    A k larger than the number of classes is clipped to it (top-5 of a 3-class model is top-3);
    the JSON keys keep the requested name and ``k_used`` records the clip. ``flip=True`` also
    scores the mean logits of each image and its mirror image (``flip_top1``, ... beside the
    single-view keys), as ``vitkit train``'s ``eval_flip`` does.
    """
    num_classes = int(model.config.num_classes)
    if num_classes < 1:
        raise ValueError("the model has no classification head (num_classes=0); use `vitkit fewshot` instead")
    ks = [min(int(k), num_classes) for k in topk]
    views = {"": dict.fromkeys(topk, 0), **({"flip_": dict.fromkeys(topk, 0)} if flip else {})}
    n = 0
    fn = "logits+flip" if flip else "logits"
    for out, labels in _batches(model, loader, fn, precision, device, "eval", total, progress):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"labels in the data reach {int(labels.max())} but the model has {num_classes} classes"
            )
        scores = {"": out[0], "flip_": out.mean(0)} if flip else {"": out}
        for view, logits in scores.items():
            hit = logits.topk(max(ks), dim=-1).indices == labels[:, None]
            for k, kk in zip(topk, ks):
                views[view][k] += int(hit[:, :kk].any(dim=1).sum())
        n += labels.numel()
    if n == 0:
        raise ValueError("the data has no examples to evaluate")
    res: dict[str, Any] = {f"{view}top{k}": c[k] / n for view, c in views.items() for k in topk}
    res["num_examples"] = n
    res["k_used"] = {f"top{k}": kk for k, kk in zip(topk, ks)}
    return res


def extract_features(
    model: nn.Module,
    loader: Iterable,
    *,
    precision: str = "auto",
    device: str | torch.device = "cpu",
    total: int | None = None,
    progress: bool = True,
    desc: str = "features",
) -> tuple[np.ndarray, np.ndarray]:
    """The frozen pre-logits representation (N, D) float32 and labels (N,) int64 of a loader."""
    feats, labels = [], []
    for f, y in _batches(model, loader, "features", precision, device, desc, total, progress):
        feats.append(f.numpy())
        labels.append(y.numpy())
    if not feats:
        raise ValueError("the data has no examples")
    return np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.int64)


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module, images: torch.Tensor, *, precision: str = "auto", device: str | torch.device = "cpu",
    prepared: bool = False,
) -> torch.Tensor:
    """Softmax probabilities (N, classes), float32, for one batch of normalised images.

    ``prepared=True``: ``model`` already comes from :func:`vitkit.perf.inference_model` on ``device``
    (do that once when predicting many batches).
    """
    dev = torch.device(device)
    if not prepared:
        model = inference_model(model.to(dev), precision)
    with autocast(precision, dev):
        logits = model(images.to(dev))
    return logits.float().softmax(dim=-1).cpu()
