"""``load_model`` / ``save_model``: the one door to every checkpoint format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.registry import build_model
from .errors import CheckpointError, check_state_dict
from .formats import FORMATS, Format, get_format

_UNSET: Any = object()
# Config fields that change how the weights are used but not which weights exist.
_WEIGHT_FREE_FIELDS = {
    "dropout_rate", "attention_dropout_rate", "drop_path_rate", "posemb_resample", "layer_norm_eps",
    "gelu", "mean", "std", "name", "class_names", "head_bias_init", "norm_after_pool", "extra",
}


def _load_plugins() -> None:
    # Importing a format module registers it; kept lazy so `import vitkit` stays light.
    from . import plugins  # noqa: F401


def detect_format(path: str | os.PathLike[str]) -> Format:
    _load_plugins()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    for fmt in FORMATS:
        if fmt.detect(p):
            return fmt
    known = "; ".join(f"{f.name}: {f.description}" for f in FORMATS)
    raise CheckpointError(f"{p}: unknown checkpoint format. Known formats: {known}")


def adapt_model(
    model: nn.Module,
    *,
    num_classes: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    representation_size: int | None = _UNSET,
    **config_overrides: Any,
) -> nn.Module:
    """Adapt a loaded model as the official ``load_pretrained`` does.

    ``num_classes=K``: a new task. The head becomes a zero-initialised D x K layer and the
    pre-logits layer is dropped unless ``representation_size`` is given. ``image_size``:
    position embeddings resampled on the 2D grid (class token kept). Other keyword arguments
    override config fields that the file cannot tell (``classifier="token_unpooled"``,
    ``dropout_rate=0.1``).
    """
    cfg = model.config
    if config_overrides:
        new_cfg = cfg.replace(**config_overrides)
        if new_cfg.has_class_token != cfg.has_class_token:
            raise CheckpointError(
                f"classifier={new_cfg.classifier!r} needs "
                f"{'a' if new_cfg.has_class_token else 'no'} class token, but the checkpoint "
                f"{'has' if cfg.has_class_token else 'has none'}"
            )
        changed = {k for k in config_overrides if getattr(cfg, k) != getattr(new_cfg, k)}
        rebuilt = build_model(new_cfg)
        state = model.state_dict()
        check_state_dict(f"override {sorted(changed)}", rebuilt.state_dict(), state)
        rebuilt.load_state_dict(state)
        model = rebuilt
    if num_classes is not None:
        rep = None if representation_size is _UNSET else representation_size
        model.reset_head(num_classes, rep, model.config.head_bias_init)
    elif representation_size is not _UNSET and representation_size != model.config.representation_size:
        raise CheckpointError("representation_size can only be changed together with num_classes (a new head)")
    if image_size is not None:
        model.set_image_size(image_size)
    return model


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

    _load_plugins()
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
    _load_plugins()
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
