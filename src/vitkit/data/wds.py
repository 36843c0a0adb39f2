"""WebDataset shards: resolution of the spec, streaming reader, shuffle buffer, and a small shard writer.

The reader is a small streaming tar parser (:func:`iter_tar`: plain or gzip tar read front to back, never seeked
or indexed) rather than the ``webdataset`` pipeline, for three reasons: (1) every random decision
(shard order, shuffle buffer) must come from generators seeded by (seed, epoch, rank, stream) so an epoch can be
replayed exactly on resume, which ``webdataset``'s internal RNGs do not promise across versions; (2) a corrupt
shard must be counted and skipped, not end the epoch; (3) resuming needs the number of raw samples a stream has
consumed, which we track ourselves. The parser is ours rather than ``tarfile``'s stream mode because the latter's
pure-Python header parsing cost about as much as decoding a 32x32 CIFAR JPEG. Samples are grouped like WebDataset
does: consecutive members sharing the path up to the first dot of the base name form one sample, the rest of the
name is the extension.

Remote shards (``https://``, ``s3://``, ``gs://`` through fsspec, ``pipe:`` commands) are opened by
:mod:`vitkit.data.wds_remote` and parsed here like local ones.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError
from .preprocess import IMAGE_SUFFIXES
from .spec import DatasetInfo, ParsedSpec, canonical_split, split_candidates
from .wds_meta import read_wds_metadata
from .wds_remote import expand_remote_shards, is_remote, open_remote, read_remote_metadata

IMAGE_EXTS = tuple(s[1:] for s in IMAGE_SUFFIXES)  # WebDataset keys: the one suffix list, without the dot
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


@dataclass
class WdsSource:
    pattern: str
    split: str
    shards: list[str]
    num_classes: int
    class_names: list[str] | None
    num_examples: int | None

    kind = "wds"

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.num_classes, self.class_names, self.num_examples, False, "wds", self.split, 3)

    def items(self, i: int) -> Iterator[tuple[Any, ...]]:
        """The raw items of shard ``i`` (:func:`iter_shard`); other streams (vitkit.data.hfstream) override it."""
        return iter_shard(self.shards[i], i)

    def check_first_shard(self, num_classes: int, max_samples: int = 64, strict: bool = True) -> None:
        """Read the first samples of the first shard: labels must be in range. ``strict`` also fails on an
        unreadable or empty shard and on samples without a label (the loader itself counts and skips those)."""
        n = 0
        for item in self.items(0):
            if item[0] == "corrupt_shard":
                if strict:
                    raise UserError(f"wds: shard {self.shards[0]!r} cannot be read: {item[3]}")
                return
            _, _, key, files = item
            label = parse_label(files.get("cls"))
            if label is None:
                if strict:
                    raise UserError(f"wds: sample {key!r} in {self.shards[0]!r} has no readable .cls label")
                continue
            if not 0 <= label < num_classes:
                raise UserError(f"wds: sample {key!r} in {self.shards[0]!r} has label {label}, outside "
                                 f"[0, {num_classes})")
            n += 1
            if n >= max_samples:
                break
        if n == 0 and strict:
            raise UserError(f"wds: the first shard {self.shards[0]!r} holds no labelled samples")


def _int_option(options: dict[str, str], key: str, spec: str) -> int | None:
    if key not in options:
        return None
    try:
        v = int(options[key])
    except ValueError:
        raise UserError(f"wds spec {spec!r}: {key}={options[key]!r} is not an integer") from None
    if v <= 0:
        raise UserError(f"wds spec {spec!r}: {key} must be positive, got {v}")
    return v


def expand_shards(pattern: str, split: str) -> list[str]:
    """Shard paths of a ``wds:`` pattern: brace-expanded (``{split}`` substituted), or ``DIR`` -> ``DIR/SPLIT-*``.

    Only shard *file names* are listed; the samples inside are never enumerated up front.
    """
    import braceexpand

    if os.path.isdir(pattern):
        for n in split_candidates(split):
            found = sorted(glob.glob(os.path.join(glob.escape(pattern), f"{n}-*.tar")) +
                           glob.glob(os.path.join(glob.escape(pattern), f"{n}-*.tar.gz")) +
                           glob.glob(os.path.join(glob.escape(pattern), f"{n}-*.tgz")))
            if found:
                return found
        raise FileNotFoundError(f"wds: no {split}-*.tar[.gz] shards in directory {pattern!r}")
    pat = pattern.replace("{split}", split)
    shards = list(braceexpand.braceexpand(pat))
    missing = [s for s in shards if not os.path.isfile(s)]
    if missing:
        raise FileNotFoundError(f"wds: {len(missing)} of {len(shards)} shards of {pattern!r} do not exist, "
                                f"e.g. {missing[0]!r}")
    return shards


def resolve_wds(p: ParsedSpec, split: str) -> WdsSource:
    """Shard list and metadata of a ``wds:`` spec. The shard files are checked to exist; nothing is read."""
    spec = f"wds:{p.path}"
    split = canonical_split(split)
    if is_remote(p.path):
        shards, meta_dir = expand_remote_shards(p.path, split)
        meta = read_remote_metadata(meta_dir) if meta_dir is not None else {}
    else:
        shards = expand_shards(p.path, split)
        meta_dir = p.path if os.path.isdir(p.path) else os.path.dirname(shards[0])
        meta = read_wds_metadata(meta_dir)
    if not shards:
        raise UserError(f"wds: pattern {p.path!r} names no shards")
    names = meta.get("class_names")
    if "classes" in p.options:
        names = [c.strip() for c in p.options["classes"].split(",") if c.strip()]
    k = _int_option(p.options, "num_classes", spec)
    if k is None and meta.get("num_classes") is not None:
        k = int(meta["num_classes"])
    if k is None and names:
        k = len(names)
    if k is None:
        raise UserError(f"wds: cannot tell the number of classes of {p.path!r}: add '?num_classes=K' to the spec "
                         f"or put classes.txt (one name per line) or meta.json ({{\"num_classes\": K}}) beside the "
                         f"shards")
    if names is not None and len(names) != k:
        raise UserError(f"wds: {p.path!r} declares {k} classes but lists {len(names)} class names")
    n = None
    if ":" in p.options.get("num_examples", ""):  # per split: num_examples=train:50000,test:10000
        per_split: dict[str, str] = {}
        for part in p.options["num_examples"].split(","):
            name, _, value = part.partition(":")
            per_split[name.strip()] = value.strip()
        value = next((per_split[s] for s in split_candidates(split) if s in per_split), None)
        if value is not None:
            n = _int_option({"num_examples": value}, "num_examples", spec)
    else:
        n = _int_option(p.options, "num_examples", spec)
    if n is None:
        ne = meta.get("num_examples")
        if isinstance(ne, dict):
            ne = next((ne[s] for s in split_candidates(split) if s in ne), None)
        n = int(ne) if isinstance(ne, (int, float, str)) and str(ne).isdigit() else None
    return WdsSource(p.path, split, shards, k, list(names) if names else None, n)


def parse_label(data: bytes | None) -> int | None:
    if data is None:
        return None
    try:
        return int(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


class TarFormatError(Exception):
    """A tar header or member that cannot be parsed."""


def _read_exact(f: Any, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise TarFormatError(f"unexpected end of data ({len(data)} of {n} bytes)")
    return data


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"bad octal field {field!r}") from None


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a pax extended header (records are ``LEN key=value\n``)."""
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            break
        length = int(data[pos:sp])
        key, _, value = data[sp + 1:pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        pos += length
    return None


def iter_tar(f: Any) -> Iterator[tuple[str, bytes]]:
    """(name, data) of the regular files of a tar stream read front to back.

    A small reader instead of ``tarfile``'s stream mode, whose pure-Python header parsing cost about as much as
    decoding a 32x32 JPEG. It understands ustar/GNU/pax names (``prefix``, ``L`` long names, pax ``path``), checks
    every header's checksum and raises TarFormatError (or the decompressor's error) on damage.
    """
    long_name: str | None = None
    while True:
        hdr = f.read(512)
        if not hdr:
            return  # archive without end-of-archive blocks
        if len(hdr) != 512:
            raise TarFormatError("truncated tar header")
        if hdr.count(0) == 512:
            return  # end-of-archive block
        chksum = _octal(hdr[148:156])
        if chksum != sum(hdr[:148]) + 256 + sum(hdr[156:]):  # the checksum field counts as 8 spaces
            raise TarFormatError("tar header checksum mismatch")
        size = _octal(hdr[124:136])
        kind = hdr[156:157]
        data = _read_exact(f, size) if kind in (b"0", b"\0", b"7", b"L", b"x") else None
        if data is None:
            pad = size + (-size % 512)
            if pad:
                _read_exact(f, pad)
        elif size % 512:
            _read_exact(f, 512 - size % 512)
        if kind == b"L":
            long_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape") if data is not None else None
            continue
        if kind == b"x":
            long_name = _pax_path(data) if data is not None else None
            continue
        if kind not in (b"0", b"\0", b"7"):
            long_name = None
            continue  # directories, links, global pax headers
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = hdr[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if hdr[257:262] == b"ustar":
                prefix = hdr[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if prefix:
                    name = prefix + "/" + name
        assert data is not None
        yield name, data


def _open_shard(path: str) -> Any:
    if is_remote(path):
        return open_remote(path)
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb", buffering=1 << 20)


def iter_shard(path: str, shard_idx: int) -> Iterator[tuple[Any, ...]]:
    """Yield ``("sample", (shard_idx, ordinal), key, {ext: bytes})`` in tar order; a read error ends the shard with
    ``("corrupt_shard", (shard_idx, -1), path, message)`` instead of raising."""
    key: str | None = None
    files: dict[str, bytes] = {}
    ordinal = 0
    try:
        with _open_shard(path) as f:
            for member, data in iter_tar(f):
                match = _KEY_RE.match(member)
                if match is None:
                    continue
                k, ext = match.group(1), match.group(2).lower()
                if k != key:
                    if key is not None and files:
                        yield ("sample", (shard_idx, ordinal), key, files)
                        ordinal += 1
                    key, files = k, {}
                files[ext] = data
        if key is not None and files:
            yield ("sample", (shard_idx, ordinal), key, files)
    except (TarFormatError, OSError, EOFError, zlib.error) as e:
        yield ("corrupt_shard", (shard_idx, -1), path, f"{type(e).__name__}: {e}")


def shuffle_buffer(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Reservoir-style shuffle: keep ``size`` items, emit a random one for each new item, then drain shuffled."""
    if size <= 1:
        yield from items
        return
    buf: list[Any] = []
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        j = int(rng.integers(0, size))
        yield buf[j]
        buf[j] = x
    for j in rng.permutation(len(buf)):
        yield buf[int(j)]


def stream_shards(num_shards: int, *, seed: int, epoch: int, rank: int, world_size: int, stream: int,
                  num_streams: int, shuffle: bool, pass_: int = 0) -> list[int]:
    """Shard indices read by one stream: the epoch's shard order (shuffled by (seed, epoch, pass) when training),
    split over ranks, then over the rank's streams."""
    if shuffle:
        order = np.random.default_rng([seed, epoch, pass_, 0x5A4D]).permutation(num_shards)
    else:
        order = np.arange(num_shards)
    return [int(i) for i in order[rank::world_size][stream::num_streams]]


# -------------------------------------------------------------------------------------------------------------------


def _encode(image: Any, fmt: str) -> bytes:
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(fmt, fmt.upper()))
    return buf.getvalue()


def write_wds_shards(samples: Iterable[tuple[Any, int]], pattern: str, *, samples_per_shard: int = 1000,
                     image_format: str = "png", key_prefix: str = "") -> list[str]:
    """Write ``(image, label)`` pairs as WebDataset shards; returns the shard paths.

    ``pattern`` has one ``%d``-style field for the shard number, e.g. ``dir/train-%06d.tar`` (``.tar.gz`` gives
    gzip-compressed shards). ``image`` is encoded bytes (written as-is, with ``image_format`` as extension), a PIL
    image or a uint8 array. Tar headers get mtime 0 so shards are reproducible. Meant for tests and small tools.
    """
    if samples_per_shard <= 0:
        raise UserError("samples_per_shard must be positive")
    paths: list[str] = []
    tf: tarfile.TarFile | None = None
    ext = image_format.lower()

    def add(name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        assert tf is not None
        tf.addfile(info, io.BytesIO(data))

    try:
        for i, (image, label) in enumerate(samples):
            if i % samples_per_shard == 0:
                if tf is not None:
                    tf.close()
                path = pattern % len(paths)
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                tf = tarfile.open(path, "w:gz" if path.endswith((".gz", ".tgz")) else "w", format=tarfile.USTAR_FORMAT)
                paths.append(path)
            key = f"{key_prefix}{i:08d}"
            add(f"{key}.{ext}", _encode(image, ext))
            add(f"{key}.cls", str(int(label)).encode())
    finally:
        if tf is not None:
            tf.close()
    return paths
