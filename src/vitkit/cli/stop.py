"""Ctrl-C (SIGINT) and SIGTERM in a command: exit 130 / 143 (128 + the signal, as a shell reports a process the
signal killed, so ``vitkit train ... && vitkit eval ...`` does not go on), with one line saying what was kept and how
to continue.

SIGINT raises ``KeyboardInterrupt`` (Python's default); :func:`sigterm_as_interrupt` makes SIGTERM raise
:class:`Stopped`, a ``KeyboardInterrupt`` too, so the same clean-up runs for both. Training installs its own
handlers while it steps (a checkpoint first, then stop: :mod:`vitkit.train.guard`). A command module may define
``kept_on_stop(args) -> str``: what an interrupted run of it leaves behind and how to continue; a command that
knows more at the moment it stops (the demo: which stage, which step) raises :class:`Stopped` with that text.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Stopped", "exit_code", "report", "sigterm_as_interrupt"]


class Stopped(KeyboardInterrupt):
    """The command was stopped by signal ``signum``; ``note``: what was kept and how to continue (None: the
    command's ``kept_on_stop``)."""

    def __init__(self, signum: int, note: str | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.note = int(signum), note


def exit_code(signum: int) -> int:
    """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Stopped` in the main thread (its default would end the process without a word)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        raise Stopped(signum)

    old = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def report(args: argparse.Namespace, e: KeyboardInterrupt) -> int:
    """Print the one line for an interrupted command; returns its exit code."""
    signum = e.signum if isinstance(e, Stopped) else int(signal.SIGINT)
    note = e.note if isinstance(e, Stopped) else None
    if note is None:
        module = importlib.import_module(args.func.__module__)
        kept = getattr(module, "kept_on_stop", None)
        note = kept(args) if kept is not None else "nothing was written; run the same command again"
    print(f"vitkit {args.command}: stopped by {signal.Signals(signum).name}; {note}", file=sys.stderr)
    return exit_code(signum)
