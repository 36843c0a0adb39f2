"""One process per run folder: a second ``vitkit train --out R`` (or ``vitkit demo --out R``) while R is in use
stops at once with a user error naming the process that holds it.

The lock is filelock's ``FileLock`` (``flock(2)`` on ``R/.vitkit.lock``), not a home-made pid file: the kernel
releases it when its process ends in any way, SIGKILL and power loss included, so a lock left by a killed run never
blocks ``--resume`` and no pid has to be checked for reuse. Who holds it (pid, host, start time, command) is written
next to it in ``R/.vitkit.lock.json`` for the message only: filelock truncates the lock file itself on each attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_write_text

__all__ = ["LOCK_FILES", "RunInUse", "run_lock"]

LOCK = ".vitkit.lock"
HOLDER = ".vitkit.lock.json"
LOCK_FILES = (LOCK, HOLDER)  # what the lock leaves in a run folder (a folder of only these is an empty run)


class RunInUse(UserError):
    """The run folder is held by another process."""


def _holder(out: Path) -> str:
    try:
        h = json.loads((out / HOLDER).read_text())
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(h["since"])))
        return f"process {int(h['pid'])} on host {h['host']} since {when}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):  # written just after the lock is taken: not yet there
        return "another process"


@contextlib.contextmanager
def run_lock(out: Path | str, *, enabled: bool = True) -> Iterator[None]:
    """Hold ``out`` (created if missing) for the duration; :class:`RunInUse` (exit 2) when another process holds
    it. ``enabled=False``: nothing (the other ranks of a distributed run: rank 0 holds it for all)."""
    if not enabled:
        yield
        return
    from filelock import FileLock, Timeout

    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunInUse(f"{out} is in use by {_holder(out)}; wait for it to end (or stop it), or choose another "
                       "--out") from None
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
        atomic_write_text(out / HOLDER, json.dumps(info), durable=False)
        yield
    finally:
        (out / HOLDER).unlink(missing_ok=True)
        lock.release()
        if created and all(p.name in LOCK_FILES for p in out.iterdir()):  # refused before writing anything
            (out / LOCK).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()
