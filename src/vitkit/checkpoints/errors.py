"""Errors raised when a checkpoint cannot be read exactly."""

from __future__ import annotations

from collections.abc import Mapping

from ..download import DownloadError


class CheckpointError(ValueError):
    """A checkpoint is unreadable, of an unknown format, or does not fit the model."""


class CheckpointDownloadError(CheckpointError, DownloadError):
    """Weights could not be downloaded, or their cached copy is corrupt (a CheckpointError for weight callers,
    a DownloadError like any other download's)."""


def _dims(v: object) -> tuple[int, ...] | None:
    """The shape of a tensor or array, or the value itself when it is already a shape tuple."""
    if isinstance(v, tuple):
        return v
    shape = getattr(v, "shape", None)
    return tuple(shape) if shape is not None else None


def _shape(v: object) -> str:
    dims = _dims(v)
    return str(dims) if dims is not None else "?"


def check_state_dict(
    source: str, expected: Mapping[str, object], given: Mapping[str, object],
    header: str = "checkpoint does not match the model",
) -> None:
    """Raise a :class:`CheckpointError` listing missing, unexpected and mis-shaped tensors.

    Values are tensors, arrays or plain shape tuples. Never a silent partial load: every
    expected tensor must be present with its exact shape.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [k for k in sorted(set(expected) & set(given)) if _dims(expected[k]) != _dims(given[k])]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{source}: {header}"]
    if missing:
        lines.append("  missing tensors: " + ", ".join(f"{k} {_shape(expected[k])}" for k in missing[:20]))
        if len(missing) > 20:
            lines.append(f"  ... and {len(missing) - 20} more missing")
    if unexpected:
        lines.append("  unexpected tensors: " + ", ".join(f"{k} {_shape(given[k])}" for k in unexpected[:20]))
        if len(unexpected) > 20:
            lines.append(f"  ... and {len(unexpected) - 20} more unexpected")
    for k in mismatched[:20]:
        lines.append(f"  shape mismatch for {k}: checkpoint {_shape(given[k])}, expected {_shape(expected[k])}")
    raise CheckpointError("\n".join(lines))


def num_heads_hint(source: str) -> str:
    """What to do about a file that does not store its number of heads: in Python and on the command line
    (where only ``vitkit convert`` takes ``--num-heads``: the converted file records it, for every command)."""
    return (f"pass num_heads= (load_model, create_model), or on the command line convert it once: vitkit convert "
            f"--model {source} --num-heads N --out FILE.safetensors, then use FILE.safetensors")
