"""The user's own data as sources: a ``torch.utils.data.Dataset``, a Hugging Face ``datasets`` object, ``hf:PATH``.

Wherever vitkit takes a data spec string in Python (``dataset_info``, ``build_loader``, ``validate_dataset``,
``vitkit.train.train(cfg, train_data=..., test_data=...)``, ``vitkit.evaluate.open_loader``), it also takes:

* a **map-style** ``torch.utils.data.Dataset`` (``len`` and indexing) whose items are ``(image, label)``:

  - image: a PIL image (any mode: converted as a decoded file is, e.g. alpha composited on white, and counted in
    the loader's ``converted`` stats); a uint8 numpy array, (H, W) or (H, W, C) with C = 1, 3 or 4; or a torch
    tensor (C, H, W) with C = 1 or 3 (or (H, W)). **Tensor values**: uint8 tensors are 0..255; floating-point
    tensors are torchvision's ``ToTensor()`` convention, [0, 1], and are scaled by 255 and rounded to uint8. A
    float tensor with values outside [0, 1] (a ``Normalize`` already applied) is refused: vitkit normalises with
    the model's mean and std itself. Float arrays, other dtypes and channel counts are refused too (their value
    range would be a guess).
  - label: an int (Python, numpy or a 0-d integer tensor).
  - labels come from the ``targets`` attribute (torchvision's convention) when it holds one per item, otherwise
    from one pass over the items before training (which reads the images too). Class names come from
    ``classes`` (torchvision's convention) when present; without it the classes are 0 .. max(label).
  - an item whose reading raises ``OSError`` (a corrupt or missing image file) is a bad sample, handled as for
    the built-in sources (counted; replaced by the next one when training, dropped in evaluation).

* a Hugging Face ``datasets.Dataset`` (or a ``DatasetDict``, whose splits are the splits; a streaming
  ``IterableDataset`` is read as a shard stream, :mod:`vitkit.data.hfstream`) with one image column
  (a ``datasets.Image`` feature) and one ``ClassLabel`` column; class names come from the ``ClassLabel``. The
  images are read as their stored encoded bytes (``Image(decode=False)``), so they take the very path image files
  take: the same decoders (TensorFlow's for the official evaluation), the same bad-image accounting.
* the string ``hf:PATH``: a folder written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``), a ``.parquet``
  file, or a folder of parquet files whose names tell the split (``train-00000-of-00001.parquet``,
  ``test.parquet``, ...: the ``datasets`` library's own split patterns). ``?image=COL&label=COL`` pick the columns
  when there are several candidates.

All of them but a streaming ``IterableDataset`` are map-style sources: the loader's determinism contract (seeded
order, exact mid-epoch resume) holds unchanged. An object that is a single split (a torch ``Dataset``, a
``datasets.Dataset``) serves whichever split is asked for; it is never also its own test set (the trainer
evaluates only on ``test_data`` then). ``datasets`` is the optional extra ``vitkit[hf]``.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset

from ..errors import UserError
from .mapsource import MapSource
from .spec import describe_data, has_splits, hf_type, split_candidates

log = logging.getLogger("vitkit.data")

HF_EXTRA = "hf"
_IMAGE_COLUMNS = ("image", "img", "pixel_values")  # preferred names when several image columns exist
_LABEL_COLUMNS = ("label", "labels", "fine_label")


def import_datasets() -> Any:
    """The ``datasets`` package, or a one-line error naming the extra to install."""
    try:
        import datasets
    except ModuleNotFoundError as e:
        if e.name != "datasets":
            raise
        raise ModuleNotFoundError("Hugging Face data (hf:PATH, datasets objects) needs the optional package "
                                  f"'datasets': pip install 'vitkit[{HF_EXTRA}]'", name="datasets") from None
    return datasets


# -- torch Datasets ------------------------------------------------------------------------------------------------


def item_image(image: Any, where: str) -> np.ndarray | Image.Image:
    """An item's image as the pipeline takes it: a PIL image (converted later with counting) or a uint8 HW / HWC
    array (C = 1 or 3). UserError for anything whose value range or layout would be a guess."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3):
            t = t.permute(1, 2, 0)
        elif t.dim() != 2:
            raise UserError(f"{where}: an image tensor must be (C, H, W) with C = 1 or 3, or (H, W); got shape "
                            f"{tuple(image.shape)}")
        if t.dtype == torch.uint8:
            a = t.numpy()
        elif t.is_floating_point():
            if t.numel() and (float(t.min()) < 0.0 or float(t.max()) > 1.0):
                raise UserError(f"{where}: a floating-point image tensor must hold values in [0, 1] (torchvision's "
                                f"ToTensor); this one spans [{float(t.min()):.3g}, {float(t.max()):.3g}]. Drop any "
                                "Normalize from the transform: vitkit normalises with the model's mean/std itself")
            a = torch.round(t.float() * 255.0).to(torch.uint8).numpy()
        else:
            raise UserError(f"{where}: image tensors must be uint8 (0..255) or floating point ([0, 1]); got "
                            f"{t.dtype}")
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UserError(f"{where}: image arrays must be uint8 (H, W[, C]) with values 0..255; got {image.dtype} "
                            "(pass a float image as a (C, H, W) tensor in [0, 1])")
        a = image
        if a.ndim == 3 and a.shape[2] == 4:
            return Image.fromarray(np.ascontiguousarray(a), "RGBA")  # alpha composited on white, as for files
        if not (a.ndim == 2 or a.ndim == 3 and a.shape[2] in (1, 3)):
            hint = " (that looks like (C, H, W): pass it as a tensor, or transpose it)" if a.ndim == 3 and \
                a.shape[0] in (1, 3) else ""
            raise UserError(f"{where}: an image array must be (H, W) or (H, W, C) with C = 1, 3 or 4; got shape "
                            f"{a.shape}{hint}")
    else:
        raise UserError(f"{where}: the image must be a PIL image, a uint8 numpy array or a torch tensor; got "
                        f"{type(image).__name__}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if min(a.shape[:2]) == 0:
        raise UserError(f"{where}: zero-sized image {a.shape}")
    return np.ascontiguousarray(a)


def item_label(label: Any, where: str) -> int:
    if isinstance(label, torch.Tensor) and label.dim() == 0 and not label.is_floating_point():
        return int(label)
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    raise UserError(f"{where}: the label must be an integer class index; got {type(label).__name__} {label!r:.60}")


def _split_item(item: Any, where: str) -> tuple[Any, Any]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise UserError(f"{where}: items must be (image, label) pairs; got {type(item).__name__}"
                        + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else ""))
    return item[0], item[1]


_LABELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # dataset -> labels read by one pass


def _torch_labels(ds: Any, name: str) -> np.ndarray:
    """``targets`` when it has one entry per item, else one pass over the items (cached per dataset object).
    An item that cannot be read (OSError) gets label -1: it is a bad sample, skipped when it comes up."""
    n = len(ds)
    targets = getattr(ds, "targets", None)
    if targets is not None:
        t = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)
        if t.shape == (n,) and np.issubdtype(t.dtype, np.integer):
            return t.astype(np.int64)
        log.warning("%s: its 'targets' attribute is not one integer per item (shape %s); reading the labels from "
                    "the items", name, t.shape)
    try:
        cached = _LABELS.get(ds)
    except TypeError:  # unhashable dataset: no cache
        cached = None
    if cached is not None and len(cached) == n:
        return cached
    from tqdm.auto import tqdm

    labels = np.empty(n, dtype=np.int64)
    for i in tqdm(range(n), desc="reading labels", unit="item", disable=None, leave=False):
        try:
            item = ds[i]
        except OSError as e:
            log.warning("%s: item %d cannot be read (%s); it will be skipped", name, i, e)
            labels[i] = -1
            continue
        labels[i] = item_label(_split_item(item, f"{name} item {i}")[1], f"{name} item {i}")
    try:
        _LABELS[ds] = labels
    except TypeError:
        pass
    return labels


class TorchSource(MapSource):
    """A map-style ``torch.utils.data.Dataset`` of ``(image, label)`` items (see the module docstring)."""

    kind = "torch"
    in_memory = False

    def __init__(self, ds: Any, split: str):
        if isinstance(ds, IterableDataset) or not hasattr(ds, "__len__"):
            raise UserError(f"{describe_data(ds)}: vitkit reads map-style Datasets (len() and indexing), which it can "
                            "shuffle, split over processes and resume deterministically; this one is iterable only")
        self.ds, self.where = ds, describe_data(ds)
        if len(ds) == 0:
            raise UserError(f"{self.where}: the data set is empty")
        labels = _torch_labels(ds, self.where)
        names = getattr(ds, "classes", None)
        if names is not None:
            names = [str(c) for c in names]
        good = labels[labels >= 0]
        k = len(names) if names else int(good.max()) + 1 if len(good) else 0
        super().__init__(labels, names, k, split)
        self.channels = 3
        i0 = int(np.flatnonzero(labels >= 0)[0]) if len(good) else None
        if i0 is not None:  # the first item shows the layout: a wrong type fails now, not in a loader worker
            first = self.sample(i0)[0]
            self.channels = 1 if isinstance(first, np.ndarray) and first.ndim == 2 or \
                isinstance(first, Image.Image) and first.mode in ("L", "1") else 3

    def sample(self, i: int) -> tuple[np.ndarray | Image.Image, int]:
        where = f"{self.where} item {i}"
        image, label = _split_item(self.ds[i], where)
        return item_image(image, where), item_label(label, where)

    def load(self, i: int) -> np.ndarray | Image.Image:
        return self.sample(i)[0]

    def known_labels(self) -> np.ndarray:
        return self.labels[self.labels >= 0]

    def name(self, i: int) -> str:
        return f"{self.where} item {i}"


# -- Hugging Face datasets ---------------------------------------------------------------------------------------


def _pick(candidates: list[str], preferred: tuple[str, ...], chosen: str | None, what: str, where: str,
          all_columns: dict[str, Any]) -> str:
    if chosen is not None:
        if chosen not in candidates:
            raise UserError(f"{where}: {what} column {chosen!r} is not one (candidates: {candidates or 'none'}; "
                            f"columns: {', '.join(f'{c}: {type(f).__name__}' for c, f in all_columns.items())})")
        return chosen
    if len(candidates) == 1:
        return candidates[0]
    for p in preferred:
        if p in candidates:
            return p
    kind = {"image": "a datasets.Image feature", "label": "a ClassLabel feature"}[what]
    cols = ", ".join(f"{c}: {type(f).__name__}" for c, f in all_columns.items())
    if not candidates:
        fix = (" (cast it: ds.cast_column('label', ClassLabel(names=[...])))" if what == "label" else
               " (cast it: ds.cast_column('image', datasets.Image()))")
        raise UserError(f"{where}: no {what} column ({kind}) among {cols}{fix}")
    raise UserError(f"{where}: several {what} columns ({', '.join(candidates)}); choose one with "
                    f"ds.select_columns([...]) or the spec option '?{what}=COL'")


def hf_columns(feats: Any, where: str, image: str | None, label: str | None) -> tuple[str, str, list[str]]:
    """(image column, label column, class names) of ``datasets`` features: the one ``Image`` and the one
    ``ClassLabel`` column (or the preferred names among several, or the ones chosen)."""
    datasets = import_datasets()
    images = [c for c, f in feats.items() if isinstance(f, datasets.Image)]
    labels = [c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)]
    image_col = _pick(images, _IMAGE_COLUMNS, image, "image", where, feats)
    label_col = _pick(labels, _LABEL_COLUMNS, label, "label", where, feats)
    return image_col, label_col, [str(n) for n in feats[label_col].names]


def image_bytes(cell: Any) -> bytes:
    """The encoded bytes of an ``Image(decode=False)`` cell (stored bytes, or the local file it points to);
    OSError when there are none."""
    if cell is None:
        raise OSError("no image in this row")
    if cell.get("bytes") is not None:
        return cell["bytes"]
    path = cell.get("path")
    if not path:
        raise OSError("the image cell holds neither bytes nor a path")
    with open(path, "rb") as f:  # an Image feature that stores paths to local files
        return f.read()


class HFSource(MapSource):
    """A ``datasets.Dataset`` with an image column and a ClassLabel column (see the module docstring)."""

    kind = "hf"
    in_memory = False

    def __init__(self, ds: Any, split: str, where: str, image: str | None = None, label: str | None = None):
        datasets = import_datasets()
        self.image_col, self.label_col, names = hf_columns(ds.features, where, image, label)
        # the stored bytes, decoded by vitkit's own pipeline (same path as image files)
        self.ds = ds.select_columns([self.image_col, self.label_col]).cast_column(
            self.image_col, datasets.Image(decode=False))
        y = np.asarray(ds.with_format("numpy", columns=[self.label_col])[self.label_col], dtype=np.int64)
        super().__init__(y, names, len(names), split)
        self.where = where

    def load(self, i: int) -> bytes:
        return image_bytes(self.ds[int(i)][self.image_col])

    def name(self, i: int) -> str:
        return f"{self.where}[{self.split}][{i}]"


def select_split(obj: Any, split: str, where: str) -> Any:
    """The split of a DatasetDict (``test`` and ``val`` stand in for each other, as for every source)."""
    if not has_splits(obj):
        return obj
    for s in split_candidates(split):
        for name in (s, {"val": "validation"}.get(s, s)):
            if name in obj:
                return obj[name]
    raise FileNotFoundError(f"{where} has no {split!r} split (it has {', '.join(obj)})")


def load_hf_path(path: str) -> Any:
    """``hf:PATH``: a ``save_to_disk`` folder (Dataset or DatasetDict), a parquet file, or a folder of parquet files
    (split by name as the ``datasets`` library splits them): read without writing any cache."""
    datasets = import_datasets()
    if not os.path.exists(path):
        raise FileNotFoundError(f"hf: {path!r} does not exist")
    if os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in
                                   ("dataset_dict.json", "dataset_info.json", "state.json")):
        return datasets.load_from_disk(path)
    if os.path.isfile(path):
        if not path.endswith(".parquet"):
            raise UserError(f"hf: {path!r} is neither a save_to_disk folder nor a .parquet file")
        return _parquet_dataset([path])
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        patterns = get_data_patterns(path)
        files = DataFilesDict.from_patterns(patterns, base_path=path, allowed_extensions=[".parquet"])
    except (EmptyDatasetError, FileNotFoundError):
        files = {}
    files = {str(k): list(v) for k, v in files.items() if len(v)}
    if not files:
        raise UserError(f"hf: {path!r} holds neither a save_to_disk data set (dataset_dict.json / state.json) nor "
                        "parquet files")
    if len(files) == 1:
        return _parquet_dataset(next(iter(files.values())))
    return datasets.DatasetDict({s: _parquet_dataset(f) for s, f in files.items()})


def _parquet_dataset(files: list[str]) -> Any:
    """A Dataset over parquet files, in memory-mapped Arrow and without the ``datasets`` cache (``load_dataset``
    would convert them into ~/.cache); features from the schema's ``huggingface`` metadata, as ``to_parquet``
    writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    datasets = import_datasets()
    from datasets.table import InMemoryTable

    try:
        table = pa.concat_tables([pq.read_table(f) for f in sorted(files)])
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"hf: cannot read parquet {files[0]!r}: {e}") from None
    features = datasets.Features.from_arrow_schema(table.schema)
    return datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=features))


def open_object_source(obj: Any, split: str, options: dict[str, str] | None = None, name: str | None = None
                       ) -> MapSource:
    """The map-style source of a data object (``obj`` from ``hf:PATH`` with its ``options``)."""
    options = options or {}
    where = name or describe_data(obj)
    kind = hf_type(obj)
    if kind is None:
        return TorchSource(obj, split)
    unknown = sorted(set(options) - {"image", "label"})
    if unknown:
        raise UserError(f"{where}: unknown option(s) {', '.join(unknown)}; valid: image=COL, label=COL")
    ds = select_split(obj, split, where)
    assert hf_type(ds) == "Dataset", "a streaming IterableDataset is a stream (vitkit.data.hfstream)"
    return HFSource(ds, split, where, options.get("image"), options.get("label"))
