"""The table of checkpoint formats. Each entry knows how to detect, read and write one format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UserError
from . import native


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detect: Callable[[Path], bool]
    # read(path, verify=True, **hints) -> model; hints are config fields the file cannot tell;
    # verify=False skips the integrity checks that read every byte (hash, NaN/inf scan).
    read: Callable[..., nn.Module]
    # write(model, path, **options)
    write: Callable[..., Any] | None
    suffixes: tuple[str, ...] = ()


def _read_native(path: Path, verify: bool = True, **hints: Any) -> nn.Module:
    model = native.load_native(path, verify)
    if hints:
        # The file records its config; a hint given anyway is an explicit override of it.
        from .adapt import adapt_model

        model = adapt_model(model, **hints)
    return model


FORMATS: list[Format] = [
    Format("vitkit", "vitkit safetensors (weights + config metadata)", native.is_native, _read_native,
           native.save_native, (".safetensors",)),
]


def register_format(fmt: Format) -> None:
    FORMATS.append(fmt)


def get_format(name: str) -> Format:
    for f in FORMATS:
        if f.name == name:
            return f
    raise UserError(f"unknown checkpoint format {name!r}; known formats: {', '.join(f.name for f in FORMATS)}")
