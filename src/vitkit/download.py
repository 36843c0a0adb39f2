"""Downloads into vitkit's cache: atomic, resumable, hashed, with an offline switch. The one downloader, for
weights (:mod:`vitkit.checkpoints.sources`) and data sets (:mod:`vitkit.data.fetch`) alike.

Layout: ``$VITKIT_CACHE`` (default ``~/.cache/vitkit``, or ``$XDG_CACHE_HOME/vitkit``) holds each
URL's file at ``HOST/PATH`` (``storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz``), so a
user who downloads by hand knows where to put it. Beside each file, ``FILE.sha256`` records its
SHA-256 in ``sha256sum`` format; every use re-hashes the file and compares, so later corruption
of the cache (a truncated copy, an overwritten file) is an error instead of garbage weights.

A download streams into ``FILE.part`` and is renamed into place only once complete (and, when
the source publishes a hash, once it matches): an interrupted download never leaves a
complete-looking file. The next call resumes the ``.part`` with an HTTP Range request, but only
when the server still has the same file: the first response's validator (a strong ``ETag``, else
``Last-Modified``) is kept in ``FILE.part.validator`` and sent back as ``If-Range``; a server whose
file changed answers with the whole new file (200), and the download starts again. A ``.part``
without a validator (the server sent none) is never resumed. ``force=True`` fetches again.

``VITKIT_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``): nothing is downloaded; a missing file is a
one-line error naming the URL and the path where the file can be put by hand. A published hash
is checked: the MD5 that Google Cloud Storage sends in ``x-goog-hash`` (the official bucket), and
a SHA-256 given by the caller (the Hub's LFS hash goes through :mod:`huggingface_hub`).

Why our own downloader (standard-library ``urllib``): ``huggingface_hub`` only downloads from the
Hub (it serves the ``hf-hub:`` sources); the official checkpoints live in a Google Cloud Storage
bucket served over plain HTTPS. Range resume, atomic rename and hash sidecars are ~100 lines of
``urllib`` and need no further dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import UserError

_CHUNK = 1 << 20


class DownloadError(UserError):
    """A download failed (network, checksum, offline) or a cached file is corrupt: the user's to fix. Weight
    sources re-raise it as :class:`vitkit.checkpoints.errors.CheckpointDownloadError` (also a CheckpointError)."""

_TIMEOUT_S = 60


def cache_dir() -> Path:
    """``$VITKIT_CACHE``, else ``$XDG_CACHE_HOME/vitkit``, else ``~/.cache/vitkit``."""
    if os.environ.get("VITKIT_CACHE"):
        return Path(os.environ["VITKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vitkit"


def _true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """``VITKIT_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` (read at each call, not at import)."""
    return _true("VITKIT_OFFLINE") or _true("HF_HUB_OFFLINE")


def is_url(text: str) -> bool:
    return str(text).startswith(("http://", "https://"))


def cache_path(url: str) -> Path:
    """Where ``url`` is (or will be) cached: ``CACHE/HOST[_PORT]/PATH`` (query: hashed into the name)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.replace(":", "_") or "local"
    segs = [urllib.parse.unquote(s) for s in parts.path.split("/") if s]
    if not segs or any(s in (".", "..") for s in segs):
        raise DownloadError(f"{url}: cannot cache a URL without a file name (or with '.' / '..' in its path)")
    segs = [re.sub(r"[^A-Za-z0-9._+=@,-]", "_", s) for s in segs]
    if parts.query:
        stem, dot, ext = segs[-1].rpartition(".")
        tag = hashlib.sha256(parts.query.encode()).hexdigest()[:12]
        segs[-1] = f"{stem}-{tag}.{ext}" if dot else f"{segs[-1]}-{tag}"
    return cache_dir().joinpath(host, *segs)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, digest: str) -> None:
    side = _sidecar(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    os.replace(tmp, side)


def recorded_sha256(path: Path) -> str | None:
    side = _sidecar(path)
    if not side.is_file():
        return None
    text = side.read_text().split()
    return text[0].lower() if text and re.fullmatch(r"[0-9a-fA-F]{64}", text[0]) else None


def verify_cached(path: Path, expected: str | None = None, url: str | None = None) -> Path:
    """Re-hash a cached file against its recorded SHA-256 (and ``expected``, when the source
    publishes one). A file without a record (put there by hand) is hashed and recorded now."""
    digest = sha256_file(path)
    want = (expected or recorded_sha256(path) or "").lower()
    if want and digest != want:
        where = f" (from {url})" if url else ""
        raise DownloadError(
            f"{path}: SHA-256 {digest} does not match the recorded {want}{where}; the cached file is corrupt: "
            "delete it (and its .sha256) to download it again"
        )
    if recorded_sha256(path) != digest:
        _write_sidecar(path, digest)
    return path


def _offline_error(url: str, dest: Path) -> DownloadError:
    return DownloadError(
        f"offline (VITKIT_OFFLINE/HF_HUB_OFFLINE) and not cached: {url} -- download it by hand to {dest}"
    )


def download(url: str, *, sha256: str | None = None, md5: str | None = None, progress: bool = True,
             dest: Path | None = None, force: bool = False) -> Path:
    """The cached copy of ``url`` (downloaded, or resumed, if missing), verified; returns its path.

    ``sha256`` / ``md5``: the checksum the source publishes (checked before the file is renamed into place).
    ``dest``: where to keep it (default :func:`cache_path`). ``force``: delete any cached copy and fetch again.
    Processes that want the same file (every rank of ``torchrun ... model.init=URL``) take turns
    through a lock file: one downloads, the others then find the file complete.
    """
    from filelock import FileLock

    dest = Path(dest) if dest is not None else cache_path(url)
    if dest.is_file() and not force:
        return verify_cached(dest, sha256, url)
    if offline():
        raise _offline_error(url, dest)
    locks = cache_dir() / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(locks / (hashlib.sha256(str(dest).encode()).hexdigest()[:32] + ".lock"))):
        if force:
            for p in (dest, _sidecar(dest), _part(dest), _validator(_part(dest))):
                p.unlink(missing_ok=True)
        elif dest.is_file():  # another process finished it while this one waited
            return verify_cached(dest, sha256, url)
        return _download(url, sha256, md5, progress, dest)


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _validator(part: Path) -> Path:
    """Beside ``FILE.part``: the server's ETag or Last-Modified of the file the ``.part`` began (for If-Range)."""
    return part.with_name(part.name + ".validator")


def _response_validator(headers: http.client.HTTPMessage) -> str | None:
    """A strong ETag, else Last-Modified (If-Range takes either; a weak ETag ``W/...`` is not allowed there)."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _resume_offset(start: int, resp: http.client.HTTPResponse) -> bool:
    """Whether a 206 continues the ``.part`` at ``start`` (its Content-Range begins there)."""
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range") or "")
    return resp.status == 206 and m is not None and int(m.group(1)) == start


def _download(url: str, sha256: str | None, md5: str | None, progress: bool, dest: Path) -> Path:
    part = _part(dest)
    vfile = _validator(part)
    have = part.stat().st_size if part.is_file() else 0
    validator = vfile.read_text().strip() if have and vfile.is_file() else ""
    if have and not validator:  # no way to ask whether the server still has the same file: start again
        part.unlink()
        have = 0
    headers = {"User-Agent": "vitkit"}
    if have:
        headers.update({"Range": f"bytes={have}-", "If-Range": validator})
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part is already complete (or longer than the file): start over
            part.unlink()
            vfile.unlink(missing_ok=True)
            return _download(url, sha256, md5, progress, dest)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: cannot download ({getattr(e, 'reason', e)}); "
                            f"or put the file by hand at {dest}") from e
    dest.parent.mkdir(parents=True, exist_ok=True)
    with resp:
        published_md5 = _goog_md5(resp.headers.get_all("x-goog-hash") or [])
        if have and not _resume_offset(have, resp):
            have = 0  # 200: the server's file changed (If-Range failed) or it ignores Range: the body is the whole file
        if not have:
            new = _response_validator(resp.headers)
            if new:
                vfile.write_text(new + "\n")
            else:
                vfile.unlink(missing_ok=True)
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        _stream(resp, part, have, total, url, progress)
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: download interrupted at {size:,} of {total:,} bytes; "
                            f"run again to resume ({part})")
    want_md5 = (md5 or "").lower() or published_md5
    digest, got_md5 = _digests(part) if want_md5 else (sha256_file(part), None)
    for algo, got, want, source in (("SHA-256", digest, (sha256 or "").lower(), "expected"),
                                    ("MD5", got_md5, (md5 or "").lower(), "expected"),
                                    ("MD5", got_md5, published_md5 or "", "server's (x-goog-hash)")):
        if want and got != want:
            part.unlink()
            vfile.unlink(missing_ok=True)
            raise DownloadError(f"{dest.name}: {algo} {got} does not match the {source} {want} (from {url}); "
                                "download deleted")
    _write_sidecar(dest, digest)
    os.replace(part, dest)
    vfile.unlink(missing_ok=True)
    return dest


def _goog_md5(values: list[str]) -> str | None:
    """The object's MD5 (hex) from Google Cloud Storage's ``x-goog-hash: crc32c=..., md5=...`` header
    (the stored object's hash, also on Range responses; composite objects publish crc32c only)."""
    import base64
    import binascii

    for v in values:
        for part in v.split(","):
            key, _, val = part.strip().partition("=")
            if key == "md5":
                try:
                    return base64.b64decode(val).hex()
                except (binascii.Error, ValueError):
                    return None
    return None


def _digests(path: Path) -> tuple[str, str]:
    """SHA-256 (recorded) and MD5 (what the bucket publishes) in one pass (135 vs 457 MiB/s for the
    SHA-256 alone on the project's machine, so only when the server publishes an MD5)."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _stream(resp: http.client.HTTPResponse, part: Path, have: int, total: int | None, url: str, progress: bool) -> None:
    from .progress import Progress

    name = url.rsplit("/", 1)[-1]
    with open(part, "ab" if have else "wb") as f, Progress(
        total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {name}",
        enabled=progress, leave=False,
    ) as bar:
        try:
            for block in iter(lambda: resp.read(_CHUNK), b""):
                f.write(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:  # a dropped connection: keep the .part for a resume
            f.flush()
            raise DownloadError(f"{url}: download interrupted at {f.tell():,} bytes ({e}); "
                                f"run again to resume ({part})") from e
        f.flush()
        os.fsync(f.fileno())
