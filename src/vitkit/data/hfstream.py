"""A streaming Hugging Face ``datasets.IterableDataset`` as a shard stream (see :mod:`vitkit.data.objects`).

Its shards (``n_shards``: the parquet/arrow files behind it, or ``to_iterable_dataset(num_shards=N)``) take the
place of ``wds:`` shards: they are dealt to ranks and loader streams, shuffled in vitkit's seeded buffer, decoded
from their stored bytes by the same pipeline, and a stream resumes by replaying its raw items up to the saved
position: the stream contract of :mod:`vitkit.data.loader` (exact resume is for map-style data; a stream's is
exact too as long as the IterableDataset yields its shards in the same order, as a file-backed one does).
Without a declared size (``ds.info.splits``) an epoch ends when the shards do; ``schedule.epochs`` then needs
``schedule.steps`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import UserError
from .objects import hf_columns, image_bytes, import_datasets, select_split
from .spec import DatasetInfo, describe_data, hf_type
from .wds import WdsSource


class HFStreamSource(WdsSource):
    """One split of a ``datasets.IterableDataset`` with an Image and a ClassLabel column."""

    def __init__(self, ds: Any, split: str, where: str, image: str | None = None, label: str | None = None):
        datasets = import_datasets()
        if ds.features is None:
            raise UserError(f"{where}: the IterableDataset declares no features; an Image and a ClassLabel column "
                            "are needed (ds = ds.cast(datasets.Features({...})))")
        image_col, label_col, names = hf_columns(ds.features, where, image, label)
        splits = getattr(ds.info, "splits", None) or {}
        known = splits.get(split) if hasattr(splits, "get") else None
        n = getattr(known, "num_examples", None) or None
        super().__init__(pattern=where, split=split, shards=[f"{where} shard {i}" for i in range(ds.n_shards)],
                         num_classes=len(names), class_names=names, num_examples=n)
        self.ds = ds.select_columns([image_col, label_col]).cast_column(image_col, datasets.Image(decode=False))
        self.image_col, self.label_col = image_col, label_col

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.num_classes, self.class_names, self.num_examples, False, "hf", self.split, 3)

    def items(self, i: int) -> Iterator[tuple[Any, ...]]:
        """The raw items of shard ``i`` as a tar shard's: ``("sample", (i, ordinal), key, {"cls": b"3", "jpg":
        bytes})`` (the image under any image key: the decoder tells formats by their bytes); a row without a
        readable image or label is a sample without it (counted by the loader), an unreadable shard is
        ``("corrupt_shard", ...)``."""
        ordinal = 0
        try:
            for row in self.ds.shard(num_shards=len(self.shards), index=i):
                payload: dict[str, bytes] = {}
                label = row[self.label_col]
                if label is not None and int(label) >= 0:
                    payload["cls"] = str(int(label)).encode()
                try:
                    payload["jpg"] = image_bytes(row[self.image_col])
                except OSError:
                    pass
                yield "sample", (i, ordinal), str(ordinal), payload
                ordinal += 1
        except OSError as e:
            yield "corrupt_shard", (i, -1), self.shards[i], str(e)


def open_hf_stream(obj: Any, split: str) -> HFStreamSource | None:
    """The stream of ``obj``'s ``split`` when that is a ``datasets.IterableDataset``, else None (map-style)."""
    if hf_type(obj) not in ("IterableDataset", "IterableDatasetDict"):
        return None
    where = describe_data(obj)
    return HFStreamSource(select_split(obj, split, where), split, where)
