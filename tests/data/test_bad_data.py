"""Bad images are converted or skipped and counted; bad data sets fail before training; pickles cannot run code."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import make_folder, make_mnist, png_bytes
from PIL import Image

from vitkit.data import build_loader, safe_load_pickle, validate_dataset, write_wds_shards
from vitkit.data.sources import open_map_source


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's calling card) with a tiny body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def _odd_files() -> dict[str, tuple[bytes, str | None]]:
    """name -> (file bytes, expected outcome: 'skipped:<reason>' / 'converted:<kind>' / None for plain RGB)."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    jpeg = png_bytes(rgb, "JPEG")
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # fully transparent red -> white after compositing
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    i16 = Image.fromarray(np.full((16, 16), 65535, np.uint16))
    return {
        "ok1.png": (png_bytes(rgb), None),
        "ok2.jpg": (jpeg, None),
        "trunc.jpg": (jpeg[: len(jpeg) // 2], "skipped:truncated"),  # cut in the header
        "trunc2.jpg": (jpeg[: len(jpeg) - 40], "skipped:truncated"),  # cut in the scan data
        "random.jpg": (os.urandom(300), "skipped:unreadable"),
        "empty.png": (b"", "skipped:unreadable"),
        "bomb.png": (_png_header_only(20000, 20000), "skipped:too_large"),
        "rgba.png": (png_bytes(rgba), "converted:rgba"),
        "cmyk.jpg": (png_bytes(rgb.convert("CMYK"), "JPEG"), "converted:cmyk"),
        "grey16.png": (png_bytes(i16), "converted:high_bit_depth"),
        "grey.png": (png_bytes(rgb.convert("L")), "converted:grey"),
        "pal.png": (png_bytes(pal), "converted:palette"),
    }


def _expected(files: dict[str, tuple[bytes, str | None]]) -> tuple[dict[str, int], dict[str, int], int]:
    skipped: dict[str, int] = {}
    converted: dict[str, int] = {}
    for _, outcome in files.values():
        if outcome:
            kind, reason = outcome.split(":")
            d = skipped if kind == "skipped" else converted
            d[reason] = d.get(reason, 0) + 1
    good = len(files) - sum(skipped.values())
    return skipped, converted, good


def test_bad_images_in_folder_counted_not_fatal(tmp_path: Path) -> None:
    files = _odd_files()
    for i, (name, (data, _)) in enumerate(sorted(files.items())):
        d = tmp_path / "ds" / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    skipped, converted, good = _expected(files)
    spec = f"folder:{tmp_path / 'ds'}"
    loader = build_loader(spec, train=False, image_size=8, batch_size=4, num_workers=0)
    batches = list(loader)
    assert sum(len(y) for _, y in batches) == good  # evaluation drops bad files
    st = loader.stats.as_dict()
    assert st["skipped"] == skipped and st["converted"] == converted and st["samples"] == good
    assert any("bomb.png" in e for e in st["examples"])
    assert all(torch.isfinite(x).all() for x, _ in batches)
    # training keeps batch size by substituting the next readable file; counts aggregate over workers
    train = build_loader(spec, train=True, image_size=8, batch_size=len(files), drop_last=False, num_workers=2)
    (x, y), = list(train)
    assert len(y) == len(files)
    assert train.stats.skipped_total >= sum(skipped.values())


def test_converted_pixels() -> None:
    """Conversions give the pixels the documented rule predicts (checked against values computed by hand)."""
    from vitkit.data.transforms import to_mode

    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    assert np.asarray(to_mode(rgba, "RGB")).tolist() == [[[255, 255, 255]] * 2] * 2  # transparent -> white
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    assert abs(int(np.asarray(to_mode(half, "RGB"))[0, 0, 0]) - 127) <= 1
    i16 = Image.fromarray(np.array([[0, 65535, 257 * 100]], np.uint16))
    assert np.asarray(to_mode(i16, "RGB"))[0, :, 0].tolist() == [0, 255, 100]
    grey = Image.fromarray(np.array([[7, 200]], np.uint8))
    assert np.asarray(to_mode(grey, "RGB")).tolist() == [[[7] * 3, [200] * 3]]


def test_decompression_bomb_threshold(tmp_path: Path) -> None:
    make_folder(tmp_path / "ds", {"a": 2, "b": 2}, size=(40, 40))
    loader = build_loader(f"folder:{tmp_path / 'ds'}", train=False, image_size=8, batch_size=4, num_workers=0,
                          max_image_pixels=1000)
    assert sum(len(y) for _, y in loader) == 0
    assert loader.stats.skipped == {"too_large": 4}


def test_bad_samples_in_wds(tmp_path: Path) -> None:
    files = _odd_files()
    samples = [(data, i % 2) for i, (data, _) in enumerate(files.values())]
    write_wds_shards(samples, str(tmp_path / "a-%02d.tar"), samples_per_shard=100, image_format="jpg")
    ok = write_wds_shards([(Image.new("RGB", (4, 4)), 1)] * 3, str(tmp_path / "b-%02d.tar.gz"))
    raw = Path(ok[0]).read_bytes()
    (tmp_path / "c-00.tar.gz").write_bytes(raw[: len(raw) // 2])  # truncated gzip stream
    skipped, converted, n_good = _expected(files)
    spec = f"wds:{tmp_path}/{{a-00.tar,b-00.tar.gz,c-00.tar.gz}}?num_classes=2"
    loader = build_loader(spec, train=False, image_size=8, batch_size=5, num_workers=0)
    n = sum(len(y) for _, y in loader)
    st = loader.stats.as_dict()
    assert st["converted"] == converted
    assert {k: v for k, v in st["skipped"].items() if k != "corrupt_shard"} == skipped
    assert st["skipped"].get("corrupt_shard") == 1
    assert n_good + 3 <= n <= n_good + 3 + 3  # a truncated shard may still yield the samples before the cut


def test_bad_samples_in_wds_cached_are_counted_once(tmp_path: Path) -> None:
    """``cache=memory``: the same counts as the stream, taken while decoding, and not again in later epochs."""
    files = _odd_files()
    samples = [(data, i % 2) for i, (data, _) in enumerate(files.values())]
    write_wds_shards(samples, str(tmp_path / "a-%02d.tar"), samples_per_shard=100, image_format="jpg")
    skipped, converted, n_good = _expected(files)
    loader = build_loader(f"wds:{tmp_path}/a-00.tar?num_classes=2&cache=memory", train=True, image_size=8,
                          batch_size=1, num_workers=0)
    assert len(loader.source) == n_good
    for _ in range(2):
        assert sum(len(y) for _, y in loader) == n_good
    st = loader.stats.as_dict()
    assert st["converted"] == converted and st["skipped"] == skipped and st["samples"] == 2 * n_good


def test_wds_label_out_of_range_is_an_error(tmp_path: Path) -> None:
    write_wds_shards([(Image.new("RGB", (4, 4)), 1)], str(tmp_path / "x-%02d.tar"))
    write_wds_shards([(Image.new("RGB", (4, 4)), 7)], str(tmp_path / "y-%02d.tar"))
    with pytest.raises(ValueError, match="label 7, outside"):  # first shard: checked when the loader is built
        build_loader(f"wds:{tmp_path}/y-00.tar?num_classes=3", train=False, image_size=4, num_workers=0)
    loader = build_loader(f"wds:{tmp_path}/{{x,y}}-00.tar?num_classes=3", train=False, image_size=4, num_workers=0)
    with pytest.raises(ValueError, match="label 7, outside"):  # later shards: when reached
        list(loader)


def test_dataset_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty"):
        build_loader(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="no class sub-folders"):
        validate_dataset(f"folder:{tmp_path / 'empty' / 'a'}")
    make_folder(tmp_path / "miss" / "train", {"a": 2, "b": 2})
    (tmp_path / "miss" / "train" / "c").mkdir()
    with pytest.raises(ValueError, match=r"missing classes \[2\]"):
        build_loader(f"folder:{tmp_path / 'miss'}")
    make_folder(tmp_path / "extra" / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "extra" / "test", {"a": 1, "z": 1})
    with pytest.raises(ValueError, match=r"not in train: \['z'\]"):
        validate_dataset(f"folder:{tmp_path / 'extra'}", "test")
    make_folder(tmp_path / "fewer" / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "fewer" / "test", {"a": 1})
    with pytest.raises(ValueError, match="1 of the 2 declared classes"):
        validate_dataset(f"folder:{tmp_path / 'fewer'}", "test")
    make_mnist(tmp_path / "m", np.zeros((3, 28, 28), np.uint8), np.array([1, 12, 3]))
    with pytest.raises(ValueError, match=r"out of range \[0, 10\): found \[12\]"):
        build_loader(f"mnist:{tmp_path / 'm'}")
    with pytest.raises(ValueError, match="10 classes but num_classes=3"):
        build_loader("digits", num_classes=3)
    with pytest.raises(FileNotFoundError):
        build_loader(f"folder:{tmp_path / 'nope'}")


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Evil(str(marker)), b"labels": [0]}, protocol=4)
    with pytest.raises(ValueError, match="refused.*(posix|os).system"):
        safe_load_pickle(evil, "test")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "data_batch_1").write_bytes(evil)
    (tmp_path / "c" / "test_batch").write_bytes(evil)
    with pytest.raises(ValueError, match="data_batch_1.*refused"):
        open_map_source(f"cifar:{tmp_path / 'c'}", "train")
    assert not marker.exists()
    builtin_eval = b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR."
    with pytest.raises(ValueError, match="builtins.eval"):
        safe_load_pickle(builtin_eval, "test")
    assert not marker.exists()
    with pytest.raises(ValueError, match="only allowed as encode"):  # the one wrapped helper checks its arguments
        safe_load_pickle(b"c_codecs\nencode\n(Vx\nVrot13\ntR.", "test")
    with pytest.raises(ValueError, match="object arrays"):
        safe_load_pickle(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2), "test")
    # a plain array round-trips
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(safe_load_pickle(pickle.dumps({b"data": arr}, protocol=2))[b"data"], arr)
    assert np.array_equal(safe_load_pickle(pickle.dumps(arr, protocol=5)), arr)


def test_gz_idx_corrupt_is_clear(tmp_path: Path) -> None:
    make_mnist(tmp_path / "m", np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3]))
    p = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(b"x" * 100)[:30])
    with pytest.raises(ValueError, match="train-images"):
        open_map_source(f"mnist:{tmp_path / 'm'}", "train")
