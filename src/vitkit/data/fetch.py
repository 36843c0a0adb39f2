"""Getting a named data set's files into ``$VITKIT_DATA/NAME/``: download, verify, unpack safely.

- ``VITKIT_DATA`` (default ``~/.cache/vitkit/data``): the root, one folder per data set name.
- ``VITKIT_DATA_URL=BASE``: every file comes from ``BASE/<official file name>`` instead of its official URL
  (a private mirror, a re-packed archive, the tests' loopback server). When BASE serves a ``SHA256SUMS`` file
  (``sha256sum`` format), its entries take precedence over the table's checksums for the files it lists.
- ``VITKIT_OFFLINE=1``: nothing is downloaded; a missing file is a one-line error naming the URL and the path to
  put the file at.

The download itself (``.part`` + If-Range resume, lock, progress bar, atomic rename, checksum) is the one weights
use: :func:`vitkit.download.download`. Archives are unpacked into a temporary folder that is renamed
into place when complete (an interrupted unpacking never looks finished), after every member passed tarfile's
``data`` filter (PEP 706): a member with an absolute path, a ``..``, a link out of the folder or a device file
refuses the whole archive before anything is written.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import UserError
from .named import DATASETS, DataFile, DataSet

_SUMS = "SHA256SUMS"


def data_root() -> Path:
    """``$VITKIT_DATA``, else ``~/.cache/vitkit/data`` (read at each call)."""
    env = os.environ.get("VITKIT_DATA")
    return Path(env).expanduser() if env else Path(os.path.expanduser("~")) / ".cache" / "vitkit" / "data"


def dataset_dir(name: str) -> Path:
    return data_root() / name


def mirror() -> str | None:
    base = os.environ.get("VITKIT_DATA_URL", "").strip()
    return base.rstrip("/") if base else None


def file_url(f: DataFile) -> str:
    """Where ``f`` is fetched from: the mirror's ``BASE/NAME`` when ``VITKIT_DATA_URL`` is set, else its URL."""
    base = mirror()
    return f"{base}/{f.name}" if base else f.url


def mirror_sums(base: str) -> dict[str, str]:
    """The mirror's ``SHA256SUMS`` as {file name: sha256}; {} when it serves none (HTTP 404)."""
    from ..download import DownloadError

    try:
        with urllib.request.urlopen(urllib.request.Request(f"{base}/{_SUMS}", headers={"User-Agent": "vitkit"}),
                                    timeout=60) as r:
            text = r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return {}
        raise DownloadError(f"{base}/{_SUMS}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{base}/{_SUMS}: cannot reach the mirror (VITKIT_DATA_URL): "
                            f"{getattr(e, 'reason', e)}") from e
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


def archive_dir(folder: Path, f: DataFile) -> Path:
    """Where an archive is unpacked: ``FOLDER/<file name without .tar.gz / .tgz / .tar>``."""
    stem = f.name
    for ext in (".tar.gz", ".tgz", ".tar"):
        stem = stem.removesuffix(ext)
    return folder / stem


def is_cached(ds: DataSet) -> bool:
    folder = dataset_dir(ds.name)
    return all((archive_dir(folder, f).is_dir() if f.extract else (folder / f.name).is_file()) for f in ds.files)


def ensure(name: str, *, progress: bool = True, force: bool = False) -> Path:
    """The folder holding data set ``name``'s files, downloaded (and unpacked) if missing; ``force``: again."""
    from filelock import FileLock

    from ..download import download, offline

    ds = DATASETS[name]
    folder = dataset_dir(name)
    if is_cached(ds) and not force:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sums: dict[str, str] | None = None
    for f in ds.files:
        dest = folder / f.name
        done = archive_dir(folder, f).is_dir() if f.extract else dest.is_file()
        if done and not force:
            continue
        base = mirror()
        if sums is None:
            sums = mirror_sums(base) if base and not offline() else {}
        if f.name in sums:  # the mirror's own list wins for the files it names
            sha256, md5 = sums[f.name], None
        else:
            sha256, md5 = f.sha256, f.md5
        if force and f.extract:
            shutil.rmtree(archive_dir(folder, f), ignore_errors=True)
        download(file_url(f), sha256=sha256, md5=md5, progress=progress, dest=dest, force=force)
        if f.extract:
            with FileLock(str(folder / f".{f.name}.lock")):
                if not archive_dir(folder, f).is_dir():
                    extract_safely(dest, archive_dir(folder, f))
    return folder


def _hostile(m: tarfile.TarInfo, dest: Path) -> str:
    """Why member ``m`` must not be unpacked ("" when it may): tarfile's ``data`` filter refuses links out of the
    folder and special files, but rewrites an absolute path to a relative one and lets ``a/../b`` through; both
    are refused here, as a well-made data archive has neither."""
    name = m.name.replace("\\", "/")
    if name.startswith("/") or os.path.isabs(m.name) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "has a '..' in its path"
    try:
        tarfile.data_filter(m, str(dest))
    except tarfile.FilterError as e:
        return f"is refused by tarfile's data filter ({e})"
    return ""


def extract_safely(archive: Path, target: Path) -> Path:
    """Unpack the tar ``archive`` into ``target`` (absent before): all members are checked first; a hostile one
    refuses the archive whole (UserError naming it, the archive deleted), nothing is written outside ``target``."""
    if not hasattr(tarfile, "data_filter"):  # PEP 706 came with Python 3.10.12 / 3.11.4 / 3.12
        raise UserError(f"{archive}: unpacking archives safely needs tarfile's data filter (Python >= 3.10.12, "
                        "3.11.4 or 3.12); upgrade Python, or unpack it yourself into "
                        f"{target} (the folder vitkit reads)")
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()
                for m in members:
                    why = _hostile(m, tmp)
                    if why:
                        archive.unlink(missing_ok=True)
                        archive.with_name(archive.name + ".sha256").unlink(missing_ok=True)
                        raise UserError(f"{archive}: refused, nothing extracted: member {m.name!r} {why}; "
                                        "the archive was deleted")
                tf.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise UserError(f"{archive}: cannot unpack ({e}); delete it to download it again") from e
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
