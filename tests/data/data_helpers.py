"""Tiny generated data sets for the data-layer tests (nothing is read from outside tmp_path).

A uniquely named module (not conftest.py) so test files can import its helpers directly."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def png_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool) -> None:
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_mnist(root: Path, images: np.ndarray, labels: np.ndarray, test_images: np.ndarray | None = None,
               test_labels: np.ndarray | None = None, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte", images, 2051, gz)
    write_idx(root / "train-labels-idx1-ubyte", labels, 2049, gz)
    ti = images if test_images is None else test_images
    tl = labels if test_labels is None else test_labels
    write_idx(root / "t10k-images-idx3-ubyte", ti, 2051, gz)
    write_idx(root / "t10k-labels-idx1-ubyte", tl, 2049, gz)
    return root


def make_id_mnist(tmp_path: Path) -> tuple[str, int]:
    """An mnist-format set of N=100 constant images whose pixel value is the sample id (2*i), labels i % 10.

    Any crop, resize or flip of a constant image keeps the value, so a batch tells which samples it holds even
    after training augmentation.
    """
    n = 100
    images = np.repeat((2 * np.arange(n, dtype=np.uint8))[:, None, None], 12, 1).repeat(12, 2)
    labels = np.arange(n) % 10
    make_mnist(tmp_path / "mnist", images, labels)
    return f"mnist:{tmp_path / 'mnist'}", n


def ids_of(images) -> list[int]:
    """Sample ids of an id_mnist batch normalised with mean=std=0.5 (value v -> v/255*2-1)."""
    v = ((images[:, 0, 0, 0].double() + 1) / 2 * 255).round().long() // 2
    return v.tolist()


def make_folder(root: Path, per_class: dict[str, int], size: tuple[int, int] = (10, 8), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c, n in per_class.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"img{i:03d}.png")
    return root


def take_batches(loader, n: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches (only the first ``n`` when given)."""
    out = []
    for b in loader:
        out.append(b)
        if n is not None and len(out) == n:
            break
    return out


def same_batches(a, b) -> bool:
    """Whether two lists of (images, labels) batches are equal, tensor for tensor."""
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
