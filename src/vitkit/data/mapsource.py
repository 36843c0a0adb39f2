"""The base of every map-style source (random access by index): built-in files (:mod:`vitkit.data.sources`) and the
user's own data objects (:mod:`vitkit.data.objects`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .spec import DatasetInfo


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

    def sample(self, i: int) -> tuple[Any, int]:
        """(raw image, label) of sample ``i``; a source that reads both from one item (a user's Dataset) overrides
        it."""
        return self.load(i), int(self.labels[i])

    def known_labels(self) -> np.ndarray:
        """The labels to validate before training (a user's Dataset marks items it could not read with -1)."""
        return self.labels

    def name(self, i: int) -> str:
        return f"{self.kind}[{self.split}][{i}]"

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.num_classes, self.class_names, len(self), False, self.kind, self.split, self.channels)
