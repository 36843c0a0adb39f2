"""Reading the named data sets from their official files (as :mod:`vitkit.data.named` lists them), once fetched.

- ``cifar10`` / ``cifar100``: the python archive itself (``cifar:`` reader; the pickles go through the restricted
  unpickler, nothing is unpacked).
- ``mnist``: the four ``.gz`` idx files (``mnist:`` reader).
- ``pets``: ``annotations/trainval.txt`` (train) and ``annotations/test.txt`` (test): ``NAME CLASS_ID SPECIES
  BREED_ID`` per line, class ids 1..37; images ``images/NAME.jpg``. Class names: the breed part of the image
  names (``Abyssinian``, ``american_bulldog``), in class-id order.
- ``flowers102``: ``setid.mat`` (``trnid``/``valid``/``tstid``: 1-based image ids of each split) and
  ``imagelabels.mat`` (``labels``: 1..102 per image id), images ``jpg/image_NNNNN.jpg``; read with
  ``scipy.io.loadmat`` (scipy is optional: the error says how to install it).
- ``imagenette`` / ``imagenette-160``: the archive's ``train/`` and ``val/`` class folders (``folder:`` reader).
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .fetch import archive_dir, ensure
from .named import DATASETS
from .spec import ParsedSpec, split_candidates


@dataclass
class Listing:
    """Image files with their labels (what :class:`vitkit.data.sources.FolderSource` is built from)."""

    files: list[str]
    labels: list[int]
    class_names: list[str]
    root: str
    real: list[list[int]] | None = None  # imagenet:PATH?labels=real: each file's ReaL label set


def _pets(folder: Path, split: str) -> Listing:
    ds = DATASETS["pets"]
    images = archive_dir(folder, ds.files[0]) / "images"
    notes = archive_dir(folder, ds.files[1]) / "annotations"
    lists = {"train": "trainval.txt", "test": "test.txt"}
    rows: dict[str, list[tuple[str, int]]] = {}
    for s, fn in lists.items():
        path = notes / fn
        if not path.is_file():
            raise UserError(f"pets: {path} is missing (the annotations archive is incomplete); delete {folder} and "
                            "download again (vitkit data download pets --force)")
        rows[s] = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 4 or not parts[1].isdigit():
                raise UserError(f"pets: {path} line {n}: expected 'NAME CLASS_ID SPECIES BREED_ID', got {line!r}")
            rows[s].append((parts[0], int(parts[1]) - 1))
    names: dict[int, str] = {}
    for image, label in rows["train"] + rows["test"]:
        names.setdefault(label, image.rsplit("_", 1)[0])
    k = DATASETS["pets"].num_classes
    if sorted(names) != list(range(k)):
        raise UserError(f"pets: the lists in {notes} name class ids {sorted(names)[:5]}..., expected 1..{k}")
    want = "train" if split == "train" else "test"
    files = [str(images / f"{image}.jpg") for image, _ in rows[want]]
    labels = [label for _, label in rows[want]]
    return Listing(files, labels, [names[i] for i in range(k)], str(images))


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise UserError(f"flowers102: reading {path.name} needs scipy, an optional dependency: "
                        "pip install 'vitkit[data]' (or pip install scipy)") from e
    try:
        return loadmat(str(path), squeeze_me=True)
    except (ValueError, OSError, TypeError) as e:
        raise UserError(f"flowers102: cannot read {path}: {e}") from e


def _flowers(folder: Path, split: str) -> Listing:
    ds = DATASETS["flowers102"]
    jpg = archive_dir(folder, ds.files[0]) / "jpg"
    labels_all = np.atleast_1d(_loadmat(folder / "imagelabels.mat")["labels"]).astype(np.int64)
    setid = _loadmat(folder / "setid.mat")
    key = {"train": "trnid", "val": "valid", "test": "tstid"}[split]
    ids = np.atleast_1d(setid[key]).astype(np.int64)
    if ids.min() < 1 or ids.max() > len(labels_all):
        raise UserError(f"flowers102: setid.mat {key} holds image ids outside 1..{len(labels_all)}")
    labels = labels_all[ids - 1] - 1
    k = ds.num_classes
    if labels.min() < 0 or labels.max() >= k:
        raise UserError(f"flowers102: imagelabels.mat holds labels outside 1..{k}")
    files = [str(jpg / f"image_{i:05d}.jpg") for i in ids.tolist()]
    return Listing(files, labels.tolist(), [str(i) for i in range(1, k + 1)], str(jpg))


def resolve_named(p: ParsedSpec, split: str) -> tuple[str, Listing | str]:
    """Named data set ``p.kind`` (fetched into the cache first when missing) as ``(split, what to read)``: a
    path spec of the files (``cifar:FILE``, ``mnist:DIR``, ``folder:DIR``) or a :class:`Listing`."""
    name = p.kind
    ds = DATASETS[name]
    if not ds.loadable:
        raise UserError(f"{name!r} is not a data set to train or evaluate on: {ds.note}")
    split = next((s for s in split_candidates(split) if s in ds.splits), None) or split
    if split not in ds.splits:
        raise UserError(f"{name} has splits {', '.join(ds.splits)}, not {split!r}")
    folder = ensure(name)
    query = ("?" + urllib.parse.urlencode(p.options)) if p.options else ""
    if name in ("cifar10", "cifar100"):
        return split, f"cifar:{os.fspath(folder / ds.files[0].name)}{query}"
    if name == "mnist":
        return split, f"mnist:{os.fspath(folder)}"
    if name == "pets":
        return split, _pets(folder, split)
    if name == "flowers102":
        return split, _flowers(folder, split)
    top = archive_dir(folder, ds.files[0])
    return split, f"folder:{os.fspath(top / top.name)}"  # imagenette: the archive's own top folder
