"""``vitkit train``'s resumable checkpoints (``RUN/checkpoints/step_XXXXXXXX.pt``) as a read-only format.

A training checkpoint is a ``torch.save`` of plain containers (see :mod:`vitkit.train.checkpoint`),
read with ``torch.load(weights_only=True)``. Its ``meta.model_config`` is the model's full
:class:`ViTConfig` (JSON, with the class names), so nothing about the architecture is guessed; a
file without it is refused. ``ema=True`` reads the EMA weights instead of the trained ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.config import ViTConfig
from ..models.registry import build_model
from .errors import CheckpointError, check_state_dict


def _load(path: Path, mmap: bool) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def is_training_checkpoint(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".pt"):
        return False
    try:
        obj = _load(path, mmap=True)
    except Exception:  # noqa: BLE001 - not ours (other formats say why they cannot read it)
        return False
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    return isinstance(meta, Mapping) and "model" in obj and "optimizer" in obj and "step" in meta


def read_training_checkpoint(path: str | os.PathLike[str], **hints: Any) -> nn.Module:
    path = Path(path)
    try:
        st = _load(path, mmap=False)
    except Exception as e:  # noqa: BLE001 - a truncated file raises anything from the zip reader
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {e})") from e
    meta = st["meta"]
    raw = meta.get("model_config")
    if not raw:
        raise CheckpointError(f"{path}: training checkpoint without meta.model_config; the architecture is unknown")
    try:
        cfg = ViTConfig.from_json(raw)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: invalid meta.model_config ({e})") from e
    state = st["model"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'model' is a {type(state).__name__}, not a state dict")
    model = build_model(cfg)
    ours = model.state_dict()
    check_state_dict(str(path), ours, state)
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in state.items()}, strict=True)
    if hints:
        from .api import adapt_model

        model = adapt_model(model, **hints)
    return model


def _register() -> None:
    from .formats import Format, register_format

    register_format(Format(
        "train", "vitkit training checkpoint (RUN/checkpoints/step_N.pt, with its model config)",
        is_training_checkpoint, read_training_checkpoint, None, (".pt",),
    ))


_register()
