"""``load_model`` / ``save_model``: the one door to every checkpoint format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapt import adapt_model
from .errors import CheckpointError
from .formats import FORMATS, Format, get_format

__all__ = ["adapt_model", "detect_format", "load_model", "save_model", "writer_format"]


def detect_format(path: str | os.PathLike[str]) -> Format:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    for fmt in FORMATS:
        if fmt.detect(p):
            return fmt
    known = "; ".join(f"{f.name}: {f.description}" for f in FORMATS)
    raise CheckpointError(f"{p}: unknown checkpoint format. Known formats: {known}")


def load_model(
    source: str | os.PathLike[str], *, format: str | None = None, progress: bool = True, verify: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Read a model (architecture and weights) from any source; returns it in eval mode.

    ``source``: a file or folder of any supported format, a ``vitkit train`` run folder or its
    ``checkpoints/step_N.pt``, an ``http(s)://`` URL, ``hf-hub:ORG/NAME[@REVISION]``, or a name of
    the official catalogue (``imagenet21k/ViT-B_16``; see :mod:`vitkit.checkpoints.sources`).
    ``overrides``: ``num_classes``, ``image_size``, ``representation_size`` (see
    :func:`adapt_model`) and config fields the file cannot tell (``num_heads=`` for a bare timm
    state dict). Nothing is ever unpickled. Every file is validated before anything is allocated
    (``checkpoints.validate``); ``verify=False`` skips the checks that read every byte once more
    (a vitkit file's ``content_sha256``, zip CRC-32s, the NaN/inf scan), for huge files.
    """
    from .sources import resolve

    resolved = resolve(source, progress=progress)
    p = resolved.path
    fmt = get_format(format) if format else detect_format(p)
    hints = {k: overrides.pop(k) for k in list(overrides) if k in _READ_HINTS}
    if fmt.name == "npz":  # the catalogue's model name, unless the caller names it
        hints = {**resolved.hints, **hints}
    model = fmt.read(p, verify=verify, **hints)
    model = adapt_model(model, **overrides)
    return model.eval()


# Hints a reader may need before it can build the model (the file cannot tell them).
_READ_HINTS = {"classifier", "gelu", "layer_norm_eps", "name", "num_heads"}


def writer_format(path: str | os.PathLike[str], format: str | None = None) -> Format:
    """The writable format named by ``format``, or else the one the file suffix implies."""
    p = Path(path)
    if format is not None:
        fmt = get_format(format)
        if fmt.write is None:
            raise CheckpointError(f"format {fmt.name!r} is read-only")
        return fmt
    matches = [f for f in FORMATS if f.write is not None and p.suffix in f.suffixes]
    if not matches:
        raise CheckpointError(
            f"{p}: cannot tell the output format from the suffix {p.suffix!r}; pass format= one of "
            + ", ".join(f.name for f in FORMATS if f.write is not None)
        )
    return matches[0]


def save_model(
    model: nn.Module, path: str | os.PathLike[str], *, format: str | None = None, **options: Any
) -> Path:
    """Write ``model``; the format follows ``format`` or the file suffix (``.safetensors``: vitkit).

    ``options`` go to the format's writer (``naming="linen"`` for ``.npz``).
    """
    p = Path(path)
    fmt = writer_format(p, format)
    p.parent.mkdir(parents=True, exist_ok=True)  # as `vitkit export` and `train --out`: a new folder is made
    with torch.no_grad():
        fmt.write(model, p, **options)
    from .filemode import apply_umask

    apply_umask(p)  # safetensors writes 0600; the user's umask decides, as for every other file
    return p
