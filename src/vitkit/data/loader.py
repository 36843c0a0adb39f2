"""``build_loader``: deterministic, resumable batches from any source, with bad-data accounting.

Determinism contract
--------------------
* Map-style sources (digits, folder, mnist, cifar): the epoch's sample order is ``default_rng([seed, epoch])``'s
  permutation when training (no shuffle for evaluation), split over ranks as ``order[rank::world_size]``. Training
  truncates the order to a multiple of ``world_size`` so every rank runs the same number of steps (at most
  ``world_size - 1`` different samples left out per epoch); evaluation keeps every sample exactly once.
  Every random augmentation decision of sample ``i`` comes from ``sample_rng(seed, epoch, i)``. Batch ``b`` is a
  pure function of (seed, epoch, rank, world_size, b): identical for any ``num_workers`` and after a resume.
* Streams (wds): a rank's shards are dealt to ``streams`` independent streams (default: one per worker), each with its
  own shuffle buffer seeded by (seed, epoch, rank, stream); batches are taken from the streams round-robin. The
  augmentation of a sample comes from ``sample_rng(seed, epoch, shard, ordinal-in-shard)``. The result depends on
  (seed, epoch, rank, world_size, streams): pass ``streams=`` explicitly (a multiple of every worker count you use)
  to get the same batches for different ``num_workers``. Shards are dealt to ranks whole, so ranks may hold
  different numbers of samples: when the split's size is declared (``?num_examples=N`` or meta.json), a training
  epoch is exactly ``N // world_size // batch_size`` batches on every rank, and a stream that runs out starts a new
  pass over re-shuffled shards (with new augmentations) - the ``with_epoch`` idea of WebDataset - so DDP ranks stay
  in lock-step. Without a declared size an epoch ends when the rank's shards do (fine on one process).
  Resuming a stream replays its raw bytes up to the saved position (nothing is decoded), so it costs a read of
  the part of the epoch already seen.
* ``wds:...?cache=memory``: the split is decoded once into memory (uint8, at most ``cache_max_gb``, default 8 GiB)
  and then served as a map-style source: the map-style contract above, with a global permutation per epoch instead
  of shard streams and a shuffle buffer. For small data sets read for many epochs (CIFAR).

Bad samples (decode failures, decompression bombs, unreadable files) are counted in ``loader.stats``. While
training, map-style sources replace such a sample by the next readable one (``i+1``, ``i+2``, ...) so every batch
keeps its size; in evaluation it is dropped (a sample is never counted twice). Streams simply move on to the next
sample. Counts are per occurrence (a bad file is counted again each epoch; a split decoded into memory counts its
bad samples once, while decoding). They travel from the worker processes
with each batch, so they are exact for any number of workers, and they are part of ``state_dict()``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from .preprocess import default_preprocess
from .sources import DecodedSource, MapSource, check_labels, open_map_source, parse_spec
from .transforms import MAX_IMAGE_PIXELS, BadImage, Preprocess, sample_rng
from .wds import IMAGE_EXTS, WdsSource, iter_shard, parse_label, resolve_wds, shuffle_buffer, stream_shards

log = logging.getLogger("vitkit.data")
_MAX_EXAMPLES = 20  # bad file names kept for the report
_MAX_SUBSTITUTES = 64
_CACHE_MAX_GB = 8.0  # default cap of a wds split decoded into memory (cache=memory)


@dataclass
class LoaderStats:
    """Bad-data counts: ``skipped`` by reason, ``converted`` by kind, ``samples`` delivered, bad ``examples``."""

    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def converted_total(self) -> int:
        return sum(self.converted.values())

    def add(self, other: dict[str, Any] | LoaderStats) -> None:
        d = other.as_dict() if isinstance(other, LoaderStats) else other
        self.samples += int(d.get("samples", 0))
        for name in ("skipped", "converted"):
            mine = getattr(self, name)
            for k, v in d.get(name, {}).items():
                mine[k] = mine.get(k, 0) + int(v)
        room = _MAX_EXAMPLES - len(self.examples)
        if room > 0:
            self.examples.extend(list(d.get("examples", []))[:room])

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "skipped": dict(sorted(self.skipped.items())),
                "converted": dict(sorted(self.converted.items())), "skipped_total": self.skipped_total,
                "converted_total": self.converted_total, "examples": list(self.examples)}

    def __str__(self) -> str:
        def fmt(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

        return f"{self.samples} images; skipped: {fmt(self.skipped)}; converted: {fmt(self.converted)}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoaderStats:
        s = cls()
        s.add(d)
        return s


def _new_meta() -> dict[str, Any]:
    return {"samples": 0, "skipped": {}, "converted": {}, "examples": []}


def _skip(meta: dict[str, Any], reason: str, name: str, detail: str = "") -> None:
    meta["skipped"][reason] = meta["skipped"].get(reason, 0) + 1
    if len(meta["examples"]) < _MAX_EXAMPLES:
        meta["examples"].append(f"{name}: {reason}{' (' + detail[:200] + ')' if detail else ''}")


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

    def _one(self, i: int, meta: dict[str, Any]) -> np.ndarray:
        rng = sample_rng(self.seed, self.epoch, i) if self.pre.train else None
        try:
            raw = self.source.load(i)
        except OSError as e:
            raise BadImage("unreadable", str(e)) from None
        return self.pre(raw, rng, meta["converted"])

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        meta = _new_meta()
        arrays, labels = [], []
        n = len(self.source)
        for i in self.indices[b * self.batch_size:(b + 1) * self.batch_size]:
            i = int(i)
            for k in range(_MAX_SUBSTITUTES if self.substitute else 1):
                j = (i + k) % n
                try:
                    arrays.append(self._one(j, meta))
                    labels.append(int(self.source.labels[j]))
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
        raise ValueError(f"wds: sample {where} has label {label}, outside [0, {src.num_classes})")
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
    for i, shard in enumerate(src.shards):
        for item in iter_shard(shard, i):
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
                raise ValueError(f"{where}: the decoded images pass cache_max_gb={max_gb:g} GiB at sample "
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
        raise ValueError(f"{where}: cache={cache!r} is not valid; the one choice is cache=memory (decode the split "
                         f"into memory once)")
    try:
        max_gb = float(options.get("cache_max_gb", _CACHE_MAX_GB))
    except ValueError:
        raise ValueError(f"{where}: cache_max_gb={options['cache_max_gb']!r} is not a number") from None
    if not max_gb > 0:
        raise ValueError(f"{where}: cache_max_gb must be positive, got {max_gb:g}")
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
                for kind, (shard, ordinal), key, payload in iter_shard(self.src.shards[i], i):
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


# -- the loader ------------------------------------------------------------------------------------------------------


def _default_workers(in_memory_small: bool) -> int:
    if in_memory_small:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus - 1))


class Loader:
    """Iterable over ``(images, labels)`` batches; see the module docstring for the determinism contract.

    Iterating runs the current epoch from the current position to its end, then moves to the next epoch. Breaking
    out of the loop keeps the position (``state_dict()`` reports it); iterating again continues from there.
    """

    def __init__(self, *, spec: str, source: MapSource | WdsSource, pre: Preprocess, collate: _Collate,
                 batch_size: int, seed: int, rank: int, world_size: int, num_workers: int, shuffle: bool,
                 drop_last: bool, shuffle_buffer: int, limit: int | None, streams: int | None, prefetch: int,
                 pin_memory: bool = False):
        self.spec, self.source, self.pre, self.collate = spec, source, pre, collate
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.num_workers, self.shuffle, self.drop_last = num_workers, shuffle, drop_last
        self.shuffle_buffer, self.limit, self.prefetch = shuffle_buffer, limit, prefetch
        self.pin_memory = pin_memory
        self.stats = LoaderStats()
        self._epoch, self._batches = 0, 0
        self.is_stream = isinstance(source, WdsSource)
        if self.is_stream:
            self.num_streams = streams if streams is not None else max(1, num_workers)
            if num_workers > 0 and self.num_streams % num_workers:
                raise ValueError(f"streams={self.num_streams} must be a multiple of num_workers={num_workers}")
            self._stream_state = self._fresh_stream_state()
        else:
            n = len(source)
            self._subset = None
            if limit is not None and limit < n:
                # a fixed random subset (not the first `limit`: folder sources are sorted by class)
                self._subset = np.sort(np.random.default_rng(0x11E1).permutation(n)[:limit])

    # -- sizes ------------------------------------------------------------------------------------------------------
    def _num_samples(self) -> int:
        assert not self.is_stream
        return len(self._subset) if self._subset is not None else len(self.source)

    def _rank_indices(self, epoch: int) -> np.ndarray:
        n = self._num_samples()
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            order = order[: (n // self.world_size) * self.world_size]
        else:
            order = np.arange(n)
        idx = order[self.rank::self.world_size]
        return self._subset[idx] if self._subset is not None else idx

    def _per_rank_stream_samples(self) -> int | None:
        n = self.source.num_examples
        if self.limit is not None:
            n = self.limit if n is None else min(n, self.limit)
        return None if n is None else n // self.world_size

    def num_batches(self) -> int | None:
        """Batches per epoch for this rank, None for streams of undeclared size."""
        if self.is_stream:
            n = self._per_rank_stream_samples()
        else:
            n = len(self._rank_indices(self._epoch))
        if n is None:
            return None
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        n = self.num_batches()
        if n is None:
            raise TypeError(f"the number of batches of {self.spec!r} is unknown: declare num_examples "
                            f"(spec '?num_examples=N' or meta.json)")
        return n

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def preprocess(self) -> str | None:
        """The evaluation preprocessing that ran (None for a training loader: Pillow augmentation)."""
        return None if self.pre.train else self.pre.preprocess

    # -- state ------------------------------------------------------------------------------------------------------
    def _fresh_stream_state(self) -> dict[str, Any]:
        return {"first": 0, "pos": [0] * self.num_streams, "done": [False] * self.num_streams}

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of ``epoch``, unless the loader is already inside it (so a resumed position survives the
        usual ``set_epoch`` at the top of the epoch loop)."""
        if int(epoch) != self._epoch:
            self._epoch, self._batches = int(epoch), 0
            if self.is_stream:
                self._stream_state = self._fresh_stream_state()

    def state_dict(self) -> dict[str, Any]:
        sd: dict[str, Any] = {"epoch": self._epoch, "batches": self._batches, "stats": self.stats.as_dict()}
        if self.is_stream:
            sd["streams"] = {"num_streams": self.num_streams, **{k: (list(v) if isinstance(v, list) else v)
                                                                 for k, v in self._stream_state.items()}}
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        try:
            epoch, batches = int(sd["epoch"]), int(sd["batches"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"loader state dict needs integer 'epoch' and 'batches', got {sd!r}") from e
        if self.is_stream:
            st = sd.get("streams")
            if st is None and batches > 0:
                raise ValueError("stream loader state dict lacks 'streams' (the stream positions)")
            if st is not None:
                saved = int(st["num_streams"])
                if saved != self.num_streams:
                    # the position is only meaningful with the saved stream layout: adopt it when the workers allow
                    if self.num_workers and saved % self.num_workers:
                        raise ValueError(f"the loader state was written with {saved} streams; resume with a "
                                         f"num_workers that divides {saved} (this loader has {self.num_workers})")
                    self.num_streams = saved
                self._stream_state = {"first": int(st["first"]), "pos": [int(p) for p in st["pos"]],
                                      "done": [bool(d) for d in st["done"]]}
            else:
                self._stream_state = self._fresh_stream_state()
        elif batches > (self.num_batches_for(epoch)):
            raise ValueError(f"state dict position {batches} is beyond the {self.num_batches_for(epoch)} batches of "
                             f"epoch {epoch} of {self.spec!r} (different data or batch size?)")
        self._epoch, self._batches = epoch, batches
        self.stats = LoaderStats.from_dict(sd.get("stats", {}))

    def num_batches_for(self, epoch: int) -> int:
        n = len(self._rank_indices(epoch))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    # -- iteration --------------------------------------------------------------------------------------------------
    def _dataloader(self, dataset: Dataset, sampler: Any = None) -> DataLoader:
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers,
                          prefetch_factor=self.prefetch, persistent_workers=False, pin_memory=self.pin_memory,
                          collate_fn=_identity)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        it = self._iter_stream() if self.is_stream else self._iter_map()
        if self.pin_memory and self.num_workers == 0:  # workers' batches are pinned by the DataLoader
            it = ((x.pin_memory(), y.pin_memory()) for x, y in it)
        yield from it

    def _iter_map(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        nb = self.num_batches_for(self._epoch)
        if self._batches >= nb:
            self._epoch, self._batches = self._epoch + 1, 0
            nb = self.num_batches_for(self._epoch)
        ds = _MapBatches(self.source, self.pre, self.collate, self._rank_indices(self._epoch), self.batch_size,
                         self.seed, self._epoch, substitute=self.pre.train)
        todo = range(self._batches, nb)
        it = (ds[b] for b in todo) if self.num_workers == 0 else iter(self._dataloader(ds, sampler=todo))
        for x, y, meta in it:
            self._batches += 1
            self.stats.add(meta)
            if len(y):  # an evaluation batch of only unreadable files is counted, not yielded
                yield x, y
        self._epoch, self._batches = self._epoch + 1, 0

    def _iter_stream(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        per_rank = self._per_rank_stream_samples()
        max_batches = None
        if per_rank is not None and (self.drop_last or self.limit is not None):
            # training: every rank stops after the same number of steps (DDP lock-step)
            max_batches = per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)
        st = self._stream_state
        if all(st["done"]) or (max_batches is not None and self._batches >= max_batches):
            self._epoch, self._batches = self._epoch + 1, 0
            st = self._stream_state = self._fresh_stream_state()
        ds = _StreamBatches(self.source, self.pre, self.collate, batch_size=self.batch_size, seed=self.seed,
                            epoch=self._epoch, rank=self.rank, world_size=self.world_size,
                            num_streams=self.num_streams, first=st["first"], pos=list(st["pos"]),
                            done=list(st["done"]), shuffle=self.shuffle, shuffle_buffer=self.shuffle_buffer,
                            drop_last=self.drop_last, cycle=max_batches is not None and self.drop_last)
        it = iter(ds) if self.num_workers == 0 else iter(self._dataloader(ds))
        try:
            while not all(st["done"]) and (max_batches is None or self._batches < max_batches):
                kind, s, pos, x, y, meta = next(it)
                st["first"] = (s + 1) % self.num_streams
                st["pos"][s] = pos
                self.stats.add(meta)
                if kind == "done":
                    st["done"][s] = True
                    continue
                self._batches += 1
                yield x, y
        finally:
            del it  # shuts the workers down (their generators never end on their own)
        self._epoch, self._batches = self._epoch + 1, 0
        self._stream_state = self._fresh_stream_state()


def _identity(x: Any) -> Any:  # module level so spawn-started workers can pickle it
    return x


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    h, w = v
    return (int(h), int(w))


def build_loader(spec: str, *, split: str = "train", train: bool = True, image_size: int | tuple[int, int] = 224,
                 batch_size: int = 32, mean: tuple[float, ...] = (0.5, 0.5, 0.5),
                 std: tuple[float, ...] = (0.5, 0.5, 0.5), in_chans: int = 3, num_workers: int | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, eval_resize: str = "resize",
                 randaugment: tuple[int, int] | None = None, crop_area: tuple[float, float] = (0.05, 1.0),
                 flip: bool = True, shuffle_buffer: int = 2000, drop_last: bool | None = None,
                 limit: int | None = None, shuffle: bool | None = None, num_classes: int | None = None,
                 require_all_classes: bool = True, streams: int | None = None, prefetch: int = 2,
                 max_image_pixels: int = MAX_IMAGE_PIXELS, pin_memory: bool = False,
                 preprocess: str | None = None) -> Loader:
    """A deterministic, resumable loader of normalised NCHW float32 batches and int64 labels.

    ``train`` picks the augmentation (random crop + flip [+ RandAugment]) and, unless ``shuffle``/``drop_last`` say
    otherwise, shuffling and dropping the last partial batch. ``num_classes`` is the model's class count (labels
    must be below it; default: the data set's own). Map-style data is validated here (empty set, labels out of
    range, declared classes without examples -> ValueError). ``pin_memory`` hands out page-locked batches, for
    asynchronous copies to a GPU. ``streams`` sets the number of independent shard
    streams of a ``wds:`` source (default: one per worker). ``limit`` caps the number of samples (a fixed random
    subset for map-style sources; per-rank share for streams). ``preprocess`` names the evaluation preprocessing
    (:data:`vitkit.data.preprocess.PREPROCESSINGS`; None: :func:`~vitkit.data.preprocess.default_preprocess` of
    ``mean``/``std``); it is ``loader.preprocess``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} must have in_chans={in_chans} entries")
    if any(s == 0 for s in std):
        raise ValueError(f"std must be non-zero, got {tuple(std)}")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    if randaugment is not None:
        if len(randaugment) != 2 or randaugment[0] < 0:
            raise ValueError(f"randaugment must be (num_ops, magnitude), got {randaugment}")
    size = _pair(image_size)
    if min(size) <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    shuffle = train if shuffle is None else shuffle
    drop_last = train if drop_last is None else drop_last
    if preprocess is None:
        preprocess = default_preprocess(mean, std, in_chans, eval_resize)
    pre = Preprocess(train=train, image_size=size, in_chans=in_chans, eval_resize=eval_resize,
                     randaugment=randaugment, crop_area=crop_area, flip=flip, max_pixels=max_image_pixels,
                     preprocess=preprocess)
    collate = _Collate(tuple(mean), tuple(std), size, in_chans)
    p = parse_spec(spec)
    where = f"data {spec!r} split {split!r}"
    source: MapSource | WdsSource
    cache_meta: dict[str, Any] | None = None
    if p.kind == "wds":
        source = resolve_wds(p, split if split != "validation" else "val")
        if num_classes is not None and num_classes < source.num_classes:
            raise ValueError(f"{where}: data declares {source.num_classes} classes but num_classes={num_classes}")
        if len(source.shards) < world_size:
            raise ValueError(f"{where}: {len(source.shards)} shards cannot be split over {world_size} ranks")
        # fail before training on an unreadable first shard or labels beyond the classes (later shards are checked
        # as they stream)
        source.check_first_shard(num_classes if num_classes is not None else source.num_classes, strict=False)
        small = False
        cache, max_gb = _cache_options(p.options, where)
        if cache:
            source, cache_meta = _decode_into_memory(source, pre, max_gb, where)
            check_labels(source.labels, source.num_classes if num_classes is None else int(num_classes), where,
                         require_all=require_all_classes and limit is None)
            if len(source) < world_size:
                raise ValueError(f"{where}: {len(source)} samples cannot be split over {world_size} ranks")
        elif train and world_size > 1 and source.num_examples is None and limit is None:
            log.warning("%s: stream of undeclared size on %d ranks: ranks may run different numbers of steps; "
                        "declare num_examples (spec '?num_examples=N' or meta.json) for lock-step training",
                        where, world_size)
    else:
        source = open_map_source(spec, split)
        k = source.num_classes if num_classes is None else int(num_classes)
        if num_classes is not None and num_classes < source.num_classes:
            raise ValueError(f"{where}: data has {source.num_classes} classes but num_classes={num_classes}")
        check_labels(source.labels, k, where, require_all=require_all_classes and limit is None)
        small = source.in_memory and len(source) * max(size) ** 2 <= 4096 * 64 * 64
        if len(source) < world_size:
            raise ValueError(f"{where}: {len(source)} samples cannot be split over {world_size} ranks")
    nw = _default_workers(small) if num_workers is None else int(num_workers)
    if nw < 0:
        raise ValueError(f"num_workers must be >= 0, got {nw}")
    loader = Loader(spec=spec, source=source, pre=pre, collate=collate, batch_size=batch_size, seed=seed, rank=rank,
                    world_size=world_size, num_workers=nw, shuffle=shuffle, drop_last=drop_last,
                    shuffle_buffer=shuffle_buffer, limit=limit, streams=streams, prefetch=prefetch,
                    pin_memory=pin_memory)
    if cache_meta is not None:  # bad samples met while decoding into memory, counted once
        loader.stats.add(cache_meta)
    if not loader.is_stream and loader.num_batches() == 0:
        raise ValueError(f"{where}: {loader._num_samples()} samples give no batch of {batch_size} per rank "
                         f"(world_size={world_size}, drop_last={drop_last})")
    return loader
