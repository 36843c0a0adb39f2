"""Written files get the mode the user's umask gives (0644 under the usual umask 022).

safetensors' writer (Rust) creates its file with mode 0600, so a ``model.safetensors`` was readable by its owner
only while the ``.npz``/``.pt`` files beside it were 0644; :func:`apply_umask` sets what ``open()`` would have.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc, kernel >= 4.7); elsewhere by
    setting and restoring it (os.umask has no read-only form)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """chmod ``path`` (a file, or each file directly inside a folder) to 0666 minus the umask."""
    mode = 0o666 & ~current_umask()
    p = Path(path)
    for f in ([p] if p.is_file() else [c for c in p.iterdir() if c.is_file()] if p.is_dir() else []):
        os.chmod(f, mode)
