"""Class names beside an official ``.npz``, which has no place for them: ``NAME.classes.json`` next to
``NAME.npz``, written by :func:`save_npz` and read back by :func:`read_npz`, so that converting a fine-tuned model
to ``.npz`` keeps what its classes are called (predict, eval's class matching)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CheckpointError


def class_names_path(weights: str | os.PathLike[str]) -> Path:
    """``vit.npz`` -> ``vit.classes.json``."""
    p = Path(weights)
    return p.with_name(p.stem + ".classes.json")


def write_class_names(weights: str | os.PathLike[str], names: tuple[str, ...] | None) -> Path | None:
    """Write the sidecar of ``weights`` (None: remove a stale one, which would name another model's classes)."""
    path = class_names_path(weights)
    if not names:
        path.unlink(missing_ok=True)
        return None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"weights": Path(weights).name, "class_names": list(names)}, indent=1))
    os.replace(tmp, path)
    return path


def read_class_names(weights: str | os.PathLike[str], num_classes: int) -> tuple[str, ...] | None:
    """The sidecar's class names for a model of ``num_classes`` classes; None without a sidecar, or when the head
    was replaced on loading (another number of classes)."""
    path = class_names_path(weights)
    if not path.is_file():
        return None
    try:
        names = json.loads(path.read_text())["class_names"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a class-name file of {Path(weights).name} ({type(e).__name__}: {e}); "
                              "fix or delete it") from None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{path}: class_names must be a list of strings; fix or delete it")
    return tuple(names) if len(names) == num_classes else None
