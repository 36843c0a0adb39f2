"""``imagenet:PATH``: the standard ILSVRC-2012 extraction, read as it is (nothing re-arranged).

- ``PATH/train/<wnid>/*.JPEG``: the training images in their class folders.
- ``PATH/val/``: either ``<wnid>/`` class folders (re-arranged by a script), or the flat
  ``ILSVRC2012_val_00000001.JPEG`` ... files as the archive has them, labelled by
  - ``LOC_val_solution.csv`` (Kaggle's copy: ``ImageId,PredictionString``, the wnid first in the string), in PATH
    or up to three folders above it (Kaggle keeps it at the top, the images in ``ILSVRC/Data/CLS-LOC/``), or
  - the devkit: ``ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt`` (the ILSVRC2012_ID of each
    image, in file order) with ``meta.mat`` (ID -> wnid; read with scipy, optional), as a folder in PATH or as
    ``ILSVRC2012_devkit_t12.tar.gz`` in PATH (read in place).
- Classes: the WordNet ids, sorted (the standard label order of ImageNet models and of ReaL), from ``train/``,
  else from ``val/``'s folders, else from the labels file.
- ``?labels=real``: the val images' ReaL label sets ("Are we done with ImageNet?", Beyer et al. 2020):
  ``real.json`` in PATH, else the named data set ``imagenet-real`` (fetched into ``$VITKIT_DATA``). Entry ``i`` is
  ``ILSVRC2012_val_{i+1:08d}``'s set of label indices. The source keeps its original labels (top-1, top-5 as
  usual) and gains ``real``: :func:`vitkit.evaluate.core.evaluate_accuracy` scores ReaL top-1 from it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tarfile
from pathlib import Path

from ..errors import UserError
from .named_sources import Listing
from .preprocess import IMAGE_SUFFIXES

_VAL_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.", re.IGNORECASE)
_DEVKIT = "ILSVRC2012_devkit_t12"
_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"


def _dirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
                  and not p.name.startswith("."))


def _csv_labels(root: Path) -> dict[str, str] | None:
    """{image id: wnid} from LOC_val_solution.csv in ``root`` or up to three folders above; None if there is none."""
    for folder in [root, *list(root.resolve().parents)[:3]]:
        path = folder / "LOC_val_solution.csv"
        if path.is_file():
            out = {}
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        out[row["ImageId"]] = row["PredictionString"].split()[0]
                    except (KeyError, IndexError, AttributeError) as e:
                        raise UserError(f"{path}: expected columns ImageId,PredictionString (wnid first), got "
                                        f"{row}") from e
            return out
    return None


def _devkit_files(root: Path) -> tuple[bytes, bytes] | None:
    """The devkit's ground truth and meta.mat, from the extracted folder or the .tar.gz in ``root``."""
    folder = root / _DEVKIT
    if (folder / _GROUND_TRUTH).is_file():
        return (folder / _GROUND_TRUTH).read_bytes(), (folder / "data" / "meta.mat").read_bytes()
    archive = root / f"{_DEVKIT}.tar.gz"
    if archive.is_file():
        try:
            with tarfile.open(archive, "r:*") as tf:
                def member(name: str) -> bytes:
                    f = tf.extractfile(f"{_DEVKIT}/{name}")
                    if f is None:
                        raise KeyError(name)
                    return f.read()
                return member(_GROUND_TRUTH), member("data/meta.mat")
        except (tarfile.TarError, KeyError, OSError, EOFError) as e:
            raise UserError(f"{archive}: not the ILSVRC-2012 devkit ({e})") from e
    return None


def _devkit_labels(root: Path, files: list[Path]) -> dict[str, str] | None:
    found = _devkit_files(root)
    if found is None:
        return None
    truth, meta_bytes = found
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise UserError("imagenet: the devkit's meta.mat needs scipy, an optional dependency: pip install "
                        "'vitkit[data]' (or pip install scipy); or put LOC_val_solution.csv beside the images") from e
    synsets = loadmat(io.BytesIO(meta_bytes), squeeze_me=True)["synsets"]
    wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    ids = [int(x) for x in truth.decode().split()]
    out = {}
    for p in files:
        m = _VAL_RE.match(p.name)
        if m and int(m.group(1)) <= len(ids):
            out[p.name.split(".")[0]] = wnid[ids[int(m.group(1)) - 1]]
    return out


def _classes(root: Path, val_labels: dict[str, str] | None) -> list[str]:
    for sub in ("train", "val"):
        if (root / sub).is_dir() and _dirs(root / sub):
            return _dirs(root / sub)
    if val_labels:
        return sorted(set(val_labels.values()))
    raise UserError(f"imagenet:{root}: no train/ class folders, and no labels for val/ (LOC_val_solution.csv or "
                    f"the {_DEVKIT} devkit)")


def _real_sets(root: Path) -> list[list[int]]:
    path = root / "real.json"
    if not path.is_file():
        from .fetch import ensure

        path = ensure("imagenet-real") / "real.json"
    try:
        sets = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not the ReaL labels ({e})") from e
    if not isinstance(sets, list) or not all(isinstance(s, list) for s in sets):
        raise UserError(f"{path}: expected a list of label lists (one per validation image)")
    return sets


def imagenet_listing(root: str, split: str, options: dict[str, str]) -> Listing:
    """The files and labels of ``split`` of the extraction at ``root`` (see the module docstring)."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"imagenet: {root!r} is not a directory")
    labels_opt = options.get("labels", "original")
    if labels_opt not in ("original", "real"):
        raise UserError(f"imagenet:{root}?labels={labels_opt}: labels are 'original' or 'real' (the ReaL sets)")
    sub = base / ("train" if split == "train" else "val")
    if not sub.is_dir():
        raise FileNotFoundError(f"imagenet: {sub} does not exist (expected {root}/train and {root}/val)")
    folders = _dirs(sub)
    if folders:
        classes = _classes(base, None)
        index = {c: i for i, c in enumerate(classes)}
        extra = sorted(set(folders) - set(index))
        if extra:
            raise UserError(f"imagenet: {sub} has class folders not in train/: {extra[:5]}")
        files = [p for c in folders for p in _images(sub / c)]
        labels = [index[p.parent.name] for p in files]
    else:
        files = _images(sub)
        val = _csv_labels(base)
        val = val if val is not None else _devkit_labels(base, files)
        if val is None:
            raise UserError(f"imagenet: {sub} holds flat files and no labels for them: put LOC_val_solution.csv in "
                            f"{root} (or above it) or the {_DEVKIT} devkit (folder or .tar.gz) in {root}")
        classes = _classes(base, val)
        index = {c: i for i, c in enumerate(classes)}
        missing = [p.name for p in files if p.name.split(".")[0] not in val]
        if missing:
            raise UserError(f"imagenet: no label for {len(missing)} images of {sub}, e.g. {missing[0]}")
        unknown = sorted({val[p.name.split('.')[0]] for p in files} - set(index))
        if unknown:
            raise UserError(f"imagenet: val labels name classes that train/ does not have: {unknown[:5]}")
        labels = [index[val[p.name.split(".")[0]]] for p in files]
    real = None
    if labels_opt == "real":
        if split == "train":
            raise UserError("imagenet:...?labels=real: the ReaL labels are for the val split only")
        sets = _real_sets(base)
        real = []
        for p in files:
            m = _VAL_RE.match(p.name)
            if not m or int(m.group(1)) > len(sets):
                raise UserError(f"imagenet: {p.name} is not one of the {len(sets)} validation images ReaL labels")
            s = [int(x) for x in sets[int(m.group(1)) - 1]]
            if any(x < 0 or x >= len(classes) for x in s):
                raise UserError(f"ReaL labels of {p.name}: {s} lie outside the {len(classes)} classes")
            real.append(s)
    return Listing([str(p) for p in files], labels, classes, str(sub), real)
