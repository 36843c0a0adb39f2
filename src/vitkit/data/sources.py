"""Data sources named by one string, and the checks that run before training starts.

Spec grammar: ``KIND[:PATH][?key=value&key=value]``.

* ``digits`` - scikit-learn's bundled 8x8 digits (1797 images, no download). Grey values 0..16 are scaled by
  255/16 and rounded to uint8. Split: a fixed stratified split, 20% of every class to ``test`` (numpy
  ``default_rng(DIGITS_SPLIT_SEED)`` permutation per class, see :func:`_digits_split`), the rest ``train``.
* ``folder:PATH`` - ImageFolder layout. Labels are the sorted class sub-folder names of the *train* split so every
  split shares one label map. ``PATH/train`` and ``PATH/test`` (or ``PATH/val``) are used when present; otherwise
  ``PATH`` itself is the requested split.
* ``mnist:PATH`` - the four idx files (``train-images-idx3-ubyte[.gz]`` ...), gzipped or not.
* ``cifar:PATH`` - CIFAR-10 (``data_batch_1..5``, ``test_batch``, ``batches.meta``) or CIFAR-100 (``train``,
  ``test``, ``meta``; ``?labels=coarse`` for the 20 super-classes) python batches, in a folder or the original
  ``.tar.gz``. The batches are pickles: they are read with :class:`RestrictedUnpickler`, which only rebuilds
  dicts/lists/str/bytes/numbers and plain numpy arrays and refuses every other global.
* ``wds:PATTERN`` - WebDataset shards, streamed (see :mod:`vitkit.data.wds`). PATTERN is a brace pattern
  (``train-{000000..000004}.tar.gz``), may contain ``{split}``, or is a directory holding ``SPLIT-*.tar[.gz]``.
  Query keys: ``num_classes``, ``num_examples`` (``N``, or per split ``train:50000,test:10000``), ``classes``
  (comma-separated names). Example for the shared CIFAR-10 copy:
  ``wds:/work/shared/data/cifar10?num_classes=10&num_examples=train:50000,test:10000``.
  Otherwise metadata comes from ``classes.txt`` (one class name per line) or ``meta.json``
  (``{"num_classes": K, "class_names": [...], "num_examples": {"train": N, "test": M}}``) next to the shards.
"""

from __future__ import annotations

import functools
import glob
import gzip
import io
import json
import os
import pickle
import struct
import tarfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .preprocess import IMAGE_SUFFIXES

IMAGE_EXTENSIONS = IMAGE_SUFFIXES  # the one list (vitkit.data.preprocess); this name is kept for callers
DIGITS_SPLIT_SEED = 20201022  # the paper's arXiv date; any fixed value works, this one is documented
DIGITS_TEST_FRACTION = 0.2
KINDS = ("digits", "folder", "mnist", "cifar", "wds")


@dataclass
class DatasetInfo:
    """What a trainer needs to know about a data set before building the model."""

    num_classes: int
    class_names: list[str] | None
    num_examples: int | None  # None for streams whose size is not declared
    multi_label: bool = False
    kind: str = ""
    split: str = "train"
    channels: int = 3  # channels of the stored images (1 for digits/mnist); the loader converts to in_chans


@dataclass
class ParsedSpec:
    kind: str
    path: str
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(spec: str) -> ParsedSpec:
    """Split ``KIND:PATH?k=v`` into its parts; unknown kinds are a ValueError listing the valid ones."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data spec must be a non-empty string like 'digits' or 'folder:PATH', got {spec!r}")
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown data source {kind!r} in spec {spec!r}; valid: {', '.join(KINDS)}")
    options: dict[str, str] = {}
    if "?" in rest:
        rest, _, query = rest.rpartition("?")
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            options[key] = value
    if kind != "digits" and not rest:
        raise ValueError(f"data spec {spec!r} needs a path: '{kind}:PATH'")
    return ParsedSpec(kind, os.path.expanduser(rest), options)


def _check_split(split: str) -> str:
    if split not in ("train", "test", "val", "validation"):
        raise ValueError(f"unknown split {split!r}; valid: train, test, val")
    return "val" if split == "validation" else split


# ----------------------------------------------------------------------------------------------------------------
# Map-style sources: everything the loader needs is a length, labels and a way to fetch sample i.


class MapSource:
    """Random-access source. ``labels`` is an int64 array; ``load(i)`` returns a uint8 array or encoded bytes."""

    kind = ""
    in_memory = True
    channels = 3

    def __init__(self, labels: np.ndarray, class_names: list[str] | None, num_classes: int, split: str):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = class_names
        self.num_classes = int(num_classes)
        self.split = split

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> np.ndarray | bytes:
        raise NotImplementedError

    def name(self, i: int) -> str:
        return f"{self.kind}[{self.split}][{i}]"

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.num_classes, self.class_names, len(self), False, self.kind, self.split, self.channels)


class ArraySource(MapSource):
    def __init__(self, kind: str, images: np.ndarray, labels: np.ndarray, class_names: list[str] | None,
                 num_classes: int, split: str):
        super().__init__(labels, class_names, num_classes, split)
        self.kind = kind
        self.images = images  # (N, H, W) grey or (N, H, W, 3) RGB, uint8
        self.channels = 1 if images.ndim == 3 else images.shape[-1]

    def load(self, i: int) -> np.ndarray:
        return self.images[i]


class DecodedSource(MapSource):
    """A ``wds:`` split decoded once into memory (spec option ``cache=memory``): uint8 images in tar order, stacked
    into one array when they share a shape (fewer Python objects for forked loader workers to touch), else a list.
    ``names`` are ``shard:key`` for error messages."""

    kind = "wds"

    def __init__(self, images: np.ndarray | list[np.ndarray], labels: np.ndarray, names: list[str],
                 class_names: list[str] | None, num_classes: int, split: str, channels: int):
        super().__init__(labels, class_names, num_classes, split)
        self.images, self.names, self.channels = images, names, channels

    def load(self, i: int) -> np.ndarray:
        return self.images[i]

    def name(self, i: int) -> str:
        return self.names[i]


class FolderSource(MapSource):
    kind = "folder"
    in_memory = False

    def __init__(self, files: list[str], labels: list[int], class_names: list[str], split: str, root: str):
        super().__init__(np.asarray(labels, dtype=np.int64), class_names, len(class_names), split)
        self.files = files
        self.root = root

    def load(self, i: int) -> bytes:
        with open(self.files[i], "rb") as f:
            return f.read()

    def name(self, i: int) -> str:
        return self.files[i]


# -- digits ---------------------------------------------------------------------------------------------------------


def _digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: per class, a permutation from ``default_rng(DIGITS_SPLIT_SEED + class)``; the first
    ``round(0.2 * n_class)`` indices go to test. Written out (not sklearn's train_test_split) so the split cannot
    change with the scikit-learn version."""
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = np.random.default_rng(DIGITS_SPLIT_SEED + int(c)).permutation(idx)
        n_test = int(round(DIGITS_TEST_FRACTION * len(idx)))
        test.append(perm[:n_test])
        train.append(perm[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@functools.lru_cache(maxsize=2)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # 0..16 -> 0..255
    return images, d.target.astype(np.int64)


def _digits_source(split: str) -> ArraySource:
    images, labels = _digits_arrays()
    train_idx, test_idx = _digits_split(labels)
    if split == "val":
        raise ValueError("digits has splits 'train' and 'test' (no 'val')")
    idx = train_idx if split == "train" else test_idx
    return ArraySource("digits", images[idx], labels[idx], [str(i) for i in range(10)], 10, split)


# -- folder ---------------------------------------------------------------------------------------------------------


def _class_dirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _split_dir(root: str, split: str) -> str | None:
    names = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}[split]
    for n in names:
        if os.path.isdir(os.path.join(root, n)):
            return os.path.join(root, n)
    return None


def _folder_source(root: str, split: str) -> FolderSource:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"folder data set: {root!r} is not a directory")
    has_splits = os.path.isdir(os.path.join(root, "train"))
    if has_splits:
        split_dir = _split_dir(root, split)
        if split_dir is None:
            raise FileNotFoundError(f"folder data set {root!r} has a train/ split but no {split!r} split "
                                    f"(looked for {root}/{split}" + (", test, val)" if split != "train" else ")"))
        train_classes = _class_dirs(os.path.join(root, "train"))
    else:
        split_dir = root
        train_classes = _class_dirs(root)
    if not train_classes:
        raise ValueError(f"folder data set {root!r}: no class sub-folders found (expected ImageFolder layout "
                         f"ROOT/[train/]CLASS/IMAGE)")
    classes = _class_dirs(split_dir)
    extra = sorted(set(classes) - set(train_classes))
    if extra:
        raise ValueError(f"folder data set {root!r}: split {split!r} has classes that are not in train: {extra}")
    index = {c: i for i, c in enumerate(train_classes)}
    files: list[str] = []
    labels: list[int] = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(os.path.join(split_dir, c)):
            dirnames.sort()
            for fn in sorted(filenames):
                if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(dirpath, fn))
                    labels.append(index[c])
    return FolderSource(files, labels, train_classes, split, split_dir)


# -- mnist ----------------------------------------------------------------------------------------------------------


def _find_file(root: str, stems: tuple[str, ...]) -> str:
    for stem in stems:
        for suffix in ("", ".gz"):
            p = os.path.join(root, stem + suffix)
            if os.path.isfile(p):
                return p
    raise FileNotFoundError(f"mnist: none of {[s + '[.gz]' for s in stems]} found in {root!r}")


def _read_idx(path: str, magic: int, ndim: int) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"mnist: cannot read {path!r}: {e}") from e
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"mnist: {path!r} is too short for an idx header ({len(data)} bytes)")
    got = struct.unpack(">I", data[:4])[0]
    if got != magic:
        raise ValueError(f"mnist: {path!r} has magic {got}, expected {magic}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    n = int(np.prod(dims))
    if len(data) - header != n:
        raise ValueError(f"mnist: {path!r} declares shape {dims} ({n} bytes) but holds {len(data) - header} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _signature(root: str) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes under ``root``: part of the cache key so a rewritten file is read again."""
    if os.path.isfile(root):
        st = os.stat(root)
        return ((root, st.st_size, st.st_mtime_ns),)
    out = []
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if e.is_file():
            st = e.stat()
            out.append((e.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _mnist_arrays(root: str, split: str, signature: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    img_path = _find_file(root, (f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"))
    lbl_path = _find_file(root, (f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"))
    images = _read_idx(img_path, 2051, 3)
    labels = _read_idx(lbl_path, 2049, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"mnist: {img_path!r} has {len(images)} images but {lbl_path!r} has {len(labels)} labels")
    return images, labels


def _mnist_source(root: str, split: str) -> ArraySource:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"mnist: {root!r} is not a directory")
    root = os.path.abspath(root)
    images, labels = _mnist_arrays(root, "train" if split == "train" else "test", _signature(root))
    return ArraySource("mnist", images, labels, [str(i) for i in range(10)], 10, split)


# -- cifar ----------------------------------------------------------------------------------------------------------


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR python batches that cannot run code.

    ``find_class`` is the only way a pickle reaches callables; it answers only numpy's array/dtype reconstructors,
    which build plain arrays. Everything else (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
    ``pickle.UnpicklingError`` before anything is called. Object arrays are refused after loading.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode  # Python 3 protocol-2 pickles store bytes as _codecs.encode(str, 'latin1')
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a data file")


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed as encode(str, 'latin1'), got {encoding!r}")
    return text.encode("latin1")


def _check_plain(obj: Any, where: str, depth: int = 0) -> None:
    if depth > 10:
        raise ValueError(f"{where}: nesting too deep")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise ValueError(f"{where}: object arrays are not allowed")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where, depth + 1)
            _check_plain(v, where, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, where, depth + 1)
    elif not isinstance(obj, (str, bytes, int, float, bool, type(None), np.dtype)):
        raise ValueError(f"{where}: unexpected {type(obj).__name__} in a data file")


def safe_load_pickle(data: bytes, where: str = "pickle") -> Any:
    """Load a CIFAR-style pickle without executing anything; ValueError naming ``where`` if it is not plain data."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any failure of a refused or malformed pickle is a data error
        raise ValueError(f"{where}: refused to load: {e}") from e
    _check_plain(obj, where)
    return obj


def _cifar_members(root: str) -> dict[str, bytes]:
    """Read the batch files (by base name) from a folder or the original tar.gz."""
    out: dict[str, bytes] = {}
    wanted = {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
              "batches.meta", "train", "test", "meta"}
    if os.path.isfile(root):
        try:
            with tarfile.open(root, "r:*") as tf:
                for m in tf.getmembers():
                    base = os.path.basename(m.name)
                    if m.isfile() and base in wanted:
                        f = tf.extractfile(m)
                        if f is not None:
                            out[base] = f.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ValueError(f"cifar: cannot read archive {root!r}: {e}") from e
    elif os.path.isdir(root):
        for sub in ("", "cifar-10-batches-py", "cifar-100-python"):
            d = os.path.join(root, sub)
            for base in wanted:
                p = os.path.join(d, base)
                if base not in out and os.path.isfile(p):
                    out[base] = Path(p).read_bytes()
    else:
        raise FileNotFoundError(f"cifar: {root!r} does not exist")
    return out


def _get(d: dict, key: str, where: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise ValueError(f"{where}: missing key {key!r} (has {sorted(map(str, d))})")


@functools.lru_cache(maxsize=4)
def _cifar_arrays(root: str, split: str, coarse: bool,
                  signature: tuple = ()) -> tuple[np.ndarray, np.ndarray, list[str] | None, int]:
    members = _cifar_members(root)
    if "data_batch_1" in members or "test_batch" in members:  # CIFAR-10
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key, meta_name, meta_key, k = "labels", "batches.meta", "label_names", 10
    elif "train" in members or "test" in members:  # CIFAR-100
        names = ["train"] if split == "train" else ["test"]
        label_key = "coarse_labels" if coarse else "fine_labels"
        meta_name, meta_key, k = "meta", ("coarse_label_names" if coarse else "fine_label_names"), (20 if coarse
                                                                                                    else 100)
    else:
        raise FileNotFoundError(f"cifar: no CIFAR-10 (data_batch_N, test_batch) or CIFAR-100 (train, test) batches "
                                f"in {root!r}")
    images, labels = [], []
    for n in names:
        if n not in members:
            raise FileNotFoundError(f"cifar: batch {n!r} missing in {root!r}")
        where = f"cifar batch {os.path.join(root, n)!r}"
        d = safe_load_pickle(members[n], where)
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a dict, got {type(d).__name__}")
        data = np.asarray(_get(d, "data", where))
        lab = np.asarray(_get(d, label_key, where), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(lab):
            raise ValueError(f"{where}: data must be uint8 (N, 3072) with N labels, got {data.dtype} {data.shape} "
                             f"and {len(lab)} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
    class_names = None
    if meta_name in members:
        meta = safe_load_pickle(members[meta_name], f"cifar meta {os.path.join(root, meta_name)!r}")
        try:
            raw = _get(meta, meta_key, "cifar meta")
            class_names = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
            k = len(class_names)
        except ValueError:
            class_names = None
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), class_names, k


def _cifar_source(root: str, split: str, options: dict[str, str]) -> ArraySource:
    coarse = options.get("labels", "fine") == "coarse"
    if not os.path.exists(root):
        raise FileNotFoundError(f"cifar: {root!r} does not exist")
    root = os.path.abspath(root)
    images, labels, names, k = _cifar_arrays(root, "train" if split == "train" else "test", coarse,
                                             _signature(root))
    return ArraySource("cifar", images, labels, names, k, split)


# ----------------------------------------------------------------------------------------------------------------


def open_map_source(spec: str, split: str = "train") -> MapSource:
    """The map-style source for ``spec``/``split`` (not for ``wds:``)."""
    p = parse_spec(spec)
    split = _check_split(split)
    if p.kind == "digits":
        return _digits_source(split)
    if p.kind == "folder":
        return _folder_source(p.path, split)
    if p.kind == "mnist":
        return _mnist_source(p.path, split)
    if p.kind == "cifar":
        return _cifar_source(p.path, split, p.options)
    raise ValueError(f"{spec!r} is a stream, not a map-style source")


def dataset_info(spec: str, split: str = "train") -> DatasetInfo:
    """Number of classes, class names and size of ``spec``'s ``split`` (size is None for undeclared streams)."""
    p = parse_spec(spec)
    if p.kind == "wds":
        from .wds import resolve_wds

        return resolve_wds(p, _check_split(split)).info()
    return open_map_source(spec, split).info()


def check_labels(labels: np.ndarray, num_classes: int, where: str, *, require_all: bool = True) -> None:
    """ValueError if ``labels`` is empty, has labels outside [0, num_classes) or (``require_all``) lacks a class."""
    if len(labels) == 0:
        raise ValueError(f"{where}: the data set is empty")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(f"{where}: labels out of range [0, {num_classes}): found {sorted(set(bad.tolist()))[:10]}")
    if require_all:
        present = np.unique(labels)
        if len(present) < num_classes:
            missing = sorted(set(range(num_classes)) - set(present.tolist()))
            raise ValueError(f"{where}: {len(present)} of the {num_classes} declared classes have examples; "
                             f"missing classes {missing[:20]}{' ...' if len(missing) > 20 else ''}")


def validate_dataset(spec: str, split: str = "train", *, num_classes: int | None = None,
                     require_all_classes: bool = True) -> DatasetInfo:
    """Check ``spec``/``split`` before training: not empty, labels in range, no declared class missing.

    ``num_classes`` is the number the model is built for (e.g. a checkpoint's head); by default the source's own.
    For streams, the shards must exist and the first samples are read to check the label range.
    Raises ValueError (or FileNotFoundError) with the data set and the mismatch; returns the DatasetInfo.
    """
    p = parse_spec(spec)
    split = _check_split(split)
    where = f"data {spec!r} split {split!r}"
    if p.kind == "wds":
        from .wds import resolve_wds

        ws = resolve_wds(p, split)
        ws.check_first_shard(num_classes if num_classes is not None else ws.num_classes)
        info = ws.info()
        if num_classes is not None and num_classes < info.num_classes:
            raise ValueError(f"{where}: data declares {info.num_classes} classes but num_classes={num_classes}")
        return info
    src = open_map_source(spec, split)
    k = src.num_classes if num_classes is None else int(num_classes)
    if num_classes is not None and num_classes < src.num_classes:
        raise ValueError(f"{where}: data has {src.num_classes} classes but num_classes={num_classes}")
    check_labels(src.labels, k, where, require_all=require_all_classes)
    return src.info()


def expand_shards(pattern: str, split: str) -> list[str]:
    """Shard paths of a ``wds:`` pattern: brace-expanded (``{split}`` substituted), or ``DIR`` -> ``DIR/SPLIT-*``.

    Only shard *file names* are listed; the samples inside are never enumerated up front.
    """
    import braceexpand

    if os.path.isdir(pattern):
        names = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}[split]
        for n in names:
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


def read_wds_metadata(shard_dir: str) -> dict[str, Any]:
    """``classes.txt`` / ``meta.json`` beside the shards, as {num_classes, class_names, num_examples}."""
    meta: dict[str, Any] = {}
    mj = os.path.join(shard_dir, "meta.json")
    if os.path.isfile(mj):
        try:
            raw = json.loads(Path(mj).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"wds: cannot parse {mj!r}: {e}") from e
        if not isinstance(raw, dict):
            raise ValueError(f"wds: {mj!r} must hold a JSON object")
        meta.update({k: raw[k] for k in ("num_classes", "class_names", "num_examples") if k in raw})
    ct = os.path.join(shard_dir, "classes.txt")
    if os.path.isfile(ct):
        names = [ln.strip() for ln in Path(ct).read_text().splitlines() if ln.strip()]
        if "class_names" in meta and list(meta["class_names"]) != names:
            raise ValueError(f"wds: {ct!r} and meta.json list different class names")
        meta["class_names"] = names
    return meta
