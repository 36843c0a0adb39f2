"""Writing a run's files when the disk may fill: whole files appear atomically, and a full disk is one clear error.

:func:`writing` turns "no space left on device" (``ENOSPC``, or ``EDQUOT``: over quota) raised while writing a file
into :class:`DiskFull`, a :class:`~vitkit.errors.UserError` (exit 2, one line) naming the file;
:func:`atomic_write_text` writes a small file (``good.json``, ``summary.json``) under a temporary name, fsyncs it
and renames it into place, so a failure at any byte leaves the previous version. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

__all__ = ["DiskFull", "atomic_write_text", "fsync_dir", "is_disk_full", "writing"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(UserError):
    """No space left on the device (or quota) while writing ``path``."""

    def __init__(self, path: Path | str, reason: str = "no space left on device", hint: str = ""):
        super().__init__(f"{reason} while writing {path}" + (f"; {hint}" if hint else ""))
        self.path, self.reason = str(path), reason


def is_disk_full(e: BaseException | None) -> bool:
    """Whether ``e``, or an error it was raised from or while handling, is a full disk. torch.save raises a
    RuntimeError while handling the file's own ``OSError``; safetensors (Rust) raises its own error type whose
    message alone carries the errno ("... No space left on device (os error 28)")."""
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, OSError) and e.errno is not None:
            if e.errno in _FULL:
                return True
        elif any(os.strerror(n) in str(e) or f"os error {n})" in str(e) for n in _FULL):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Run a write of ``path``; a full disk becomes :class:`DiskFull` naming it."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        if not is_disk_full(e):
            raise
        reason = "disk quota exceeded" if os.strerror(errno.EDQUOT) in str(e) else "no space left on device"
        raise DiskFull(path, reason) from e


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some file systems refuse a directory fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path | str, text: str, *, durable: bool = True) -> Path:
    """Write ``text`` to ``path`` whole or not at all (temporary file, fsync, rename; ``durable``: fsync of the
    folder too). A full disk raises :class:`DiskFull` and leaves the previous file as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with writing(path):
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)
    return path
