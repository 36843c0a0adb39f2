"""``vitkit train``'s resumable checkpoints (``RUN/checkpoints/step_XXXXXXXX.pt``) as a read-only format:
the model out of one.

The file format (names, write, read, detect) is :mod:`vitkit.training_checkpoint`'s: a ``torch.save`` of
plain containers, read with ``torch.load(weights_only=True)``. Its ``meta.model_config`` is the model's full
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

from ..training_checkpoint import load_checkpoint
from .errors import CheckpointError
from .tensorfile import check_zip_crc
from .validate import build_checked, parse_config


def read_training_checkpoint(path: str | os.PathLike[str], verify: bool = True, **hints: Any) -> nn.Module:
    path = Path(path)
    if verify:
        check_zip_crc(path)  # torch.load never checks the archive's CRC-32s
    try:
        st = load_checkpoint(path)
    except ValueError as e:  # a truncated file raises anything from the zip reader; load_checkpoint says which
        raise CheckpointError(str(e)) from e
    meta = st.get("meta") if isinstance(st, Mapping) else None
    raw = meta.get("model_config") if isinstance(meta, Mapping) else None
    if not raw:
        raise CheckpointError(f"{path}: training checkpoint without meta.model_config; the architecture is unknown")
    try:
        fields = json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: meta.model_config is not valid JSON ({e})") from e
    cfg = parse_config(fields, str(path), what="meta.model_config")
    state = st.get("model")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'model' is a {type(state).__name__}, not a state dict of tensors")
    model = build_checked(cfg, _encoder_state({str(k): v for k, v in state.items()}), str(path), verify=verify)
    if hints:
        from .adapt import adapt_model

        model = adapt_model(model, **hints)
    return model



# A masked-patch-prediction run (vitkit.models.masked) checkpoints its encoder under "encoder." beside the [mask]
# embedding, the patch-prediction head and the corruption counter; the model of such a checkpoint is the encoder.
_MASKED_ONLY = ("mask_token", "head.weight", "head.bias", "corruption_step")


def _encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not state or not all(k.startswith("encoder.") or k in _MASKED_ONLY for k in state):
        return state
    return {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
