"""What a data set holds, and the checks that run before training starts (any kind of source)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserError
from .sources import open_map_source
from .spec import DatasetInfo, ParsedSpec, canonical_split, describe_data, parse_spec
from .wds import WdsSource, resolve_wds


def open_stream(p: ParsedSpec, split: str) -> WdsSource | None:
    """The stream source of a parsed spec (``wds:`` shards, a ``datasets.IterableDataset``), None for map-style
    data."""
    if p.kind == "wds":
        return resolve_wds(p, canonical_split(split))
    if p.kind == "hf" and p.obj is not None:
        from .hfstream import open_hf_stream

        return open_hf_stream(p.obj, canonical_split(split))
    return None


def dataset_info(spec: str | Any, split: str = "train") -> DatasetInfo:
    """Number of classes, class names and size of ``spec``'s ``split`` (size is None for undeclared streams).
    ``spec`` may be a data object (:mod:`vitkit.data.objects`)."""
    stream = open_stream(parse_spec(spec), split)
    return stream.info() if stream is not None else open_map_source(spec, split).info()


def check_labels(labels: np.ndarray, num_classes: int, where: str, *, require_all: bool = True) -> None:
    """ValueError if ``labels`` is empty, has labels outside [0, num_classes) or (``require_all``) lacks a class."""
    if len(labels) == 0:
        raise UserError(f"{where}: the data set is empty")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise UserError(f"{where}: labels out of range [0, {num_classes}): found {sorted(set(bad.tolist()))[:10]}")
    if require_all:
        present = np.unique(labels)
        if len(present) < num_classes:
            missing = sorted(set(range(num_classes)) - set(present.tolist()))
            raise UserError(f"{where}: {len(present)} of the {num_classes} declared classes have examples; "
                             f"missing classes {missing[:20]}{' ...' if len(missing) > 20 else ''}")


def validate_dataset(spec: str | Any, split: str = "train", *, num_classes: int | None = None,
                     require_all_classes: bool = True) -> DatasetInfo:
    """Check ``spec``/``split`` before training: not empty, labels in range, no declared class missing.

    ``num_classes`` is the number the model is built for (e.g. a checkpoint's head); by default the source's own.
    For streams, the shards must exist and the first samples are read to check the label range.
    Raises ValueError (or FileNotFoundError) with the data set and the mismatch; returns the DatasetInfo.
    """
    p = parse_spec(spec)
    split = canonical_split(split)
    where = f"data {describe_data(spec)} split {split!r}"
    ws = open_stream(p, split)
    if ws is not None:
        ws.check_first_shard(num_classes if num_classes is not None else ws.num_classes)
        info = ws.info()
        if num_classes is not None and num_classes < info.num_classes:
            raise UserError(f"{where}: data declares {info.num_classes} classes but num_classes={num_classes}")
        return info
    src = open_map_source(spec, split)
    k = src.num_classes if num_classes is None else int(num_classes)
    if num_classes is not None and num_classes < src.num_classes:
        raise UserError(f"{where}: data has {src.num_classes} classes but num_classes={num_classes}")
    check_labels(src.known_labels(), k, where, require_all=require_all_classes)
    return src.info()
