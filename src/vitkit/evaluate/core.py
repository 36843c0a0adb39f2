"""Batched inference over a data loader: the one evaluator (loss, top-k), frozen features, probabilities."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..perf import autocast, inference_model
from ..progress import Progress
from .metrics import compute_loss, topk_hits


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
    bar = Progress(_total(loader, total), desc=desc, unit="batch", enabled=progress, leave=False)
    with torch.inference_mode(), bar:
        for images, labels in bar.iterate(loader):
            images = images.to(dev, non_blocking=True)
            with autocast(precision, dev):
                if fn == "features":
                    out = model.forward_head(model.forward_features(images), pre_logits=True)
                elif fn == "logits+flip":
                    out = torch.stack([model(images), model(images.flip(-1))])
                else:
                    out = model(images)
            yield out.float().cpu(), torch.as_tensor(labels).long().cpu()


@dataclass(frozen=True)
class ClassMatch:
    """How the data's labels relate to the model's outputs: ``label_map[data label]`` is the model's
    index (None: the same indices); ``subset``: the model indices the data has, when it holds only
    some of the model's classes (predictions are then made among those, as for ImageNet subsets)."""

    label_map: tuple[int, ...] | None
    subset: tuple[int, ...] | None
    how: str

    def as_dict(self, num_classes: int) -> dict[str, Any]:
        n = len(self.subset) if self.subset else num_classes
        return {"matched": self.how, "evaluated_classes": n, "model_classes": num_classes}


def match_classes(
    model_names: Sequence[str] | None, data_names: Sequence[str] | None, model_classes: int, data_classes: int,
    *, model: str = "the model",
) -> ClassMatch:
    """Match the data's classes to the model's by name when both have names, else by index.

    Same names in another order: labels are remapped. A subset of the names: evaluated over that
    subset. A name the model does not have: an error listing them. Without names on both sides the
    class counts must agree (labels are then taken as the model's indices). ``model`` names the reference side in
    the messages (the trainer matches test data to its training data by this same rule).
    """
    if model_names and data_names:
        model_names, data_names = [str(n) for n in model_names], [str(n) for n in data_names]
        unknown = [n for n in data_names if n not in model_names]
        if unknown:
            shown = ", ".join(unknown[:20]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 20 else "")
            theirs = ", ".join(model_names[:20]) + (" ..." if len(model_names) > 20 else "")
            raise UserError(f"the data's classes {shown} are not classes of {model} (it has: {theirs})")
        index = {n: i for i, n in reversed(list(enumerate(model_names)))}
        label_map = tuple(index[n] for n in data_names)
        if len(set(label_map)) != len(label_map):
            raise UserError("the data names a class twice: " + ", ".join(sorted(
                {n for n in data_names if data_names.count(n) > 1})))
        subset = tuple(sorted(label_map)) if len(label_map) < model_classes else None
        if label_map == tuple(range(model_classes)):
            return ClassMatch(None, None, "by name (same order)")
        return ClassMatch(label_map, subset, "by name" + (f" ({len(label_map)} of {model_classes} classes)"
                                                          if subset else " (another order)"))
    if data_classes != model_classes:
        raise UserError(
            f"the data has {data_classes} classes but the model's head has {model_classes} "
            f"({'the model stores no class names' if not model_names else 'the data has no class names'} "
            "to match them by); fine-tune it on this data first, or use `vitkit fewshot` for a linear evaluation"
        )
    return ClassMatch(None, None, "by index (no class names on " + ("either side)" if not (model_names or data_names)
                                                                      else "one side)"))


def score(
    model: nn.Module,
    loader: Iterable,
    *,
    topk: Sequence[int] = (1, 5),
    loss: str | None = "softmax",
    flip: bool = False,
    precision: str = "auto",
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    classes: ClassMatch | None = None,
    reduce: Callable[[torch.Tensor], Any] | None = None,
    inference: bool = True,
    total: int | None = None,
    progress: bool = False,
    predictions: list[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The evaluator: loss, top-k accuracies (and with ``flip`` the same of the mean logits of each image and its
    mirror image) over a loader of ``(images, labels)``; ``vitkit eval`` and the trainer both call it.

    ``model`` is used as given (in eval mode for the duration). Sums stay on ``device`` until the end (no host sync
    per batch); ``reduce`` (e.g. an all-reduce over processes) is applied to them before the division.
    ``num_classes``: labels must lie below it. ``classes`` (:func:`match_classes`): data labels are mapped to the
    model's indices, and for a subset of the model's classes the prediction is made among that subset (the other
    logits are -inf). ``inference=False`` runs under ``no_grad`` instead of
    ``inference_mode`` (a model that keeps training afterwards, e.g. under FSDP). Returns ``loss`` (if ``loss``),
    ``top{k}``, ``flip_top{k}``, ``examples``. ``predictions``: a list that receives each batch's top-1 model index
    (single view), in loader order.
    """
    dev = torch.device(device)
    ks = tuple(int(k) for k in topk)
    views = 2 if flip else 1
    sums = torch.zeros(2 + views * len(ks), dtype=torch.float64, device=dev)  # examples, loss, hits...
    label_map = torch.tensor(classes.label_map, device=dev) if classes is not None and classes.label_map else None
    mask = None
    if classes is not None and classes.subset:
        assert num_classes is not None, "a class subset needs num_classes"
        mask = torch.full((num_classes,), float("-inf"), device=dev)
        mask[list(classes.subset)] = 0.0
    limit = num_classes if label_map is None else len(label_map)
    was_training = model.training
    model.eval()
    grad_off = torch.inference_mode() if inference else torch.no_grad()
    bar = Progress(_total(loader, total), desc="eval", unit="batch", enabled=progress, leave=False)
    try:
        with grad_off, bar:
            for images, labels in bar.iterate(loader):
                images = images.to(dev, non_blocking=True)
                labels = torch.as_tensor(labels).to(dev, non_blocking=True)
                if labels.dim() == 1:
                    labels = labels.long()
                    if limit is not None and labels.numel() and (labels.min() < 0 or labels.max() >= limit):
                        raise UserError(f"labels in the data reach {int(labels.max())} but there are {limit} classes")
                    if label_map is not None:
                        labels = label_map[labels]
                with autocast(precision, dev):
                    logits = model(images)
                    mirrored = model(images.flip(-1)) if flip else None
                logits = logits.float() if mask is None else logits.float() + mask
                mirrored = mirrored if mirrored is None or mask is None else mirrored.float() + mask
                n = labels.shape[0]
                parts = [torch.full((), float(n), dtype=torch.float64, device=dev)]
                parts.append(compute_loss(logits, labels, loss, 0.0).double() * n if loss else parts[0] * 0)
                parts.append(topk_hits(logits, labels, ks).double())
                if mirrored is not None:
                    parts.append(topk_hits((logits + mirrored.float()) / 2, labels, ks).double())
                sums += torch.cat([x.reshape(-1) for x in parts])
                if predictions is not None:
                    predictions.append(logits.argmax(-1).cpu())
    finally:
        model.train(was_training)
    if reduce is not None:
        reduce(sums)
    vals = sums.tolist()
    n = vals[0]
    res: dict[str, Any] = {"loss": vals[1] / max(n, 1.0)} if loss else {}
    for v, prefix in enumerate(("", "flip_")[:views]):
        for i, k in enumerate(ks):
            res[f"{prefix}top{k}"] = vals[2 + v * len(ks) + i] / max(n, 1.0)
    res["examples"] = int(n)
    return res


def evaluate_accuracy(
    model: nn.Module,
    loader: Iterable | str | Any,
    *,
    topk: Sequence[int] = (1, 5),
    precision: str = "auto",
    device: str | torch.device = "cpu",
    total: int | None = None,
    progress: bool = True,
    flip: bool = False,
    classes: ClassMatch | None = None,
    real: Sequence[Sequence[int]] | None = None,
    split: str = "test",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Top-k accuracies and the softmax cross-entropy of a trained model over a loader (:func:`score` on the
    inference-ready model).

    ``real``: each example's ReaL label set (data labels), in loader order (``imagenet:PATH?labels=real``;
    :func:`real_sets`): adds ``real_top1``, ``real_examples`` and ``real_left_out`` (see :func:`real_top1`).
    ``loader`` may also be data: a spec string or the user's own ``torch.utils.data.Dataset`` /
    ``datasets.Dataset`` (:mod:`vitkit.data.objects`). Its ``split`` is then read at the model's size with the
    model's evaluation preprocessing in batches of ``batch_size``, and its classes are matched to the model's by
    name as ``vitkit eval`` matches them (unless ``classes`` is given).

    ``classes`` (:func:`match_classes`): data labels are mapped to the model's indices, and for a
    subset of the model's classes the prediction is made among that subset.

    A k larger than the number of classes is clipped to it (top-5 of a 3-class model is top-3);
    the JSON keys keep the requested name and ``k_used`` records the clip. ``flip=True`` also
    scores the mean logits of each image and its mirror image (``flip_top1``, ... beside the
    single-view keys), as ``vitkit train``'s ``eval_flip`` does.
    """
    from .data import as_loader

    num_classes = int(model.config.num_classes)
    if num_classes < 1:
        raise UserError("the model has no classification head (num_classes=0); use `vitkit fewshot` instead")
    loader, info, batches = as_loader(loader, getattr(model, "config", None), split=split, batch_size=batch_size)
    if info is not None:
        total = batches if total is None else total
        if classes is None:
            classes = match_classes(model.config.class_names, info.class_names, num_classes, info.num_classes)
    dev = torch.device(device)
    net = inference_model(model.to(dev), precision)
    preds: list[torch.Tensor] | None = [] if real is not None else None
    res = score(net, loader, topk=topk, flip=flip, precision=precision, device=dev, num_classes=num_classes,
                classes=classes, total=total, progress=progress, predictions=preds)
    n = res.pop("examples")
    if n == 0:
        raise UserError("the data has no examples to evaluate")
    if real is not None and preds is not None:
        res.update(real_top1(torch.cat(preds), real, classes))
    res["num_examples"] = n
    scored = len(classes.subset) if classes is not None and classes.subset else num_classes
    res["k_used"] = {f"top{k}": min(int(k), scored) for k in topk}
    return res


def real_top1(predictions: torch.Tensor, label_sets: Sequence[Sequence[int]],
               classes: ClassMatch | None = None) -> dict[str, Any]:
    """The paper's "ImageNet ReaL" top-1 (Beyer et al. 2020, as reassessed-imagenet's example code): a prediction
    is correct when it is in the image's ReaL label set; images whose set is empty are left out (and counted).

    ``predictions``: model indices, one per image in order; ``label_sets``: data labels, as many (a mismatch means
    images were skipped, so predictions and sets no longer line up: an error). ``classes`` maps data labels to the
    model's indices as the evaluation did."""
    if len(predictions) != len(label_sets):
        raise UserError(f"ReaL scoring matches predictions to images by position: {len(predictions)} predictions for "
                        f"{len(label_sets)} images (unreadable images were skipped?); fix or remove them")
    lmap = classes.label_map if classes is not None else None
    hits = kept = 0
    for p, s in zip(predictions.tolist(), label_sets):
        if not s:
            continue
        kept += 1
        hits += p in {lmap[x] if lmap else x for x in s}
    return {"real_top1": hits / kept if kept else float("nan"), "real_examples": kept,
            "real_left_out": len(label_sets) - kept}


def real_sets(loader: Any) -> list[list[int]] | None:
    """The ReaL label sets of ``loader``'s examples in the order it serves them (None when its source has none)."""
    sets = getattr(getattr(loader, "source", None), "real", None)
    if sets is None:
        return None
    return [sets[i] for i in loader.example_indices()]


def extract_features(
    model: nn.Module,
    loader: Iterable | str | Any,
    *,
    precision: str = "auto",
    device: str | torch.device = "cpu",
    total: int | None = None,
    progress: bool = True,
    desc: str = "features",
    split: str = "train",
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """The frozen pre-logits representation (N, D) float32 and labels (N,) int64 of a loader, or of data (a spec
    or a data object, read as :func:`evaluate_accuracy` reads it: its ``split`` at the model's size); the few-shot
    evaluation's features (:func:`vitkit.evaluate.fewshot`)."""
    from .data import as_loader

    loader, info, batches = as_loader(loader, getattr(model, "config", None), split=split, batch_size=batch_size)
    total = batches if total is None else total
    feats, labels = [], []
    for f, y in _batches(model, loader, "features", precision, device, desc, total, progress):
        feats.append(f.numpy())
        labels.append(y.numpy())
    if not feats:
        raise UserError("the data has no examples")
    return np.concatenate(feats).astype(np.float32), np.concatenate(labels).astype(np.int64)


@torch.inference_mode()
def predict_probabilities(
    model: nn.Module, images: Any, *, precision: str = "auto", device: str | torch.device = "cpu",
    prepared: bool = False,
) -> torch.Tensor:
    """Softmax probabilities (N, classes), float32, for one batch of images: a normalised (N, C, H, W) tensor, or
    images as a user has them (a PIL image, a uint8 array, a file path, or a list of them), which go through
    :func:`vitkit.data.create_transform` (the evaluation preprocessing) first.

    ``prepared=True``: ``model`` already comes from :func:`vitkit.perf.inference_model` on ``device``
    (do that once when predicting many batches).
    """
    if not (isinstance(images, torch.Tensor) and images.is_floating_point()):
        from ..data.image_input import create_transform

        transform = create_transform(model)
        batch = images if isinstance(images, (list, tuple)) else [images]
        images = torch.stack([transform(im) for im in batch])
    dev = torch.device(device)
    if not prepared:
        model = inference_model(model.to(dev), precision)
    with autocast(precision, dev):
        logits = model(images.to(dev))
    return logits.float().softmax(dim=-1).cpu()
