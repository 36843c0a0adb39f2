"""The batch producers that run inside loader workers: map-style batches by index, and shard streams.

The determinism contract they implement is described in :mod:`vitkit.data.loader`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from ..errors import UserError
from .sources import DecodedSource, MapSource
from .stats import _new_meta, _skip
from .transforms import BadImage, Preprocess, sample_rng
from .wds import IMAGE_EXTS, WdsSource, parse_label, shuffle_buffer, stream_shards

log = logging.getLogger("vitkit.data")
_MAX_SUBSTITUTES = 64
_CACHE_MAX_GB = 8.0  # default cap of a wds split decoded into memory (cache=memory)


class _Collate:
    """Stack HWC uint8 arrays into a normalised float32 NCHW tensor: (x/255 - mean)/std, in float32.

    numpy, in place and single-threaded: on small batches torch's thread pool can dominate on a busy machine, and
    this runs inside loader workers anyway.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], size: tuple[int, int], chans: int):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
        self.size, self.chans = size, chans

    def __call__(self, arrays: list[np.ndarray], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if arrays:
            x = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)).astype(np.float32)
        else:
            x = np.zeros((0, self.chans, *self.size), dtype=np.float32)
        x /= np.float32(255.0)
        x -= self.mean
        x /= self.std
        return torch.from_numpy(x), torch.tensor(labels, dtype=torch.int64)


# -- map-style -------------------------------------------------------------------------------------------------------


class _MapBatches(Dataset):
    """Item ``b`` = batch ``b`` of one (epoch, rank); picklable so loader workers rebuild exactly the same batch."""

    def __init__(self, source: MapSource, pre: Preprocess, collate: _Collate, indices: np.ndarray, batch_size: int,
                 seed: int, epoch: int, substitute: bool):
        self.source, self.pre, self.collate = source, pre, collate
        self.indices, self.batch_size = indices, batch_size
        self.seed, self.epoch, self.substitute = seed, epoch, substitute

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def _one(self, i: int, meta: dict[str, Any]) -> tuple[np.ndarray, int]:
        rng = sample_rng(self.seed, self.epoch, i) if self.pre.train else None
        try:
            raw, label = self.source.sample(i)
        except OSError as e:
            raise BadImage("unreadable", str(e)) from None
        return self.pre(raw, rng, meta["converted"]), label

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        meta = _new_meta()
        arrays, labels = [], []
        n = len(self.source)
        for i in self.indices[b * self.batch_size:(b + 1) * self.batch_size]:
            i = int(i)
            for k in range(_MAX_SUBSTITUTES if self.substitute else 1):
                j = (i + k) % n
                try:
                    a, label = self._one(j, meta)
                    arrays.append(a)
                    labels.append(label)
                    break
                except BadImage as e:
                    _skip(meta, e.reason, self.source.name(j), str(e))
            else:
                if self.substitute:
                    raise RuntimeError(f"{_MAX_SUBSTITUTES} consecutive unreadable samples from "
                                       f"{self.source.name(i)!r}: is the data set broken? ({meta['examples'][-3:]})")
        meta["samples"] = len(arrays)
        x, y = self.collate(arrays, labels)
        return x, y, meta


# -- streams ---------------------------------------------------------------------------------------------------------


def _encoded_sample(src: WdsSource, item: tuple[Any, ...], meta: dict[str, Any]) -> tuple[bytes, int, str] | None:
    """(encoded image, label, ``shard:key``) of a raw shard item, or None, counted in ``meta``, for a corrupt shard
    or a sample without a label or an image. A label outside the classes is a ValueError."""
    kind, where_in_shard, key, payload = item
    if kind == "corrupt_shard":
        _skip(meta, "corrupt_shard", key, payload)
        return None
    where = f"{src.shards[where_in_shard[0]]}:{key}"
    label = parse_label(payload.get("cls"))
    if label is None:
        _skip(meta, "no_label", where)
        return None
    if not 0 <= label < src.num_classes:
        raise UserError(f"wds: sample {where} has label {label}, outside [0, {src.num_classes})")
    data = next((payload[e] for e in IMAGE_EXTS if e in payload), None)
    if data is None:
        _skip(meta, "no_image", where, f"extensions {sorted(payload)}")
        return None
    return data, label, where


def _decode_into_memory(src: WdsSource, pre: Preprocess, max_gb: float, where: str
                        ) -> tuple[DecodedSource, dict[str, Any]]:
    """Decode every sample of a ``wds:`` split once (spec option ``cache=memory``), in shard and tar order.

    Why: on small data sets read for many epochs (CIFAR: 50k images, 150 MB decoded) the stream re-reads the gzip
    shards and re-parses every JPEG each epoch, ~130 us of Python per 32x32 image, which on a 2-core machine is
    CPU the training step does not get. From memory, an epoch costs only the augmentation. Bad samples are counted
    once, here; the loader then treats the split as a map-style source (global permutation per epoch). Every rank
    decodes and holds the whole split: this is for data sets that fit in memory many times over."""
    meta = _new_meta()
    images: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    nbytes, limit = 0, int(max_gb * 2**30)
    bar = tqdm(total=src.num_examples, desc=f"decoding {src.split} into memory", unit="img", disable=None,
               leave=False)
    for i in range(len(src.shards)):
        for item in src.items(i):
            got = _encoded_sample(src, item, meta)
            if got is None:
                continue
            data, label, name = got
            try:
                a = np.asarray(pre.to_image(data, meta["converted"]), dtype=np.uint8)
            except BadImage as e:
                _skip(meta, e.reason, name, str(e))
                continue
            nbytes += a.nbytes
            if nbytes > limit:
                bar.close()
                raise UserError(f"{where}: the decoded images pass cache_max_gb={max_gb:g} GiB at sample "
                                 f"{len(images) + 1} ({name}); raise cache_max_gb or drop cache=memory to stream "
                                 f"the shards")
            images.append(a)
            labels.append(label)
            names.append(name)
            bar.update()
    bar.close()
    same = bool(images) and all(a.shape == images[0].shape for a in images)
    stacked: np.ndarray | list[np.ndarray] = np.stack(images) if same else images
    source = DecodedSource(stacked, np.asarray(labels, dtype=np.int64), names, src.class_names, src.num_classes,
                           src.split, 1 if pre.mode == "L" else 3)
    return source, meta


def _cache_options(options: dict[str, str], where: str) -> tuple[bool, float]:
    """``cache=memory`` and ``cache_max_gb=G`` (default 8) of a ``wds:`` spec."""
    cache = options.get("cache")
    if cache not in (None, "memory"):
        raise UserError(f"{where}: cache={cache!r} is not valid; the one choice is cache=memory (decode the split "
                         f"into memory once)")
    try:
        max_gb = float(options.get("cache_max_gb", _CACHE_MAX_GB))
    except ValueError:
        raise UserError(f"{where}: cache_max_gb={options['cache_max_gb']!r} is not a number") from None
    if not max_gb > 0:
        raise UserError(f"{where}: cache_max_gb must be positive, got {max_gb:g}")
    return cache == "memory", max_gb


class _StreamBatches(IterableDataset):
    """Yields the global round-robin sequence of stream items handled by this worker (all of them without workers).

    Item ``j`` of the sequence belongs to stream ``(first + j) % S``; a worker ``w`` of ``nw`` owns the streams with
    ``(s - first) % nw == w``, which matches the DataLoader's round-robin over workers when ``S % nw == 0``. An
    exhausted stream keeps answering ``("done", s)`` so the round-robin never shifts; the consumer stops when every
    stream is done.
    """

    def __init__(self, src: WdsSource, pre: Preprocess, collate: _Collate, *, batch_size: int, seed: int, epoch: int,
                 rank: int, world_size: int, num_streams: int, first: int, pos: list[int], done: list[bool],
                 shuffle: bool, shuffle_buffer: int, drop_last: bool, cycle: bool = False):
        self.src, self.pre, self.collate = src, pre, collate
        self.batch_size, self.seed, self.epoch, self.rank, self.world_size = batch_size, seed, epoch, rank, world_size
        self.num_streams, self.first, self.pos, self.done = num_streams, first, pos, done
        self.shuffle, self.buffer, self.drop_last, self.cycle = shuffle, shuffle_buffer, drop_last, cycle

    def _passes(self, s: int) -> Iterator[tuple[Any, ...]]:
        """The stream's raw items; with ``cycle`` it starts a new pass over (re-shuffled) shards when it runs out, so
        every rank can deliver the declared number of batches even when shards do not split evenly over ranks."""
        p = 0
        while True:
            idx = stream_shards(len(self.src.shards), seed=self.seed, epoch=self.epoch, rank=self.rank,
                                world_size=self.world_size, stream=s, num_streams=self.num_streams,
                                shuffle=self.shuffle, pass_=p)
            samples = 0
            for i in idx:
                for kind, (shard, ordinal), key, payload in self.src.items(i):
                    samples += kind == "sample"
                    yield kind, (shard, ordinal, p), key, payload
            if not self.cycle or samples == 0:  # samples == 0: nothing readable, cycling would never end
                return
            p += 1

    def _raw(self, s: int) -> Iterator[tuple[Any, ...]]:
        items = self._passes(s)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, s, 0x5B])
            items = shuffle_buffer(items, self.buffer, rng)
        return items

    def _decode(self, item: tuple[Any, ...], meta: dict[str, Any]) -> tuple[np.ndarray, int] | None:
        got = _encoded_sample(self.src, item, meta)
        if got is None:
            return None
        data, label, where = got
        shard, ordinal, pass_ = item[1]
        rng = None
        if self.pre.train:  # a repeated pass over a shard gets new augmentations
            rng = sample_rng(self.seed, self.epoch, shard, ordinal, *([pass_] if pass_ else []))
        try:
            return self.pre(data, rng, meta["converted"]), label
        except BadImage as e:
            _skip(meta, e.reason, where, str(e))
            return None

    def _stream(self, s: int) -> Iterator[tuple[Any, ...]]:
        pos = self.pos[s]
        if not self.done[s]:
            items = self._raw(s)
            for _ in range(pos):  # fast-forward on resume: raw bytes only, nothing decoded
                if next(items, None) is None:
                    break
            exhausted = False
            while not exhausted:
                meta = _new_meta()
                arrays, labels = [], []
                while len(arrays) < self.batch_size:
                    item = next(items, None)
                    if item is None:
                        exhausted = True
                        break
                    pos += 1
                    out = self._decode(item, meta)
                    if out is not None:
                        arrays.append(out[0])
                        labels.append(out[1])
                if arrays and (len(arrays) == self.batch_size or not self.drop_last):
                    meta["samples"] = len(arrays)
                    x, y = self.collate(arrays, labels)
                    yield ("batch", s, pos, x, y, meta)
                elif meta["skipped"] or meta["converted"]:
                    yield ("done", s, pos, None, None, meta)  # report the counts of a dropped tail
        while True:
            yield ("done", s, pos, None, None, _new_meta())

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        info = get_worker_info()
        w, nw = (0, 1) if info is None else (info.id, info.num_workers)
        mine = [s for s in ((self.first + j) % self.num_streams for j in range(self.num_streams))
                if (s - self.first) % nw == w]
        gens = [self._stream(s) for s in mine]
        while True:
            for g in gens:
                yield next(g)
