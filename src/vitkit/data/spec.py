"""Data specs (``KIND[:PATH][?key=value&...]``) and split names: the vocabulary every source shares.

Spec grammar: ``KIND[:PATH][?key=value&key=value]``, or ``NAME[?key=value]`` for a named data set.

* ``cifar10``, ``cifar100``, ``mnist``, ``pets``, ``flowers102``, ``imagenette``, ``imagenette-160`` - the named
  data sets (:mod:`vitkit.data.named`): downloaded once into ``$VITKIT_DATA/NAME`` from their official URLs (or
  ``$VITKIT_DATA_URL``), then read from there (:mod:`vitkit.data.fetch`). ``vitkit data list`` shows them.
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
* ``hf:PATH`` - Hugging Face ``datasets`` data: a ``save_to_disk`` folder or parquet files (``?image=COL&label=COL``
  pick the columns); see :mod:`vitkit.data.objects`, which also reads the user's own Dataset objects passed in
  place of a spec.
* ``imagenet:PATH`` - the standard ILSVRC-2012 extraction as it is (``train/`` class folders; ``val/`` as class folders
  or the flat files with LOC_val_solution.csv or the devkit's ground truth); ``?labels=real`` adds the ReaL label
  sets for scoring ReaL top-1 (:mod:`vitkit.data.imagenet`).
* ``wds:PATTERN`` - WebDataset shards, streamed (see :mod:`vitkit.data.wds`). PATTERN is a brace pattern
  (``train-{000000..000004}.tar.gz``), may contain ``{split}``, or is a directory holding ``SPLIT-*.tar[.gz]``.
  Query keys: ``num_classes``, ``num_examples`` (``N``, or per split ``train:50000,test:10000``), ``classes``
  (comma-separated names). Example for a folder of CIFAR-10 shards:
  ``wds:shared/data/cifar10?num_classes=10&num_examples=train:50000,test:10000``.
  Otherwise metadata comes from ``classes.txt`` (one class name per line) or ``meta.json``
  (``{"num_classes": K, "class_names": [...], "num_examples": {"train": N, "test": M}}``) next to the shards.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import UserError, did_you_mean
from .named import LOADABLE

if TYPE_CHECKING:  # datasets is an optional extra: named for the type checker only
    import datasets
    import torch.utils.data

# What the data entry points take: a spec string, or the user's own data object (vitkit.data.objects).
DataSource: TypeAlias = "str | torch.utils.data.Dataset | datasets.Dataset | datasets.DatasetDict"

KINDS = ("digits", "folder", "mnist", "cifar", "imagenet", "hf", "wds")
# The split names, decided here only: "validation" is another name for "val". Sources without a val split
# fall back to test (and the other way round): split_candidates() gives the order to look in.
SPLITS = ("train", "test", "val")
SPLIT_ALIASES = {"validation": "val"}
SPLIT_NAMES = SPLITS + tuple(SPLIT_ALIASES)


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
    obj: Any = None  # the user's data object (kind "torch" or "hf"), when one was passed instead of a string


def parse_spec(spec: str | Any) -> ParsedSpec:
    """Split ``KIND:PATH?k=v`` into its parts; unknown kinds are a ValueError listing the valid ones. A data object
    (:mod:`vitkit.data.objects`) gives kind ``torch`` or ``hf`` and ``obj``."""
    if is_data_object(spec):
        return ParsedSpec(object_kind(spec), "", {}, spec)
    if isinstance(spec, str) and spec.startswith(OBJECT_RECORD[0]):
        raise UserError(f"data {spec} is the record of a Python data object passed to vitkit.train.train(); such a "
                        "run is resumed from Python, with the object passed again (train_data=, test_data=)")
    if not isinstance(spec, str) or not spec:
        raise UserError(f"data must be a non-empty spec string like 'digits' or 'folder:PATH', a "
                        f"torch.utils.data.Dataset or a datasets.Dataset; got {type(spec).__name__} {spec!r:.80}")
    kind, colon, rest = spec.partition(":")
    kind = kind.strip().lower()
    name = kind.partition("?")[0]
    if name in LOADABLE and not (colon and kind in KINDS):  # a named data set: NAME[?key=value] (mnist: also a KIND)
        if colon:
            raise UserError(f"data spec {spec!r}: {name} is a named data set and takes no path (it lives in "
                            f"$VITKIT_DATA/{name}); for files of your own write cifar:PATH, mnist:PATH or folder:PATH")
        kind, rest = name, spec.strip()[len(name):]
    elif kind not in KINDS:
        near = did_you_mean(kind, KINDS if colon else KINDS + LOADABLE)  # with a path: one of the path kinds
        raise UserError(f"unknown data source {kind!r} in spec {spec!r}{near}; "
                        f"valid: {', '.join(KINDS)}, or a named data set: {', '.join(LOADABLE)}")
    options: dict[str, str] = {}
    if "?" in rest:
        rest, _, query = rest.rpartition("?")
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            options[key] = value
    if kind not in ("digits",) + LOADABLE and not rest:
        raise UserError(f"data spec {spec!r} needs a path: '{kind}:PATH'")
    return ParsedSpec(kind, os.path.expanduser(rest), options)


def is_data_spec(text: str) -> bool:
    """Whether ``text`` names a data spec (``digits``, ``KIND:PATH``, ``KIND?key=value``) rather than a file."""
    return re.split(r"[:?]", text, maxsplit=1)[0] in KINDS



# -- the user's data objects, passed in place of a spec (read by vitkit.data.objects) ---------------------------


def hf_type(obj: Any) -> str | None:
    """``"Dataset"``, ``"DatasetDict"``, ``"IterableDataset"``, ``"IterableDatasetDict"`` for ``datasets`` objects
    (told by their classes' module, so that ``datasets`` need not be imported to recognise them), else None."""
    for cls in type(obj).__mro__:
        if cls.__module__.split(".")[0] == "datasets" and cls.__name__ in (
                "Dataset", "DatasetDict", "IterableDataset", "IterableDatasetDict"):
            return cls.__name__
    return None


def is_data_object(obj: Any) -> bool:
    """Whether ``obj`` is a data object vitkit reads (a torch ``Dataset`` or a ``datasets`` object)."""
    from torch.utils.data import Dataset

    return not isinstance(obj, str) and (isinstance(obj, Dataset) or hf_type(obj) is not None)


def object_kind(obj: Any) -> str:
    """``hf`` for ``datasets`` objects, ``torch`` for torch Datasets."""
    return "hf" if hf_type(obj) is not None else "torch"


def has_splits(obj: Any) -> bool:
    """Whether a data object holds named splits (a ``DatasetDict``); any other object is one split."""
    return hf_type(obj) in ("DatasetDict", "IterableDatasetDict")


OBJECT_RECORD = "<{}>"  # how config.yaml records a data object (not a spec: reading it back says so)


def record_of(obj: Any) -> str:
    """The config record of a data object: ``<torch Dataset MyData (1438 items)>``."""
    return OBJECT_RECORD.format(describe_data(obj))


def describe_data(spec: str | Any) -> str:
    """The data's name in messages: the spec string quoted, or a one-line description of a data object
    (``torch Dataset MyData (1438 items)``)."""
    if not is_data_object(spec):
        return repr(spec)
    kind = hf_type(spec)
    try:
        n = f" (splits {', '.join(spec)})" if has_splits(spec) else f" ({len(spec)} items)"
    except TypeError:
        n = ""
    return f"datasets.{kind}{n}" if kind else f"torch Dataset {type(spec).__name__}{n}"


def canonical_split(split: str) -> str:
    """``split`` in its canonical spelling (``validation`` -> ``val``); ValueError for an unknown name."""
    if split not in SPLIT_NAMES:
        raise UserError(f"unknown split {split!r}{did_you_mean(split, SPLIT_NAMES)}; valid: {', '.join(SPLITS)} "
                        f"({', '.join(SPLIT_ALIASES)} = {', '.join(SPLIT_ALIASES.values())})")
    return SPLIT_ALIASES.get(split, split)


def split_candidates(split: str) -> tuple[str, ...]:
    """Where to look for ``split``, in order: test and val stand in for each other (data sets ship one of them)."""
    s = canonical_split(split)
    return {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}[s]
