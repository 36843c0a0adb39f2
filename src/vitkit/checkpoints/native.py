"""vitkit's own format: safetensors weights, the model config as JSON in the metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..models.config import ViTConfig
from ..models.registry import build_model
from .errors import CheckpointError, check_state_dict

FORMAT_TAG = "vitkit"
FORMAT_VERSION = "1"


def is_native(path: Path) -> bool:
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return False
    return meta.get("format") == FORMAT_TAG


def save_native(model: nn.Module, path: str | os.PathLike[str], extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` as ``path`` (atomically: temporary file, fsync, rename)."""
    cfg: ViTConfig = model.config  # type: ignore[assignment]
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "config": cfg.to_json()}
    meta.update(extra_metadata or {})
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_native(path: Path) -> tuple[ViTConfig, dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if meta.get("format") != FORMAT_TAG or "config" not in meta:
        raise CheckpointError(f"{path}: safetensors file without a vitkit config in its metadata")
    try:
        cfg = ViTConfig.from_json(meta["config"])
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: invalid model config in metadata: {e}") from e
    return cfg, tensors


def load_native(path: Path) -> nn.Module:
    cfg, tensors = read_native(path)
    model = build_model(cfg)
    check_state_dict(str(path), model.state_dict(), tensors)
    model.load_state_dict(tensors, strict=True)
    return model
