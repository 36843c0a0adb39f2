"""vitkit: the Vision Transformer of Dosovitskiy et al. (2020), numerically the official model.

The public names are imported on first use (module ``__getattr__``, PEP 562), not here: importing torch takes
2-5 s, and ``vitkit --version``/``--help`` and ``import vitkit.cli.main`` must not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import UserError

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "CheckpointError": ".checkpoints",
    "load_model": ".checkpoints",
    "save_model": ".checkpoints",
    "fewshot": ".evaluate.fewshot_lsr",
    "ViTConfig": ".models",
    "create_model": ".factory",
    "list_models": ".factory",
}

__all__ = [
    "CheckpointError", "UserError", "ViTConfig", "create_model", "fewshot", "list_models", "load_model",
    "save_model", "__version__",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from .checkpoints import CheckpointError, load_model, save_model
    from .evaluate.fewshot_lsr import fewshot
    from .factory import create_model, list_models
    from .models import ViTConfig


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vitkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    # The public names only (not this module's imports and helpers, nor the subpackages loaded so far).
    return sorted(__all__)
