"""Progress reports: a tqdm bar on a terminal, plain log lines anywhere else.

A bar written into a file or a pipe (``vitkit eval ... 2> log``, a batch job) is hundreds of ``\\r``-joined
updates; there a long command logs a line now and then instead: every 10% of a known total (the caller may give
its own interval, e.g. training's ``log_every``). ``--no-progress`` turns the bars off everywhere
(:func:`disable_bars`); the lines stay. The one decider of "bar or lines" is :func:`bars_allowed`.

Nothing here imports torch.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["Progress", "bars_allowed", "disable_bars"]

T = TypeVar("T")
log = logging.getLogger("vitkit")
_BARS_OFF = False


def disable_bars(off: bool = True) -> None:
    """No progress bars in this process (``--no-progress``): long commands log lines instead."""
    global _BARS_OFF
    _BARS_OFF = off


def bars_allowed(stream: TextIO | None = None) -> bool:
    """Whether a progress bar may be drawn on ``stream`` (stderr): only on a terminal, and not after
    :func:`disable_bars`."""
    stream = sys.stderr if stream is None else stream
    try:
        return not _BARS_OFF and bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


def _amount(n: float, unit: str) -> str:
    if unit == "B":
        for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if n >= scale:
                return f"{n / scale:.1f} {name}"
        return f"{int(n)} B"
    return f"{int(n)}"


class Progress:
    """``update(n)`` as tqdm's. On a terminal (:func:`bars_allowed`) a tqdm bar; otherwise one log line (logger
    ``vitkit``, INFO) each time another ``every`` units are done, by default 10% of ``total`` (no lines when
    neither is known). ``enabled=False``: silent (library callers that report on their own)."""

    def __init__(self, total: float | None, *, desc: str, unit: str, enabled: bool = True, initial: float = 0,
                 every: float | None = None, **tqdm_kw: Any):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.bar: Any = None
        self.every = every if every else (total / 10 if total else None)
        self.marks = self._marks() if self.every else None  # intervals completed (and logged)
        if enabled and bars_allowed():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, **tqdm_kw)
        elif not enabled:
            self.marks = None

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.marks is not None and self._marks() > self.marks:
            self.marks = self._marks()
            unit = "" if self.unit == "B" else f" {self.unit}"
            done = f"{_amount(self.n, self.unit)}{unit}"
            if self.total:
                done = f"{100 * self.n / self.total:.0f}% ({_amount(self.n, self.unit)} of " \
                       f"{_amount(self.total, self.unit)}{unit})"
            log.info(f"vitkit: {self.desc}: {done}")

    def _marks(self) -> int:
        assert self.every
        return int(self.n / self.every + 1e-9)  # 1e-9: 5/16 of a total is 50%, not 49.99...%

    def set_postfix(self, **kw: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**kw)

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, counting one per item."""
        for x in items:
            yield x
            self.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
