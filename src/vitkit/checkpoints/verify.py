"""Is a cached catalogue file intact and the architecture its name says? (``vitkit download --check``,
``vitkit models --pretrained``.)

Two checks: the file's SHA-256 against the one recorded when it was downloaded (a truncated or overwritten copy),
and its backbone (width, depth, patch, heads, MLP, stem: ``models.arch.SHAPE_FIELDS``, read from the file itself,
not from the catalogue's name for it) against the catalogue entry's model (a file a mirror served under the wrong
name). A failure says what to delete.
"""

from __future__ import annotations

from pathlib import Path

from ..download import DownloadError, verify_cached
from .catalogue import Entry
from .errors import CheckpointError


def check_entry_file(entry: Entry, path: Path) -> str | None:
    """None when ``path`` (the cached file of catalogue ``entry``) is intact and of the entry's architecture;
    otherwise one line saying what is wrong and what to delete."""
    from ..models import get_config
    from ..models.arch import SHAPE_FIELDS, arch_diff
    from .api import detect_format

    fix = f"delete {path} and {path.name}.sha256 beside it, then `vitkit download {entry.name}`"
    try:
        verify_cached(path)
        model = detect_format(path).read(path, verify=True)
    except (DownloadError, CheckpointError) as e:
        return f"{entry.name}: {str(e).splitlines()[0]}; {fix}"
    diff = [f"{f} {_show(a)} (catalogue: {_show(b)})"
            for f, a, b in arch_diff(model.config, get_config(entry.model), SHAPE_FIELDS)]
    if diff:
        return (f"{entry.name}: the cached file is not a {entry.model}: {', '.join(diff)}; it was probably "
                f"served under a wrong name; {fix}")
    return None


def _show(v: object) -> object:
    """A square patch (16, 16) as 16."""
    return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v
