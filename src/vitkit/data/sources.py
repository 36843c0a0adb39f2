"""Map-style data sources (random access by index): digits, image folders, MNIST and CIFAR files.

Spec grammar and split names: :mod:`vitkit.data.spec`; streamed shards: :mod:`vitkit.data.wds`.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .mapsource import MapSource
from .named import LOADABLE
from .pickles import RestrictedUnpickler, safe_load_pickle
from .preprocess import IMAGE_SUFFIXES
from .spec import ParsedSpec, canonical_split, parse_spec, split_candidates

__all__ = ["ArraySource", "DecodedSource", "FolderSource", "MapSource", "ParsedSpec", "RestrictedUnpickler",
           "open_map_source", "parse_spec", "safe_load_pickle"]

DIGITS_SPLIT_SEED = 20201022  # the paper's arXiv date; any fixed value works, this one is documented
DIGITS_TEST_FRACTION = 0.2


# ----------------------------------------------------------------------------------------------------------------
# Map-style sources: everything the loader needs is a length, labels and a way to fetch sample i.


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
        raise UserError("digits has splits 'train' and 'test' (no 'val')")
    idx = train_idx if split == "train" else test_idx
    return ArraySource("digits", images[idx], labels[idx], [str(i) for i in range(10)], 10, split)


# -- folder ---------------------------------------------------------------------------------------------------------


def _class_dirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


# The one class of a folder of images without class sub-folders (a name no folder on any system has).
UNLABELLED = "<unlabelled>"


def _images_in(path: str) -> list[str]:
    return sorted(os.path.join(path, e.name) for e in os.scandir(path)
                  if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES))


def _split_dir(root: str, split: str) -> str | None:
    for n in split_candidates(split):
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
        loose = _images_in(split_dir)
        if loose:  # images without class sub-folders: unlabelled (masked patch prediction needs no labels)
            return FolderSource(loose, [0] * len(loose), [UNLABELLED], split, split_dir)
        raise UserError(f"folder data set {root!r}: no class sub-folders found (expected ImageFolder layout "
                         f"ROOT/[train/]CLASS/IMAGE)")
    classes = _class_dirs(split_dir)
    extra = sorted(set(classes) - set(train_classes))
    if extra:
        raise UserError(f"folder data set {root!r}: split {split!r} has classes that are not in train: {extra}")
    index = {c: i for i, c in enumerate(train_classes)}
    files: list[str] = []
    labels: list[int] = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(os.path.join(split_dir, c)):
            dirnames.sort()
            for fn in sorted(filenames):
                if not fn.startswith(".") and fn.lower().endswith(IMAGE_SUFFIXES):
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
        raise UserError(f"mnist: cannot read {path!r}: {e}") from e
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"mnist: {path!r} is too short for an idx header ({len(data)} bytes)")
    got = struct.unpack(">I", data[:4])[0]
    if got != magic:
        raise UserError(f"mnist: {path!r} has magic {got}, expected {magic}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    n = int(np.prod(dims))
    if len(data) - header != n:
        raise UserError(f"mnist: {path!r} declares shape {dims} ({n} bytes) but holds {len(data) - header} bytes")
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
        raise UserError(f"mnist: {img_path!r} has {len(images)} images but {lbl_path!r} has {len(labels)} labels")
    return images, labels


def _mnist_source(root: str, split: str) -> ArraySource:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"mnist: {root!r} is not a directory")
    root = os.path.abspath(root)
    images, labels = _mnist_arrays(root, "train" if split == "train" else "test", _signature(root))
    return ArraySource("mnist", images, labels, [str(i) for i in range(10)], 10, split)



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
            raise UserError(f"cifar: cannot read archive {root!r}: {e}") from e
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
    raise UserError(f"{where}: missing key {key!r} (has {sorted(map(str, d))})")


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
            raise UserError(f"{where}: expected a dict, got {type(d).__name__}")
        data = np.asarray(_get(d, "data", where))
        lab = np.asarray(_get(d, label_key, where), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(lab):
            raise UserError(f"{where}: data must be uint8 (N, 3072) with N labels, got {data.dtype} {data.shape} "
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


def open_map_source(spec: str | Any, split: str = "train") -> MapSource:
    """The map-style source for ``spec``/``split`` (not for ``wds:``); ``spec`` may be a data object."""
    p = parse_spec(spec)
    split = canonical_split(split)
    if p.kind in ("torch", "hf"):
        from .objects import load_hf_path, open_object_source

        if p.obj is not None:
            return open_object_source(p.obj, split)
        return open_object_source(load_hf_path(p.path), split, p.options, name=f"'hf:{p.path}'")
    if not p.path and p.kind in LOADABLE:  # a named data set (``mnist`` bare; ``mnist:PATH`` is the user's files)
        from .named_sources import resolve_named

        split, what = resolve_named(p, split)
        src = (open_map_source(what, split) if isinstance(what, str)
               else FolderSource(what.files, what.labels, what.class_names, split, what.root))
        src.kind = p.kind
        return src
    if p.kind == "imagenet":
        from .imagenet import imagenet_listing

        what = imagenet_listing(p.path, split, p.options)
        src = FolderSource(what.files, what.labels, what.class_names, "train" if split == "train" else "val",
                           what.root)
        src.kind, src.real = "imagenet", what.real  # type: ignore[attr-defined]
        return src
    if p.kind == "digits":
        return _digits_source(split)
    if p.kind == "folder":
        return _folder_source(p.path, split)
    if p.kind == "mnist":
        return _mnist_source(p.path, split)
    if p.kind == "cifar":
        return _cifar_source(p.path, split, p.options)
    raise UserError(f"{spec!r} is a stream, not a map-style source")
