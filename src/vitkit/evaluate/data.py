"""The commands' data: a data spec as a loader of evaluation batches at the model's size, images gathered from
files, folders and specs, and the one-line report of what the loader skipped. The spec vocabulary is
:mod:`vitkit.data.spec`'s."""

from __future__ import annotations

from typing import Any

from ..data.spec import is_data_spec
from ..errors import UserError


def open_loader(
    spec: str | Any,
    cfg: Any,
    *,
    split: str,
    batch_size: int,
    limit: int | None = None,
    num_workers: int | None = None,
    preprocess: str | None = None,
) -> tuple[Any, Any, int | None]:
    """(loader of normalised eval batches, dataset info, number of batches if known) for a spec (or a data object:
    :mod:`vitkit.data.objects`), at the model's
    (h, w) ``cfg.image_size`` (the model decides the size: resample it with ``load_for_inference`` first).

    ``preprocess``: the evaluation preprocessing (None: the default for ``cfg``'s normalisation); the loader's
    ``preprocess`` attribute says which ran."""
    from ..data import build_loader, dataset_info
    from .images import resolve_preprocess

    name = resolve_preprocess(preprocess, cfg.mean, cfg.std, cfg.in_chans)
    info = dataset_info(spec, split=split)
    loader = build_loader(
        spec, split=split, train=False, image_size=tuple(cfg.image_size), batch_size=batch_size, mean=cfg.mean,
        std=cfg.std, in_chans=cfg.in_chans, num_workers=num_workers, eval_resize="resize", limit=limit,
        eval_preprocess=name,
    )
    n = getattr(info, "num_examples", None)
    if n is not None and limit is not None:
        n = min(n, limit)
    batches = None if n is None else -(-int(n) // batch_size)
    return loader, info, batches


def as_loader(data: Any, cfg: Any, *, split: str, batch_size: int) -> tuple[Any, Any, int | None]:
    """(loader, dataset info, number of batches) for evaluation code that takes a loader or data: a spec string or
    a data object (:mod:`vitkit.data.objects`) is opened with :func:`open_loader` at the model's size and
    normalisation; anything else is an iterable of batches already (info and count None)."""
    from ..data.spec import is_data_object

    if isinstance(data, str) or is_data_object(data):
        return open_loader(data, cfg, split=split, batch_size=batch_size)
    return data, None, None


def loader_stats(loader: Any) -> dict[str, Any]:
    """What the loader skipped or converted, when it tells (``loader.stats.as_dict()``)."""
    stats = getattr(loader, "stats", None)
    if stats is None or not hasattr(stats, "as_dict"):
        return {}
    try:
        return dict(stats.as_dict())
    except Exception:  # noqa: BLE001 - stats are informative only; never fail a finished evaluation on them
        return {}


def gather_images(
    cfg: Any, inputs: list[str], num_images: int, *, split: str = "test", batch_size: int = 8,
    preprocess: str | None = None, with_labels: bool = False,
) -> Any:
    """Up to ``num_images`` normalised images (N, C, H, W) at ``cfg``'s resolution from image files,
    folders or data specs (in order), under ``preprocess`` (None: the default for ``cfg``); unreadable files are
    reported by name and skipped. ``with_labels``: (images, true class per image: the data's class name, or its
    label number when the data names none; None for image files)."""
    import sys
    from pathlib import Path

    import torch

    from .images import find_images, load_images

    size = tuple(int(s) for s in cfg.image_size)
    chunks: list[torch.Tensor] = []
    labels: list[str | None] = []
    have = 0
    for item in inputs:
        if have >= num_images:
            break
        if not Path(item).exists() and is_data_spec(item):
            loader, info, _ = open_loader(item, cfg, split=split, batch_size=batch_size, limit=num_images - have,
                                       preprocess=preprocess)
            names = getattr(info, "class_names", None)
            for x, y in loader:
                chunks.append(x[: num_images - have])
                labels += [str(names[int(v)]) if names and int(v) < len(names) else str(int(v))
                           for v in y[: len(chunks[-1])]]
                have += len(chunks[-1])
                if have >= num_images:
                    break
            continue
        found = find_images([item])
        for p, why in found.skipped:
            print(f"warning: skipped {p}: {why}", file=sys.stderr)
        x, _, _ = load_images(found.paths[: num_images - have], size, cfg.mean, cfg.std, cfg.in_chans,
                              preprocess=preprocess)
        if len(x):
            chunks.append(x)
            labels += [None] * len(x)
            have += len(x)
    if not have:
        raise UserError("no image could be read from " + " ".join(inputs))
    images = torch.cat(chunks)[:num_images]
    return (images, labels[:num_images]) if with_labels else images


def report_skipped(stats: dict[str, Any], where: str) -> None:
    """One stderr line naming the images the loader skipped (by reason, with examples), if any."""
    import sys

    total = int(stats.get("skipped_total", 0) or 0)
    if not total:
        return
    reasons = ", ".join(f"{k} {v}" for k, v in stats.get("skipped", {}).items())
    examples = "; ".join(str(e) for e in stats.get("examples", [])[:3])
    tail = f", e.g. {examples}" if examples else ""
    print(f"warning: {where}: skipped {total} unusable image(s) ({reasons}){tail}", file=sys.stderr)
