"""Typed ``key=value`` options over nested dataclasses: conversion, dotted keys, dicts and listing.

Generic machinery (nothing here knows the training options): a field's type annotation decides what a
command-line string may become (``Literal`` choices, ``int``, ``float``, ``bool``, tuples, ``X | None``), and every
error names the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from ..errors import UserError, did_you_mean

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", "~", ""}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple of {_type_name(args[0])} (any length, e.g. '(1,2)' or '()')"
        return "tuple of " + ", ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _coerce(text: Any, tp: Any, key: str) -> Any:
    """Convert a command-line string (or a YAML value) to the declared type of ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (text is None or (isinstance(text, str) and text.strip().lower() in _NONE)):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(text, a, key)
            except ValueError as e:
                errors.append(str(e))
        raise UserError(f"{key}={text!r}: expected {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if text is None and None in choices:
            return None
        for c in choices:
            if c is None and isinstance(text, str) and text.lower() in _NONE:
                return None
            if c is not None and str(c) == str(text):
                return c
        raise UserError(f"{key}={text!r}: expected {_type_name(tp)}")
    if origin is tuple:
        elems = typing.get_args(tp)
        if isinstance(text, str):
            parts = [p for p in text.strip().strip("()[]").split(",") if p.strip()]
        elif isinstance(text, (list, tuple)):
            parts = list(text)
        else:
            raise UserError(f"{key}={text!r}: expected {_type_name(tp)}")
        if len(elems) == 2 and elems[1] is Ellipsis:
            elems = (elems[0],) * len(parts)
        if len(parts) != len(elems):
            raise UserError(f"{key}={text!r}: expected {len(elems)} comma-separated values ({_type_name(tp)})")
        return tuple(_coerce(p.strip() if isinstance(p, str) else p, t, key) for p, t in zip(parts, elems))
    if tp is bool:
        if isinstance(text, bool):
            return text
        s = str(text).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise UserError(f"{key}={text!r}: expected a bool (true/false)")
    if tp is int:
        if isinstance(text, bool):
            raise UserError(f"{key}={text!r}: expected an int")
        if isinstance(text, int):
            return text
        try:
            f = float(str(text).replace("_", ""))
        except ValueError:
            raise UserError(f"{key}={text!r}: expected an int") from None
        if not f.is_integer():
            raise UserError(f"{key}={text!r}: expected an int")
        return int(f)
    if tp is float:
        if isinstance(text, bool):
            raise UserError(f"{key}={text!r}: expected a float")
        try:
            return float(str(text).replace("_", "")) if isinstance(text, str) else float(text)
        except (TypeError, ValueError):
            raise UserError(f"{key}={text!r}: expected a float") from None
    if tp is str:
        if text is None:
            raise UserError(f"{key}: expected a string")
        return str(text)
    raise TypeError(f"{key}: unsupported option type {tp}")


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def set_option(cfg: Any, key: str, value: Any) -> None:
    """Set one dotted option (``optim.lr``) in place, converting ``value`` to its declared type."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(node)]
        where = ".".join(parts[:i]) or "the top level"
        if part not in names:
            valid = ", ".join(
                f"{'.'.join(parts[:i] + [n])}" for n in names
            )
            raise UserError(f"unknown option {key!r}{did_you_mean(part, names)} (no {part!r} in {where}); valid "
                            f"options: {valid}")
        tp = hints(type(node))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                sub = [f.name for f in dataclasses.fields(tp)]
                opts = ", ".join(f"{key}.{n}" for n in sub)
                raise UserError(f"{key!r} is a section; set one of its options: {opts}")
            setattr(node, part, _coerce(value, tp, key))
        else:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise UserError(f"unknown option {key!r}: {'.'.join(parts[: i + 1])} is not a section")


def to_dict(cfg: Any) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(dataclasses.asdict(cfg))


def from_dict_typed(cls: type, d: dict[str, Any], prefix: str) -> Any:
    obj = cls()
    types_ = hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise UserError(f"unknown option {key!r}; valid options: " + ", ".join(f"{prefix}{n}" for n in names))
        tp = types_[k]
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, dict):
                raise UserError(f"{key} must be a mapping")
            setattr(obj, k, from_dict_typed(tp, v, f"{key}."))
        else:
            setattr(obj, k, _coerce(v, tp, key))
    return obj


def list_options(cfg: Any) -> list[tuple[str, str, Any]]:
    """(dotted key, type, current value) for every option, for ``--help-options``."""
    out: list[tuple[str, str, Any]] = []

    def walk(node: Any, prefix: str) -> None:
        types_ = hints(type(node))
        for f in dataclasses.fields(node):
            v = getattr(node, f.name)
            if dataclasses.is_dataclass(v):
                walk(v, f"{prefix}{f.name}.")
            else:
                out.append((f"{prefix}{f.name}", _type_name(types_[f.name]), v))

    walk(cfg, "")
    return out
