"""The image-size type: users write ``R`` (an R x R square) or ``(H, W)``; inside vitkit a size is always the
``(height, width)`` pair. :func:`as_hw` is the one place that turns the first into the second: the edges (the
command line, config files, the public functions) call it once and pass the pair on
(``tests/test_architecture.py`` pins that no other function converts).

At the bottom of the package (beside :mod:`vitkit.errors`) so that the data, model, export and analysis
layers all ask the same function.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from .errors import UserError

# (height, width) in pixels: the normalised form everything inside takes.
HW = tuple[int, int]
# What a user may give: one int for a square, or (height, width).
SizeArg = int | Sequence[int]


def as_hw(size: SizeArg, what: str = "image_size") -> HW:
    """``size`` as (height, width): an int is a square, a pair is kept. Strict: bools, floats and strings are
    refused (a size from a file is never guessed), naming ``what`` (the option or field) in the message.
    Ranges are the caller's (a config has its limits, a loader only needs positive sizes)."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise UserError(f"{what}={size!r}: expected an integer or a pair of integers (height, width)")
        return (_int(what, size[0]), _int(what, size[1]))
    n = _int(what, size)
    return (n, n)


def _int(what: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise UserError(f"{what}={v!r}: expected an integer, got {type(v).__name__}")
    return int(v)
