"""Tiny stand-ins for each named data set's official files, in the official layout (names, folders, formats):
what the loopback server serves in place of each official host.

- CIFAR: ``cifar-10-python.tar.gz`` with ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (python
  pickles of dicts: ``data`` uint8 (N, 3072) planar RGB, ``labels``; meta ``label_names``), ``cifar-100-python.tar.gz``
  with ``cifar-100-python/{train,test,meta}`` (``fine_labels``, ``coarse_labels``; ``fine_label_names``...).
- MNIST: the four gzipped idx files (magic 2051 / 2049, big-endian sizes).
- Pets: ``images.tar.gz`` (``images/<Breed>_<n>.jpg``) and ``annotations.tar.gz`` (``annotations/trainval.txt``,
  ``test.txt``, ``list.txt``: ``NAME CLASS_ID SPECIES BREED_ID``, ids from 1; ``list.txt`` starts with ``#`` lines).
- Flowers-102: ``102flowers.tgz`` (``jpg/image_00001.jpg``...), ``imagelabels.mat`` (``labels`` 1 x N, 1..102),
  ``setid.mat`` (``trnid``, ``valid``, ``tstid``: 1-based image ids), MATLAB 5 files as the originals.
- Imagenette: ``imagenette2[-160].tgz`` with ``imagenette2[-160]/{train,val}/<wnid>/<name>.JPEG`` and
  ``noisy_imagenette.csv``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile

import numpy as np
from PIL import Image

WNIDS = ("n01440764", "n02102040", "n02979186")


def _tar(members: dict[str, bytes], gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def hostile_tar(kind: str) -> bytes:
    """A gzipped tar with one harmless member and one that would escape: ``..``, an absolute path, a link out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("x/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if kind == "link":
            info = tarfile.TarInfo("x/escape")
            info.type, info.linkname = tarfile.SYMTYPE, "../../../outside"
            tf.addfile(info)
        else:
            info = tarfile.TarInfo("../evil.txt" if kind == "dotdot" else "/tmp/vitkit-evil.txt")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
    return buf.getvalue()


def _jpeg(seed: int, size: tuple[int, int] = (12, 10)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _cifar_batch(n: int, k: int, seed: int, label_keys: tuple[str, ...]) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) + seed * n) % k  # the five CIFAR-10 training batches together hold every class
    d = {"batch_label": "batch", "data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
         "filenames": [f"img_{i}.png" for i in range(n)]}
    for key in label_keys:
        d[key] = (labels % 20 if key == "coarse_labels" else labels).tolist()
    return d, labels


def cifar10() -> dict[str, bytes]:
    m = {}
    for i in range(1, 6):
        m[f"cifar-10-batches-py/data_batch_{i}"] = pickle.dumps(_cifar_batch(4, 10, i, ("labels",))[0], protocol=2)
    m["cifar-10-batches-py/test_batch"] = pickle.dumps(_cifar_batch(10, 10, 9, ("labels",))[0], protocol=2)
    m["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": 4, "num_vis": 3072}, protocol=2)
    m["cifar-10-batches-py/readme.html"] = b"<html></html>"
    return {"cifar-10-python.tar.gz": _tar(m)}


def cifar100() -> dict[str, bytes]:
    m = {"cifar-100-python/train": pickle.dumps(_cifar_batch(100, 100, 1, ("fine_labels", "coarse_labels"))[0], 2),
         "cifar-100-python/test": pickle.dumps(_cifar_batch(8, 100, 2, ("fine_labels", "coarse_labels"))[0], 2),
         "cifar-100-python/meta": pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)],
                                                "coarse_label_names": [f"s{i}" for i in range(20)]}, protocol=2)}
    return {"cifar-100-python.tar.gz": _tar(m)}


def _idx(arr: np.ndarray, magic: int) -> bytes:
    return gzip.compress(struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes(), mtime=0)


def mnist() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", 20), ("t10k", 10)):
        out[f"{prefix}-images-idx3-ubyte.gz"] = _idx(rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), 2051)
        out[f"{prefix}-labels-idx1-ubyte.gz"] = _idx((np.arange(n) % 10).astype(np.uint8), 2049)
    return out


def pet_breeds() -> list[str]:
    """37 breeds in class-id order (cats capitalised, dogs lower case, as in the official names)."""
    return [f"Cat{i:02d}" if i < 12 else f"dog_breed_{i:02d}" for i in range(37)]


def pets() -> dict[str, bytes]:
    images, trainval, test = {}, [], []
    for c, breed in enumerate(pet_breeds()):
        species = 1 if c < 12 else 2
        for n, rows in ((1, trainval), (2, test)):
            name = f"{breed}_{n}"
            images[f"images/{name}.jpg"] = _jpeg(c * 3 + n)
            rows.append(f"{name} {c + 1} {species} {c % 12 + 1}")
    header = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"
    notes = {"annotations/trainval.txt": ("\n".join(trainval) + "\n").encode(),
             "annotations/test.txt": ("\n".join(test) + "\n").encode(),
             "annotations/list.txt": (header + "\n".join(trainval + test) + "\n").encode(),
             "annotations/README": b"OXFORD-IIIT PET Dataset\n"}
    return {"images.tar.gz": _tar(images), "annotations.tar.gz": _tar(notes)}


FLOWER_LABELS = [1, 2, 102, 5, 2, 1, 7]  # image ids 1..7
FLOWER_SPLIT = {"trnid": [1, 3], "valid": [2, 6], "tstid": [4, 5, 7]}


def flowers102() -> dict[str, bytes]:
    from scipy.io import savemat

    jpgs = {f"jpg/image_{i:05d}.jpg": _jpeg(100 + i) for i in range(1, len(FLOWER_LABELS) + 1)}
    out = {"102flowers.tgz": _tar(jpgs)}
    for name, content in (("imagelabels.mat", {"labels": np.array([FLOWER_LABELS], dtype=np.uint8)}),
                          ("setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in FLOWER_SPLIT.items()})):
        buf = io.BytesIO()
        savemat(buf, content)
        out[name] = buf.getvalue()
    return out


def imagenette(top: str) -> dict[str, bytes]:
    m = {f"{top}/noisy_imagenette.csv": b"path,noisy_labels_0,is_valid\n"}
    for split, n in (("train", 2), ("val", 1)):
        for c, wnid in enumerate(WNIDS):
            for i in range(n):
                m[f"{top}/{split}/{wnid}/{wnid}_{i}.JPEG"] = _jpeg(c * 10 + i, (16, 12))
    return {f"{top}.tgz": _tar(m)}


BUILDERS = {"cifar10": cifar10, "cifar100": cifar100, "mnist": mnist, "pets": pets, "flowers102": flowers102,
            "imagenette": lambda: imagenette("imagenette2"), "imagenette-160": lambda: imagenette("imagenette2-160")}
# what each set's train / test split holds in these files: (images, classes declared)
EXPECTED = {"cifar10": (20, 10, 10), "cifar100": (100, 8, 100), "mnist": (20, 10, 10), "pets": (37, 37, 37),
            "flowers102": (2, 3, 102), "imagenette": (6, 3, 3), "imagenette-160": (6, 3, 3)}


def sha256sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in files.items()).encode()
