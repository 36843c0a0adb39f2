"""Subclasses made once for instance class swaps (``module.__class__ = sub``).

vitkit speeds models up by swapping an instance's class for a subclass that overrides one method
(activation checkpointing, the inference copy's forward, the compiled GELU): unlike wrapping, this
keeps parameter names and the state_dict layout exactly as they were.
"""

from __future__ import annotations

from typing import Any

_SUBCLASSES: dict[tuple[type, str], type] = {}
_PREFIX: dict[type, str] = {}  # each made subclass -> its prefix


def subclass_once(cls: type, prefix: str, namespace: dict[str, Any]) -> type:
    """The subclass ``prefix + cls.__name__`` of ``cls`` with ``namespace``, made on first use and
    registered in this module so that instances stay picklable by name. ``cls`` itself when it
    already is that subclass (swapping twice is a no-op)."""
    if _PREFIX.get(cls) == prefix:
        return cls
    key = (cls, prefix)
    if key not in _SUBCLASSES:
        sub = type(f"{prefix}{cls.__name__}", (cls,), dict(namespace))
        sub.__module__ = __name__
        globals()[sub.__name__] = sub
        _SUBCLASSES[key] = sub
        _PREFIX[sub] = prefix
    return _SUBCLASSES[key]
