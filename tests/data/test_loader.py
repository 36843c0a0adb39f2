"""Determinism, resumption and rank splitting of the loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import ids_of, make_folder, same_batches, take_batches
from PIL import Image

from vitkit.data import build_loader, write_wds_shards


def test_same_seed_same_batches_other_seed_differs() -> None:
    kw = dict(image_size=12, batch_size=64, randaugment=(2, 15), num_workers=0)
    a = take_batches(build_loader("digits", seed=3, **kw), 3)
    b = take_batches(build_loader("digits", seed=3, **kw), 3)
    c = take_batches(build_loader("digits", seed=4, **kw), 3)
    assert same_batches(a, b)
    assert not torch.equal(a[0][0], c[0][0])


def test_epochs_are_new_permutations(id_mnist) -> None:
    spec, n = id_mnist
    loader = build_loader(spec, image_size=4, batch_size=10, num_workers=0)
    e0 = [i for x, _ in loader for i in ids_of(x)]
    e1 = [i for x, _ in loader for i in ids_of(x)]  # iterating again continues with epoch 1
    loader.set_epoch(0)
    again = [i for x, _ in loader for i in ids_of(x)]
    assert sorted(e0) == sorted(e1) == list(range(n))
    assert e0 != e1 and e0 == again


def test_num_workers_do_not_change_batches(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "f", {"a": 9, "b": 8, "c": 7}, size=(20, 14))
    kw = dict(image_size=10, batch_size=5, randaugment=(2, 10), seed=1)
    a = take_batches(build_loader(f"folder:{root}", num_workers=0, **kw))
    b = take_batches(build_loader(f"folder:{root}", num_workers=2, **kw))
    assert len(a) == 24 // 5 and same_batches(a, b)


def test_resume_equals_uninterrupted() -> None:
    kw = dict(image_size=10, batch_size=100, randaugment=(2, 9), num_workers=0, seed=7)
    full = build_loader("digits", **kw)
    ref = take_batches(full) + take_batches(full, 4)  # epoch 0, then 4 batches of epoch 1
    interrupted = build_loader("digits", **kw)
    first = take_batches(interrupted)
    first += take_batches(interrupted, 2)
    sd = interrupted.state_dict()
    assert (sd["epoch"], sd["batches"]) == (1, 2)
    resumed = build_loader("digits", **kw)
    resumed.load_state_dict(sd)
    resumed.set_epoch(1)  # the trainer's usual call at the top of the epoch must not rewind
    rest = take_batches(resumed, 2)
    assert same_batches(first + rest, ref)


def test_ranks_cover_each_sample_once(id_mnist) -> None:
    spec, n = id_mnist
    for train in (False, True):
        ws = 4 if train else 3  # 100 % 4 == 0 so training keeps every sample; eval never drops one
        seen: list[int] = []
        sizes = []
        for rank in range(ws):
            loader = build_loader(spec, train=train, image_size=4, batch_size=7, rank=rank, world_size=ws,
                                  num_workers=0, drop_last=False, seed=5)
            ids = [i for x, _ in loader for i in ids_of(x)]
            sizes.append(len(ids))
            seen += ids
        assert sorted(seen) == list(range(n)), train
        assert max(sizes) - min(sizes) <= 1


def test_training_ranks_have_equal_steps(id_mnist) -> None:
    spec, n = id_mnist
    lens = [len(build_loader(spec, image_size=4, batch_size=8, rank=r, world_size=3, num_workers=0))
            for r in range(3)]
    assert lens == [(n // 3) // 8] * 3


def _id_shards(tmp_path: Path, n: int = 60, per_shard: int = 7) -> str:
    samples = [(Image.fromarray(np.full((5, 5, 3), 2 * i, np.uint8)), i % 3) for i in range(n)]
    paths = write_wds_shards(samples, str(tmp_path / "train-%03d.tar"), samples_per_shard=per_shard)
    return f"wds:{tmp_path}/train-{{000..{len(paths) - 1:03d}}}.tar?num_classes=3"


def test_wds_shuffled_deterministic_and_resumable(tmp_path: Path) -> None:
    spec = _id_shards(tmp_path)
    kw = dict(image_size=5, batch_size=4, num_workers=0, streams=2, shuffle_buffer=5, seed=2)
    ref_loader = build_loader(spec, **kw)
    ref = take_batches(ref_loader)
    epoch1 = take_batches(ref_loader)
    ids = [i for x, _ in ref for i in ids_of(x)]
    assert len(ids) == len(set(ids)) and len(ids) >= 52  # drop_last: each stream drops < 4 samples
    assert ids != sorted(ids)
    assert [i for x, _ in epoch1 for i in ids_of(x)] != ids
    assert same_batches(ref, take_batches(build_loader(spec, **kw)))
    part = build_loader(spec, **kw)
    head = take_batches(part, 5)
    resumed = build_loader(spec, **kw)
    resumed.load_state_dict(part.state_dict())
    assert same_batches(head + take_batches(resumed), ref)


def test_wds_workers_match_streams(tmp_path: Path) -> None:
    spec = _id_shards(tmp_path)
    kw = dict(image_size=5, batch_size=4, streams=2, shuffle_buffer=5, seed=2)
    a = take_batches(build_loader(spec, num_workers=0, **kw))
    b = take_batches(build_loader(spec, num_workers=2, **kw))
    assert same_batches(a, b)


def test_wds_ranks_split_shards(tmp_path: Path) -> None:
    spec = _id_shards(tmp_path)
    seen: list[int] = []
    for rank in range(2):
        loader = build_loader(spec, train=False, image_size=5, batch_size=4, num_workers=0, rank=rank, world_size=2)
        seen += [i for x, _ in loader for i in ids_of(x)]
    assert sorted(seen) == list(range(60))


def test_wds_training_ranks_get_declared_steps(tmp_path: Path) -> None:
    """60 samples in 9 shards split 5/4 over two ranks: with num_examples declared, both ranks give len() batches
    (the rank with fewer shards starts a new pass), so DDP ranks stay in lock-step."""
    spec = _id_shards(tmp_path) + "&num_examples=60"
    counts = []
    for rank in range(2):
        loader = build_loader(spec, image_size=5, batch_size=4, num_workers=0, rank=rank, world_size=2,
                              shuffle_buffer=3)
        counts.append((len(loader), sum(1 for _ in loader)))
    assert counts == [(30 // 4, 30 // 4)] * 2


def test_resume_with_workers(tmp_path: Path) -> None:
    """Map-style and stream loaders resumed with 2 workers continue exactly where a 0-worker run would."""
    root = make_folder(tmp_path / "f", {"a": 6, "b": 6}, size=(12, 12))
    kw = dict(image_size=8, batch_size=3, seed=4, randaugment=(1, 5))
    ref = take_batches(build_loader(f"folder:{root}", num_workers=0, **kw))
    part = build_loader(f"folder:{root}", num_workers=2, **kw)
    head = take_batches(part, 1)
    resumed = build_loader(f"folder:{root}", num_workers=2, **kw)
    resumed.load_state_dict(part.state_dict())
    assert same_batches(head + take_batches(resumed), ref)

    spec = _id_shards(tmp_path / "s")
    kw = dict(image_size=5, batch_size=4, streams=2, shuffle_buffer=5, seed=9)
    ref = take_batches(build_loader(spec, num_workers=0, **kw))
    part = build_loader(spec, num_workers=2, **kw)
    head = take_batches(part, 3)  # an odd count: the resumed run starts on the other stream
    resumed = build_loader(spec, num_workers=2, **kw)
    resumed.load_state_dict(part.state_dict())
    assert same_batches(head + take_batches(resumed), ref)
    assert resumed.stats.samples == sum(len(y) for _, y in ref)
    # a resumed loader with the default stream count (one per worker) adopts the saved layout
    kw.pop("streams")
    other = build_loader(spec, num_workers=0, **kw)
    other.load_state_dict(part.state_dict())
    assert same_batches(head + take_batches(other), ref)


def test_defaults_and_lengths() -> None:
    loader = build_loader("digits", split="test", train=False, image_size=8, batch_size=100)
    assert loader.num_workers == 0  # small in-memory source: no worker processes
    assert len(loader) == 4 and sum(len(y) for _, y in loader) == 359  # ceil(359 / 100), nothing dropped
    train = build_loader("digits", image_size=8, batch_size=100)
    assert len(train) == 1438 // 100 and all(len(y) == 100 for _, y in train)


def test_wds_cache_memory_matches_stream_in_evaluation(tmp_path: Path) -> None:
    """``cache=memory`` decodes the split once: evaluation batches equal the stream's bit for bit, in tar order."""
    spec = _id_shards(tmp_path)
    kw = dict(train=False, image_size=5, batch_size=8, num_workers=0)
    streamed = take_batches(build_loader(spec, **kw))
    cached = build_loader(spec + "&cache=memory", **kw)
    assert not cached.is_stream and len(cached.source) == 60
    assert same_batches(take_batches(cached), streamed)
    assert [i for x, _ in streamed for i in ids_of(x)] == list(range(60))


def test_wds_cache_memory_training_is_deterministic_and_resumable(tmp_path: Path) -> None:
    spec = _id_shards(tmp_path) + "&cache=memory"
    kw = dict(image_size=5, batch_size=4, seed=3)
    ref_loader = build_loader(spec, num_workers=0, **kw)
    ref = take_batches(ref_loader)
    ids = [i for x, _ in ref for i in ids_of(x)]
    assert len(ids) == len(set(ids)) == 60 and ids != sorted(ids)  # a global permutation, nothing dropped
    assert [i for x, _ in take_batches(ref_loader) for i in ids_of(x)] != ids  # the next epoch is another permutation
    assert same_batches(take_batches(build_loader(spec, num_workers=2, **kw)), ref)
    part = build_loader(spec, num_workers=0, **kw)
    head = take_batches(part, 4)
    resumed = build_loader(spec, num_workers=2, **kw)
    resumed.load_state_dict(part.state_dict())
    assert same_batches(head + take_batches(resumed), ref)


def test_wds_cache_memory_options_are_checked(tmp_path: Path) -> None:
    spec = _id_shards(tmp_path)
    with pytest.raises(ValueError, match="cache='disk' is not valid; the one choice is cache=memory"):
        build_loader(spec + "&cache=disk", image_size=5, num_workers=0)
    with pytest.raises(ValueError, match="cache_max_gb='lots' is not a number"):
        build_loader(spec + "&cache=memory&cache_max_gb=lots", image_size=5, num_workers=0)
    # 5x5x3 = 75 bytes per image: a 3,780-byte cap holds 50 images; the 51st (key 50, 8th shard) is named
    with pytest.raises(ValueError, match=r"GiB at sample 51 \(.*train-007.tar:00000050\)"):
        build_loader(spec + f"&cache=memory&cache_max_gb={3780 / 2**30}", image_size=5, num_workers=0)
