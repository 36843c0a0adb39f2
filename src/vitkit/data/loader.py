"""``build_loader``: deterministic, resumable batches from any source, with bad-data accounting.

Determinism contract
--------------------
* Map-style sources (digits, folder, mnist, cifar, hf, the user's Dataset objects): the epoch's sample order is
  ``default_rng([seed, epoch])``'s permutation when training (no shuffle for evaluation), split over ranks as
  ``order[rank::world_size]``. Training truncates the order to a multiple of ``world_size`` so every rank runs the
  same number of steps (at most ``world_size - 1`` different samples left out per epoch); evaluation keeps every
  sample exactly once.
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
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import UserError
from ..image_size import as_hw
from .batches import _cache_options, _Collate, _decode_into_memory, _MapBatches, _StreamBatches
from .catalogue import check_labels, open_stream
from .options import LoaderOptions, loader_options
from .preprocess import VIT_MEAN, VIT_STD, default_preprocess
from .sources import MapSource, open_map_source
from .spec import describe_data, parse_spec
from .stats import LoaderStats
from .transforms import MAX_IMAGE_PIXELS, Preprocess
from .wds import WdsSource

log = logging.getLogger("vitkit.data")


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

    def __init__(self, *, spec: str | Any, source: MapSource | WdsSource, pre: Preprocess, collate: _Collate,
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
                raise UserError(f"streams={self.num_streams} must be a multiple of num_workers={num_workers}")
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

    def example_indices(self, epoch: int = 0) -> np.ndarray:
        """The source indices this rank serves in ``epoch``, in order (map-style data; e.g. to line evaluation
        outputs up with per-example annotations such as ReaL label sets)."""
        if self.is_stream:
            raise UserError(f"{self.spec}: a stream has no example indices")
        return self._rank_indices(epoch)

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
            raise TypeError(f"the number of batches of {describe_data(self.spec)} is unknown: declare num_examples "
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
            raise UserError(f"loader state dict needs integer 'epoch' and 'batches', got {sd!r}") from e
        if self.is_stream:
            st = sd.get("streams")
            if st is None and batches > 0:
                raise UserError("stream loader state dict lacks 'streams' (the stream positions)")
            if st is not None:
                saved = int(st["num_streams"])
                if saved != self.num_streams:
                    # the position is only meaningful with the saved stream layout: adopt it when the workers allow
                    if self.num_workers and saved % self.num_workers:
                        raise UserError(f"the loader state was written with {saved} streams; resume with a "
                                         f"num_workers that divides {saved} (this loader has {self.num_workers})")
                    self.num_streams = saved
                self._stream_state = {"first": int(st["first"]), "pos": [int(p) for p in st["pos"]],
                                      "done": [bool(d) for d in st["done"]]}
            else:
                self._stream_state = self._fresh_stream_state()
        elif batches > (self.num_batches_for(epoch)):
            raise UserError(f"state dict position {batches} is beyond the {self.num_batches_for(epoch)} batches of "
                             f"epoch {epoch} of {describe_data(self.spec)} (different data or batch size?)")
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
        # Samples this rank may still yield under a limit (not when training drops the last batch: there every
        # batch is full); counted from the batches already read when resuming inside the epoch.
        quota = per_rank if self.limit is not None and not self.drop_last else None
        seen = self._batches * self.batch_size
        try:
            while not all(st["done"]) and (max_batches is None or self._batches < max_batches):
                kind, s, pos, x, y, meta = next(it)
                st["first"] = (s + 1) % self.num_streams
                st["pos"][s] = pos
                self.stats.add(meta)
                if kind == "done":
                    st["done"][s] = True
                    continue
                if quota is not None:  # --limit / eval_limit is exact: the last batch is cut to the limit
                    x, y = x[: quota - seen], y[: quota - seen]
                    seen += len(y)
                    if not len(y):
                        break
                self._batches += 1
                yield x, y
        finally:
            del it  # shuts the workers down (their generators never end on their own)
        self._epoch, self._batches = self._epoch + 1, 0
        self._stream_state = self._fresh_stream_state()


def _identity(x: Any) -> Any:  # module level so spawn-started workers can pickle it
    return x


def build_loader(spec: str | Any, options: LoaderOptions | None = None, *, split: str = "train", train: bool = True,
                 batch_size: int = 32, mean: tuple[float, ...] = VIT_MEAN, std: tuple[float, ...] = VIT_STD,
                 in_chans: int = 3, seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool | None = None,
                 limit: int | None = None, shuffle: bool | None = None, num_classes: int | None = None,
                 require_all_classes: bool = True, streams: int | None = None, prefetch: int = 2,
                 max_image_pixels: int = MAX_IMAGE_PIXELS, pin_memory: bool = False, **fields: Any) -> Loader:
    """A deterministic, resumable loader of normalised NCHW float32 batches and int64 labels.

    How images become batches is ``options`` (a :class:`~vitkit.data.options.LoaderOptions`, e.g. a training run's
    ``cfg.data``; default: its defaults) with any of its fields given here by name (``image_size=16``,
    ``crop_area=(0.5, 1)``, ``flip=False``, ``eval_resize``, ``eval_preprocess``, ``num_workers``, ...).
    ``preprocess`` is accepted for ``eval_preprocess``.

    ``train`` picks the augmentation (random crop + flip [+ RandAugment]; ``crop_padding`` > 0: the random crop is a
    window of the image's size in the image reflect-padded by that many pixels, instead of an inception crop) and,
    unless ``shuffle``/``drop_last`` say otherwise, shuffling and dropping the last partial batch. ``mean``/``std``:
    the model's input normalisation (default: the official [-1, 1]). ``num_classes``
    is the model's class count (labels must be below it; default: the data set's own). Map-style data is validated
    here (empty set, labels out of range, declared classes without examples -> ValueError). ``pin_memory`` hands out
    page-locked batches, for asynchronous copies to a GPU. ``streams`` sets the number of independent shard streams
    of a ``wds:`` source (default: one per worker). ``limit`` caps the number of samples (a fixed random subset for
    map-style sources; per-rank share for streams). ``eval_preprocess`` names the evaluation preprocessing
    (:data:`vitkit.data.preprocess.PREPROCESSINGS`; None: :func:`~vitkit.data.preprocess.default_preprocess` of
    ``mean``/``std``); it is ``loader.preprocess``.
    """
    if "preprocess" in fields:  # the loader's name for it before the options had one owner
        if "eval_preprocess" in fields:
            raise TypeError("build_loader(): give preprocess or eval_preprocess, not both (they are one option)")
        fields["eval_preprocess"] = fields.pop("preprocess")
    opts = loader_options(options, fields)
    image_size, num_workers, eval_resize, preprocess = opts.image_size, opts.num_workers, opts.eval_resize, \
        opts.eval_preprocess
    crop_area, crop_padding, flip, randaugment = opts.crop_area, opts.crop_padding, opts.flip, opts.randaugment
    shuffle_buffer = opts.shuffle_buffer
    if batch_size <= 0:
        raise UserError(f"batch_size must be positive, got {batch_size}")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise UserError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if len(mean) != in_chans or len(std) != in_chans:
        raise UserError(f"mean {tuple(mean)} and std {tuple(std)} must have in_chans={in_chans} entries")
    if any(s == 0 for s in std):
        raise UserError(f"std must be non-zero, got {tuple(std)}")
    if limit is not None and limit <= 0:
        raise UserError(f"limit must be positive, got {limit}")
    if randaugment is not None:
        if len(randaugment) != 2 or randaugment[0] < 0:
            raise UserError(f"randaugment must be (num_ops, magnitude), got {randaugment}")
    size = as_hw(image_size)
    if min(size) <= 0:
        raise UserError(f"image_size must be positive, got {image_size}")
    shuffle = train if shuffle is None else shuffle
    drop_last = train if drop_last is None else drop_last
    if preprocess is None:
        preprocess = default_preprocess(mean, std, in_chans, eval_resize)
    pre = Preprocess(train=train, image_size=size, in_chans=in_chans, eval_resize=eval_resize,
                     randaugment=randaugment, crop_area=crop_area, flip=flip, max_pixels=max_image_pixels,
                     preprocess=preprocess, crop_padding=crop_padding)
    collate = _Collate(tuple(mean), tuple(std), size, in_chans)
    p = parse_spec(spec)
    where = f"data {describe_data(spec)} split {split!r}"
    source: MapSource | WdsSource
    cache_meta: dict[str, Any] | None = None
    stream = open_stream(p, split)
    if stream is not None:
        source = stream
        if num_classes is not None and num_classes < source.num_classes:
            raise UserError(f"{where}: data declares {source.num_classes} classes but num_classes={num_classes}")
        if len(source.shards) < world_size:
            raise UserError(f"{where}: {len(source.shards)} shards cannot be split over {world_size} ranks")
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
                raise UserError(f"{where}: {len(source)} samples cannot be split over {world_size} ranks")
        elif train and world_size > 1 and source.num_examples is None and limit is None:
            log.warning("%s: stream of undeclared size on %d ranks: ranks may run different numbers of steps; "
                        "declare num_examples (spec '?num_examples=N' or meta.json) for lock-step training",
                        where, world_size)
    else:
        source = open_map_source(spec, split)
        k = source.num_classes if num_classes is None else int(num_classes)
        if num_classes is not None and num_classes < source.num_classes:
            raise UserError(f"{where}: data has {source.num_classes} classes but num_classes={num_classes}")
        check_labels(source.known_labels(), k, where, require_all=require_all_classes and limit is None)
        small = source.in_memory and len(source) * max(size) ** 2 <= 4096 * 64 * 64
        if len(source) < world_size:
            raise UserError(f"{where}: {len(source)} samples cannot be split over {world_size} ranks")
    nw = _default_workers(small) if num_workers is None else int(num_workers)
    if nw < 0:
        raise UserError(f"num_workers must be >= 0, got {nw}")
    loader = Loader(spec=spec, source=source, pre=pre, collate=collate, batch_size=batch_size, seed=seed, rank=rank,
                    world_size=world_size, num_workers=nw, shuffle=shuffle, drop_last=drop_last,
                    shuffle_buffer=shuffle_buffer, limit=limit, streams=streams, prefetch=prefetch,
                    pin_memory=pin_memory)
    if cache_meta is not None:  # bad samples met while decoding into memory, counted once
        loader.stats.add(cache_meta)
    if not loader.is_stream and loader.num_batches() == 0:
        raise UserError(f"{where}: {loader._num_samples()} samples give no batch of {batch_size} per rank "
                         f"(world_size={world_size}, drop_last={drop_last})")
    return loader
