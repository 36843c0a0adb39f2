"""Each source on tiny generated data, checked against the data it was built from."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import make_folder, make_mnist
from PIL import Image

from vitkit.data import build_loader, dataset_info, validate_dataset, write_wds_shards
from vitkit.data.sources import open_map_source, parse_spec


def test_parse_spec() -> None:
    p = parse_spec("wds:/a/b-{0..3}.tar?num_classes=7")
    assert (p.kind, p.path, p.options) == ("wds", "/a/b-{0..3}.tar", {"num_classes": "7"})
    with pytest.raises(ValueError, match="unknown data source 'imagenet21k'.*valid"):
        parse_spec("imagenet21k:/x")
    with pytest.raises(ValueError, match="unknown data source 'cifar-10'.*did you mean cifar10"):
        parse_spec("cifar-10")
    assert parse_spec("imagenet:/x?labels=real").options == {"labels": "real"}
    assert (parse_spec("mnist").kind, parse_spec("mnist").path) == ("mnist", "")  # the named data set
    assert parse_spec("mnist:/m").path == "/m"  # the user's files
    with pytest.raises(ValueError, match="needs a path"):
        parse_spec("folder:")


def test_digits_split_and_values() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    train, test = open_map_source("digits", "train"), open_map_source("digits", "test")
    assert len(train) + len(test) == len(d.target)
    # stratified: every class has ~20% in test
    for c in range(10):
        n_c = int((d.target == c).sum())
        assert int((test.labels == c).sum()) == round(0.2 * n_c)
    # disjoint and complete: match each stored image back to a unique original index
    ref = np.round(d.images * 255 / 16).astype(np.uint8).reshape(len(d.target), -1)
    keys = {}
    for i, row in enumerate(ref):
        keys.setdefault((row.tobytes(), int(d.target[i])), []).append(i)
    count = sum(len(v) for v in keys.values())
    seen = [(im.reshape(-1).tobytes(), int(lab)) for src in (train, test) for im, lab in zip(src.images, src.labels)]
    assert len(seen) == count and all(k in keys for k in seen)
    assert train.images.max() == 255 and train.images.dtype == np.uint8
    info = dataset_info("digits", "test")
    assert info.num_classes == 10 and info.num_examples == len(test) and not info.multi_label


def test_digits_eval_batches_equal_reference() -> None:
    """Eval at the stored 8x8 size: batches are exactly (v/255 - 0.5)/0.5 of the split's pixels, in order."""
    from sklearn.datasets import load_digits

    loader = build_loader("digits", split="test", train=False, image_size=8, batch_size=50)
    x, y = next(iter(loader))
    src = open_map_source("digits", "test")
    d = load_digits()
    ref_pix = np.round(d.images * 255 / 16)
    # the first test sample is some original image with the same label
    want = torch.from_numpy(src.images[:50].astype(np.float32)) / 255 * 2 - 1
    assert torch.allclose(x[:, 0], want, atol=1e-6) and torch.equal(x[:, 0], x[:, 1])
    assert y.tolist() == src.labels[:50].tolist()
    assert any(np.array_equal(ref_pix[i], src.images[0]) for i in np.flatnonzero(d.target == y[0].item()))


def test_folder_source_labels_and_splits(tmp_path: Path) -> None:
    make_folder(tmp_path / "ds" / "train", {"cat": 3, "ant": 2, "bee": 4})
    make_folder(tmp_path / "ds" / "val", {"bee": 1, "ant": 1, "cat": 1})
    (tmp_path / "ds" / "train" / "cat" / "notes.txt").write_text("not an image")
    info = dataset_info(f"folder:{tmp_path / 'ds'}")
    assert info.class_names == ["ant", "bee", "cat"] and info.num_examples == 9
    test = open_map_source(f"folder:{tmp_path / 'ds'}", "test")  # 'test' falls back to val/
    assert sorted(test.labels.tolist()) == [0, 1, 2]
    for f, lab in zip(test.files, test.labels):
        assert Path(f).parent.name == ["ant", "bee", "cat"][lab]
    # no split sub-folders: the path is the split
    flat = open_map_source(f"folder:{tmp_path / 'ds' / 'train'}", "train")
    assert len(flat) == 9 and flat.class_names == ["ant", "bee", "cat"]
    # eval batches hold the images' own pixels (plain resize to the stored size is the identity)
    loader = build_loader(f"folder:{tmp_path / 'ds'}", split="val", train=False, image_size=(8, 10), batch_size=3)
    x, y = next(iter(loader))
    for k in range(3):
        a = np.asarray(Image.open(test.files[k]), dtype=np.float32)
        assert torch.allclose(x[k], torch.from_numpy(a).permute(2, 0, 1) / 255 * 2 - 1, atol=1e-6)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = np.arange(30) % 10
    make_mnist(tmp_path / "m", images, labels, images[:10], labels[:10], gz=gz)
    src = open_map_source(f"mnist:{tmp_path / 'm'}", "train")
    assert np.array_equal(src.images, images) and np.array_equal(src.labels, labels)
    assert len(open_map_source(f"mnist:{tmp_path / 'm'}", "test")) == 10
    loader = build_loader(f"mnist:{tmp_path / 'm'}", split="test", train=False, image_size=28, batch_size=10,
                          in_chans=1, mean=(0.0,), std=(1.0,))
    x, y = next(iter(loader))
    assert x.shape == (10, 1, 28, 28)
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(images[:10]).float(), atol=1e-4)


def test_mnist_bad_header(tmp_path: Path) -> None:
    make_mnist(tmp_path / "m", np.zeros((4, 28, 28), np.uint8), np.zeros(5, np.uint8), gz=False)
    with pytest.raises(ValueError, match="4 images but .* 5 labels"):
        open_map_source(f"mnist:{tmp_path / 'm'}", "train")
    (tmp_path / "m" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20)
    with pytest.raises(ValueError, match="magic 2049, expected 2051"):
        open_map_source(f"mnist:{tmp_path / 'm'}", "train")


def _cifar10(root: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Write CIFAR-10 python batches as the original does (dict of bytes keys, pickle protocol 2)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (n * 5, 3072), dtype=np.uint8)
    labels = np.arange(n * 5) % 10
    for b in range(5):
        d = {b"batch_label": b"training batch", b"labels": labels[b * n:(b + 1) * n].tolist(),
             b"data": data[b * n:(b + 1) * n], b"filenames": [b"x.png"] * n}
        (root / f"data_batch_{b + 1}").write_bytes(pickle.dumps(d, protocol=2))
    (root / "test_batch").write_bytes(pickle.dumps({b"labels": labels[:n].tolist(), b"data": data[:n]}, protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return data, labels


def test_cifar10_batches(tmp_path: Path) -> None:
    data, labels = _cifar10(tmp_path / "c")
    src = open_map_source(f"cifar:{tmp_path / 'c'}", "train")
    assert src.class_names[0] == "airplane" and src.num_classes == 10 and len(src) == 100
    # pixel (row 0, col 1) of channel c is at c*1024 + 1 in CIFAR's planar layout
    assert [src.images[7][0, 1, c] for c in range(3)] == [data[7, c * 1024 + 1] for c in range(3)]
    assert np.array_equal(src.labels, labels)
    assert len(open_map_source(f"cifar:{tmp_path / 'c'}", "test")) == 20


def test_cifar100_coarse_from_tar(tmp_path: Path) -> None:
    import tarfile

    d = tmp_path / "cifar-100-python"
    d.mkdir()
    data = np.zeros((6, 3072), np.uint8)
    for name in ("train", "test"):
        (d / name).write_bytes(pickle.dumps({b"data": data, b"fine_labels": list(range(6)),
                                             b"coarse_labels": [0, 0, 1, 1, 2, 19]}, protocol=2))
    (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                                           b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}))
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tf:
        tf.add(d, arcname="cifar-100-python")
    fine = open_map_source(f"cifar:{tmp_path / 'cifar-100-python.tar.gz'}", "train")
    coarse = open_map_source(f"cifar:{tmp_path / 'cifar-100-python.tar.gz'}?labels=coarse", "test")
    assert fine.num_classes == 100 and fine.labels.tolist() == list(range(6))
    assert coarse.num_classes == 20 and coarse.labels.tolist() == [0, 0, 1, 1, 2, 19]
    assert coarse.class_names[19] == "c19"


def _shards(tmp_path: Path, n: int = 23, per_shard: int = 5, ext: str = "tar", fmt: str = "png") -> list[str]:
    rng = np.random.default_rng(0)
    samples = [(Image.fromarray(np.full((6, 6, 3), 2 * i, np.uint8)), i % 4) for i in range(n)]
    del rng
    return write_wds_shards(samples, str(tmp_path / f"train-%04d.{ext}"), samples_per_shard=per_shard,
                            image_format=fmt)


@pytest.mark.parametrize("ext", ["tar", "tar.gz"])
def test_wds_reads_every_sample_once(tmp_path: Path, ext: str) -> None:
    paths = _shards(tmp_path, ext=ext)
    assert len(paths) == 5
    spec = f"wds:{tmp_path}/train-{{0000..0004}}.{ext}?num_classes=4"
    loader = build_loader(spec, train=False, image_size=6, batch_size=4, num_workers=0)
    ids, labels = [], []
    for x, y in loader:
        v = ((x[:, 0, 0, 0].double() + 1) / 2 * 255).round().long() // 2
        ids += v.tolist()
        labels += y.tolist()
    assert sorted(ids) == list(range(23))
    assert all(lab == i % 4 for i, lab in zip(ids, labels))
    assert loader.stats.samples == 23 and loader.stats.skipped_total == 0


def test_wds_metadata(tmp_path: Path) -> None:
    _shards(tmp_path)
    pattern = f"{tmp_path}/train-{{0000..0004}}.tar"
    with pytest.raises(ValueError, match="num_classes=K"):
        dataset_info(f"wds:{pattern}")
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")
    info = dataset_info(f"wds:{pattern}")
    assert info.num_classes == 4 and info.class_names == ["a", "b", "c", "d"] and info.num_examples is None
    (tmp_path / "meta.json").write_text(json.dumps({"num_classes": 4, "num_examples": {"train": 23}}))
    info = dataset_info(f"wds:{tmp_path}")  # a directory: SPLIT-*.tar
    assert info.num_examples == 23 and info.num_classes == 4
    assert len(build_loader(f"wds:{tmp_path}", batch_size=4, num_workers=0)) == 23 // 4
    per_split = f"wds:{pattern}?num_classes=4&num_examples=train:20,test:5"
    assert dataset_info(per_split).num_examples == 20 and dataset_info(per_split, "val").num_examples == 5
    with pytest.raises(ValueError, match="declares 5 classes but lists 4"):
        dataset_info(f"wds:{pattern}?num_classes=5")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        dataset_info(f"wds:{tmp_path}/train-{{0000..0009}}.tar")
    assert validate_dataset(f"wds:{pattern}").num_classes == 4
    with pytest.raises(ValueError, match="label 3, outside"):
        validate_dataset(f"wds:{pattern}?num_classes=3&classes=a,b,c")


def test_shared_cifar10_shards(shared_data: Path) -> None:
    spec = f"wds:{shared_data}/cifar10?num_classes=10&num_examples=train:50000,test:10000"
    assert dataset_info(spec, "test").num_examples == 10000
    loader = build_loader(spec, split="test", train=False, image_size=32, batch_size=100, num_workers=0, limit=300)
    n = sum(len(y) for _, y in loader)
    assert n == 300 and loader.stats.skipped_total == 0


def test_shared_mnist_matches_its_readme(shared_data: Path) -> None:
    # the shared data's README lists the first labels and the class counts of the original files
    test = open_map_source(f"mnist:{shared_data}/mnist", "test")
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert test.images.shape == (10000, 28, 28)


@pytest.mark.parametrize("fmt", ["ustar", "gnu", "pax"])
def test_tar_reader_matches_tarfile(tmp_path: Path, fmt: str) -> None:
    import io
    import tarfile

    from vitkit.data.wds import TarFormatError, iter_tar

    rng = np.random.default_rng(0)
    names = ["a.cls", "dir/b.jpg", "x" * 90 + "/" + "y" * 60 + ".png", "z" * 150 + ".cls", "empty.txt"]
    if fmt == "pax":
        names.append("ünï/çødé.jpg")
    if fmt == "ustar":
        names.remove("z" * 150 + ".cls")  # ustar cannot store a 150-character base name
    tar_format = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}[fmt]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tar_format) as tf:
        d = tarfile.TarInfo("dir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for i, n in enumerate(names):
            data = rng.integers(0, 256, 37 * i + (512 if i == 2 else 0), dtype=np.uint8).tobytes()
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        ref = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]
    assert list(iter_tar(io.BytesIO(raw))) == ref and len(ref) == len(names)
    damaged = bytearray(raw)
    damaged[600] ^= 0xFF  # inside the second header
    with pytest.raises(TarFormatError):
        list(iter_tar(io.BytesIO(bytes(damaged))))
