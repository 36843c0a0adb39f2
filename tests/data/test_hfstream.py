"""A streaming datasets.IterableDataset: the wds stream contract (seeded shard order and shuffle buffer, resume,
ranks), decoded exactly as the map-style Dataset holding the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_objects import _hf, _png_folder

from vitkit.data import build_loader, dataset_info

datasets = pytest.importorskip("datasets", reason="the optional extra vitkit[hf] is not installed")
KW = dict(image_size=16, batch_size=8, num_workers=0, seed=3)


@pytest.fixture
def pair(tmp_path: Path):
    data, labels, names = _png_folder(tmp_path / "f", 40)
    ds = _hf(data, labels, names)
    return ds, ds.to_iterable_dataset(num_shards=4)


def test_stream_evaluates_as_the_map_style_dataset(pair) -> None:
    ds, it = pair
    info = dataset_info(it)
    assert (info.num_classes, info.class_names, info.num_examples, info.kind) == (10, ds.features["label"].names,
                                                                                  None, "hf")
    got = list(build_loader(it, train=False, **KW))
    want = list(build_loader(ds, train=False, require_all_classes=False, **KW))
    assert torch.equal(torch.cat([y for _, y in got]), torch.cat([y for _, y in want]))
    assert torch.equal(torch.cat([x for x, _ in got]), torch.cat([x for x, _ in want]))


def test_stream_training_is_seeded_and_resumes(pair) -> None:
    _, it = pair
    whole = [y for _, y in build_loader(it, **KW)]
    assert len(whole) == 5  # 40 samples in full batches of 8
    assert all(torch.equal(a, b) for a, b in zip(whole, [y for _, y in build_loader(it, **KW)], strict=True))
    a = build_loader(it, **KW)
    gen = iter(a)
    head = [next(gen)[1] for _ in range(2)]
    b = build_loader(it, **KW)
    b.load_state_dict(a.state_dict())
    rest = [y for _, y in b]
    assert all(torch.equal(u, v) for u, v in zip(head + rest, whole, strict=True))
    other = torch.cat([y for _, y in build_loader(it, **{**KW, "seed": 4})])
    assert not torch.equal(torch.cat(whole), other)


def test_stream_ranks_share_the_shards(pair) -> None:
    _, it = pair
    seen = [torch.cat([y for _, y in build_loader(it, train=False, rank=r, world_size=2, **KW)]) for r in (0, 1)]
    assert len(seen[0]) + len(seen[1]) == 40 and len(seen[0]) == 20  # 4 shards of 10: two per rank

