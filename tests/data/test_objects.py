"""The user's own data objects (torch Datasets, Hugging Face datasets, hf:PATH) as sources: the same batches as the
built-in sources holding the same images, the same determinism, resume and bad-image handling."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import png_bytes
from PIL import Image

from vitkit.data import build_loader, dataset_info, validate_dataset
from vitkit.data.sources import open_map_source
from vitkit.errors import UserError

datasets = pytest.importorskip("datasets", reason="the optional extra vitkit[hf] is not installed")
datasets.disable_progress_bars()

DIGITS = open_map_source("digits")  # 1438 uint8 8x8 grey images, labels 0..9
KW = dict(image_size=16, batch_size=8, num_workers=0, seed=3)


class Items(torch.utils.data.Dataset):
    """A user's Dataset over the digits' training images, each given as ``to(image)``."""

    def __init__(self, to=lambda a: a, n: int | None = None, classes: bool = True):
        self.to, self.n = to, n or len(DIGITS)
        if classes:
            self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.to(DIGITS.images[i]), int(DIGITS.labels[i])


def _first(spec, **kw):
    return next(iter(build_loader(spec, **{**KW, **kw})))


@pytest.mark.parametrize("to", [
    lambda a: a,                                                       # uint8 HW array
    lambda a: a[:, :, None].repeat(3, 2),                              # uint8 HWC array
    lambda a: Image.fromarray(a),                                      # PIL image
    lambda a: torch.from_numpy(a)[None],                               # uint8 CHW tensor, 0..255
    lambda a: torch.from_numpy(a)[None].float() / 255,                 # float CHW tensor in [0, 1] (ToTensor)
], ids=["array", "array_hwc", "pil", "uint8_tensor", "float_tensor"])
@pytest.mark.parametrize("train", [True, False])
def test_torch_dataset_gives_the_builtin_batches(to, train: bool) -> None:
    ds = Items(to)
    info = dataset_info(ds)
    assert (info.num_classes, info.num_examples, info.kind, info.class_names) == (10, 1438, "torch", ds.classes)
    want_x, want_y = _first("digits", train=train)
    x, y = _first(ds, train=train)
    assert torch.equal(y, want_y)
    assert torch.allclose(x, want_x, atol=1e-6)


def test_torch_dataset_resumes_mid_epoch_exactly() -> None:
    ds = Items(lambda a: Image.fromarray(a), n=64, classes=False)
    whole = [y for _, y in build_loader(ds, **KW)]
    assert dataset_info(ds).class_names is None  # no `classes`: 0 .. max(label), unnamed
    a = build_loader(ds, **KW)
    it = iter(a)
    head = [next(it)[1] for _ in range(3)]
    b = build_loader(ds, **KW)
    b.load_state_dict(a.state_dict())
    rest = [y for _, y in b]
    assert all(torch.equal(u, v) for u, v in zip(head + rest, whole, strict=True))
    assert not torch.equal(torch.cat(whole), torch.cat([y for _, y in build_loader(ds, **{**KW, "seed": 4})]))


class Broken(Items):
    """Items 5 and 9 raise OSError, as a Dataset opening a corrupt image file does."""

    def __getitem__(self, i: int):
        if i in (5, 9):
            raise OSError(f"cannot identify image file 'img{i}.png'")
        return super().__getitem__(i)


def test_torch_dataset_bad_items_are_skipped_as_for_builtin_sources() -> None:
    ds = Broken(n=20)
    ev = build_loader(ds, train=False, **{**KW, "batch_size": 20})
    (x, y), = list(ev)
    assert len(y) == 18 and ev.stats.as_dict()["skipped"] == {"unreadable": 2}
    tr = build_loader(ds, train=True, **{**KW, "batch_size": 20, "drop_last": False, "shuffle": False})
    (x, y), = list(tr)
    assert len(y) == 20 and tr.stats.as_dict()["skipped"] == {"unreadable": 2}  # replaced by the next item
    assert y[5] == int(DIGITS.labels[6])


@pytest.mark.parametrize("item, match", [
    (lambda a: (torch.from_numpy(a)[None].float() / 255 - 0.5) / 0.5, r"\[0, 1\].*Normalize"),
    (lambda a: a.astype(np.float32), "must be uint8"),
    (lambda a: np.stack([a] * 3), r"looks like \(C, H, W\)"),
    (lambda a: torch.from_numpy(a)[None].int(), "uint8 .* or floating point"),
    (lambda a: a.tolist(), "PIL image, a uint8 numpy array or a torch tensor"),
], ids=["normalised", "float_array", "chw_array", "int32_tensor", "list"])
def test_torch_dataset_ambiguous_images_are_refused_before_training(item, match: str) -> None:
    with pytest.raises(UserError, match=match):
        build_loader(Items(item), **KW)


def test_torch_dataset_bad_labels_and_iterables_are_refused() -> None:
    class OneHot(Items):
        def __getitem__(self, i):
            return DIGITS.images[i], np.eye(10)[DIGITS.labels[i]]

    with pytest.raises(UserError, match="integer class index"):
        dataset_info(OneHot())

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield DIGITS.images[0], 0

    with pytest.raises(UserError, match="map-style"):
        dataset_info(Stream())
    with pytest.raises(UserError, match="missing classes"):
        validate_dataset(Items(n=5))  # `classes` declares 10, the first five items hold fewer


def _hf(images: list[bytes], labels: list[int], names: list[str]):
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images], "label": labels},
                                      features=feats)


def _png_folder(root: Path, n: int) -> tuple[list[bytes], list[int], list[str]]:
    """The first ``n`` digits as PNG files in an ImageFolder (sorted file names keep the order) and as bytes."""
    names = [f"c{k}" for k in range(10)]
    data, labels = [], []
    for i in range(n):
        b = png_bytes(Image.fromarray(DIGITS.images[i]).convert("RGB").resize((24, 20)))
        k = int(DIGITS.labels[i])
        (root / names[k]).mkdir(parents=True, exist_ok=True)
        (root / names[k] / f"{i:04d}.png").write_bytes(b)
        data.append(b)
        labels.append(k)
    return data, labels, names


@pytest.mark.parametrize("train", [True, False])
def test_hf_dataset_decodes_as_image_files_do(tmp_path: Path, train: bool) -> None:
    data, labels, names = _png_folder(tmp_path / "f", 60)
    ids = [int(Path(p).stem) for p in open_map_source(f"folder:{tmp_path / 'f'}").files]  # the folder's order
    ds = _hf([data[i] for i in ids], [labels[i] for i in ids], names)
    info = dataset_info(ds)
    assert (info.num_classes, info.class_names, info.num_examples, info.kind) == (10, names, 60, "hf")
    # vit_jax (TensorFlow's decode + resize) for evaluation, Pillow's augmentation for training: bit for bit
    x, y = _first(ds, train=train)
    want_x, want_y = _first(f"folder:{tmp_path / 'f'}", train=train)
    assert torch.equal(y, want_y) and torch.equal(x, want_x)


def test_hf_dataset_bad_image_is_counted(tmp_path: Path) -> None:
    data, labels, names = _png_folder(tmp_path / "f", 20)
    data[3] = data[3][:40]  # cut short
    ev = build_loader(_hf(data, labels, names), train=False, **{**KW, "batch_size": 32})
    (x, y), = list(ev)
    assert len(y) == 19 and ev.stats.skipped_total == 1


def test_hf_paths_save_to_disk_and_parquet(tmp_path: Path) -> None:
    data, labels, names = _png_folder(tmp_path / "f", 40)
    train, test = _hf(data[:30], labels[:30], names), _hf(data[30:], labels[30:], names)
    datasets.DatasetDict(train=train, test=test).save_to_disk(str(tmp_path / "dd"))
    train.save_to_disk(str(tmp_path / "one"))
    (tmp_path / "pq").mkdir()
    train.to_parquet(str(tmp_path / "pq" / "train-00000-of-00001.parquet"))
    test.to_parquet(str(tmp_path / "pq" / "test-00000-of-00001.parquet"))
    for spec in (f"hf:{tmp_path / 'dd'}", f"hf:{tmp_path / 'pq'}"):
        assert dataset_info(spec).num_examples == 30 and dataset_info(spec, "test").num_examples == 10
        assert dataset_info(spec, "val").num_examples == 10  # test stands in for val, as for every source
        assert dataset_info(spec).class_names == names
        x, y = _first(spec, train=False, split="test", batch_size=10, require_all_classes=False)
        assert y.tolist() == labels[30:]
    assert dataset_info(f"hf:{tmp_path / 'one'}").num_examples == 30
    assert dataset_info(f"hf:{tmp_path / 'pq' / 'test-00000-of-00001.parquet'}").num_examples == 10
    with pytest.raises(FileNotFoundError, match="no 'val' split"):
        dataset_info(datasets.DatasetDict(train=train), "val")
    with pytest.raises(UserError, match="neither a save_to_disk"):
        dataset_info(f"hf:{tmp_path / 'f'}")
    with pytest.raises(FileNotFoundError):
        dataset_info(f"hf:{tmp_path / 'nothing'}")


def test_hf_columns_are_found_or_the_error_says_how_to_choose(tmp_path: Path) -> None:
    data, labels, names = _png_folder(tmp_path / "f", 10)
    ds = _hf(data, labels, names)
    plain = ds.cast_column("label", datasets.Value("int64"))
    with pytest.raises(UserError, match=r"no label column .*ClassLabel"):
        dataset_info(plain)
    two = ds.add_column("thumb", [{"bytes": b, "path": None} for b in data]).cast_column("thumb", datasets.Image())
    assert dataset_info(two).num_examples == 10  # "image" is preferred among several image columns
    two = two.rename_column("image", "big")
    with pytest.raises(UserError, match=r"several image columns \(big, thumb\)"):
        dataset_info(two)
    two.save_to_disk(str(tmp_path / "two"))
    assert dataset_info(f"hf:{tmp_path / 'two'}?image=thumb").num_examples == 10
    with pytest.raises(UserError, match="unknown option"):
        dataset_info(f"hf:{tmp_path / 'two'}?imgae=thumb")


def test_missing_datasets_package_is_one_line_naming_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"needs the optional package 'datasets': pip install 'vitkit\[hf\]'"):
        dataset_info(f"hf:{tmp_path}")
