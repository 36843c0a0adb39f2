"""The registry of checkpoint formats: one explicit table, in detection order.

Each entry names its functions as ``"module:function"`` (modules relative to ``vitkit.checkpoints``); a module is
imported on first use, so ``import vitkit.checkpoints`` stays light and nothing registers itself as a side
effect of being imported. A new format is one more row in :data:`FORMATS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UserError


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detector: str  # detect(path) -> bool
    # read(path, verify=True, **hints) -> model; hints are config fields the file cannot tell;
    # verify=False skips the integrity checks that read every byte (hash, NaN/inf scan).
    reader: str
    writer: str | None  # write(model, path, **options); None: read-only
    suffixes: tuple[str, ...] = ()

    @staticmethod
    def _function(ref: str) -> Callable[..., Any]:
        module, name = ref.split(":")
        return getattr(importlib.import_module(module, __package__), name)

    @property
    def detect(self) -> Callable[[Path], bool]:
        return self._function(self.detector)

    @property
    def read(self) -> Callable[..., nn.Module]:
        return self._function(self.reader)

    @property
    def write(self) -> Callable[..., Any] | None:
        return None if self.writer is None else self._function(self.writer)


# Detection order: the first format whose detect() accepts a file reads it. vitkit's own safetensors first (its
# metadata says so); timm after hf and npz because it also claims an unreadable .pth/.pt/.safetensors (so that
# reading says why); the training checkpoint last. A writer is chosen by suffix: the first writable match.
FORMATS: tuple[Format, ...] = (
    Format("vitkit", "vitkit safetensors (weights + config metadata)", ".native:is_native",
           ".native:read_native_model", ".native:save_native", (".safetensors",)),
    Format("hf", "Hugging Face transformers ViT (save_pretrained directory or state dict)", ".hf:is_hf",
           ".hf:read_hf", ".hf:save_hf", ()),
    Format("npz", "official google-research/vision_transformer .npz (both naming generations, hybrids)",
           ".official_npz:is_npz", ".official_npz:read_npz", ".official_npz:save_npz", (".npz",)),
    Format("timm", "timm vision_transformer state dict (.pth / .safetensors)", ".timm:is_timm", ".timm:read_timm",
           ".timm:save_timm", (".pth", ".pt")),
    Format("train", "vitkit training checkpoint (RUN/checkpoints/step_N.pt, with its model config)",
           "..training_checkpoint:is_training_checkpoint", ".training:read_training_checkpoint", None, (".pt",)),
    Format("onnx", "ONNX graph written by `vitkit export` (run with onnxruntime; read-only)", ".onnx_model:is_onnx",
           ".onnx_model:read_onnx", None, (".onnx",)),
)


def get_format(name: str) -> Format:
    for f in FORMATS:
        if f.name == name:
            return f
    raise UserError(f"unknown checkpoint format {name!r}; known formats: {', '.join(f.name for f in FORMATS)}")
