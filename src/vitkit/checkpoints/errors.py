"""Errors raised when a checkpoint cannot be read exactly."""

from __future__ import annotations

from collections.abc import Mapping


class CheckpointError(ValueError):
    """A checkpoint is unreadable, of an unknown format, or does not fit the model."""


def _shape(v: object) -> str:
    shape = getattr(v, "shape", None)
    return str(tuple(shape)) if shape is not None else "?"


def check_state_dict(
    source: str, expected: Mapping[str, object], given: Mapping[str, object]
) -> None:
    """Raise a :class:`CheckpointError` listing missing, unexpected and mis-shaped tensors.

    Never a silent partial load: every expected tensor must be present with its exact shape.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [
        k for k in sorted(set(expected) & set(given))
        if tuple(getattr(expected[k], "shape", ())) != tuple(getattr(given[k], "shape", ()))
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{source}: checkpoint does not match the model"]
    if missing:
        lines.append("  missing tensors: " + ", ".join(f"{k} {_shape(expected[k])}" for k in missing[:20]))
        if len(missing) > 20:
            lines.append(f"  ... and {len(missing) - 20} more missing")
    if unexpected:
        lines.append("  unexpected tensors: " + ", ".join(f"{k} {_shape(given[k])}" for k in unexpected[:20]))
        if len(unexpected) > 20:
            lines.append(f"  ... and {len(unexpected) - 20} more unexpected")
    for k in mismatched[:20]:
        lines.append(f"  shape mismatch for {k}: checkpoint {_shape(given[k])}, model {_shape(expected[k])}")
    raise CheckpointError("\n".join(lines))
