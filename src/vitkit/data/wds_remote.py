"""Remote WebDataset shards: URLs read through fsspec, ``pipe:`` commands, as front-to-back streams.

A pattern with a URL scheme (``https://``, ``s3://``, ``gs://``, anything fsspec knows) is read through fsspec as one
stream per shard (a streamed GET for http(s), read-ahead ranges for object stores), never copied to disk first;
``pipe:CMD`` runs CMD in a shell and reads its standard output, as WebDataset does. The streams go through the same
tar parser as local shards (:func:`vitkit.data.wds.iter_tar`), so the shard order, the shuffle buffer and the resume
position are those of local shards. A read error ends the shard as a corrupt one (counted and reported by the loader),
like a damaged local shard; there is no retry.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import UserError
from .spec import split_candidates
from .wds_meta import read_wds_metadata

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_REMOTE_HINT = "remote shards need fsspec and its protocol's package: pip install 'vitkit[remote]' (http(s), s3, gs)"


def is_remote(path: str) -> bool:
    """A ``pipe:`` command or a URL with a scheme (``https://``, ``s3://``, ``gs://``...), read by streaming."""
    return path.startswith("pipe:") or bool(_URL_RE.match(path))


def _fs(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise UserError(f"wds: {url!r}: {_REMOTE_HINT}") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:  # fsspec says which package a protocol needs
        raise UserError(f"wds: cannot open {url!r}: {str(e).splitlines()[0]} ({_REMOTE_HINT})") from None


def expand_remote_shards(pattern: str, split: str) -> tuple[list[str], str | None]:
    """(shard URLs, the folder to look for meta.json/classes.txt in, None for ``pipe:``) of a remote pattern.

    ``pipe:`` commands are brace-expanded (``{split}`` substituted) and cannot be checked before they run. URLs are
    brace-expanded too, or, when the pattern names a folder (no brace and no ``.tar``/``.tgz`` ending), its
    ``SPLIT-*.tar[.gz]`` are listed (object stores, or an http server's index page); every shard is checked to exist,
    in parallel, so a typo fails here and not as skipped shards mid-training.
    """
    import braceexpand

    pat = pattern.replace("{split}", split)
    if pat.startswith("pipe:"):
        return list(braceexpand.braceexpand(pat)), None
    fs, _ = _fs(pat)
    if "{" not in pat and not pat.rstrip("/").endswith((".tar", ".tar.gz", ".tgz")):
        base = pat.rstrip("/")
        names = split_candidates(split)
        for n in names:
            found: list[str] = []
            for ext in ("tar", "tar.gz", "tgz"):
                found += fs.glob(f"{base}/{n}-*.{ext}")
            if found:
                return sorted(fs.unstrip_protocol(f) if not _URL_RE.match(f) else f for f in found), base
        raise FileNotFoundError(f"wds: no {split}-*.tar[.gz] shards listed under {pattern!r}")
    shards = list(braceexpand.braceexpand(pat))
    with ThreadPoolExecutor(max_workers=16) as pool:
        exists = list(pool.map(fs.exists, shards))
    missing = [u for u, ok in zip(shards, exists) if not ok]
    if missing:
        raise FileNotFoundError(f"wds: {len(missing)} of {len(shards)} shards of {pattern!r} do not exist, "
                                f"e.g. {missing[0]!r}")
    return shards, shards[0].rsplit("/", 1)[0]


def read_remote_metadata(base: str) -> dict[str, Any]:
    """:func:`read_wds_metadata` for a remote folder: meta.json / classes.txt are fetched (when present) into a
    temporary folder and parsed by the same function, so local and remote shards share one reader."""
    fs, _ = _fs(base)
    with tempfile.TemporaryDirectory(prefix="vitkit-wds-meta-") as tmp:
        for name in ("meta.json", "classes.txt"):
            try:
                data = fs.cat_file(f"{base}/{name}")
            except FileNotFoundError:
                continue
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        try:
            return read_wds_metadata(tmp)
        except ValueError as e:
            raise UserError(str(e).replace(tmp, base)) from None


class _Exact:
    """``read(n)`` that returns n bytes unless the stream ends, over a stream that may return fewer (aiohttp's
    streamed body does), with the first bytes read ahead to tell gzip from tar."""

    def __init__(self, f: Any, closer: Any = None) -> None:
        self.f, self.closer, self.head = f, closer, b""
        self.head = self.read(2)

    def read(self, n: int = -1) -> bytes:
        out, self.head = self.head, b""
        try:
            if n is None or n < 0:
                return out + self.f.read()
            while len(out) < n:
                chunk = self.f.read(n - len(out))
                if not chunk:
                    break
                out += chunk
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - aiohttp's payload errors are not OSErrors; the shard is corrupt
            raise OSError(f"{type(e).__name__}: {e}") from e
        return out

    def close(self) -> None:
        (self.closer or self.f.close)()

    def __enter__(self) -> _Exact:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _PipeStream:
    """Standard output of ``pipe:CMD``. Our own rather than webdataset's ``Pipe``: that one raises when a command
    we stopped reading early (the first-shard check reads 64 samples) dies of SIGPIPE, and a non-zero exit after a
    complete read must count the shard as corrupt (OSError), not pass silently."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd
        # stderr to a file, not a pipe: a chatty command (curl's progress meter) would fill an unread pipe and block
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=self.err, bufsize=1 << 20)
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        assert self.proc.stdout is not None
        data = self.proc.stdout.read(n)
        if not data or (n is not None and 0 <= len(data) < n):
            self.eof = True
        return data

    def close(self) -> None:
        assert self.proc.stdout is not None
        try:
            if not self.eof:  # stopped early: the command's exit status says nothing about the shard
                self.proc.kill()
                self.proc.wait()
                return
            if self.proc.wait() != 0:
                self.err.seek(0)
                err = self.err.read().decode("utf-8", "replace").strip().splitlines()
                raise OSError(f"pipe command exited with status {self.proc.returncode}"
                              f"{': ' + err[-1][:300] if err else ''}")
        finally:
            self.proc.stdout.close()
            self.err.close()


def open_remote(path: str) -> Any:
    """A reader of the shard ``path`` (``pipe:`` or URL), gzip-decompressed when it starts with gzip's magic."""
    if path.startswith("pipe:"):
        raw: Any = _PipeStream(path[len("pipe:"):])
    else:
        fs, p = _fs(path)
        # http(s): block_size=0 is fsspec's streamed GET, one request read front to back; object stores read
        # ahead in ranges. Either way nothing is written to disk.
        raw = fs.open(p, "rb", **({"block_size": 0} if path.startswith(("http://", "https://")) else {}))
    f = _Exact(raw)
    if f.head == b"\x1f\x8b":
        return _Closing(gzip.GzipFile(fileobj=f, mode="rb"), f)
    return f


class _Closing:
    """A gzip reader over ``inner`` that also closes ``inner`` (GzipFile leaves a passed file object open)."""

    def __init__(self, gz: gzip.GzipFile, inner: _Exact) -> None:
        self.gz, self.inner = gz, inner

    def read(self, n: int = -1) -> bytes:
        return self.gz.read(n)

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.gz.close()
        finally:
            self.inner.close()
